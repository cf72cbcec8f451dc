-- Compute nodes: libvirt hosts reached by URI. The local node is registered at start-up.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE nodes (
    name        TEXT PRIMARY KEY,
    uri         TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL DEFAULT 'active',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
