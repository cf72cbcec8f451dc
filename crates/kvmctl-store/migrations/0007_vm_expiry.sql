-- Issue 9: ephemeral VMs (`vm create --ttl`) are deleted when they expire; stopped VMs may
-- be cleaned up after a configured age, with a warning first.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE vms ADD COLUMN expires_at BIGINT;
ALTER TABLE vms ADD COLUMN cleanup_warned_at BIGINT;
