-- A second factor per user (TOTP, RFC 6238) and its single-use recovery codes.
-- confirmed_at is NULL while an enrolment waits for its first code; last_step is the
-- newest 30-second step a code was accepted for, so that no code works twice.
CREATE TABLE two_factor (
    user_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    secret_encrypted VARCHAR(255) NOT NULL,
    last_step BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL,
    confirmed_at DATETIME(6) NULL,
    CONSTRAINT two_factor_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE recovery_codes (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT UNSIGNED NOT NULL,
    code_hash CHAR(64) NOT NULL,
    used_at DATETIME(6) NULL,
    UNIQUE KEY recovery_codes_user_hash (user_id, code_hash),
    CONSTRAINT recovery_codes_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
