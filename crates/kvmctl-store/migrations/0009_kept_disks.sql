-- Issue 14: root disks kept by `vm delete --keep-disk` (admins only). They still occupy
-- their pool and depend on their image, so they are recorded: gc leaves them alone, the
-- image cannot be removed under them, and a delete interrupted by a crash still keeps them.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE kept_disks (
    node TEXT NOT NULL,
    pool TEXT NOT NULL,
    volume TEXT NOT NULL,
    owner TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    image TEXT NOT NULL,
    disk_gib BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (node, pool, volume)
);
