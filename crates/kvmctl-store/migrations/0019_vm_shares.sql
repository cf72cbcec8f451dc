-- Issue 19: host directories shared with VMs over virtio-fs (admins only). `source` is the
-- resolved host path (no symlinks), checked under the daemon's `share_roots` when recorded.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE vm_shares (
    vm_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    source TEXT NOT NULL,
    readonly INTEGER NOT NULL,
    mount TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vm_id, tag)
);
