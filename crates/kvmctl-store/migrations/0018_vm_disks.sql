-- Issue 19: data disks (`kvmctl vm disk add`). A row is written (state `attaching`) before
-- its volume is made, so a crash leaves a row the reconciler undoes, never an unknown volume.
-- `vms.data_gib` is the sum of the VM's data disks, kept in the statement that admits each
-- one, so every quota and capacity sum counts root and data disks alike.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE vm_disks (
    vm_id TEXT NOT NULL,
    name TEXT NOT NULL,
    pool TEXT NOT NULL,
    volume TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    -- `virtio` or `scsi`.
    bus TEXT NOT NULL,
    -- The guest device, `vdc`... or `sdd`...
    target TEXT NOT NULL,
    -- `attaching`, `attached`, `detaching`.
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vm_id, name),
    UNIQUE (vm_id, target)
);
ALTER TABLE vms ADD COLUMN data_gib BIGINT NOT NULL DEFAULT 0;
