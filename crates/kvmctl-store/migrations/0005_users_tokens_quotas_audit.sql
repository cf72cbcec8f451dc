-- Users, API tokens (stored only as hashes), per-user quota overrides, the audit log; plans
-- gain an hourly price, a sort order and an active flag.
CREATE TABLE users (
    name           TEXT PRIMARY KEY,
    -- admin | user
    role           TEXT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0,
    -- 1: may size VMs with vcpus/memory/disk beside or instead of a plan.
    custom_sizing  INTEGER NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL
);
-- The local administrator: root on the daemon's unix socket acts as this user, and every
-- resource made before users existed belongs to it.
INSERT INTO users (name, role, disabled, custom_sizing, created_at) VALUES ('admin', 'admin', 0, 1, 0);

CREATE TABLE tokens (
    -- The public half of a token (`kvm_<id>_<secret>`), shown in lists.
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users (name),
    description   TEXT NOT NULL,
    -- SHA-256 of the secret half, hex; the secret itself is never stored.
    hash          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX tokens_user ON tokens (user_name);

-- Overrides of the configured default quotas; NULL keeps the default.
CREATE TABLE quotas (
    user_name       TEXT PRIMARY KEY REFERENCES users (name),
    max_vms         BIGINT,
    max_vcpus       BIGINT,
    max_memory_mib  BIGINT,
    max_disk_gib    BIGINT,
    max_forwards    BIGINT
);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    -- NULL: the caller was not authenticated.
    user_name   TEXT,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    -- ok, or the error kind (invalid_request, conflict, ...)
    outcome     TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_user ON audit (user_name, at);

ALTER TABLE plans ADD COLUMN price_hourly TEXT NOT NULL DEFAULT '0';
ALTER TABLE plans ADD COLUMN sort_order BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
UPDATE plans SET sort_order = vcpus * 100000 + memory_mib;
