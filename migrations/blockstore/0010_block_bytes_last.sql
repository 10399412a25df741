-- Blocks in a rowid table, an inline block's bytes last in its row. In the WITHOUT ROWID table
-- before, a row was a key of the table's own b-tree: every comparison of a lookup with a row
-- holding an inline block read that whole row (up to 2 MiB of bytes) to compare one multihash,
-- so answering a want-have read several blocks whole. Now a lookup finds the rowid in the
-- multihash's index, whose entries are small, and reads the row's columns up to the one it
-- wants: with the bytes last, the owner and the age are read without them (a GC's scan of ages
-- no longer reads every inline block whole either).
CREATE TABLE blocks_by_rowid (
    multihash  BLOB NOT NULL PRIMARY KEY,
    codec      INTEGER NOT NULL,
    blob       TEXT,
    offset     INTEGER,
    length     INTEGER NOT NULL CHECK (length >= 0),
    owner_kind TEXT CHECK (owner_kind IN ('blob', 'image', 'pin')),
    owner      TEXT,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    data       BLOB,
    CHECK ((blob IS NULL AND offset IS NULL AND data IS NOT NULL)
        OR (blob IS NOT NULL AND offset IS NOT NULL AND data IS NULL))
);
INSERT INTO blocks_by_rowid (multihash, codec, blob, offset, length, owner_kind, owner, created_at, data)
    SELECT multihash, codec, blob, offset, length, owner_kind, owner, created_at, data FROM blocks ORDER BY multihash;
DROP TABLE blocks;
ALTER TABLE blocks_by_rowid RENAME TO blocks;
CREATE INDEX blocks_by_blob ON blocks(blob) WHERE blob IS NOT NULL;
