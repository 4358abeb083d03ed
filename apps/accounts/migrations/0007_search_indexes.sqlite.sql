-- A search of the admin user list reads one of these per searched column: the matches'
-- entries alone carry every column a page sorts or filters on (a covering index).
CREATE INDEX users_search_username
    ON users (username_key, created_at, last_login_at, is_active, is_admin, email);
CREATE INDEX users_search_email
    ON users (email, created_at, last_login_at, is_active, is_admin, username_key);
