//! The embedded metadata store: SQLite in WAL mode, one file in the data directory.
//!
//! rusqlite is synchronous, so every call runs on a blocking thread with a connection taken from a
//! small pool. Writes use `BEGIN IMMEDIATE` so that concurrent writers queue on SQLite's lock
//! instead of failing half-way through a read-then-write transaction.

use super::*;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Rows a GC deletes in one write transaction: each holds SQLite's one writer for milliseconds.
const GC_ROWS_PER_TXN: usize = 256;
/// A repository's link to a blob that a GC removes (`?1` is the cutoff).
const UNUSED_LINK: &str = "touched_at < ?1 AND NOT EXISTS (
    SELECT 1 FROM manifest_references r WHERE r.repository_id = repository_blobs.repository_id
    AND r.child_digest = repository_blobs.digest AND r.kind = 'blob')";
/// A blob that a GC removes (`?1` is the cutoff).
const UNLINKED_BLOB: &str = "created_at < ?1
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest)
    AND NOT EXISTS (SELECT 1 FROM upload_sessions u WHERE u.finishing_digest = blobs.digest)";

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../../migrations/sqlite/0002_credential_identity.sql")),
    (3, include_str!("../../migrations/sqlite/0003_change_generation.sql")),
    (4, include_str!("../../migrations/sqlite/0004_node_swarm.sql")),
    (5, include_str!("../../migrations/sqlite/0005_replicas.sql")),
    (6, include_str!("../../migrations/sqlite/0006_gc_indexes.sql")),
    (7, include_str!("../../migrations/sqlite/0007_replica_origin.sql")),
];
const POOL_SIZE: usize = 4;

pub struct SqliteStore {
    /// Tells this store's thread-local reader connections apart from another store's.
    id: u64,
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

pub(super) fn backend(e: rusqlite::Error) -> MetadataError {
    let error = classify(e);
    crate::metrics::metadata_error("sqlite", error.kind());
    error
}

fn classify(e: rusqlite::Error) -> MetadataError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            MetadataError::Unavailable(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => MetadataError::Full(e.to_string()),
        other => MetadataError::Backend(other.to_string()),
    }
}

pub(super) use crate::clock::unix_now as now;

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.execute_batch(crate::storage::SQLITE_MMAP)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (version, sql) in MIGRATIONS {
        if *version > current {
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        }
    }
    tx.commit()
}

/// The manifests a GC removes, as a read sees them: not kept, where kept is tagged, pinned or
/// young (created at or after `cutoff`), a child of a kept index or a referrer of a kept subject,
/// transitively.
fn garbage_manifests(c: &Connection, cutoff: i64) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut s = c.prepare(
        "WITH RECURSIVE kept(repository_id, digest) AS (
             SELECT repository_id, manifest_digest FROM tags
             UNION SELECT repository_id, manifest_digest FROM pins
             UNION SELECT repository_id, digest FROM manifests WHERE created_at >= ?1
             UNION SELECT r.repository_id, r.child_digest FROM manifest_references r
                 JOIN kept k ON r.repository_id = k.repository_id AND r.manifest_digest = k.digest
                 WHERE r.kind = 'manifest'
             UNION SELECT m.repository_id, m.digest FROM manifests m
                 JOIN kept k ON m.repository_id = k.repository_id AND m.subject = k.digest
         )
         SELECT repository_id, digest FROM manifests
         WHERE created_at < ?1 AND (repository_id, digest) NOT IN (SELECT repository_id, digest FROM kept)",
    )?;
    let rows = s.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The rows `sql` selects with the cutoff as `?1`.
fn read_rows<T>(c: &Connection, sql: &str, cutoff: i64, row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>) -> MetaResult<Vec<T>> {
    let mut s = c.prepare(sql).map_err(backend)?;
    let rows = s.query_map([cutoff], row).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// Deletes those of `batch` (from [`garbage_manifests`]) that are still garbage: a manifest is
/// kept now if it or an ancestor (an index naming it, the subject it refers to, and theirs) is
/// tagged, pinned or young. Walked upwards from the batch's rows, so the cost is the batch's, not
/// the registry's. The number deleted.
fn delete_garbage_manifests(tx: &Transaction<'_>, batch: &[(i64, String)], cutoff: i64) -> rusqlite::Result<u64> {
    tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS gc_batch (repository_id INTEGER, digest TEXT, PRIMARY KEY (repository_id, digest)); DELETE FROM temp.gc_batch;")?;
    {
        let mut add = tx.prepare_cached("INSERT OR IGNORE INTO temp.gc_batch VALUES (?1, ?2)")?;
        for (repo, digest) in batch {
            add.execute(params![repo, digest])?;
        }
    }
    let n = tx.execute(
        "WITH RECURSIVE up(origin_repo, origin, repository_id, digest) AS (
             SELECT repository_id, digest, repository_id, digest FROM temp.gc_batch
             UNION SELECT u.origin_repo, u.origin, r.repository_id, r.manifest_digest FROM manifest_references r
                 JOIN up u ON r.repository_id = u.repository_id AND r.child_digest = u.digest
                 WHERE r.kind = 'manifest'
             UNION SELECT u.origin_repo, u.origin, m.repository_id, m.subject FROM manifests m
                 JOIN up u ON m.repository_id = u.repository_id AND m.digest = u.digest
                 WHERE m.subject IS NOT NULL
         )
         DELETE FROM manifests WHERE (repository_id, digest) IN (SELECT repository_id, digest FROM temp.gc_batch)
         AND (repository_id, digest) NOT IN (
             SELECT u.origin_repo, u.origin FROM up u
             WHERE EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = u.repository_id AND t.manifest_digest = u.digest)
             OR EXISTS (SELECT 1 FROM pins p WHERE p.repository_id = u.repository_id AND p.manifest_digest = u.digest)
             OR EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = u.repository_id AND m.digest = u.digest AND m.created_at >= ?1))",
        [cutoff],
    )?;
    tx.execute_batch("DELETE FROM temp.gc_batch")?;
    Ok(n as u64)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> MetaResult<Arc<Self>> {
        let mut first = open_connection(path).map_err(backend)?;
        migrate(&mut first).map_err(backend)?;
        let mut idle = vec![first];
        for _ in 1..POOL_SIZE {
            idle.push(open_connection(path).map_err(backend)?);
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Arc::new(SqliteStore { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), path: path.to_path_buf(), idle: Mutex::new(idle), permits: tokio::sync::Semaphore::new(POOL_SIZE) }))
    }

    async fn with<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> MetaResult<T> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let _permit = self.permits.acquire().await.map_err(|e| MetadataError::Unavailable(e.to_string()))?;
        crate::metrics::METRICS.pool_wait.with_label_values(&["sqlite"]).observe(started.elapsed().as_secs_f64());
        let conn = self.idle.lock().expect("pool lock").pop();
        let mut conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path).map_err(backend)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut conn);
            (conn, r)
        })
        .await
        .map_err(|e| MetadataError::Backend(e.to_string()))?;
        self.idle.lock().expect("pool lock").push(conn);
        result
    }

    /// Runs a read on this thread's own connection, inline. In WAL mode readers never wait for
    /// the writer and a read of a few indexed rows takes microseconds, so this is cheaper than the
    /// hand-off to a blocking thread that writes need (it roughly doubles manifest GETs/s).
    pub(super) async fn read<T, F>(&self, f: F) -> MetaResult<T>
    where
        F: FnOnce(&mut Connection) -> MetaResult<T>,
    {
        thread_local! {
            static READERS: RefCell<HashMap<u64, Connection>> = RefCell::new(HashMap::new());
        }
        READERS.with(|cell| {
            let mut readers = cell.borrow_mut();
            let conn = match readers.entry(self.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(open_connection(&self.path).map_err(backend)?),
            };
            f(conn)
        })
    }

    pub(super) async fn write<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> MetaResult<T> + Send + 'static,
    {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let out = f(&tx)?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }
}

impl SqliteStore {
    /// Runs `delete` over `keys` in write transactions of [`GC_ROWS_PER_TXN`] keys each (SQLite's
    /// one writer is held for one batch at a time); what each batch returned.
    async fn delete_in_batches<K, T, F>(&self, keys: Vec<K>, delete: F) -> MetaResult<Vec<T>>
    where
        K: Clone + Send + 'static,
        T: Send + 'static,
        F: Fn(&Transaction<'_>, &[K]) -> MetaResult<T> + Clone + Send + 'static,
    {
        let mut out = Vec::new();
        for batch in keys.chunks(GC_ROWS_PER_TXN) {
            let (batch, delete) = (batch.to_vec(), delete.clone());
            out.push(self.write(move |tx| delete(tx, &batch)).await?);
        }
        Ok(out)
    }

    /// One page of the repository names `base` selects (`?1` is a placeholder, `?2` the last name).
    async fn repository_names(&self, base: &'static str, page: &Page) -> MetaResult<Vec<String>> {
        let page = page.clone();
        self.read(move |c| {
            let sql = page_sql(base, "name", &page);
            let mut s = c.prepare_cached(&sql).map_err(backend)?;
            let last = page.last.clone().unwrap_or_default();
            let rows = s.query_map(params![0, last], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }

    /// Deletes the row of `table` whose `column` is `key` in repository `repo`; true if one was.
    async fn delete_in_repo(&self, table: &'static str, column: &'static str, repo: &str, key: String) -> MetaResult<bool> {
        let repo = repo.to_string();
        self.write(move |tx| {
            let sql = format!(
                "DELETE FROM {table} WHERE {column} = ?2
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)"
            );
            let n = tx.execute(&sql, params![repo, key]).map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }
}

pub(super) fn ensure_repo(tx: &Transaction<'_>, name: &str) -> MetaResult<i64> {
    tx.execute("INSERT INTO repositories (name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING", params![name, now()]).map_err(backend)?;
    tx.query_row("SELECT id FROM repositories WHERE name = ?1", [name], |r| r.get(0)).map_err(backend)
}

fn repo_id(conn: &Connection, name: &str) -> MetaResult<Option<i64>> {
    conn.prepare_cached("SELECT id FROM repositories WHERE name = ?1").and_then(|mut s| s.query_row([name], |r| r.get(0)).optional()).map_err(backend)
}

fn parse_digest(s: String) -> MetaResult<Digest> {
    s.parse().map_err(|e| MetadataError::Corrupt(format!("{e}")))
}

fn link_blob(tx: &Transaction<'_>, repo: i64, digest: &str) -> MetaResult<()> {
    tx.execute(
        "INSERT INTO repository_blobs (repository_id, digest, touched_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO UPDATE SET touched_at = excluded.touched_at",
        params![repo, digest, now()],
    )
    .map_err(backend)?;
    Ok(())
}

fn page_sql(base: &str, key: &str, page: &Page) -> String {
    // With no `last`, '' sorts before every (non-empty) name, so one statement serves both cases.
    let mut sql = format!("{base} AND {key} > ?2 ORDER BY {key}");
    if let Some(n) = page.limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    sql
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn blob_info(&self, repo: &str, digest: &Digest) -> MetaResult<Option<BlobInfo>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT b.size, b.root_cid, rb.touched_at FROM blobs b
                 JOIN repository_blobs rb ON rb.digest = b.digest
                 JOIN repositories r ON r.id = rb.repository_id
                 WHERE r.name = ?1 AND b.digest = ?2 AND b.missing = 0",
            )
            .and_then(|mut s| s.query_row(params![repo, digest], |r| Ok(BlobInfo { size: r.get::<_, i64>(0)? as u64, root_cid: r.get(1)?, touched_at: r.get(2)? })).optional())
            .map_err(backend)
        })
        .await
    }

    async fn commit_blob(&self, repo: &str, digest: &Digest, blob: &BlobInfo, upload: Option<Uuid>) -> MetaResult<()> {
        let (repo, digest, blob) = (repo.to_string(), digest.to_string(), blob.clone());
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            tx.execute(
                // Pushing a blob a scrub marked missing repairs it.
                "INSERT INTO blobs (digest, size, root_cid, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (digest) DO UPDATE SET missing = 0, size = excluded.size, root_cid = excluded.root_cid
                 WHERE blobs.missing = 1",
                params![digest, blob.size as i64, blob.root_cid, now()],
            )
            .map_err(backend)?;
            link_blob(tx, id, &digest)?;
            if let Some(u) = upload {
                tx.execute("DELETE FROM upload_sessions WHERE id = ?1", [u.to_string()]).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn mount_blob(&self, repo: &str, from: Option<&str>, digest: &Digest) -> MetaResult<Option<u64>> {
        let (repo, from, digest) = (repo.to_string(), from.map(str::to_string), digest.to_string());
        self.write(move |tx| {
            let size: Option<i64> = match &from {
                Some(from) => tx
                    .query_row(
                        "SELECT b.size FROM blobs b
                         JOIN repository_blobs rb ON rb.digest = b.digest
                         JOIN repositories r ON r.id = rb.repository_id
                         WHERE r.name = ?1 AND b.digest = ?2 AND b.missing = 0",
                        params![from, digest],
                        |r| r.get(0),
                    )
                    .optional(),
                None => tx
                    .query_row(
                        "SELECT b.size FROM blobs b WHERE b.digest = ?1 AND b.missing = 0
                         AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                        params![digest],
                        |r| r.get(0),
                    )
                    .optional(),
            }
            .map_err(backend)?;
            let Some(size) = size else { return Ok(None) };
            let id = ensure_repo(tx, &repo)?;
            link_blob(tx, id, &digest)?;
            Ok(Some(size as u64))
        })
        .await
    }

    async fn list_blobs(&self) -> MetaResult<Vec<(Digest, u64)>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT digest, size FROM blobs WHERE missing = 0 ORDER BY digest").map_err(backend)?;
            let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (d, size) = row.map_err(backend)?;
                out.push((parse_digest(d)?, size as u64));
            }
            Ok(out)
        })
        .await
    }

    async fn mark_blob_missing(&self, digest: &Digest) -> MetaResult<()> {
        let digest = digest.to_string();
        self.write(move |tx| {
            tx.execute("UPDATE blobs SET missing = 1 WHERE digest = ?1", [digest]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn touch_blob(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let touched = tx
                .execute(
                    "UPDATE repository_blobs SET touched_at = ?3 WHERE digest = ?2
                     AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                    params![repo, digest, now()],
                )
                .map_err(backend)?;
            Ok(touched > 0)
        })
        .await
    }

    async fn pin(&self, repo: &str, reference: &Reference) -> MetaResult<Option<Digest>> {
        let (repo, reference) = (repo.to_string(), reference.clone());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(None) };
            let digest: Option<String> = match &reference {
                Reference::Digest(d) => tx.query_row("SELECT digest FROM manifests WHERE repository_id = ?1 AND digest = ?2", params![id, d.to_string()], |r| r.get(0)).optional(),
                Reference::Tag(t) => tx.query_row("SELECT manifest_digest FROM tags WHERE repository_id = ?1 AND name = ?2", params![id, t], |r| r.get(0)).optional(),
            }
            .map_err(backend)?;
            let Some(digest) = digest else { return Ok(None) };
            tx.execute("INSERT INTO pins (repository_id, manifest_digest, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING", params![id, digest, now()]).map_err(backend)?;
            parse_digest(digest).map(Some)
        })
        .await
    }

    async fn unpin(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        self.delete_in_repo("pins", "manifest_digest", repo, digest.to_string()).await
    }

    async fn list_pins(&self) -> MetaResult<Vec<(String, Digest)>> {
        self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT r.name, p.manifest_digest FROM pins p JOIN repositories r ON r.id = p.repository_id
                     ORDER BY r.name, p.manifest_digest",
                )
                .map_err(backend)?;
            let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (repo, digest) = row.map_err(backend)?;
                out.push((repo, parse_digest(digest)?));
            }
            Ok(out)
        })
        .await
    }

    /// SQLite has one writer: a sweep in one transaction held it for seconds on a large registry
    /// (3 s at 48,000 images), and every push waited. So what is garbage is found by reads (a WAL
    /// snapshot; writers go on), and deleted in transactions of [`GC_ROWS_PER_TXN`] rows, each
    /// checking again, as it deletes, that its rows are still garbage: a tag, pin, index,
    /// referrer or link made since the read keeps what it names, as in one transaction.
    async fn collect_garbage(&self, cutoff: i64) -> MetaResult<GarbageCollected> {
        // Manifests: not kept, where kept is tagged, pinned or young, a child of a kept index
        // or a referrer of a kept subject, transitively.
        let doomed = self.with(move |c| garbage_manifests(c, cutoff).map_err(backend)).await?;
        let manifests = self.delete_in_batches(doomed, move |tx, batch| delete_garbage_manifests(tx, batch, cutoff).map_err(backend)).await?.into_iter().sum();
        // Links no manifest of their repository references, untouched within the grace period.
        let sql = format!("SELECT repository_id, digest FROM repository_blobs WHERE {UNUSED_LINK}");
        let doomed: Vec<(i64, String)> = self.with(move |c| read_rows(c, &sql, cutoff, |r| Ok((r.get(0)?, r.get(1)?)))).await?;
        let links = self
            .delete_in_batches(doomed, move |tx, batch| {
                let mut delete = tx.prepare_cached(&format!("DELETE FROM repository_blobs WHERE repository_id = ?2 AND digest = ?3 AND {UNUSED_LINK}")).map_err(backend)?;
                batch.iter().try_fold(0u64, |n, (repo, digest)| Ok(n + delete.execute(params![cutoff, repo, digest]).map_err(backend)? as u64))
            })
            .await?
            .into_iter()
            .sum();
        // Blobs no repository links, old, and not being published by an upload.
        let sql = format!("SELECT digest FROM blobs WHERE {UNLINKED_BLOB}");
        let doomed: Vec<String> = self.with(move |c| read_rows(c, &sql, cutoff, |r| r.get(0))).await?;
        let blobs = self
            .delete_in_batches(doomed, move |tx, batch| {
                let mut delete = tx.prepare_cached(&format!("DELETE FROM blobs WHERE digest = ?2 AND {UNLINKED_BLOB} RETURNING size, missing")).map_err(backend)?;
                let mut swept = Vec::new();
                for digest in batch {
                    let row = delete.query_row(params![cutoff, digest], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?))).optional().map_err(backend)?;
                    if let Some((size, missing)) = row {
                        swept.push(SweptBlob { digest: parse_digest(digest.clone())?, size: size as u64, had_file: !missing });
                    }
                }
                Ok(swept)
            })
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(GarbageCollected { manifests, links, blobs })
    }

    async fn blob_by_root(&self, cid: &str) -> MetaResult<Option<Digest>> {
        let cid = cid.to_string();
        let found: Option<String> = self
            .read(move |c| {
                c.prepare_cached("SELECT digest FROM blobs WHERE root_cid = ?1 AND missing = 0 LIMIT 1")
                    .and_then(|mut s| s.query_row([cid], |r| r.get(0)).optional())
                    .map_err(backend)
            })
            .await?;
        found.map(parse_digest).transpose()
    }

    async fn heartbeat(&self, node: &str, api_url: &str, swarm_addrs: &[String]) -> MetaResult<bool> {
        let (node, url, swarm) = (node.to_string(), api_url.to_string(), swarm_addrs.join(" "));
        self.write(move |tx| {
            let known: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM nodes WHERE id = ?1)", params![node], |r| r.get(0)).map_err(backend)?;
            tx.execute(
                "INSERT INTO nodes (id, api_url, heartbeat_at, swarm_addrs) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, heartbeat_at = excluded.heartbeat_at,
                 swarm_addrs = excluded.swarm_addrs",
                params![node, url, now(), swarm],
            )
            .map_err(backend)?;
            Ok(!known)
        })
        .await
    }

    async fn record_holder(&self, digest: &Digest, node: &str) -> MetaResult<()> {
        let (digest, node) = (digest.to_string(), node.to_string());
        self.write(move |tx| {
            tx.execute("INSERT INTO blob_holders (digest, node_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING", params![digest, node]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn live_holders(&self, digest: &Digest, except: &str, alive_secs: i64) -> MetaResult<Vec<NodeRecord>> {
        let (digest, except) = (digest.to_string(), except.to_string());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT n.id, n.api_url, n.swarm_addrs FROM blob_holders h JOIN nodes n ON n.id = h.node_id
                     WHERE h.digest = ?1 AND n.id != ?2 AND n.heartbeat_at >= ?3 ORDER BY n.heartbeat_at DESC",
                )
                .map_err(backend)?;
            let rows = s.query_map(params![digest, except, now() - alive_secs], |r| Ok(NodeRecord::from_columns(r.get(0)?, r.get(1)?, r.get(2)?))).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn live_nodes(&self, except: &str, alive_secs: i64) -> MetaResult<Vec<NodeRecord>> {
        let except = except.to_string();
        self.read(move |c| {
            let mut s = c.prepare_cached("SELECT id, api_url, swarm_addrs FROM nodes WHERE id != ?1 AND heartbeat_at >= ?2 ORDER BY id").map_err(backend)?;
            let rows = s.query_map(params![except, now() - alive_secs], |r| Ok(NodeRecord::from_columns(r.get(0)?, r.get(1)?, r.get(2)?))).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn set_public(&self, repo: &str, public: bool) -> MetaResult<()> {
        let repo = repo.to_string();
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            tx.execute("UPDATE repositories SET visibility = ?2 WHERE id = ?1", params![id, if public { "public" } else { "private" }]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn set_replicas(&self, repo: &str, replicas: Option<u32>) -> MetaResult<()> {
        let repo = repo.to_string();
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            tx.execute("UPDATE repositories SET replicas = ?2 WHERE id = ?1", params![id, replicas]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn replicas(&self, repo: &str) -> MetaResult<Option<u32>> {
        let repo = repo.to_string();
        self.read(move |c| {
            c.query_row("SELECT replicas FROM repositories WHERE name = ?1", [repo], |r| r.get::<_, Option<u32>>(0)).optional().map(Option::flatten).map_err(backend)
        })
        .await
    }

    async fn visibility(&self, repo: &str) -> MetaResult<Option<bool>> {
        let repo = repo.to_string();
        self.read(move |c| c.query_row("SELECT visibility = 'public' FROM repositories WHERE name = ?1", [repo], |r| r.get::<_, bool>(0)).optional().map_err(backend)).await
    }

    async fn visibility_or_create(&self, repo: &str, public_if_new: bool) -> MetaResult<bool> {
        let repo = repo.to_string();
        self.write(move |tx| {
            let existed: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = ?1)", [&repo], |r| r.get(0)).map_err(backend)?;
            let id = ensure_repo(tx, &repo)?;
            if !existed {
                tx.execute("UPDATE repositories SET visibility = ?2 WHERE id = ?1", params![id, if public_if_new { "public" } else { "private" }]).map_err(backend)?;
            }
            let v: String = tx.query_row("SELECT visibility FROM repositories WHERE id = ?1", [id], |r| r.get(0)).map_err(backend)?;
            Ok(v == "public")
        })
        .await
    }

    async fn replica_or_create(&self, repo: &str, origin: &str, public_if_new: bool, stamp: i64) -> MetaResult<Option<bool>> {
        let (repo, origin) = (repo.to_string(), origin.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO repositories (name, created_at, visibility, replica_of, replica_stamp) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO NOTHING",
                params![repo, now(), if public_if_new { "public" } else { "private" }, origin, stamp],
            )
            .map_err(backend)?;
            tx.query_row("SELECT visibility = 'public' FROM repositories WHERE name = ?1 AND replica_of = ?2", params![repo, origin], |r| r.get::<_, bool>(0))
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn replica_of(&self, repo: &str) -> MetaResult<Option<String>> {
        let repo = repo.to_string();
        self.read(move |c| {
            c.query_row("SELECT replica_of FROM repositories WHERE name = ?1", [repo], |r| r.get::<_, Option<String>>(0)).optional().map(Option::flatten).map_err(backend)
        })
        .await
    }

    async fn advance_replica(&self, repo: &str, origin: &str, stamp: i64) -> MetaResult<bool> {
        let (repo, origin) = (repo.to_string(), origin.to_string());
        self.write(move |tx| {
            let n = tx
                .execute("UPDATE repositories SET replica_stamp = ?3 WHERE name = ?1 AND replica_of = ?2 AND replica_stamp < ?3", params![repo, origin, stamp])
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn bump_generation(&self) -> MetaResult<i64> {
        self.write(|tx| tx.query_row("UPDATE change_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation", [], |r| r.get(0)).map_err(backend)).await
    }

    async fn ack_generation(&self, node: &str, generation: i64) -> MetaResult<()> {
        let node = node.to_string();
        self.write(move |tx| {
            tx.execute("UPDATE nodes SET seen_generation = ?2 WHERE id = ?1 AND seen_generation < ?2", params![node, generation]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn lagging_nodes(&self, generation: i64, except: &str, alive_secs: i64) -> MetaResult<Vec<String>> {
        let except = except.to_string();
        self.read(move |c| {
            let mut s = c.prepare_cached("SELECT id FROM nodes WHERE seen_generation < ?1 AND id != ?2 AND heartbeat_at >= ?3 ORDER BY id").map_err(backend)?;
            let rows = s.query_map(params![generation, except, now() - alive_secs], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }

    async fn generation(&self) -> MetaResult<i64> {
        self.read(|c| c.query_row("SELECT generation FROM change_generation WHERE id = 1", [], |r| r.get(0)).map_err(backend)).await
    }

    async fn public_roots(&self) -> MetaResult<Vec<String>> {
        self.read(|c| {
            let mut s = c.prepare(PUBLIC_ROOTS.replace("NOT b.missing", "b.missing = 0").as_str()).map_err(backend)?;
            let rows = s.query_map([], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }

    async fn live_roots_page(&self, after: &RootsCursor, limit: u32) -> MetaResult<(Vec<String>, Option<RootsCursor>)> {
        let after = after.clone();
        let sql = match after.source {
            0 => "SELECT 0, digest, root_cid FROM blobs WHERE ?1 = 0 AND digest > ?2 ORDER BY digest LIMIT ?3",
            1 => "SELECT repository_id, digest, image_cid FROM manifests WHERE (repository_id, digest) > (?1, ?2) ORDER BY repository_id, digest LIMIT ?3",
            _ => "SELECT repository_id, name, image_cid FROM tags WHERE (repository_id, name) > (?1, ?2) ORDER BY repository_id, name LIMIT ?3",
        };
        let rows: Vec<(i64, String, Option<String>)> = self
            .read(|c| {
                let mut s = c.prepare_cached(sql).map_err(backend)?;
                let rows = s.query_map(params![after.repository, after.key, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)
            })
            .await?;
        Ok(roots_page(after, limit, rows))
    }

    async fn existing_blobs(&self, digests: &[Digest]) -> MetaResult<Vec<Digest>> {
        let digests: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let found: Vec<String> = self
            .read(|c| {
                let mut s = c.prepare_cached("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1 AND missing = 0)").map_err(backend)?;
                let mut found = Vec::new();
                for d in digests {
                    if s.query_row([&d], |r| r.get::<_, bool>(0)).map_err(backend)? {
                        found.push(d);
                    }
                }
                Ok(found)
            })
            .await?;
        found.into_iter().map(parse_digest).collect()
    }

    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        self.delete_in_repo("repository_blobs", "digest", repo, digest.to_string()).await
    }

    async fn create_upload(&self, repo: &str, id: Uuid, owner: &str, max_open: u64) -> MetaResult<bool> {
        let (repo, owner) = (repo.to_string(), owner.to_string());
        self.write(move |tx| {
            let t = now();
            let open: i64 = tx.query_row("SELECT count(*) FROM upload_sessions WHERE owner = ?1", [&owner], |r| r.get(0)).map_err(backend)?;
            if open as u64 >= max_open {
                return Ok(false);
            }
            tx.execute("INSERT INTO upload_sessions (id, repository, created_at, updated_at, owner) VALUES (?1, ?2, ?3, ?3, ?4)", params![id.to_string(), repo, t, owner])
                .map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn get_upload(&self, id: Uuid) -> MetaResult<Option<UploadSession>> {
        self.read(move |c| {
            let row = c
                .prepare_cached("SELECT repository, finishing_digest FROM upload_sessions WHERE id = ?1")
                .and_then(|mut s| s.query_row([id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))).optional())
                .map_err(backend)?;
            row.map(|(repository, finishing)| Ok(UploadSession { id, repository, finishing: finishing.map(parse_digest).transpose()? })).transpose()
        })
        .await
    }

    async fn touch_upload(&self, id: Uuid) -> MetaResult<()> {
        self.write(move |tx| {
            tx.execute("UPDATE upload_sessions SET updated_at = ?2 WHERE id = ?1", params![id.to_string(), now()]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn mark_upload_finishing(&self, id: Uuid, digest: &Digest) -> MetaResult<()> {
        let digest = digest.to_string();
        self.write(move |tx| {
            tx.execute("UPDATE upload_sessions SET finishing_digest = ?2 WHERE id = ?1", params![id.to_string(), digest]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> MetaResult<bool> {
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM upload_sessions WHERE id = ?1", [id.to_string()]).map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn totals(&self) -> MetaResult<Totals> {
        self.read(|c| {
            c.query_row(super::TOTALS_SQL, [], |r| {
                Ok(Totals { repositories: r.get(0)?, manifests: r.get(1)?, blobs: r.get(2)?, blob_bytes: r.get(3)?, upload_sessions: r.get(4)? })
            })
            .map_err(backend)
        })
        .await
    }

    async fn list_uploads(&self) -> MetaResult<Vec<UploadSession>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT id, repository, finishing_digest FROM upload_sessions").map_err(backend)?;
            let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))).map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, repository, finishing) = row.map_err(backend)?;
                let id = Uuid::parse_str(&id).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
                out.push(UploadSession { id, repository, finishing: finishing.map(parse_digest).transpose()? });
            }
            Ok(out)
        })
        .await
    }

    async fn idle_uploads(&self, idle_secs: u64) -> MetaResult<Vec<Uuid>> {
        let cutoff = now() - idle_secs as i64;
        self.read(move |c| {
            let mut s = c.prepare_cached("SELECT id FROM upload_sessions WHERE updated_at <= ?1").map_err(backend)?;
            let rows = s.query_map([cutoff], |r| r.get::<_, String>(0)).map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(Uuid::parse_str(&row.map_err(backend)?).map_err(|e| MetadataError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_manifest(&self, repo: &str, m: NewManifest) -> MetaResult<PutManifestOutcome> {
        let repo = repo.to_string();
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            for b in m.blobs.iter().filter(|_| m.require_references) {
                let linked: bool = tx
                    .query_row("SELECT EXISTS (SELECT 1 FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2)", params![id, b.to_string()], |r| r.get(0))
                    .map_err(backend)?;
                if !linked {
                    return Ok(PutManifestOutcome::MissingReference(b.clone()));
                }
            }
            for child in m.manifests.iter().filter(|_| m.require_references) {
                let present: bool = tx
                    .query_row("SELECT EXISTS (SELECT 1 FROM manifests WHERE repository_id = ?1 AND digest = ?2)", params![id, child.to_string()], |r| r.get(0))
                    .map_err(backend)?;
                if !present {
                    return Ok(PutManifestOutcome::MissingReference(child.clone()));
                }
            }
            let r = &m.record;
            let digest = r.digest.to_string();
            tx.execute(
                "INSERT INTO manifests
                   (repository_id, digest, media_type, artifact_type, subject, annotations, content, image_cid, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT DO UPDATE SET image_cid = coalesce(manifests.image_cid, excluded.image_cid)",
                params![id, digest, r.media_type, r.artifact_type, r.subject.as_ref().map(|s| s.to_string()), r.annotations, &r.content[..], r.image_cid, now()],
            )
            .map_err(backend)?;
            for (kind, list) in [("blob", &m.blobs), ("manifest", &m.manifests)] {
                for child in list {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                        params![id, digest, child.to_string(), kind],
                    )
                    .map_err(backend)?;
                }
            }
            for tag in &m.tags {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, manifest_digest, image_cid, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                       image_cid = excluded.image_cid, updated_at = excluded.updated_at",
                    params![id, tag, digest, m.tag_images.get(tag), now()],
                )
                .map_err(backend)?;
            }
            Ok(PutManifestOutcome::Stored)
        })
        .await
    }

    async fn get_manifest(&self, repo: &str, reference: &Reference) -> MetaResult<Option<ManifestRecord>> {
        let repo = repo.to_string();
        let reference = reference.clone();
        self.read(move |c| {
            const COLS: &str = "m.digest, m.media_type, m.artifact_type, m.subject, m.annotations, m.content";
            // The image CID read by digest is the untagged one, by tag the one naming the tag.
            let row = match &reference {
                Reference::Digest(d) => c
                    .prepare_cached(&format!(
                        "SELECT {COLS}, m.image_cid FROM manifests m JOIN repositories r ON r.id = m.repository_id
                         WHERE r.name = ?1 AND m.digest = ?2"
                    ))
                    .and_then(|mut s| s.query_row(params![repo, d.to_string()], read_manifest_row).optional()),
                Reference::Tag(t) => c
                    .prepare_cached(&format!(
                        "SELECT {COLS}, t.image_cid FROM tags t
                         JOIN repositories r ON r.id = t.repository_id
                         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
                         WHERE r.name = ?1 AND t.name = ?2"
                    ))
                    .and_then(|mut s| s.query_row(params![repo, t], read_manifest_row).optional()),
            }
            .map_err(backend)?;
            row.map(|(digest, media_type, artifact_type, subject, annotations, content, image_cid)| {
                Ok(ManifestRecord {
                    digest: parse_digest(digest)?,
                    media_type,
                    artifact_type,
                    subject: subject.map(parse_digest).transpose()?,
                    annotations,
                    content: Bytes::from(content),
                    image_cid,
                })
            })
            .transpose()
        })
        .await
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        self.delete_in_repo("manifests", "digest", repo, digest.to_string()).await
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> MetaResult<bool> {
        self.delete_in_repo("tags", "name", repo, tag.to_string()).await
    }

    async fn list_tags(&self, repo: &str, page: &Page) -> MetaResult<Option<Vec<String>>> {
        let (repo, page) = (repo.to_string(), page.clone());
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(None) };
            let sql = page_sql("SELECT name FROM tags WHERE repository_id = ?1", "name", &page);
            let mut s = c.prepare_cached(&sql).map_err(backend)?;
            let last = page.last.clone().unwrap_or_default();
            let rows = s.query_map(params![id, last], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map(Some).map_err(backend)
        })
        .await
    }

    async fn list_public_repositories(&self, page: &Page) -> MetaResult<Vec<String>> {
        self.repository_names(
            "SELECT name FROM repositories r WHERE ?1 = ?1 AND r.visibility = 'public'
                AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)",
            page,
        )
        .await
    }

    async fn list_repositories(&self, page: &Page) -> MetaResult<Vec<String>> {
        // A repository is listed once it holds a manifest or a blob.
        self.repository_names(
            "SELECT name FROM repositories r WHERE ?1 = ?1 AND (
                EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
                OR EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repository_id = r.id))",
            page,
        )
        .await
    }

    async fn referrers(&self, repo: &str, subject: &Digest, artifact_type: Option<&str>, page: &ReferrerPage) -> MetaResult<(Vec<Referrer>, bool)> {
        let (repo, subject, at) = (repo.to_string(), subject.to_string(), artifact_type.map(str::to_string));
        let (after, budget, max) = (page.after.as_ref().map(|d| d.to_string()), page.budget as i64, page.max.max(1) as i64);
        self.read(move |c| {
            let mut s = c.prepare_cached(&REFERRERS_PAGE.replace("::TEXT", "")).map_err(backend)?;
            let rows = s
                .query_map(params![repo, subject, at, after, budget, max], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<String>>(3)?, r.get::<_, Option<String>>(4)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (digest, media_type, size, artifact_type, annotations) = row.map_err(backend)?;
                out.push(Referrer { digest: parse_digest(digest)?, media_type, size: size as u64, artifact_type, annotations });
            }
            let more = match out.last() {
                Some(last) => c
                    .prepare_cached(&REFERRERS_AFTER.replace("::TEXT", ""))
                    .and_then(|mut s| s.query_row(params![repo, subject, at, last.digest.to_string()], |r| r.get(0)))
                    .map_err(backend)?,
                None => false,
            };
            Ok((out, more))
        })
        .await
    }
}

type ManifestRow = (String, String, Option<String>, Option<String>, Option<String>, Vec<u8>, Option<String>);

fn read_manifest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest row (old: created at 0) in repository 1; `subject` for a referrer.
    fn manifest(c: &Connection, digest: &str, subject: Option<&str>) {
        c.execute("INSERT INTO manifests (repository_id, digest, media_type, subject, content, created_at) VALUES (1, ?1, 'm', ?2, x'', 0)", params![digest, subject]).unwrap();
    }

    fn left(c: &Connection) -> Vec<String> {
        let mut s = c.prepare("SELECT digest FROM manifests ORDER BY digest").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// The sweep reads what is garbage, then deletes it in batches: what became kept in between
    /// (a tag, a pin, a young index naming it, through parents and subjects) must stay, as it
    /// would in one transaction.
    #[test]
    fn a_batch_keeps_what_became_kept_after_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open_connection(&dir.path().join("m.sqlite")).unwrap();
        migrate(&mut c).unwrap();
        c.execute("INSERT INTO repositories (id, name, created_at) VALUES (1, 'r', 0)", []).unwrap();
        // index → child, child-of-tagged-later; subject ← referrer; an orphan; a lone referrer
        // whose subject a young index will name.
        for d in ["index", "child", "subject", "orphan", "lone"] {
            manifest(&c, d, None);
        }
        manifest(&c, "referrer", Some("subject"));
        manifest(&c, "deep-referrer", Some("referrer"));
        c.execute("INSERT INTO manifest_references VALUES (1, 'index', 'child', 'manifest')", []).unwrap();
        let cutoff = 100;
        let doomed = garbage_manifests(&c, cutoff).unwrap();
        assert_eq!(doomed.len(), 7, "everything is old and unkept: {doomed:?}");
        // Made kept after the read: the index tagged, the subject pinned, and a young index
        // naming "lone".
        c.execute("INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES (1, 't', 'index', 200)", []).unwrap();
        c.execute("INSERT INTO pins (repository_id, manifest_digest, created_at) VALUES (1, 'subject', 200)", []).unwrap();
        c.execute("INSERT INTO manifests (repository_id, digest, media_type, content, created_at) VALUES (1, 'young', 'm', x'', 200)", []).unwrap();
        c.execute("INSERT INTO manifest_references VALUES (1, 'young', 'lone', 'manifest')", []).unwrap();
        let tx = c.transaction().unwrap();
        let mut deleted = 0;
        for batch in doomed.chunks(2) {
            deleted += delete_garbage_manifests(&tx, batch, cutoff).unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(deleted, 1);
        assert_eq!(left(&c), ["child", "deep-referrer", "index", "lone", "referrer", "subject", "young"]);
        // With nothing keeping them any more, all but the young index go.
        c.execute_batch("DELETE FROM tags; DELETE FROM pins;").unwrap();
        let tx = c.transaction().unwrap();
        let doomed = garbage_manifests(&tx, cutoff).unwrap();
        assert_eq!(delete_garbage_manifests(&tx, &doomed, cutoff).unwrap(), 5);
        tx.commit().unwrap();
        assert_eq!(left(&c), ["lone", "young"]);
    }
}
