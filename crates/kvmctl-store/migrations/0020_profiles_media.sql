-- Issue 19: templates' TPM and guest profile defaults (`windows-11`), and what a VM boots
-- besides its disks: its profile, the installer ISO it boots first and extra ISOs (virtio-win),
-- all images kept from removal while a VM uses them.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE images ADD COLUMN tpm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN profile TEXT;
CREATE TABLE vm_media (
    vm_id TEXT PRIMARY KEY,
    -- `windows-11`, or NULL for none.
    profile TEXT,
    -- The installer ISO's image, booted first; NULL when the VM boots its disk.
    installer TEXT,
    -- Further ISO images attached as CD-ROMs, comma-separated in order.
    extras TEXT NOT NULL
);
