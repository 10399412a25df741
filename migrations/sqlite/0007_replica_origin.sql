-- The peer ID of the registry node whose signed IPFS Cluster pins created this repository here
-- (a replica); NULL: made on this registry. Later pins write into a replica only if signed by
-- the same node, its visibility follows only that node's pins, and never into a repository
-- made here.
ALTER TABLE repositories ADD COLUMN replica_of TEXT;
