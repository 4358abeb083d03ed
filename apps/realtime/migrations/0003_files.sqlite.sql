-- A message may carry one of its sender's files (the transfer app's): its id, and what the
-- room shows of it, copied when it was posted. file_removed is set when the file is deleted.
ALTER TABLE chat_messages ADD COLUMN file_id CHAR(32) NULL;
ALTER TABLE chat_messages ADD COLUMN file_name VARCHAR(255) NULL;
ALTER TABLE chat_messages ADD COLUMN file_size BIGINT NULL;
ALTER TABLE chat_messages ADD COLUMN file_sha256 CHAR(64) NULL;
ALTER TABLE chat_messages ADD COLUMN file_removed BOOLEAN NOT NULL DEFAULT 0;
CREATE INDEX chat_messages_file ON chat_messages (file_id, room_id);

-- Who has joined a room (opened its socket at least once): whom a file posted there is for.
CREATE TABLE chat_members (
    room_id INTEGER NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at TIMESTAMP NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id);
