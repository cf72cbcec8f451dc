-- Images (with their template metadata), plans and VMs.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- An image is a volume in a node's storage pool that VMs' root disks use as their backing
-- file. Template fields (os_family ... boot_modes) say what the image is and how to boot it.
-- A direct-kernel image also has kernel and initrd volumes and a command line.
CREATE TABLE images (
    name           TEXT PRIMARY KEY,
    node           TEXT NOT NULL REFERENCES nodes (name),
    pool           TEXT NOT NULL,
    volume         TEXT NOT NULL,
    path           TEXT NOT NULL,
    format         TEXT NOT NULL,
    virtual_bytes  BIGINT NOT NULL,
    file_bytes     BIGINT NOT NULL,
    sha256         TEXT NOT NULL,
    source         TEXT NOT NULL,
    os_family      TEXT,
    os_version     TEXT,
    cloud_init     BOOLEAN NOT NULL,
    default_user   TEXT,
    boot_modes     TEXT NOT NULL,
    kernel_volume  TEXT,
    initrd_volume  TEXT,
    cmdline        TEXT,
    created_at     BIGINT NOT NULL
);

-- Sizes users pick from; an admin may edit them. Prices come with metering.
CREATE TABLE plans (
    name        TEXT PRIMARY KEY,
    vcpus       INTEGER NOT NULL,
    memory_mib  BIGINT NOT NULL,
    disk_gib    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
INSERT INTO plans (name, vcpus, memory_mib, disk_gib, created_at) VALUES
    ('micro', 1, 512, 5, 0),
    ('small', 1, 1024, 10, 0),
    ('medium', 2, 2048, 20, 0),
    ('large', 4, 4096, 40, 0);

-- A VM. `state` mirrors libvirt, plus kvmctl's transitional states (creating, deleting, ...):
-- a row found in a transitional state at start-up is an operation a crash interrupted, and
-- the reconciler finishes or undoes it. Volume and domain names are recorded so that undo
-- and delete never have to guess.
CREATE TABLE vms (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    owner          TEXT NOT NULL,
    node           TEXT NOT NULL REFERENCES nodes (name),
    image          TEXT NOT NULL REFERENCES images (name),
    plan           TEXT,
    vcpus          INTEGER NOT NULL,
    memory_mib     BIGINT NOT NULL,
    disk_gib       BIGINT NOT NULL,
    network        TEXT NOT NULL,
    mac            TEXT NOT NULL,
    firmware       TEXT NOT NULL,
    pool           TEXT NOT NULL,
    root_volume    TEXT NOT NULL,
    seed_volume    TEXT NOT NULL,
    vnc_password   TEXT NOT NULL,
    state          TEXT NOT NULL,
    error          TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX vms_image ON vms (image);
