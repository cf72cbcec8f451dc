-- The node agent a compute node runs (`kvmctl agent`): its https URL, or NULL when the node
-- has none (then only libvirt is reached there; forwards and console logs need the agent).
ALTER TABLE nodes ADD COLUMN agent TEXT;
