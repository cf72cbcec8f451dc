-- Addresses reserved before boot, and readiness stages.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- The VM's IPv4 address when kvmctl reserved it in a managed network's DHCP (NULL on
-- networks kvmctl does not manage, where it is discovered), and the user cloud-init creates.
ALTER TABLE vms ADD COLUMN ip TEXT;
ALTER TABLE vms ADD COLUMN ssh_user TEXT NOT NULL DEFAULT 'kvmctl';
-- The guest's SSH host key fingerprint, pinned at the first login, and where it was learned
-- (`console`: cloud-init printed it on the serial console; `first use`: trusted then).
ALTER TABLE vms ADD COLUMN host_key TEXT;
ALTER TABLE vms ADD COLUMN host_key_source TEXT;

-- When each readiness stage was reached, per boot: defined, started, booting (first console
-- output), address, ssh_port, ssh_banner, ssh_login, cloud_init. A start clears them.
CREATE TABLE vm_stages (
    vm_id   TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    stage   TEXT NOT NULL,
    at_ms   BIGINT NOT NULL,
    detail  TEXT,
    PRIMARY KEY (vm_id, stage)
);
