-- A memory snapshot of a guest whose agent was connected when it was taken: a warm clone of
-- it is re-identified through the agent (its NIC wakes with the link down), else over SSH at
-- the source's address (its NIC wakes with the filter widened to it). Portable SQL.
ALTER TABLE snapshots ADD COLUMN agent INTEGER NOT NULL DEFAULT 0;
