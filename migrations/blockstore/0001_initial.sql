-- The node-local block index: where each IPFS block's bytes are. Never shared between nodes.
-- A raw leaf is a byte range of a blob file (its bytes are never stored twice); interior and
-- other blocks are stored inline.
CREATE TABLE blocks (
    multihash BLOB PRIMARY KEY,
    codec     INTEGER NOT NULL,
    blob      TEXT,
    offset    INTEGER,
    length    INTEGER NOT NULL CHECK (length >= 0),
    data      BLOB,
    -- For an inline block: what it was recorded for (a blob digest, or an image's untagged
    -- root CID), so the gateway can tell whether it may leave the node.
    owner     TEXT,
    -- Seconds since the epoch; a GC spares blocks younger than its grace period, since the
    -- metadata that will reference them may not be committed yet.
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    CHECK ((blob IS NULL AND offset IS NULL AND data IS NOT NULL)
        OR (blob IS NOT NULL AND offset IS NOT NULL AND data IS NULL))
) WITHOUT ROWID;
CREATE INDEX blocks_by_blob ON blocks(blob) WHERE blob IS NOT NULL;

-- Recursive pins made through the Kubo-compatible RPC (pin/add, dag/import, add): their DAGs are
-- kept by a GC and served publicly, as a Kubo node serves what it pins.
CREATE TABLE pins (
    cid        TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
) WITHOUT ROWID;
