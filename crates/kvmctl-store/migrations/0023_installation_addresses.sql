-- Issue 20: the installation's id, made by the first daemon that opens the database and
-- shared by every daemon on it. Domains carry it in their metadata, so two installations on
-- one libvirt never take each other's domains for debris. One row (`one` = 1).
CREATE TABLE installation (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- An address is one VM's on its node's network. One daemon picks addresses under a lock;
-- several daemons on one database (each picking from the rows it reads) are kept apart by
-- this index: the second insert of an address fails, and that create picks again.
CREATE UNIQUE INDEX vms_address ON vms (node, network, ip);
