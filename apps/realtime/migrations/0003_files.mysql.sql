-- A message may carry one of its sender's files (the transfer app's): its id, and what the
-- room shows of it, copied when it was posted. file_removed is set when the file is deleted.
ALTER TABLE chat_messages
    ADD COLUMN file_id CHAR(32) CHARACTER SET ascii NULL,
    ADD COLUMN file_name VARCHAR(255) NULL,
    ADD COLUMN file_size BIGINT UNSIGNED NULL,
    ADD COLUMN file_sha256 CHAR(64) CHARACTER SET ascii NULL,
    ADD COLUMN file_removed BOOLEAN NOT NULL DEFAULT FALSE,
    ADD KEY chat_messages_file (file_id, room_id);

-- Who has joined a room (opened its socket at least once): whom a file posted there is for.
CREATE TABLE chat_members (
    room_id BIGINT UNSIGNED NOT NULL,
    user_id BIGINT UNSIGNED NOT NULL,
    joined_at DATETIME(6) NOT NULL,
    PRIMARY KEY (room_id, user_id),
    KEY chat_members_user (user_id),
    CONSTRAINT chat_members_room_fk FOREIGN KEY (room_id) REFERENCES chat_rooms (id) ON DELETE CASCADE,
    CONSTRAINT chat_members_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
