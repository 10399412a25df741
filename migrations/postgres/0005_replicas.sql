-- How many nodes IPFS Cluster keeps each of a repository's images on (`af registry replicas`);
-- NULL: the node's --replicas.
ALTER TABLE repositories ADD COLUMN replicas INTEGER;
