-- Issue 18: SSH public keys saved in a user's profile; the web console's create form offers
-- them. One row per key; a user saves a key once (by its SHA-256 fingerprint). Portable SQL:
-- runs unchanged on SQLite and PostgreSQL.
CREATE TABLE ssh_keys (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    -- The user's label for it (`laptop`).
    name TEXT NOT NULL,
    -- One OpenSSH public key line, as checked by the daemon.
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_name, fingerprint)
);
