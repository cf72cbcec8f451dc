-- Issue 19: storage pools kvmctl made (`kvmctl pool create`): directories and LVM volume
-- groups on a node. The daemon's own pool (setting `pool`) is not listed here.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    -- `dir` or `lvm`.
    kind TEXT NOT NULL,
    -- The directory, or the volume group's name.
    source TEXT NOT NULL,
    -- Devices the volume group was made on (comma-separated), for LVM pools kvmctl built.
    devices TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
