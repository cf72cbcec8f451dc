-- Issue 20: leases, for several daemons on one database (PostgreSQL). `leader` is held by
-- the daemon that runs the periodic work (reconciler, metering, hygiene, gc, test-run
-- reaper); `vm:NAME` by the daemon whose operation holds that VM busy. A holder renews its
-- leases while it lives; a lease past `expires_at` (its daemon died) may be taken by any
-- daemon. `token` is one acquisition, so a late release never frees a later one.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    -- The daemon instance (a random id per start).
    holder TEXT NOT NULL,
    token TEXT NOT NULL,
    -- What holds it: `leader`, `creating`, `deleting`, `reconciling`...
    op TEXT NOT NULL,
    -- Unix milliseconds.
    expires_at BIGINT NOT NULL
);
CREATE INDEX leases_holder ON leases (holder);
