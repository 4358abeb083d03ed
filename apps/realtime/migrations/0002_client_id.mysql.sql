-- A client names each message it sends (client_id); a resend after a dropped socket or
-- an outage carries the same name and finds the stored message instead of adding a twin.
ALTER TABLE chat_messages
    ADD COLUMN client_id VARCHAR(64) NULL,
    ADD UNIQUE KEY chat_messages_client (user_id, client_id);
