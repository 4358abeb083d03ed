-- Usernames and emails are compared exactly once folded in Python: "josé" is not "jose".
-- A 150-character name can case-fold to three times as many ("ß" -> "ss" and the like).
ALTER TABLE users
    MODIFY username_key VARCHAR(450) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
