-- depends: accounts:0001_users
-- Files and unfinished uploads (one row each: an upload becomes a file in place),
-- and the share links that let others download a file.
CREATE TABLE transfer_files (
    id CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    owner_id BIGINT UNSIGNED NOT NULL,
    filename VARCHAR(255) NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    size BIGINT UNSIGNED NOT NULL,
    received BIGINT UNSIGNED NOT NULL DEFAULT 0,
    state VARCHAR(16) CHARACTER SET ascii NOT NULL,
    sha256 CHAR(64) CHARACTER SET ascii NULL,
    expected_sha256 CHAR(64) CHARACTER SET ascii NULL,
    metadata TEXT NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    expires_at DATETIME(6) NULL,
    completed_at DATETIME(6) NULL,
    KEY transfer_files_owner (owner_id, state, created_at),
    KEY transfer_files_expiry (state, expires_at),
    CONSTRAINT transfer_files_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE transfer_shares (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    file_id CHAR(32) CHARACTER SET ascii NOT NULL,
    token_hash CHAR(64) CHARACTER SET ascii NOT NULL,
    created_at DATETIME(6) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    revoked_at DATETIME(6) NULL,
    UNIQUE KEY transfer_shares_token (token_hash),
    KEY transfer_shares_file (file_id),
    CONSTRAINT transfer_shares_file_fk FOREIGN KEY (file_id) REFERENCES transfer_files (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
