-- The last-admin rule locks the active admins (SELECT ... FOR UPDATE): through this
-- index only their rows are locked, not every row a table scan would pass.
CREATE INDEX users_admins ON users (is_admin, is_active);
