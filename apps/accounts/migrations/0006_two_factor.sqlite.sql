-- A second factor per user (TOTP, RFC 6238) and its single-use recovery codes.
-- confirmed_at is NULL while an enrolment waits for its first code; last_step is the
-- newest 30-second step a code was accepted for, so that no code works twice.
CREATE TABLE two_factor (
    user_id INTEGER NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_encrypted VARCHAR(255) NOT NULL,
    last_step BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    confirmed_at TIMESTAMP NULL
);

CREATE TABLE recovery_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash CHAR(64) NOT NULL,
    used_at TIMESTAMP NULL
);
CREATE UNIQUE INDEX recovery_codes_user_hash ON recovery_codes (user_id, code_hash);
