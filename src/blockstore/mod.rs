//! The block service: the node-local block index (for each IPFS block, by multihash, where its
//! bytes are and what it was recorded for) and the read side of blob files, so that `get` returns
//! verified bytes and `has`/`size` answer without reading any.
//!
//! Raw leaves of a blob's UnixFS DAG are byte ranges of the blob file, so leaf data is never
//! stored twice; dag-pb nodes are stored inline. It is its own SQLite file (`blocks.sqlite`),
//! never part of the shared metadata store: which blocks a node holds is that node's business.
//! This module only records and locates; reading and verifying the bytes is the registry's
//! (which knows the blob files).

mod reached;

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

/// Why bytes are not the block a CID names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("unsupported multihash 0x{0:x}")]
    UnsupportedHash(u64),
    #[error("its bytes do not match its hash")]
    Differs,
}

/// Checks `data` against `cid`'s multihash: the one place a block is verified, whether it came
/// from disk, a CAR or (soon) a peer.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), Mismatch> {
    verify_multihash(cid.hash(), data)
}

/// [`verify`] by the multihash alone (the codec does not matter to the hash).
pub fn verify_multihash(mh: &cid::multihash::Multihash<64>, data: &[u8]) -> Result<(), Mismatch> {
    if hash_with(mh.code(), mh.digest().len(), data)? == mh.digest() {
        Ok(())
    } else {
        Err(Mismatch::Differs)
    }
}

/// The multihash codes Kubo names for `block/put --mhtype`, with their default digest length.
pub fn multihash_named(name: &str) -> Option<(u64, usize)> {
    Some(match name {
        "identity" => (0x00, 0),
        "sha2-256" => (crate::unixfs::SHA2_256, 32),
        "sha2-512" => (0x13, 64),
        "sha3-512" => (0x14, 64),
        "sha3-384" => (0x15, 48),
        "sha3-256" => (0x16, 32),
        "sha3-224" => (0x17, 28),
        "keccak-224" => (0x1a, 28),
        "keccak-256" => (0x1b, 32),
        "keccak-384" => (0x1c, 48),
        "keccak-512" => (0x1d, 64),
        "blake3" => (0x1e, 32),
        "blake2b-256" => (0xb220, 32),
        "blake2b-384" => (0xb230, 48),
        "blake2b-512" => (0xb240, 64),
        "blake2s-256" => (0xb260, 32),
        _ => return None,
    })
}

/// `data`'s digest by multihash `code`, `len` bytes long. The hashes are those Kubo accepts for
/// blocks (boxo's `verifcid`): SHA-2, SHA-3, Keccak, BLAKE2b/2s, BLAKE3 and identity; digests
/// shorter than 20 bytes are refused as too weak (identity aside).
pub fn hash_with(code: u64, len: usize, data: &[u8]) -> Result<Vec<u8>, Mismatch> {
    use sha2::Digest as _;
    if code == 0x00 {
        return Ok(data.to_vec());
    }
    let unsupported = || Mismatch::UnsupportedHash(code);
    if len < 20 {
        return Err(unsupported());
    }
    let fixed = |out: &[u8]| if out.len() == len { Ok(out.to_vec()) } else { Err(unsupported()) };
    match code {
        crate::unixfs::SHA2_256 => fixed(&sha2::Sha256::digest(data)),
        0x13 => fixed(&sha2::Sha512::digest(data)),
        0x14 => fixed(&sha3::Sha3_512::digest(data)),
        0x15 => fixed(&sha3::Sha3_384::digest(data)),
        0x16 => fixed(&sha3::Sha3_256::digest(data)),
        0x17 => fixed(&sha3::Sha3_224::digest(data)),
        0x1a => fixed(&sha3::Keccak224::digest(data)),
        0x1b => fixed(&sha3::Keccak256::digest(data)),
        0x1c => fixed(&sha3::Keccak384::digest(data)),
        0x1d => fixed(&sha3::Keccak512::digest(data)),
        // BLAKE3 is an extendable output: any length is the first bytes of one stream.
        0x1e if len <= 64 => {
            let mut out = vec![0u8; len];
            blake3::Hasher::new().update(data).finalize_xof().fill(&mut out);
            Ok(out)
        }
        // blake2b-N carries its length in the code; 256 bits and up, as Kubo.
        0xb220..=0xb240 if len == (code - 0xb200) as usize => {
            use blake2::digest::{Update, VariableOutput};
            let mut h = blake2::Blake2bVar::new(len).map_err(|_| unsupported())?;
            h.update(data);
            let mut out = vec![0u8; len];
            h.finalize_variable(&mut out).map_err(|_| unsupported())?;
            Ok(out)
        }
        0xb260 => fixed(&blake2::Blake2s256::digest(data)),
        _ => Err(unsupported()),
    }
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

/// `len` bytes of `blob`'s file at `offset`, verified against `cid`.
/// Deletes every owner row of a block whose row is gone: a block's owners are only there to
/// decide whether it may leave the node, and must not outlive it.
fn drop_owners(conn: &rusqlite::Connection, multihash: &[u8]) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM block_owners WHERE multihash = ?1")?.execute([multihash])
}

fn read_range(store: &crate::storage::BlobStore, cid: &Cid, blob: &Digest, offset: u64, len: u64) -> Result<Option<bytes::Bytes>, BlockIndexError> {
    use std::os::unix::fs::FileExt;
    let missing = || BlockIndexError::Mismatch { cid: cid.to_string(), detail: "its blob file is missing".into() };
    let (file, _) = store.open_blob(blob)?.ok_or_else(missing)?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).map_err(|source| crate::storage::StorageError::Io { path: store.blob_path(blob).display().to_string(), source })?;
    checked(cid, bytes::Bytes::from(buf)).map(Some)
}

/// `bytes` if they match `cid`, else the mismatch (logged: it means corruption on disk).
fn checked(cid: &Cid, bytes: bytes::Bytes) -> Result<bytes::Bytes, BlockIndexError> {
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

/// A tag a pinned image DAG gave (or, `conflict`, would have moved to) manifest `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinTag {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub conflict: bool,
}

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

    /// What `cid` was recorded for besides the owner [`BlockIndex::locate_owned`] gives.
    pub async fn other_owners(&self, cid: &Cid) -> Result<Vec<Owner>, BlockIndexError> {
        let mh = cid.hash().to_bytes();
        self.lookup(move |conn| {
            let mut s = conn.prepare_cached("SELECT owner_kind, owner FROM block_owners WHERE multihash = ?1")?;
            let rows = s.query_map([mh], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?)))?;
            rows.map(|row| {
                let (kind, value) = row?;
                Owner::from_columns(kind.as_deref(), value)
            })
            .collect()
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

    /// Forgets every block held as a range of `blob`'s file (when that file is quarantined).
    pub async fn forget_blob(&self, blob: &Digest) -> Result<u64, BlockIndexError> {
        self.forget_blobs(vec![blob.clone()]).await
    }

    /// Forgets the blocks `blobs` hold, in one transaction (one sync for a GC's whole sweep),
    /// before their files go: the number of blocks forgotten. A leaf another owner's DAG holds
    /// too (two layers with a MiB in common) was recorded once, as a range of the first blob's
    /// file; it is copied inline, verified, and handed to that owner, so the other DAG stays
    /// whole. One that cannot be read back any more (a quarantined file) is forgotten.
    pub async fn forget_blobs(&self, blobs: Vec<Digest>) -> Result<u64, BlockIndexError> {
        let store = self.blobs.clone();
        self.run(move |conn| {
            // Immediate: it reads before it writes, and a deferred one could not upgrade once
            // another process (`af registry gc`, an import) had written meanwhile.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut forgotten = 0;
            for digest in &blobs {
                let blob = digest.to_string();
                // Each leaf of this blob that someone else holds too, with one such other owner.
                let shared: Vec<(Vec<u8>, i64, i64, i64, String, String)> = {
                    let mut s = tx.prepare_cached(
                        "SELECT b.multihash, b.codec, b.offset, b.length, o.owner_kind, o.owner FROM blocks b
                         JOIN block_owners o ON o.multihash = b.multihash AND NOT (o.owner_kind = 'blob' AND o.owner = ?1)
                         WHERE b.blob = ?1 GROUP BY b.multihash",
                    )?;
                    let rows = s.query_map([&blob], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                for (mh, codec, offset, len, kind, owner) in shared {
                    let Ok(hash) = cid::multihash::Multihash::from_bytes(&mh) else { continue };
                    let cid = Cid::new_v1(codec as u64, hash);
                    let Ok(Some(bytes)) = read_range(&store, &cid, digest, offset as u64, len as u64) else {
                        tracing::warn!(%cid, blob = %digest, "a leaf another DAG shares could not be read back from its blob; forgotten");
                        continue;
                    };
                    tx.execute(
                        "UPDATE blocks SET blob = NULL, offset = NULL, data = ?2, owner_kind = ?3, owner = ?4 WHERE multihash = ?1",
                        params![mh, bytes.as_ref(), kind, owner],
                    )?;
                    tx.execute("DELETE FROM block_owners WHERE multihash = ?1 AND owner_kind = ?2 AND owner = ?3", params![mh, kind, owner])?;
                }
                let gone: Vec<Vec<u8>> = {
                    let mut s = tx.prepare_cached("DELETE FROM blocks WHERE blob = ?1 RETURNING multihash")?;
                    let rows = s.query_map([&blob], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                for mh in &gone {
                    drop_owners(&tx, mh)?;
                }
                tx.execute("DELETE FROM block_owners WHERE owner_kind = 'blob' AND owner = ?1", [&blob])?;
                forgotten += gone.len() as u64;
            }
            tx.commit()?;
            Ok(forgotten)
        })
        .await
    }

    /// Up to `BATCH` blocks stored inline after `after` (multihash order): (multihash, data),
    /// for a scrub that pages through them.
    pub async fn inline_blocks_after(&self, after: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BlockIndexError> {
        self.run(move |conn| {
            let mut s = conn.prepare_cached("SELECT multihash, CAST(data AS BLOB) FROM blocks WHERE data IS NOT NULL AND multihash > ?1 ORDER BY multihash LIMIT ?2")?;
            let rows = s.query_map(params![after, BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Deletes inline blocks older than `cutoff` that no DAG from `roots` reaches: their count
    /// and bytes, and with `list`, their CIDs. Leaves held as blob ranges go with their blob
    /// instead. `keep`: blocks kept for themselves, not for what they link to (direct pins).
    ///
    /// On a connection of its own, so lookups never wait for it: the mark walks from the roots
    /// reading only the nodes it reaches (memory: 16 bytes per block reached, [`reached`]), the
    /// sweep pages through old blocks and deletes in short transactions, each re-checking a
    /// block's age so one recorded again meanwhile stays.
    pub async fn sweep_unreachable(&self, roots: Vec<Cid>, keep: Vec<Cid>, cutoff: i64, list: bool) -> Result<(u64, u64, Vec<Cid>), BlockIndexError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch(crate::storage::SQLITE_MMAP)?;
            let mut reached = reached::Reached::new();
            // Only blocks of a linking codec are looked up; a raw block is marked without a read
            // (most blocks are leaves, and a leaf links to nothing).
            let mut stack: Vec<Vec<u8>> = Vec::new();
            let reach = |cid: &Cid, stack: &mut Vec<Vec<u8>>, reached: &mut reached::Reached| {
                let mh = cid.hash().to_bytes();
                reached.mark(&mh);
                if crate::ipld::links_possible(cid.codec()) {
                    stack.push(mh);
                }
            };
            for root in &roots {
                reach(root, &mut stack, &mut reached);
            }
            {
                // Every codec that links: dag-pb, DAG-CBOR, DAG-JSON, as stored. A block reached
                // only through a raw link is kept but not followed: that DAG holds it as bytes.
                let mut node = conn.prepare("SELECT CAST(data AS BLOB), codec FROM blocks WHERE multihash = ?1 AND data IS NOT NULL AND codec IN (?2, ?3, ?4)")?;
                while let Some(mh) = stack.pop() {
                    if !reached.expand(&mh) {
                        continue;
                    }
                    let found: Option<(Vec<u8>, i64)> = node
                        .query_row(params![mh, crate::unixfs::DAG_PB as i64, crate::ipld::DAG_CBOR as i64, crate::ipld::DAG_JSON as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    // An undecodable node is left for `verify` to report; its children are then
                    // unreachable from here, and old enough ones go.
                    let links = found.and_then(|(data, codec)| {
                        let cid = Cid::new_v1(codec as u64, cid::multihash::Multihash::from_bytes(&mh).ok()?);
                        crate::ipld::block_links(&cid, &data).ok()
                    });
                    for link in links.unwrap_or_default() {
                        reach(&link, &mut stack, &mut reached);
                    }
                }
            }
            for cid in &keep {
                reached.mark(&cid.hash().to_bytes());
            }
            let (mut count, mut bytes, mut removed) = (0u64, 0u64, Vec::new());
            let mut after: Vec<u8> = Vec::new();
            loop {
                let page: Vec<(Vec<u8>, i64, i64)> = conn
                    .prepare_cached(
                        "SELECT multihash, length, codec FROM blocks WHERE data IS NOT NULL AND created_at < ?1 AND multihash > ?2
                         ORDER BY multihash LIMIT ?3",
                    )?
                    .query_map(params![cutoff, after, BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let Some(last) = page.last() else { break };
                after = last.0.clone();
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                {
                    let mut delete = tx.prepare_cached("DELETE FROM blocks WHERE multihash = ?1 AND created_at < ?2")?;
                    for (mh, len, codec) in page.into_iter().filter(|(mh, _, _)| !reached.is_marked(mh)) {
                        if delete.execute(params![mh, cutoff])? > 0 {
                            drop_owners(&tx, &mh)?;
                            count += 1;
                            bytes += len as u64;
                            if list {
                                if let Ok(hash) = cid::multihash::Multihash::<64>::from_bytes(&mh) {
                                    removed.push(Cid::new_v1(codec as u64, hash));
                                }
                            }
                        }
                    }
                }
                tx.commit()?;
            }
            Ok((count, bytes, removed))
        })
        .await
        .map_err(|e| BlockIndexError::Task(e.to_string()))?
    }

    /// Pins `cid`: recursively (a GC keeps its whole DAG) or directly (its root block only). A
    /// recursive pin of a direct one makes it recursive; never the other way round.
    pub async fn pin(&self, cid: &Cid, recursive: bool) -> Result<(), BlockIndexError> {
        let cid = cid.to_string();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO pins (cid, recursive) VALUES (?1, ?2) ON CONFLICT DO UPDATE SET recursive = MAX(recursive, excluded.recursive)",
                params![cid, recursive as i64],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn unpin(&self, cid: &Cid) -> Result<bool, BlockIndexError> {
        let cid = cid.to_string();
        self.run(move |conn| Ok(conn.execute("DELETE FROM pins WHERE cid = ?1", [cid])? > 0)).await
    }

    /// The recursive pins.
    pub async fn pins(&self) -> Result<Vec<String>, BlockIndexError> {
        self.pins_of_kind(true).await
    }

    /// The direct pins.
    pub async fn direct_pins(&self) -> Result<Vec<String>, BlockIndexError> {
        self.pins_of_kind(false).await
    }

    async fn pins_of_kind(&self, recursive: bool) -> Result<Vec<String>, BlockIndexError> {
        self.read(move |conn| {
            let mut s = conn.prepare("SELECT cid FROM pins WHERE recursive = ?1 ORDER BY cid")?;
            let rows = s.query_map([recursive as i64], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    /// Records what pinning the image DAG `root` did to tags (replacing what was recorded).
    pub async fn record_pin_tags(&self, root: &Cid, tags: Vec<PinTag>) -> Result<(), BlockIndexError> {
        let root = root.to_string();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM pin_tags WHERE root = ?1", [&root])?;
            for t in &tags {
                tx.execute("INSERT INTO pin_tags (root, repository, tag, digest, conflict) VALUES (?1, ?2, ?3, ?4, ?5)", params![root, t.repository, t.tag, t.digest, t.conflict])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// What pins did to tags: of `root`, or of every pin.
    pub async fn pin_tags(&self, root: Option<&Cid>) -> Result<Vec<(String, PinTag)>, BlockIndexError> {
        let root = root.map(Cid::to_string);
        self.read(move |conn| {
            let mut s = conn.prepare("SELECT root, repository, tag, digest, conflict FROM pin_tags WHERE ?1 IS NULL OR root = ?1 ORDER BY root, repository, tag")?;
            let rows = s.query_map([root], |r| Ok((r.get(0)?, PinTag { repository: r.get(1)?, tag: r.get(2)?, digest: r.get(3)?, conflict: r.get(4)? })))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Forgets what pin `root` did to tags.
    pub async fn forget_pin_tags(&self, root: &Cid) -> Result<(), BlockIndexError> {
        let root = root.to_string();
        self.run(move |conn| {
            conn.execute("DELETE FROM pin_tags WHERE root = ?1", [root])?;
            Ok(())
        })
        .await
    }

    /// The IPNS record held for `name` (its canonical form), as received.
    pub async fn ipns_record(&self, name: &str) -> Result<Option<Vec<u8>>, BlockIndexError> {
        let name = name.to_string();
        self.read(move |conn| Ok(conn.query_row("SELECT record FROM ipns_records WHERE name = ?1", [name], |r| r.get(0)).optional()?)).await
    }

    /// Keeps `record` for `name` if `replaces` says it replaces the record held (given it).
    pub async fn put_ipns_record(&self, name: &str, record: Vec<u8>, replaces: impl FnOnce(Option<&[u8]>) -> bool + Send + 'static) -> Result<bool, BlockIndexError> {
        let name = name.to_string();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let held: Option<Vec<u8>> = tx.query_row("SELECT record FROM ipns_records WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
            if !replaces(held.as_deref()) {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO ipns_records (name, record) VALUES (?1, ?2) ON CONFLICT DO UPDATE SET record = excluded.record, stored_at = unixepoch()",
                params![name, record],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// Whether `cid` is pinned here.
    pub async fn is_pinned(&self, cid: &Cid) -> Result<bool, BlockIndexError> {
        let cid = cid.to_string();
        self.read(move |conn| Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM pins WHERE cid = ?1)", [cid], |r| r.get(0))?)).await
    }

    /// (number of blocks, bytes of inline blocks) for `repo/stat`.
    pub async fn stat(&self) -> Result<(u64, u64), BlockIndexError> {
        self.run(|conn| Ok(conn.query_row("SELECT count(*), coalesce(sum(length(data)), 0) FROM blocks", [], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?))
            .await
    }

    /// Forgets one block.
    pub async fn forget(&self, multihash: Vec<u8>) -> Result<(), BlockIndexError> {
        self.run(move |conn| {
            conn.execute("DELETE FROM blocks WHERE multihash = ?1", [&multihash])?;
            drop_owners(conn, &multihash)?;
            Ok(())
        })
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
