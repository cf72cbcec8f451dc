-- Networks kvmctl manages (kvmctl network create), and port forwards.
CREATE TABLE networks (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    node        TEXT NOT NULL,
    -- 1: NAT (libvirt route mode + kvmctl's masquerade); 0: isolated.
    nat         INTEGER NOT NULL,
    -- 192.168.100.0/24
    subnet      TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    dhcp_start  TEXT NOT NULL,
    dhcp_end    TEXT NOT NULL,
    -- The bridge libvirt named, once the network is defined.
    bridge      TEXT,
    -- creating | active | deleting
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A host port belongs to one forward per node and protocol: the primary key is what makes
-- two concurrent allocations unable to get the same port.
CREATE TABLE forwards (
    node        TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    host_port   INTEGER NOT NULL,
    vm_id       TEXT NOT NULL,
    guest_port  INTEGER NOT NULL,
    -- The pool the host port came from: ssh, vnc or general.
    pool        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (node, protocol, host_port)
);
CREATE INDEX forwards_vm ON forwards (vm_id);
