-- Issue 16: kvmctl's own snapshot tree. A row is written (state `creating`) before anything
-- is made on the node and removed last, so a crash at any step is finished or undone at
-- start-up. `parent` is the snapshot the VM was at when this one was taken; `vms.snapshot`
-- is where the VM is now (the parent of its next snapshot).
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    vm_id TEXT NOT NULL,
    name TEXT NOT NULL,
    parent TEXT,
    description TEXT NOT NULL,
    -- With RAM and device state (a saved-domain image beside the disk snapshot).
    memory BIGINT NOT NULL,
    -- `running` or `stopped`: what the VM was when the snapshot was taken.
    vm_state TEXT NOT NULL,
    -- `creating`, `ready` or `deleting`.
    state TEXT NOT NULL,
    -- Bytes of the memory image and NVRAM copy (the disk's share is counted with the disk).
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (vm_id, name)
);
ALTER TABLE vms ADD COLUMN snapshot TEXT;
