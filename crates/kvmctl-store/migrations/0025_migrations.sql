-- A VM being migrated: the node it moves to. While set, the VM counts against both nodes'
-- capacity (admission reads `node` and `migrating_to`), so no create takes what the move
-- needs; the move ends by setting `node` and clearing it, a failure by clearing it.
ALTER TABLE vms ADD COLUMN migrating_to TEXT;
