//! The node-local block index: for each IPFS block, by multihash, where its bytes are and what it
//! was recorded for, and the read side of blob files, so that `get` returns verified bytes and
//! `has`/`size` answer without reading any. Split by what it keeps: this file the blocks
//! themselves, `owners` what else a block was recorded for, `pins`, `ipns` records, and `sweep`
//! (what a GC removes). Who may have a block is the block service's (`exposure`).
//!
//! Raw leaves of a blob's UnixFS DAG are byte ranges of the blob file, so leaf data is never
//! stored twice; dag-pb nodes are stored inline. It is its own SQLite file (`blocks.sqlite`),
//! never part of the shared metadata store: which blocks a node holds is that node's business.
//! This module only records and locates; reading and verifying the bytes is the registry's
//! (which knows the blob files).

mod ipns;
mod owners;
mod pins;
mod reached;
mod sweep;

use crate::multihash::verify;
pub use pins::PinTag;

use crate::digest::Digest;
use crate::unixfs::DagBlock;
use cid::Cid;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/blockstore/0001_initial.sql")),
    (2, include_str!("../../migrations/blockstore/0002_typed_owner.sql")),
    (3, include_str!("../../migrations/blockstore/0003_more_owners.sql")),
    (4, include_str!("../../migrations/blockstore/0004_pin_tags.sql")),
    (5, include_str!("../../migrations/blockstore/0005_direct_pins.sql")),
    (6, include_str!("../../migrations/blockstore/0006_ipns_records.sql")),
    (7, include_str!("../../migrations/blockstore/0007_owners_by_owner.sql")),
    (8, include_str!("../../migrations/blockstore/0008_pins_from_trusted_peers.sql")),
    (9, include_str!("../../migrations/blockstore/0009_pinned_at.sql")),
    (10, include_str!("../../migrations/blockstore/0010_block_bytes_last.sql")),
];
/// Connections that answer lookups side by side (WAL readers never wait for each other).
const READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BlockIndexError {
    #[error("block index failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("block index holds an invalid value: {0}")]
    Corrupt(String),
    #[error("block index task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("block {cid} is corrupt: {detail}")]
    Mismatch { cid: String, detail: String },
}

impl BlockIndexError {
    /// The disk is full: the write may succeed once space returns.
    pub fn is_full(&self) -> bool {
        match self {
            BlockIndexError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => f.code == rusqlite::ErrorCode::DiskFull,
            BlockIndexError::Storage(s) => s.is_full(),
            _ => false,
        }
    }
}

/// Where a block's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `len` bytes at `offset` of the blob file of `blob`.
    Blob {
        blob: Digest,
        offset: u64,
        len: u64,
    },
    Inline(Vec<u8>),
}

/// What a block was recorded for: it decides who may read the block (see `exposure`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A leaf or node of this blob's DAG.
    Blob(Digest),
    /// A block of the image DAG whose untagged root is this CID.
    Image(String),
    /// Added through the RPC (`add`, `block/put`, `dag/import`) for this root.
    Pin(String),
    /// Recorded for nothing in particular.
    Nothing,
}

impl Owner {
    /// From its two columns, `owner_kind` and `owner`.
    fn from_columns(kind: Option<&str>, value: Option<String>) -> Result<Owner, BlockIndexError> {
        Ok(match (kind, value) {
            (Some("blob"), Some(d)) => Owner::Blob(d.parse().map_err(|e| BlockIndexError::Corrupt(format!("owner {d:?}: {e}")))?),
            (Some("image"), Some(cid)) => Owner::Image(cid),
            (Some("pin"), Some(cid)) => Owner::Pin(cid),
            (None, _) => Owner::Nothing,
            (kind, value) => return Err(BlockIndexError::Corrupt(format!("owner {kind:?} {value:?}"))),
        })
    }

    /// Its two columns, `owner_kind` and `owner`.
    fn columns(&self) -> (Option<&'static str>, Option<String>) {
        match self {
            Owner::Blob(d) => (Some("blob"), Some(d.to_string())),
            Owner::Image(cid) => (Some("image"), Some(cid.clone())),
            Owner::Pin(cid) => (Some("pin"), Some(cid.clone())),
            Owner::Nothing => (None, None),
        }
    }
}

fn location(blob: Option<String>, offset: Option<i64>, len: i64, data: Option<Vec<u8>>) -> Result<Location, BlockIndexError> {
    match (blob, offset, data) {
        (Some(blob), Some(offset), None) => {
            Ok(Location::Blob { blob: blob.parse().map_err(|e| BlockIndexError::Corrupt(format!("{e}")))?, offset: offset as u64, len: len as u64 })
        }
        (None, None, Some(data)) => Ok(Location::Inline(data)),
        _ => Err(BlockIndexError::Corrupt("a block with neither or both locations".into())),
    }
}

/// Blocks at most this large are read and hashed on the calling thread.
const INLINE_READ_MAX: u64 = 64 << 10;

/// Deletes every owner row of a block whose row is gone: a block's owners are only there to
/// decide whether it may leave the node, and must not outlive it.
fn drop_owners(conn: &rusqlite::Connection, multihash: &[u8]) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM block_owners WHERE multihash = ?1")?.execute([multihash])
}

/// `len` bytes of `blob`'s file at `offset`, verified against `cid`.
fn read_range(store: &crate::storage::BlobStore, cid: &Cid, blob: &Digest, offset: u64, len: u64) -> Result<Option<bytes::Bytes>, BlockIndexError> {
    let missing = || BlockIndexError::Mismatch { cid: cid.to_string(), detail: "its blob file is missing".into() };
    let (file, _) = store.open_blob(blob)?.ok_or_else(missing)?;
    let bytes =
        crate::storage::read_exact_at(&file, offset, len).map_err(|source| crate::storage::StorageError::Io { path: store.blob_path(blob).display().to_string(), source })?;
    checked(cid, bytes).map(Some)
}

/// `bytes` if they match `cid`, else the mismatch (logged: it means corruption on disk).
/// `bytes` if they are block `cid`'s; a mismatch is logged and an error.
pub fn checked(cid: &Cid, bytes: bytes::Bytes) -> Result<bytes::Bytes, BlockIndexError> {
    if let Err(e) = verify(cid, &bytes) {
        tracing::error!(%cid, error = %e, "block bytes do not match the CID");
        return Err(BlockIndexError::Mismatch { cid: cid.to_string(), detail: e.to_string() });
    }
    Ok(bytes)
}

/// Another owner of a block already recorded for someone else (run after the insert).
const ADD_OWNER: &str = "INSERT OR IGNORE INTO block_owners (multihash, owner_kind, owner)
     SELECT ?1, ?2, ?3 WHERE ?2 IS NOT NULL
       AND EXISTS (SELECT 1 FROM blocks WHERE multihash = ?1 AND (owner_kind IS NOT ?2 OR owner IS NOT ?3))";

/// An inline block; recording a known one again makes it young for the GC.
const INSERT_INLINE: &str = "INSERT INTO blocks (multihash, codec, length, data, owner_kind, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT DO UPDATE SET created_at = unixepoch()";

pub struct BlockIndex {
    /// Writes (and the few reads that must see them in the same transaction).
    conn: Arc<Mutex<Connection>>,
    /// Lookups, several at once.
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// For connections of their own (a GC's walk must not hold the one readers use).
    path: std::path::PathBuf,
    /// Where leaves' bytes are.
    blobs: crate::storage::BlobStore,
}

/// Blocks looked at or deleted per transaction by a sweep or a scrub.
const BATCH: i64 = 2000;

impl BlockIndex {
    pub fn open(path: &Path, blobs: crate::storage::BlobStore) -> Result<Self, BlockIndexError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Large pages: inline blocks of up to 2 MiB are read and checkpointed in 64 KiB steps
        // instead of 4 KiB ones (a page size only takes effect on a new database).
        conn.execute_batch("PRAGMA page_size = 65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        conn.execute_batch(crate::storage::SQLITE_MMAP)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (version, sql) in MIGRATIONS {
            if *version > current {
                tx.execute_batch(sql)?;
                tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
            }
        }
        tx.commit()?;
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open(path)?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c.execute_batch(crate::storage::SQLITE_MMAP)?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>, BlockIndexError>>()?;
        Ok(BlockIndex { conn: Arc::new(Mutex::new(conn)), readers: Arc::new(readers), next_reader: std::sync::atomic::AtomicUsize::new(0), path: path.to_path_buf(), blobs })
    }

    /// A lookup on one of the reader connections: a free one if there is, else the next in turn.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T, BlockIndexError> + Send + 'static) -> Result<T, BlockIndexError> {
        let readers = self.readers.clone();
        let start = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let n = readers.len();
            let free = (0..n).find_map(|i| readers[(start + i) % n].try_lock().ok());
            let conn = match free {
                Some(c) => c,
                None => readers[start % n].lock().expect("block index reader"),
            };
            f(&conn)
        })
        .await
        .map_err(|e| BlockIndexError::Task(e.to_string()))?
    }

    /// A point lookup (one row by primary key, microseconds from SQLite's page cache): run on
    /// the calling thread when a reader connection is free, since handing it to a blocking
    /// thread and back costs more than the query (two thread wake-ups, which dominated a raw
    /// block GET); on a blocking thread otherwise.
    async fn lookup<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T, BlockIndexError> + Send + 'static) -> Result<T, BlockIndexError> {
        let start = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        if let Some(conn) = (0..n).find_map(|i| self.readers[(start + i) % n].try_lock().ok()) {
            return f(&conn);
        }
        self.read(f).await
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T, BlockIndexError> + Send + 'static) -> Result<T, BlockIndexError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("block index lock"))).await.map_err(|e| BlockIndexError::Task(e.to_string()))?
    }

    /// Records every block of the DAG of `blob` (leaves as ranges of its file), in one
    /// transaction. Blocks already known keep their first location but count as new
    /// again for a GC's grace period (they are about to be referenced).
    pub async fn record_blob_dag(&self, blob: &Digest, blocks: Vec<DagBlock>) -> Result<(), BlockIndexError> {
        let blob = blob.to_string();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut leaf = tx.prepare_cached(
                    "INSERT INTO blocks (multihash, codec, blob, offset, length, owner_kind, owner) VALUES (?1, ?2, ?3, ?4, ?5, 'blob', ?3)
                     ON CONFLICT DO UPDATE SET created_at = unixepoch()",
                )?;
                let mut node = tx.prepare_cached(INSERT_INLINE)?;
                let mut owner = tx.prepare_cached(ADD_OWNER)?;
                for b in &blocks {
                    let cid = match b {
                        DagBlock::Leaf { cid, offset, len } => {
                            leaf.execute(params![cid.hash().to_bytes(), cid.codec() as i64, blob, *offset as i64, *len as i64])?;
                            cid
                        }
                        DagBlock::Node { cid, bytes } => {
                            node.execute(params![cid.hash().to_bytes(), cid.codec() as i64, bytes.len() as i64, bytes, "blob", blob])?;
                            cid
                        }
                    };
                    owner.execute(params![cid.hash().to_bytes(), "blob", blob])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records blocks held inline (image layouts, manifests, imported blocks), in one
    /// transaction. Blocks already known keep their first location but count as new
    /// again for a GC's grace period (they are about to be referenced).
    pub async fn record_inline<B: AsRef<[u8]> + Send + 'static>(&self, blocks: Vec<(Cid, B)>, owner: Owner) -> Result<(), BlockIndexError> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut node = tx.prepare_cached(INSERT_INLINE)?;
                let mut also = tx.prepare_cached(ADD_OWNER)?;
                let (kind, value) = owner.columns();
                for (cid, bytes) in &blocks {
                    let bytes = bytes.as_ref();
                    node.execute(params![cid.hash().to_bytes(), cid.codec() as i64, bytes.len() as i64, bytes, kind, value])?;
                    also.execute(params![cid.hash().to_bytes(), kind, value])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The bytes of block `cid` if this node holds it, verified against the CID: a block whose
    /// bytes no longer match is an error, never data.
    pub async fn get(&self, cid: &Cid) -> Result<Option<bytes::Bytes>, BlockIndexError> {
        match self.locate(cid).await? {
            Some(location) => self.read_at(cid, location).await,
            None => Ok(None),
        }
    }

    /// The bytes at `location` (from [`BlockIndex::locate_owned`]), verified against `cid`.
    pub async fn read_at(&self, cid: &Cid, location: Location) -> Result<Option<bytes::Bytes>, BlockIndexError> {
        match location {
            Location::Inline(data) => checked(cid, bytes::Bytes::from(data)).map(Some),
            // Small reads (from the page cache, almost always) cost less than the hand-off to a
            // blocking thread; large ones and their hashing go there.
            Location::Blob { blob, offset, len } if len <= INLINE_READ_MAX => read_range(&self.blobs, cid, &blob, offset, len),
            Location::Blob { blob, offset, len } => {
                let (store, cid) = (self.blobs.clone(), *cid);
                tokio::task::spawn_blocking(move || read_range(&store, &cid, &blob, offset, len)).await.map_err(|e| BlockIndexError::Task(e.to_string()))?
            }
        }
    }

    /// Where the block of `cid` is, if this node has it.
    pub async fn locate(&self, cid: &Cid) -> Result<Option<Location>, BlockIndexError> {
        Ok(self.locate_owned(cid).await?.map(|(location, _)| location))
    }

    /// What the block of `cid` was recorded for, if this node has it: one lookup that does not
    /// read an inline block's bytes (what a want-have needs).
    pub async fn owner_of(&self, cid: &Cid) -> Result<Option<Owner>, BlockIndexError> {
        let mh = cid.hash().to_bytes();
        self.lookup(move |conn| {
            let row = conn
                .prepare_cached("SELECT owner_kind, owner FROM blocks WHERE multihash = ?1")?
                .query_row([mh], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?)))
                .optional()?;
            row.map(|(kind, owner)| Owner::from_columns(kind.as_deref(), owner)).transpose()
        })
        .await
    }

    /// Where the block of `cid` is and what it was recorded for, in one lookup.
    pub async fn locate_owned(&self, cid: &Cid) -> Result<Option<(Location, Owner)>, BlockIndexError> {
        let mh = cid.hash().to_bytes();
        self.lookup(move |conn| {
            let row = conn
                .prepare_cached("SELECT blob, offset, length, data, owner_kind, owner FROM blocks WHERE multihash = ?1")?
                .query_row([mh], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })
                .optional()?;
            row.map(|(blob, offset, len, data, kind, owner)| {
                let owner = Owner::from_columns(kind.as_deref(), owner)?;
                Ok((location(blob, offset, len, data)?, owner))
            })
            .transpose()
        })
        .await
    }

    /// The size of block `cid` if this node has it, without reading or hashing its bytes (what
    /// a peer's "do you have it?" needs).
    pub async fn size(&self, cid: &Cid) -> Result<Option<u64>, BlockIndexError> {
        let mh = cid.hash().to_bytes();
        self.lookup(move |conn| Ok(conn.prepare_cached("SELECT length FROM blocks WHERE multihash = ?1")?.query_row([mh], |r| r.get::<_, i64>(0)).optional()?.map(|n| n as u64)))
            .await
    }

    /// Whether this node has block `cid` (see [`BlockIndex::size`]).
    pub async fn has(&self, cid: &Cid) -> Result<bool, BlockIndexError> {
        Ok(self.size(cid).await?.is_some())
    }

    /// (number of blocks, bytes of inline blocks) for `repo/stat`.
    pub async fn stat(&self) -> Result<(u64, u64), BlockIndexError> {
        self.run(|conn| Ok(conn.query_row("SELECT count(*), coalesce(sum(length(data)), 0) FROM blocks", [], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(codec: u64, data: &[u8]) -> Cid {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(data).into();
        crate::unixfs::cid_v1(codec, &digest)
    }

    #[tokio::test]
    async fn owners_written_as_strings_are_migrated_to_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.sqlite");
        let digest = "sha256:".to_string() + &"ab".repeat(32);
        let (leaf, node, image, pinned, plain) = (cid(0x55, b"leaf"), cid(0x70, b"node"), cid(0x70, b"image"), cid(0x55, b"pinned"), cid(0x55, b"plain"));
        {
            // A version-1 index, as an older node left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
            let insert = "INSERT INTO blocks (multihash, codec, blob, offset, length, data, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
            conn.execute(insert, params![leaf.hash().to_bytes(), 0x55, digest, 0, 4, None::<Vec<u8>>, None::<String>]).unwrap();
            conn.execute(insert, params![node.hash().to_bytes(), 0x70, None::<String>, None::<i64>, 4, b"node".to_vec(), digest]).unwrap();
            conn.execute(insert, params![image.hash().to_bytes(), 0x70, None::<String>, None::<i64>, 5, b"image".to_vec(), "bafyimage"]).unwrap();
            conn.execute(insert, params![pinned.hash().to_bytes(), 0x55, None::<String>, None::<i64>, 6, b"pinned".to_vec(), "pin bafyroot"]).unwrap();
            conn.execute(insert, params![plain.hash().to_bytes(), 0x55, None::<String>, None::<i64>, 5, b"plain".to_vec(), None::<String>]).unwrap();
        }
        let index = BlockIndex::open(&path, crate::storage::BlobStore::open(dir.path()).unwrap()).unwrap();
        let owner = |c: Cid| {
            let index = &index;
            async move { index.locate_owned(&c).await.unwrap().unwrap().1 }
        };
        let blob = Owner::Blob(digest.parse().unwrap());
        assert_eq!(owner(leaf).await, blob);
        assert_eq!(owner(node).await, blob);
        assert_eq!(owner(image).await, Owner::Image("bafyimage".into()));
        assert_eq!(owner(pinned).await, Owner::Pin("bafyroot".into()));
        assert_eq!(owner(plain).await, Owner::Nothing);
        // The owner alone, as a want-have asks it, says the same; the bytes came through.
        for c in [leaf, node, image, pinned, plain] {
            assert_eq!(index.owner_of(&c).await.unwrap(), Some(owner(c).await));
        }
        assert_eq!(index.owner_of(&cid(0x55, b"absent")).await.unwrap(), None);
        assert_eq!(index.get(&pinned).await.unwrap().unwrap(), &b"pinned"[..]);
        assert_eq!(index.get(&node).await.unwrap().unwrap(), &b"node"[..]);
        // A rowid table: a lookup by multihash compares index entries, never a row holding
        // an inline block's bytes (in a WITHOUT ROWID table, it read such rows whole).
        let conn = Connection::open(&path).unwrap();
        let rows: i64 = conn.query_row("SELECT count(rowid) FROM blocks", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 5);
        // Sizes and presence without reading the bytes.
        assert_eq!(index.size(&pinned).await.unwrap(), Some(6));
        assert!(index.has(&leaf).await.unwrap());
        assert!(!index.has(&cid(0x55, b"absent")).await.unwrap());
        // New records carry their kind.
        let fresh = cid(0x55, b"fresh");
        index.record_inline(vec![(fresh, b"fresh".to_vec())], Owner::Pin("bafyother".into())).await.unwrap();
        assert_eq!(owner(fresh).await, Owner::Pin("bafyother".into()));
    }
}
