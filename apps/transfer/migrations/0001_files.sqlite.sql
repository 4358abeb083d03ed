-- depends: accounts:0001_users
-- Files and unfinished uploads (one row each: an upload becomes a file in place),
-- and the share links that let others download a file.
CREATE TABLE transfer_files (
    id CHAR(32) NOT NULL PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename VARCHAR(255) NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    size INTEGER NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    state VARCHAR(16) NOT NULL,
    sha256 CHAR(64) NULL,
    expected_sha256 CHAR(64) NULL,
    metadata TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NULL,
    completed_at TIMESTAMP NULL
);
CREATE INDEX transfer_files_owner ON transfer_files (owner_id, state, created_at);
CREATE INDEX transfer_files_expiry ON transfer_files (state, expires_at);

CREATE TABLE transfer_shares (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id CHAR(32) NOT NULL REFERENCES transfer_files (id) ON DELETE CASCADE,
    token_hash CHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP NULL
);
CREATE UNIQUE INDEX transfer_shares_token ON transfer_shares (token_hash);
CREATE INDEX transfer_shares_file ON transfer_shares (file_id);
