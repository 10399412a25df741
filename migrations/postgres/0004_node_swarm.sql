-- Where each node's swarm listens (multiaddrs, space-separated): a node that lacks a blob
-- fetches it over Bitswap from the nodes that hold it, and nodes sharing this database trust
-- each other's peer IDs (their `id`) with private content.
ALTER TABLE nodes ADD COLUMN swarm_addrs TEXT NOT NULL DEFAULT '';
