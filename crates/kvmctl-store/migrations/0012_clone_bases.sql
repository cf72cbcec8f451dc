-- Issue 16: the read-only bases of linked clones. A base is a qcow2 file in the source VM's
-- pool holding the source's disk at one instant (a snapshot, or the moment of the clone)
-- over the source's image; linked clones are overlays on it. It outlives its source and is
-- removed with its last clone. Its bytes count in its owner's disk quota beside snapshots.
-- The row is written (`creating`) before the file is made; `deleting` before it is removed.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE clone_bases (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    source_vm TEXT NOT NULL,
    -- The source's snapshot it was made from (NULL: the source's disk at clone time; such a
    -- base is never shared).
    snapshot TEXT,
    pool TEXT NOT NULL,
    volume TEXT NOT NULL,
    -- `creating`, `ready` or `deleting`.
    state TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- The base a linked clone's root disk is an overlay on.
ALTER TABLE vms ADD COLUMN base TEXT;
