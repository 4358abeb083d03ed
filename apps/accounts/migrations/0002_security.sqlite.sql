-- Audit log, login attempts, API keys and password-reset tokens.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    actor_id INTEGER NULL,
    action VARCHAR(64) NOT NULL,
    target_user_id INTEGER NULL,
    detail VARCHAR(1000) NOT NULL DEFAULT '',
    ip VARCHAR(45) NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_created ON audit_log (created_at);
CREATE INDEX audit_log_action ON audit_log (action, created_at);
CREATE INDEX audit_log_target ON audit_log (target_user_id, created_at);

CREATE TABLE login_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username_key VARCHAR(150) NOT NULL,
    user_id INTEGER NULL,
    ip VARCHAR(45) NOT NULL,
    succeeded BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX login_attempts_created ON login_attempts (created_at, succeeded);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_id VARCHAR(32) NOT NULL,
    secret_hash CHAR(64) NOT NULL,
    secret_encrypted VARCHAR(255) NOT NULL,
    label VARCHAR(100) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP NULL,
    revoked_at TIMESTAMP NULL
);
CREATE UNIQUE INDEX api_keys_key_id ON api_keys (key_id);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE password_reset_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash CHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP NULL
);
CREATE UNIQUE INDEX password_reset_tokens_hash ON password_reset_tokens (token_hash);

CREATE INDEX users_created ON users (created_at);
CREATE INDEX users_last_login ON users (last_login_at);
