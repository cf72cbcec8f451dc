-- Issue 9: nodes carry capacity (read from libvirt), overcommit, reservations and labels;
-- hourly usage records (one per VM-hour, never changed); the metering cursor.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE nodes ADD COLUMN cpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN memory_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN disk_gib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN reserved_cpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN reserved_memory_mib BIGINT NOT NULL DEFAULT 0;
-- Hundredths: 200 is 2.0x.
ALTER TABLE nodes ADD COLUMN cpu_overcommit BIGINT NOT NULL DEFAULT 200;
ALTER TABLE nodes ADD COLUMN memory_overcommit BIGINT NOT NULL DEFAULT 100;
-- Labels as sorted `key=value` pairs joined by commas (keys and values are DNS-label-like).
ALTER TABLE nodes ADD COLUMN labels TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN refreshed_at BIGINT;
-- Why the last capacity refresh failed (the node is then down for placement).
ALTER TABLE nodes ADD COLUMN error TEXT;

CREATE TABLE usage_records (
    vm_id         TEXT NOT NULL,
    hour          BIGINT NOT NULL,
    vm_name       TEXT NOT NULL,
    owner         TEXT NOT NULL,
    node          TEXT NOT NULL,
    state         TEXT NOT NULL,
    vcpus         BIGINT NOT NULL,
    memory_mib    BIGINT NOT NULL,
    disk_gib      BIGINT NOT NULL,
    plan          TEXT,
    price_hourly  TEXT NOT NULL,
    cost          TEXT NOT NULL,
    cost_micros   BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (vm_id, hour)
);
CREATE INDEX usage_records_owner_hour ON usage_records (owner, hour);
CREATE INDEX usage_records_hour ON usage_records (hour);

CREATE TABLE meter_state (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);
