-- The admin user list filters on is_active or is_admin and lists the newest first:
-- with these it seeks straight to a page of matches, at any table size.
CREATE INDEX users_active_created ON users (is_active, created_at);
CREATE INDEX users_admin_created ON users (is_admin, created_at);
