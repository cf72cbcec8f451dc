-- Issue 21: labels on VMs (`role=web`, `kvmctl.lab=web-lab`) and managed networks.
-- whole by `PUT /v1/vms/{name}/labels`. `kvmctl apply` marks what a lab file made with them.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE vm_labels (
    vm_id TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (vm_id, key)
);

-- Labels on managed networks, a JSON object (`{"kvmctl.lab": "web-lab"}`), set at create.
ALTER TABLE networks ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
