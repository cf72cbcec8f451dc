-- Issue 18: the web console. Passwords (argon2id PHC strings; NULL: no password login) and
-- browser sessions, which are tokens of their own kind (hashed, expiring, revoked on logout,
-- never listed with API tokens). Portable SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE users ADD COLUMN password_hash TEXT;
-- 1: an admin set this password; the user must choose a new one at the next login.
ALTER TABLE users ADD COLUMN password_change INTEGER NOT NULL DEFAULT 0;
-- `api` or `session`.
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
