-- Issue 14: a VM's desired power state. Set when a start, reboot or create boots it;
-- cleared when its owner stops it (with kvmctl, or from inside the guest). A VM that should
-- run and that a failure shut off (QEMU killed, the host or libvirtd down) is started again.
-- VMs running when this migration applies are wanted running.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE vms ADD COLUMN run_wanted BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE vms SET run_wanted = TRUE WHERE state = 'running';
