-- The peer ID of the registry node whose signed IPFS Cluster pins created this repository here
-- (a replica); NULL: made on this registry. Later pins write into a replica only if signed by
-- the same node, its visibility follows only that node's pins, and never into a repository
-- made here. replica_stamp: the signing time (ms) of the newest claim applied, so an older
-- claim replayed by a cluster peer changes nothing.
ALTER TABLE repositories ADD COLUMN replica_of TEXT;
ALTER TABLE repositories ADD COLUMN replica_stamp INTEGER NOT NULL DEFAULT 0;
