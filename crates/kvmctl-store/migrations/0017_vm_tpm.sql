-- Issue 19: an emulated TPM 2.0 per VM (`vm create --tpm`); libvirt keeps its state. Portable
-- SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE vms ADD COLUMN tpm INTEGER NOT NULL DEFAULT 0;
