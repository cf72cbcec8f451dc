-- Issue 17: runs of `kvmctl test run`. A run is held by its runner's heartbeats; one whose
-- runner stops beating for `grace_seconds` is abandoned and its VMs (tagged `vms.test_run`)
-- are deleted. Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE test_runs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    -- The spec's name.
    name TEXT NOT NULL,
    -- `running`, `passed`, `failed`, `error` or `abandoned`.
    state TEXT NOT NULL,
    grace_seconds BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    -- The runner's result (JSON: cases, stages, checks), bounded by the daemon.
    summary TEXT
);
ALTER TABLE vms ADD COLUMN test_run TEXT;
