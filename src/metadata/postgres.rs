//! The metadata store on PostgreSQL (or a PostgreSQL-compatible distributed SQL engine), for
//! several nodes sharing one database.
//!
//! Every write is one transaction at SERIALIZABLE isolation, retried when the database reports a
//! serialization conflict: concurrent pushes from several nodes are then as if one after another,
//! which is what SQLite's single writer gives the embedded store. A database that cannot be
//! reached is `MetadataError::Unavailable` (503), never a panic; the pool reconnects by itself.
//!
//! Manifest and tag-list reads are batched (`batch.rs`): under load, one statement per round trip
//! answers every concurrent read. Manifest bytes, immutable, are the only thing cached.

use super::auth::{AuthStore, Role, TokenKind, TokenRecord, User, Visibility};
use super::batch::{Batcher, Loader};
use super::{
    roots_page, BlobInfo, GarbageCollected, ManifestRecord, MetaResult, MetadataError, MetadataStore, NewManifest, NodeRecord, Page, PutManifestOutcome, Reference, Referrer,
    ReferrerPage, RootsCursor, SweptBlob, Totals, UploadSession, REFERRERS_AFTER, REFERRERS_PAGE,
};
use crate::digest::Digest;
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::FutureExt;
use std::sync::Arc;
use tokio_postgres::{IsolationLevel, NoTls};
use uuid::Uuid;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../../migrations/postgres/0002_credential_identity.sql")),
    (3, include_str!("../../migrations/postgres/0003_change_generation.sql")),
    (4, include_str!("../../migrations/postgres/0004_node_swarm.sql")),
    (5, include_str!("../../migrations/postgres/0005_replicas.sql")),
    (6, include_str!("../../migrations/postgres/0006_gc_indexes.sql")),
    (7, include_str!("../../migrations/postgres/0007_replica_origin.sql")),
];
/// Serializes schema changes between nodes starting at once.
const MIGRATION_LOCK: i64 = 0x6166_5f72_6567; // "af_reg"
const ATTEMPTS: u32 = 60;

/// How long to wait before retry `attempt`: random, growing to at most ~0.25 s, so that
/// transactions that conflicted do not meet again in lockstep.
fn backoff(attempt: u32) -> std::time::Duration {
    let ceiling = 1u64 << attempt.min(8);
    let mut bytes = [0u8; 2];
    let r = getrandom::fill(&mut bytes).map(|()| u16::from_le_bytes(bytes)).unwrap_or(1) as u64;
    std::time::Duration::from_millis(1 + r % ceiling)
}

/// How long `connect` waits for a database that does not answer yet.
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads that may share a batch at once: few, so that under load each batch carries many reads.
const BATCHES_IN_FLIGHT: usize = 1;
/// Bytes of manifests kept in memory by digest.
const CONTENT_CACHE_BYTES: u64 = 64 << 20;

pub struct PgStore {
    pool: Pool,
    /// Which manifest a repository's tag or digest names (mutable: batched, never cached).
    heads: Arc<Batcher<(String, Reference), Option<ManifestRecord>>>,
    /// A manifest's bytes by digest: immutable, so cached once read.
    contents: quick_cache::sync::Cache<Digest, Bytes, ContentWeight>,
    /// Reads of bytes missing from `contents`: immutable, so no write concerns them.
    content_reads: Arc<Batcher<(String, Digest), Option<Bytes>>>,
    tag_lists: Arc<Batcher<TagPage, Option<Vec<String>>>>,
}

/// Errors a statement can end with: the driver's, or ours already classified.
trait IntoMeta {
    fn into_meta(self) -> MetadataError;
}

impl IntoMeta for MetadataError {
    fn into_meta(self) -> MetadataError {
        self
    }
}

impl IntoMeta for tokio_postgres::Error {
    fn into_meta(self) -> MetadataError {
        classify(self)
    }
}

fn pg(e: impl IntoMeta) -> MetadataError {
    let error = e.into_meta();
    crate::metrics::metadata_error("postgres", error.kind());
    error
}

fn classify(e: tokio_postgres::Error) -> MetadataError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        _ if e.is_closed() => MetadataError::Unavailable(e.to_string()),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => MetadataError::Conflict(e.to_string()),
        // Connection exceptions (08), a server shutting down or starting (57P), out of
        // resources (53): the database is away, not the statement wrong.
        Some(c) if ["08", "57P", "53"].iter().any(|p| c.code().starts_with(p)) => MetadataError::Unavailable(e.to_string()),
        Some(_) => MetadataError::Backend(e.to_string()),
        // No SQL state: the connection failed, not the statement.
        None => MetadataError::Unavailable(e.to_string()),
    }
}

fn now() -> i64 {
    crate::clock::unix_now()
}

fn parse_digest(s: String) -> MetaResult<Digest> {
    s.parse().map_err(|e| MetadataError::Corrupt(format!("{e}")))
}

/// Runs `$body` in a SERIALIZABLE transaction `$tx`, retrying on conflicts.
macro_rules! transaction {
    ($self:ident, |$tx:ident| $body:block) => {{
        let mut attempt = 0;
        loop {
            let mut client = $self.client().await?;
            let $tx = client.build_transaction().isolation_level(IsolationLevel::Serializable).start().await.map_err(pg)?;
            let result = async { $body }.await;
            let outcome = match result {
                Ok(v) => $tx.commit().await.map_err(pg).map(|()| v),
                Err(e) => Err(e),
            };
            match outcome {
                Err(MetadataError::Conflict(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(MetadataError::Conflict(e)) => break Err(MetadataError::Unavailable(format!("too many conflicts: {e}"))),
                other => break other,
            }
        }
    }};
}

impl PgStore {
    /// Connects to `url` (`postgres://...`) and applies pending migrations.
    pub async fn connect(url: &str) -> MetaResult<Arc<Self>> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| MetadataError::Backend(format!("database URL: {e}")))?;
        let pool = new_pool(config, 16)?;
        let store = PgStore {
            heads: Batcher::new(BATCHES_IN_FLIGHT, loader(&pool, load_heads)),
            contents: quick_cache::sync::Cache::with_weighter(4096, CONTENT_CACHE_BYTES, ContentWeight),
            content_reads: Batcher::new(BATCHES_IN_FLIGHT, loader(&pool, load_contents)),
            tag_lists: Batcher::new(BATCHES_IN_FLIGHT, loader(&pool, load_tag_lists)),
            pool,
        };
        // A database that is starting, or slow to accept connections under load, is waited
        // for a while; one that refuses for longer is reported.
        let deadline = std::time::Instant::now() + CONNECT_PATIENCE;
        loop {
            match store.migrate().await {
                Ok(()) => return Ok(Arc::new(store)),
                Err(MetadataError::Unavailable(e)) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "the database is not answering yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Passes on the outcome of a write to repositories, manifests or tags (committed, or not
    /// known to have failed), after which this node's reads no longer share a batch sent before
    /// it. Called by the writes that change what `heads` and `tag_lists` read; blob touches and
    /// uploads are not among them, so a pull's blob reads leave its manifest reads batched.
    fn wrote_after<T>(&self, outcome: T) -> T {
        self.heads.wrote();
        self.tag_lists.wrote();
        outcome
    }

    async fn client(&self) -> MetaResult<deadpool_postgres::Object> {
        let started = std::time::Instant::now();
        let client = self.pool.get().await.map_err(|e| pg(MetadataError::Unavailable(e.to_string())));
        crate::metrics::METRICS.pool_wait.with_label_values(&["postgres"]).observe(started.elapsed().as_secs_f64());
        client
    }

    /// A read outside a transaction, with the statement prepared once per connection (a plain
    /// `query` would prepare it on every call: two round trips instead of one).
    async fn read(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> MetaResult<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg)?;
        client.query(&statement, params).await.map_err(pg)
    }

    async fn read_opt(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> MetaResult<Option<tokio_postgres::Row>> {
        Ok(self.read(sql, params).await?.into_iter().next())
    }

    async fn migrate(&self) -> MetaResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS af_schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)").await.map_err(pg)?;
        let current: i64 = tx.query_one("SELECT coalesce(max(version), 0) FROM af_schema_migrations", &[]).await.map_err(pg)?.get(0);
        for (version, sql) in MIGRATIONS {
            if *version > current {
                tx.batch_execute(sql).await.map_err(pg)?;
                tx.execute("INSERT INTO af_schema_migrations (version, applied_at) VALUES ($1, $2)", &[version, &now()]).await.map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)
    }
}

async fn ensure_repo(tx: &deadpool_postgres::Transaction<'_>, name: &str) -> MetaResult<i64> {
    tx.execute("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", &[&name, &now()]).await.map_err(pg)?;
    Ok(tx.query_one("SELECT id FROM repositories WHERE name = $1", &[&name]).await.map_err(pg)?.get(0))
}

async fn link_blob(tx: &deadpool_postgres::Transaction<'_>, repo: i64, digest: &str) -> MetaResult<()> {
    tx.execute(
        "INSERT INTO repository_blobs (repository_id, digest, touched_at) VALUES ($1, $2, $3)
         ON CONFLICT (repository_id, digest) DO UPDATE SET touched_at = excluded.touched_at",
        &[&repo, &digest, &now()],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

fn page_sql(base: &str, key: &str, param: usize, page: &Page) -> String {
    let mut sql = format!("{base} AND {key} > ${param} ORDER BY {key}");
    if let Some(n) = page.limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    sql
}

async fn delete_in_repo(store: &PgStore, table: &'static str, column: &'static str, repo: &str, key: String) -> MetaResult<bool> {
    transaction!(store, |tx| {
        let sql = format!("DELETE FROM {table} WHERE {column} = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $1)");
        Ok::<_, MetadataError>(tx.execute(&sql, &[&repo, &key]).await.map_err(pg)? > 0)
    })
}

fn new_pool(config: tokio_postgres::Config, size: usize) -> MetaResult<Pool> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        // A loaded server can take seconds to start a backend: better a slow request than a failed one.
        .create_timeout(Some(std::time::Duration::from_secs(15)))
        .build()
        .map_err(|e| MetadataError::Backend(e.to_string()))
}

/// A batched read (`batch.rs`): one statement on a connection taken from the pool for it.
fn loader<K, V, F, Fut>(pool: &Pool, load: F) -> Loader<K, V>
where
    K: Send + 'static,
    V: Send + 'static,
    F: Fn(deadpool_postgres::Object, Vec<K>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = MetaResult<Vec<V>>> + Send + 'static,
{
    let pool = pool.clone();
    Box::new(move |keys| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.map_err(|e| MetadataError::Unavailable(e.to_string()))?;
            load(client, keys).await
        }
        .boxed()
    })
}

/// Places each row (its first column: the 1-based position of the key it answers) beside its key.
fn by_position<V: Clone>(keys: usize, rows: Vec<tokio_postgres::Row>, value: impl Fn(&tokio_postgres::Row) -> MetaResult<V>) -> MetaResult<Vec<Option<V>>> {
    let mut out = vec![None; keys];
    for row in rows {
        let slot = usize::try_from(row.get::<_, i64>(0) - 1).ok().and_then(|i| out.get_mut(i));
        *slot.ok_or_else(|| MetadataError::Backend("a batched read answered a key it was not asked".into()))? = Some(value(&row)?);
    }
    Ok(out)
}

/// Which manifest each (repository, tag or digest) names, without its bytes. Tags and digests
/// are two arms of one statement, each a join on primary keys.
async fn load_heads(client: deadpool_postgres::Object, keys: Vec<(String, Reference)>) -> MetaResult<Vec<Option<ManifestRecord>>> {
    const SQL: &str = "SELECT q.i, m.digest, m.media_type, m.artifact_type, m.subject, m.annotations, t.image_cid
          FROM unnest($1::text[], $2::bigint[], $3::text[]) AS q(repo, i, tag)
          JOIN repositories r ON r.name = q.repo
          JOIN tags t ON t.repository_id = r.id AND t.name = q.tag
          JOIN manifests m ON m.repository_id = r.id AND m.digest = t.manifest_digest
        UNION ALL
        SELECT q.i, m.digest, m.media_type, m.artifact_type, m.subject, m.annotations, m.image_cid
          FROM unnest($4::text[], $5::bigint[], $6::text[]) AS q(repo, i, digest)
          JOIN repositories r ON r.name = q.repo
          JOIN manifests m ON m.repository_id = r.id AND m.digest = q.digest";
    let (mut tags, mut digests) = ((vec![], vec![], vec![]), (vec![], vec![], vec![]));
    for (i, (repo, reference)) in (1i64..).zip(&keys) {
        let (arm, reference) = match reference {
            Reference::Tag(t) => (&mut tags, t.clone()),
            Reference::Digest(d) => (&mut digests, d.to_string()),
        };
        arm.0.push(repo.as_str());
        arm.1.push(i);
        arm.2.push(reference);
    }
    let statement = client.prepare_cached(SQL).await.map_err(pg)?;
    let rows = client.query(&statement, &[&tags.0, &tags.1, &tags.2, &digests.0, &digests.1, &digests.2]).await.map_err(pg)?;
    by_position(keys.len(), rows, |row| {
        Ok(ManifestRecord {
            digest: parse_digest(row.get(1))?,
            media_type: row.get(2),
            artifact_type: row.get(3),
            subject: row.get::<_, Option<String>>(4).map(parse_digest).transpose()?,
            annotations: row.get(5),
            content: Bytes::new(),
            image_cid: row.get(6),
        })
    })
}

async fn load_contents(client: deadpool_postgres::Object, keys: Vec<(String, Digest)>) -> MetaResult<Vec<Option<Bytes>>> {
    const SQL: &str = "SELECT q.i, m.content
        FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(repo, digest, i)
        JOIN repositories r ON r.name = q.repo
        JOIN manifests m ON m.repository_id = r.id AND m.digest = q.digest";
    let repos: Vec<&str> = keys.iter().map(|(repo, _)| repo.as_str()).collect();
    let digests: Vec<String> = keys.iter().map(|(_, d)| d.to_string()).collect();
    let statement = client.prepare_cached(SQL).await.map_err(pg)?;
    let rows = client.query(&statement, &[&repos, &digests]).await.map_err(pg)?;
    by_position(keys.len(), rows, |row| Ok(Bytes::from(row.get::<_, Vec<u8>>(1))))
}

/// A page of a repository's tags: (repository, at most n, after this name).
type TagPage = (String, Option<usize>, String);

/// Tag pages; None: no such repository.
async fn load_tag_lists(client: deadpool_postgres::Object, keys: Vec<TagPage>) -> MetaResult<Vec<Option<Vec<String>>>> {
    const SQL: &str = "SELECT q.i, coalesce((SELECT array_agg(name ORDER BY name) FROM
            (SELECT name FROM tags WHERE repository_id = r.id AND name > q.last ORDER BY name LIMIT q.n) page), '{}')
        FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY AS q(repo, n, last, i)
        JOIN repositories r ON r.name = q.repo";
    let repos: Vec<&str> = keys.iter().map(|(repo, ..)| repo.as_str()).collect();
    let limits: Vec<Option<i64>> = keys.iter().map(|(_, n, _)| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))).collect();
    let lasts: Vec<&str> = keys.iter().map(|(.., last)| last.as_str()).collect();
    let statement = client.prepare_cached(SQL).await.map_err(pg)?;
    let rows = client.query(&statement, &[&repos, &limits, &lasts]).await.map_err(pg)?;
    by_position(keys.len(), rows, |row| Ok(row.get::<_, Vec<String>>(1)))
}

/// Weighs a cached manifest by its size, so the cache is bounded in bytes.
#[derive(Clone)]
struct ContentWeight;

impl quick_cache::Weighter<Digest, Bytes> for ContentWeight {
    fn weight(&self, _digest: &Digest, content: &Bytes) -> u64 {
        content.len().max(1) as u64
    }
}

#[async_trait]
impl MetadataStore for PgStore {
    async fn blob_info(&self, repo: &str, digest: &Digest) -> MetaResult<Option<BlobInfo>> {
        let row = self
            .read_opt(
                "SELECT b.size, b.root_cid, rb.touched_at FROM blobs b
                 JOIN repository_blobs rb ON rb.digest = b.digest
                 JOIN repositories r ON r.id = rb.repository_id
                 WHERE r.name = $1 AND b.digest = $2 AND NOT b.missing",
                &[&repo, &digest.to_string()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| BlobInfo { size: r.get::<_, i64>(0) as u64, root_cid: r.get(1), touched_at: r.get(2) }))
    }

    async fn commit_blob(&self, repo: &str, digest: &Digest, blob: &BlobInfo, upload: Option<Uuid>) -> MetaResult<()> {
        let digest = digest.to_string();
        self.wrote_after(transaction!(self, |tx| {
            let id = ensure_repo(&tx, repo).await?;
            tx.execute(
                "INSERT INTO blobs (digest, size, root_cid, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest) DO UPDATE SET missing = FALSE, size = excluded.size, root_cid = excluded.root_cid
                 WHERE blobs.missing",
                &[&digest, &(blob.size as i64), &blob.root_cid, &now()],
            )
            .await
            .map_err(pg)?;
            link_blob(&tx, id, &digest).await?;
            if let Some(u) = upload {
                tx.execute("DELETE FROM upload_sessions WHERE id = $1", &[&u.to_string()]).await.map_err(pg)?;
            }
            Ok::<_, MetadataError>(())
        }))
    }

    async fn mount_blob(&self, repo: &str, from: Option<&str>, digest: &Digest) -> MetaResult<Option<u64>> {
        let digest = digest.to_string();
        self.wrote_after(transaction!(self, |tx| {
            let size: Option<i64> = match from {
                Some(from) => tx
                    .query_opt(
                        "SELECT b.size FROM blobs b JOIN repository_blobs rb ON rb.digest = b.digest
                         JOIN repositories r ON r.id = rb.repository_id
                         WHERE r.name = $1 AND b.digest = $2 AND NOT b.missing",
                        &[&from, &digest],
                    )
                    .await
                    .map_err(pg)?
                    .map(|r| r.get(0)),
                None => tx
                    .query_opt(
                        "SELECT b.size FROM blobs b WHERE b.digest = $1 AND NOT b.missing
                         AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                        &[&digest],
                    )
                    .await
                    .map_err(pg)?
                    .map(|r| r.get(0)),
            };
            let Some(size) = size else { return Ok(None) };
            let id = ensure_repo(&tx, repo).await?;
            link_blob(&tx, id, &digest).await?;
            Ok::<_, MetadataError>(Some(size as u64))
        }))
    }

    async fn list_blobs(&self) -> MetaResult<Vec<(Digest, u64)>> {
        let rows = self.read("SELECT digest, size FROM blobs WHERE NOT missing ORDER BY digest", &[]).await.map_err(pg)?;
        rows.into_iter().map(|r| Ok((parse_digest(r.get(0))?, r.get::<_, i64>(1) as u64))).collect()
    }

    async fn mark_blob_missing(&self, digest: &Digest) -> MetaResult<()> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            tx.execute("UPDATE blobs SET missing = TRUE WHERE digest = $1", &[&digest]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn touch_blob(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            let touched = tx
                .execute(
                    "UPDATE repository_blobs SET touched_at = $3 WHERE digest = $2
                     AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                    &[&repo, &digest, &now()],
                )
                .await
                .map_err(pg)?;
            Ok::<_, MetadataError>(touched > 0)
        })
    }

    async fn pin(&self, repo: &str, reference: &Reference) -> MetaResult<Option<Digest>> {
        transaction!(self, |tx| {
            let Some(row) = tx.query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo]).await.map_err(pg)? else {
                return Ok(None);
            };
            let id: i64 = row.get(0);
            let digest: Option<String> = match reference {
                Reference::Digest(d) => {
                    tx.query_opt("SELECT digest FROM manifests WHERE repository_id = $1 AND digest = $2", &[&id, &d.to_string()]).await.map_err(pg)?.map(|r| r.get(0))
                }
                Reference::Tag(t) => tx.query_opt("SELECT manifest_digest FROM tags WHERE repository_id = $1 AND name = $2", &[&id, t]).await.map_err(pg)?.map(|r| r.get(0)),
            };
            let Some(digest) = digest else { return Ok(None) };
            tx.execute("INSERT INTO pins (repository_id, manifest_digest, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", &[&id, &digest, &now()]).await.map_err(pg)?;
            Ok::<_, MetadataError>(Some(parse_digest(digest)?))
        })
    }

    async fn unpin(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        delete_in_repo(self, "pins", "manifest_digest", repo, digest.to_string()).await
    }

    async fn list_pins(&self) -> MetaResult<Vec<(String, Digest)>> {
        let rows = self
            .read(
                "SELECT r.name, p.manifest_digest FROM pins p JOIN repositories r ON r.id = p.repository_id
                 ORDER BY r.name, p.manifest_digest",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.into_iter().map(|r| Ok((r.get(0), parse_digest(r.get(1))?))).collect()
    }

    async fn collect_garbage(&self, cutoff: i64) -> MetaResult<GarbageCollected> {
        self.wrote_after(transaction!(self, |tx| {
            // One recursive term over the union of both edges (index → child, subject →
            // referrer): PostgreSQL allows a single recursive reference.
            let manifests = tx
                .execute(
                    "WITH RECURSIVE edges(repository_id, parent, child) AS (
                         SELECT repository_id, manifest_digest, child_digest FROM manifest_references WHERE kind = 'manifest'
                         UNION ALL SELECT repository_id, subject, digest FROM manifests WHERE subject IS NOT NULL
                     ), kept(repository_id, digest) AS (
                         SELECT repository_id, manifest_digest FROM tags
                         UNION SELECT repository_id, manifest_digest FROM pins
                         UNION SELECT repository_id, digest FROM manifests WHERE created_at >= $1
                         UNION SELECT e.repository_id, e.child FROM edges e
                             JOIN kept k ON e.repository_id = k.repository_id AND e.parent = k.digest
                     )
                     DELETE FROM manifests m WHERE NOT EXISTS (
                         SELECT 1 FROM kept k WHERE k.repository_id = m.repository_id AND k.digest = m.digest)",
                    &[&cutoff],
                )
                .await
                .map_err(pg)?;
            let links = tx
                .execute(
                    "DELETE FROM repository_blobs rb WHERE rb.touched_at < $1 AND NOT EXISTS (
                         SELECT 1 FROM manifest_references r WHERE r.repository_id = rb.repository_id
                         AND r.child_digest = rb.digest AND r.kind = 'blob')",
                    &[&cutoff],
                )
                .await
                .map_err(pg)?;
            let rows = tx
                .query(
                    "DELETE FROM blobs b WHERE b.created_at < $1
                     AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                     AND NOT EXISTS (SELECT 1 FROM upload_sessions u WHERE u.finishing_digest = b.digest)
                     RETURNING digest, size, missing",
                    &[&cutoff],
                )
                .await
                .map_err(pg)?;
            let mut blobs = Vec::new();
            for r in rows {
                blobs.push(SweptBlob { digest: parse_digest(r.get(0))?, size: r.get::<_, i64>(1) as u64, had_file: !r.get::<_, bool>(2) });
            }
            Ok::<_, MetadataError>(GarbageCollected { manifests, links, blobs })
        }))
    }

    async fn blob_by_root(&self, cid: &str) -> MetaResult<Option<Digest>> {
        let row = self.read_opt("SELECT digest FROM blobs WHERE root_cid = $1 AND NOT missing LIMIT 1", &[&cid]).await.map_err(pg)?;
        row.map(|r| parse_digest(r.get(0))).transpose()
    }

    async fn heartbeat(&self, node: &str, api_url: &str, swarm_addrs: &[String]) -> MetaResult<bool> {
        let swarm = swarm_addrs.join(" ");
        transaction!(self, |tx| {
            let known = tx.query_opt("SELECT 1 FROM nodes WHERE id = $1", &[&node]).await.map_err(pg)?.is_some();
            tx.execute(
                "INSERT INTO nodes (id, api_url, heartbeat_at, swarm_addrs) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, heartbeat_at = excluded.heartbeat_at,
                 swarm_addrs = excluded.swarm_addrs",
                &[&node, &api_url, &now(), &swarm],
            )
            .await
            .map_err(pg)?;
            Ok::<_, MetadataError>(!known)
        })
    }
    async fn record_holder(&self, digest: &Digest, node: &str) -> MetaResult<()> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            tx.execute("INSERT INTO blob_holders (digest, node_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&digest, &node]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn live_holders(&self, digest: &Digest, except: &str, alive_secs: i64) -> MetaResult<Vec<NodeRecord>> {
        let rows = self
            .read(
                "SELECT n.id, n.api_url, n.swarm_addrs FROM blob_holders h JOIN nodes n ON n.id = h.node_id
                 WHERE h.digest = $1 AND n.id != $2 AND n.heartbeat_at >= $3 ORDER BY n.heartbeat_at DESC",
                &[&digest.to_string(), &except, &(now() - alive_secs)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.into_iter().map(|r| NodeRecord::from_columns(r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn live_nodes(&self, except: &str, alive_secs: i64) -> MetaResult<Vec<NodeRecord>> {
        let rows =
            self.read("SELECT id, api_url, swarm_addrs FROM nodes WHERE id != $1 AND heartbeat_at >= $2 ORDER BY id", &[&except, &(now() - alive_secs)]).await.map_err(pg)?;
        Ok(rows.into_iter().map(|r| NodeRecord::from_columns(r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn set_replicas(&self, repo: &str, replicas: Option<u32>) -> MetaResult<()> {
        let replicas = replicas.map(|r| r as i32);
        transaction!(self, |tx| {
            let id = ensure_repo(&tx, repo).await?;
            tx.execute("UPDATE repositories SET replicas = $2 WHERE id = $1", &[&id, &replicas]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn replicas(&self, repo: &str) -> MetaResult<Option<u32>> {
        let row = self.client().await?.query_opt("SELECT replicas FROM repositories WHERE name = $1", &[&repo]).await.map_err(pg)?;
        Ok(row.and_then(|r| r.get::<_, Option<i32>>(0)).map(|n| n.max(0) as u32))
    }

    async fn visibility(&self, repo: &str) -> MetaResult<Option<bool>> {
        let row = self.client().await?.query_opt("SELECT visibility = 'public' FROM repositories WHERE name = $1", &[&repo]).await.map_err(pg)?;
        Ok(row.map(|r| r.get::<_, bool>(0)))
    }

    async fn visibility_or_create(&self, repo: &str, public_if_new: bool) -> MetaResult<bool> {
        transaction!(self, |tx| {
            let existed: bool = tx.query_one("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = $1)", &[&repo]).await.map_err(pg)?.get(0);
            let id = ensure_repo(&tx, repo).await?;
            if !existed {
                tx.execute("UPDATE repositories SET visibility = $2 WHERE id = $1", &[&id, &if public_if_new { "public" } else { "private" }]).await.map_err(pg)?;
            }
            let v: String = tx.query_one("SELECT visibility FROM repositories WHERE id = $1", &[&id]).await.map_err(pg)?.get(0);
            Ok::<_, MetadataError>(v == "public")
        })
    }

    async fn replica_or_create(&self, repo: &str, origin: &str, public_if_new: bool, stamp: i64) -> MetaResult<Option<bool>> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO repositories (name, created_at, visibility, replica_of, replica_stamp) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                &[&repo, &now(), &if public_if_new { "public" } else { "private" }, &origin, &stamp],
            )
            .await
            .map_err(pg)?;
        let row = client.query_opt("SELECT visibility = 'public' FROM repositories WHERE name = $1 AND replica_of = $2", &[&repo, &origin]).await.map_err(pg)?;
        Ok(row.map(|r| r.get::<_, bool>(0)))
    }

    async fn replica_of(&self, repo: &str) -> MetaResult<Option<String>> {
        let row = self.client().await?.query_opt("SELECT replica_of FROM repositories WHERE name = $1", &[&repo]).await.map_err(pg)?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    async fn advance_replica(&self, repo: &str, origin: &str, stamp: i64) -> MetaResult<bool> {
        let n = self
            .client()
            .await?
            .execute("UPDATE repositories SET replica_stamp = $3 WHERE name = $1 AND replica_of = $2 AND replica_stamp < $3", &[&repo, &origin, &stamp])
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn set_public(&self, repo: &str, public: bool) -> MetaResult<()> {
        transaction!(self, |tx| {
            let id = ensure_repo(&tx, repo).await?;
            tx.execute("UPDATE repositories SET visibility = $2 WHERE id = $1", &[&id, &if public { "public" } else { "private" }]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn bump_generation(&self) -> MetaResult<i64> {
        transaction!(self, |tx| {
            let row = tx.query_one("UPDATE change_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation", &[]).await.map_err(pg)?;
            Ok::<_, MetadataError>(row.get(0))
        })
    }

    async fn ack_generation(&self, node: &str, generation: i64) -> MetaResult<()> {
        transaction!(self, |tx| {
            tx.execute("UPDATE nodes SET seen_generation = $2 WHERE id = $1 AND seen_generation < $2", &[&node, &generation]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn lagging_nodes(&self, generation: i64, except: &str, alive_secs: i64) -> MetaResult<Vec<String>> {
        let rows = self
            .read("SELECT id FROM nodes WHERE seen_generation < $1 AND id != $2 AND heartbeat_at >= $3 ORDER BY id", &[&generation, &except, &(now() - alive_secs)])
            .await
            .map_err(pg)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn generation(&self) -> MetaResult<i64> {
        let rows = self.read("SELECT generation FROM change_generation WHERE id = 1", &[]).await.map_err(pg)?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn public_roots(&self) -> MetaResult<Vec<String>> {
        let rows = self.read(super::PUBLIC_ROOTS, &[]).await.map_err(pg)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn live_roots_page(&self, after: &RootsCursor, limit: u32) -> MetaResult<(Vec<String>, Option<RootsCursor>)> {
        let sql = match after.source {
            0 => "SELECT 0::BIGINT, digest, root_cid FROM blobs WHERE $1::BIGINT = 0 AND digest > $2 ORDER BY digest LIMIT $3",
            1 => "SELECT repository_id, digest, image_cid FROM manifests WHERE (repository_id, digest) > ($1, $2) ORDER BY repository_id, digest LIMIT $3",
            _ => "SELECT repository_id, name, image_cid FROM tags WHERE (repository_id, name) > ($1, $2) ORDER BY repository_id, name LIMIT $3",
        };
        let rows = self.read(sql, &[&after.repository, &after.key, &(limit as i64)]).await.map_err(pg)?;
        let rows = rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        Ok(roots_page(after.clone(), limit, rows))
    }

    async fn existing_blobs(&self, digests: &[Digest]) -> MetaResult<Vec<Digest>> {
        let digests: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let rows = self.read("SELECT digest FROM blobs WHERE digest = ANY($1) AND NOT missing", &[&digests]).await.map_err(pg)?;
        rows.into_iter().map(|r| parse_digest(r.get(0))).collect()
    }

    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        delete_in_repo(self, "repository_blobs", "digest", repo, digest.to_string()).await
    }

    async fn create_upload(&self, repo: &str, id: Uuid, owner: &str, max_open: u64) -> MetaResult<bool> {
        transaction!(self, |tx| {
            let t = now();
            let open: i64 = tx.query_one("SELECT count(*) FROM upload_sessions WHERE owner = $1", &[&owner]).await.map_err(pg)?.get(0);
            if open as u64 >= max_open {
                return Ok(false);
            }
            tx.execute("INSERT INTO upload_sessions (id, repository, created_at, updated_at, owner) VALUES ($1, $2, $3, $3, $4)", &[&id.to_string(), &repo, &t, &owner])
                .await
                .map_err(pg)?;
            Ok::<_, MetadataError>(true)
        })
    }

    async fn get_upload(&self, id: Uuid) -> MetaResult<Option<UploadSession>> {
        let row = self.read_opt("SELECT repository, finishing_digest FROM upload_sessions WHERE id = $1", &[&id.to_string()]).await.map_err(pg)?;
        row.map(|r| Ok(UploadSession { id, repository: r.get(0), finishing: r.get::<_, Option<String>>(1).map(parse_digest).transpose()? })).transpose()
    }

    async fn touch_upload(&self, id: Uuid) -> MetaResult<()> {
        transaction!(self, |tx| {
            tx.execute("UPDATE upload_sessions SET updated_at = $2 WHERE id = $1", &[&id.to_string(), &now()]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn mark_upload_finishing(&self, id: Uuid, digest: &Digest) -> MetaResult<()> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            tx.execute("UPDATE upload_sessions SET finishing_digest = $2 WHERE id = $1", &[&id.to_string(), &digest]).await.map_err(pg)?;
            Ok::<_, MetadataError>(())
        })
    }

    async fn delete_upload(&self, id: Uuid) -> MetaResult<bool> {
        transaction!(self, |tx| { Ok::<_, MetadataError>(tx.execute("DELETE FROM upload_sessions WHERE id = $1", &[&id.to_string()]).await.map_err(pg)? > 0) })
    }

    async fn totals(&self) -> MetaResult<Totals> {
        let row = self.read(super::TOTALS_SQL, &[]).await?.into_iter().next().ok_or_else(|| MetadataError::Corrupt("no totals".into()))?;
        Ok(Totals { repositories: row.get(0), manifests: row.get(1), blobs: row.get(2), blob_bytes: row.get(3), upload_sessions: row.get(4) })
    }

    async fn list_uploads(&self) -> MetaResult<Vec<UploadSession>> {
        let rows = self.read("SELECT id, repository, finishing_digest FROM upload_sessions", &[]).await.map_err(pg)?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                Ok(UploadSession {
                    id: Uuid::parse_str(&id).map_err(|e| MetadataError::Corrupt(e.to_string()))?,
                    repository: r.get(1),
                    finishing: r.get::<_, Option<String>>(2).map(parse_digest).transpose()?,
                })
            })
            .collect()
    }

    async fn idle_uploads(&self, idle_secs: u64) -> MetaResult<Vec<Uuid>> {
        let rows = self.read("SELECT id FROM upload_sessions WHERE updated_at <= $1", &[&(now() - idle_secs as i64)]).await.map_err(pg)?;
        rows.into_iter().map(|r| Uuid::parse_str(&r.get::<_, String>(0)).map_err(|e| MetadataError::Corrupt(e.to_string()))).collect()
    }

    async fn put_manifest(&self, repo: &str, m: NewManifest) -> MetaResult<PutManifestOutcome> {
        self.wrote_after(transaction!(self, |tx| {
            let id = ensure_repo(&tx, repo).await?;
            for b in m.blobs.iter().filter(|_| m.require_references) {
                let linked = tx.query_opt("SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2", &[&id, &b.to_string()]).await.map_err(pg)?;
                if linked.is_none() {
                    return Ok(PutManifestOutcome::MissingReference(b.clone()));
                }
            }
            for child in m.manifests.iter().filter(|_| m.require_references) {
                let present = tx.query_opt("SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2", &[&id, &child.to_string()]).await.map_err(pg)?;
                if present.is_none() {
                    return Ok(PutManifestOutcome::MissingReference(child.clone()));
                }
            }
            let r = &m.record;
            let digest = r.digest.to_string();
            let subject = r.subject.as_ref().map(|s| s.to_string());
            tx.execute(
                "INSERT INTO manifests
                   (repository_id, digest, media_type, artifact_type, subject, annotations, content, image_cid, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (repository_id, digest) DO UPDATE SET image_cid = coalesce(manifests.image_cid, excluded.image_cid)",
                &[&id, &digest, &r.media_type, &r.artifact_type, &subject, &r.annotations, &&r.content[..], &r.image_cid, &now()],
            )
            .await
            .map_err(pg)?;
            for (kind, list) in [("blob", &m.blobs), ("manifest", &m.manifests)] {
                for child in list {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&id, &digest, &child.to_string(), &kind],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            for tag in &m.tags {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, manifest_digest, image_cid, updated_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                       image_cid = excluded.image_cid, updated_at = excluded.updated_at",
                    &[&id, tag, &digest, &m.tag_images.get(tag), &now()],
                )
                .await
                .map_err(pg)?;
            }
            Ok::<_, MetadataError>(PutManifestOutcome::Stored)
        }))
    }

    async fn get_manifest(&self, repo: &str, reference: &Reference) -> MetaResult<Option<ManifestRecord>> {
        let Some(mut record) = self.heads.get((repo.to_string(), reference.clone())).await? else {
            return Ok(None);
        };
        record.content = match self.contents.get(&record.digest) {
            Some(content) => content,
            None => match self.content_reads.get((repo.to_string(), record.digest.clone())).await? {
                // Checked once on its way into the cache, as it was when it was pushed.
                Some(content) if Digest::of_bytes(record.digest.algorithm(), &content) == record.digest => {
                    self.contents.insert(record.digest.clone(), content.clone());
                    content
                }
                Some(_) => return Err(MetadataError::Corrupt(format!("the stored bytes of {} do not match it", record.digest))),
                // Deleted between the two reads.
                None => return Ok(None),
            },
        };
        Ok(Some(record))
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> MetaResult<bool> {
        self.wrote_after(delete_in_repo(self, "manifests", "digest", repo, digest.to_string()).await)
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> MetaResult<bool> {
        self.wrote_after(delete_in_repo(self, "tags", "name", repo, tag.to_string()).await)
    }

    async fn list_tags(&self, repo: &str, page: &Page) -> MetaResult<Option<Vec<String>>> {
        self.tag_lists.get((repo.to_string(), page.limit, page.last.clone().unwrap_or_default())).await
    }

    async fn list_public_repositories(&self, page: &Page) -> MetaResult<Vec<String>> {
        let client = self.client().await?;
        let base = "SELECT name FROM repositories r WHERE r.visibility = 'public'
            AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)";
        let sql = page_sql(base, "name COLLATE \"C\"", 1, page);
        let last = page.last.clone().unwrap_or_default();
        let rows = client.query(&sql, &[&last]).await.map_err(pg)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn list_repositories(&self, page: &Page) -> MetaResult<Vec<String>> {
        let client = self.client().await?;
        let base = "SELECT name FROM repositories r WHERE (
            EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
            OR EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repository_id = r.id))";
        let sql = page_sql(base, "name COLLATE \"C\"", 1, page);
        let last = page.last.clone().unwrap_or_default();
        let rows = client.query(&sql, &[&last]).await.map_err(pg)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn referrers(&self, repo: &str, subject: &Digest, artifact_type: Option<&str>, page: &ReferrerPage) -> MetaResult<(Vec<Referrer>, bool)> {
        let subject = subject.to_string();
        let after = page.after.as_ref().map(|d| d.to_string());
        let (budget, max) = (page.budget as i64, page.max.max(1) as i64);
        let rows = self.read(REFERRERS_PAGE, &[&repo, &subject, &artifact_type, &after, &budget, &max]).await.map_err(pg)?;
        let out = rows
            .into_iter()
            .map(|r| Ok(Referrer { digest: parse_digest(r.get(0))?, media_type: r.get(1), size: r.get::<_, i32>(2) as u64, artifact_type: r.get(3), annotations: r.get(4) }))
            .collect::<MetaResult<Vec<_>>>()?;
        let more = match out.last() {
            Some(last) => self.read(REFERRERS_AFTER, &[&repo, &subject, &artifact_type, &last.digest.to_string()]).await.map_err(pg)?[0].get(0),
            None => false,
        };
        Ok((out, more))
    }
}

fn role(s: String) -> MetaResult<Role> {
    s.parse().map_err(|e| MetadataError::Corrupt(format!("{e}")))
}

const TOKEN_COLS: &str = "t.id, u.name, t.kind, t.secret_hash, t.scope, t.description, t.expires_at, t.revoked, t.created_at, t.parent";

fn token(r: &tokio_postgres::Row) -> MetaResult<TokenRecord> {
    let kind = match r.get::<_, String>(2).as_str() {
        "access" => TokenKind::Access,
        "refresh" => TokenKind::Refresh,
        other => return Err(MetadataError::Corrupt(format!("token kind {other:?}"))),
    };
    Ok(TokenRecord {
        id: r.get(0),
        user: r.get(1),
        kind,
        secret_hash: r.get(3),
        scope: role(r.get(4))?,
        description: r.get(5),
        expires_at: r.get(6),
        revoked: r.get(7),
        created_at: r.get(8),
        parent: r.get(9),
    })
}

async fn name_taken(tx: &deadpool_postgres::Transaction<'_>, name: &str) -> MetaResult<bool> {
    Ok(tx.query_one("SELECT EXISTS (SELECT 1 FROM users WHERE name = $1) OR EXISTS (SELECT 1 FROM organisations WHERE name = $1)", &[&name]).await.map_err(pg)?.get(0))
}

fn user(r: &tokio_postgres::Row) -> User {
    User { name: r.get(0), password_hash: r.get(1), is_admin: r.get(2), uid: r.get(3) }
}

#[async_trait]
impl AuthStore for PgStore {
    async fn create_user(&self, name: &str, password_hash: Option<&str>, admin: bool) -> MetaResult<bool> {
        transaction!(self, |tx| {
            if name_taken(&tx, name).await? {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO users (name, password_hash, is_admin, created_at, uid)
                 VALUES ($1, $2, $3, $4, substr(md5(random()::text || clock_timestamp()::text), 1, 16))",
                &[&name, &password_hash, &admin, &now()],
            )
            .await
            .map_err(pg)?;
            Ok::<_, MetadataError>(true)
        })
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> MetaResult<bool> {
        transaction!(self, |tx| { Ok::<_, MetadataError>(tx.execute("UPDATE users SET password_hash = $2 WHERE name = $1", &[&name, &password_hash]).await.map_err(pg)? > 0,) })
    }

    async fn get_user(&self, name: &str) -> MetaResult<Option<User>> {
        let row = self.read_opt("SELECT name, password_hash, is_admin, uid FROM users WHERE name = $1", &[&name]).await.map_err(pg)?;
        Ok(row.as_ref().map(user))
    }

    async fn list_users(&self) -> MetaResult<Vec<User>> {
        let rows = self.read("SELECT name, password_hash, is_admin, uid FROM users ORDER BY name", &[]).await.map_err(pg)?;
        Ok(rows.iter().map(user).collect())
    }

    async fn remove_user(&self, name: &str) -> MetaResult<bool> {
        transaction!(self, |tx| { Ok::<_, MetadataError>(tx.execute("DELETE FROM users WHERE name = $1", &[&name]).await.map_err(pg)? > 0) })
    }

    async fn create_organisation(&self, name: &str) -> MetaResult<bool> {
        transaction!(self, |tx| {
            if name_taken(&tx, name).await? {
                return Ok(false);
            }
            tx.execute("INSERT INTO organisations (name, created_at) VALUES ($1, $2)", &[&name, &now()]).await.map_err(pg)?;
            Ok::<_, MetadataError>(true)
        })
    }

    async fn set_member(&self, organisation: &str, user: &str, role: Option<Role>) -> MetaResult<bool> {
        transaction!(self, |tx| {
            let ids = tx.query_opt("SELECT o.id, u.id FROM organisations o, users u WHERE o.name = $1 AND u.name = $2", &[&organisation, &user]).await.map_err(pg)?;
            let Some(ids) = ids else { return Ok(false) };
            let (org_id, user_id): (i64, i64) = (ids.get(0), ids.get(1));
            match role {
                Some(role) => {
                    tx.execute(
                        "INSERT INTO organisation_members (organisation_id, user_id, role) VALUES ($1, $2, $3)
                         ON CONFLICT (organisation_id, user_id) DO UPDATE SET role = excluded.role",
                        &[&org_id, &user_id, &role.as_str()],
                    )
                    .await
                }
                None => tx.execute("DELETE FROM organisation_members WHERE organisation_id = $1 AND user_id = $2", &[&org_id, &user_id]).await,
            }
            .map_err(pg)?;
            Ok::<_, MetadataError>(true)
        })
    }

    async fn namespace_role(&self, namespace: &str, user: &str) -> MetaResult<Option<Role>> {
        if namespace == user {
            return Ok(Some(Role::Admin));
        }
        let row = self
            .read_opt(
                "SELECT m.role FROM organisation_members m JOIN organisations o ON o.id = m.organisation_id
                 JOIN users u ON u.id = m.user_id WHERE o.name = $1 AND u.name = $2",
                &[&namespace, &user],
            )
            .await
            .map_err(pg)?;
        row.map(|r| role(r.get(0))).transpose()
    }

    async fn create_token(&self, t: &TokenRecord) -> MetaResult<()> {
        let kind = match t.kind {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        };
        transaction!(self, |tx| {
            let n = tx
                .execute(
                    "INSERT INTO tokens (id, user_id, kind, secret_hash, scope, description, expires_at, revoked, created_at, parent)
                     SELECT $1, id, $3, $4, $5, $6, $7, FALSE, $8, $9 FROM users WHERE name = $2",
                    &[&t.id, &t.user, &kind, &t.secret_hash, &t.scope.as_str(), &t.description, &t.expires_at, &t.created_at, &t.parent],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(MetadataError::Backend(format!("no user {:?}", t.user)));
            }
            Ok::<_, MetadataError>(())
        })
    }

    async fn get_token(&self, id: &str) -> MetaResult<Option<TokenRecord>> {
        let row = self.read_opt(&format!("SELECT {TOKEN_COLS} FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1"), &[&id]).await.map_err(pg)?;
        row.as_ref().map(token).transpose()
    }

    async fn list_tokens(&self, user: Option<&str>) -> MetaResult<Vec<TokenRecord>> {
        let rows = self
            .read(
                &format!(
                    "SELECT {TOKEN_COLS} FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE ($1::TEXT IS NULL OR u.name = $1) ORDER BY u.name, t.created_at, t.id"
                ),
                &[&user],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(token).collect()
    }

    async fn revoke_token(&self, id: &str) -> MetaResult<bool> {
        transaction!(self, |tx| { Ok::<_, MetadataError>(tx.execute("UPDATE tokens SET revoked = TRUE WHERE id = $1 AND NOT revoked", &[&id]).await.map_err(pg)? > 0,) })
    }

    async fn signing_key(&self, candidate: Vec<u8>) -> MetaResult<Vec<u8>> {
        transaction!(self, |tx| {
            tx.execute("INSERT INTO settings (name, value) VALUES ('token-signing-key', $1) ON CONFLICT (name) DO NOTHING", &[&candidate]).await.map_err(pg)?;
            Ok::<_, MetadataError>(tx.query_one("SELECT value FROM settings WHERE name = 'token-signing-key'", &[]).await.map_err(pg)?.get(0))
        })
    }
}

#[async_trait]
impl Visibility for PgStore {
    async fn is_public(&self, repo: &str) -> MetaResult<Option<bool>> {
        let row = self.read_opt("SELECT visibility FROM repositories WHERE name = $1", &[&repo]).await.map_err(pg)?;
        Ok(row.map(|r| r.get::<_, String>(0) == "public"))
    }
    async fn cid_is_public(&self, cid: &str) -> MetaResult<bool> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM blobs b JOIN repository_blobs rb ON rb.digest = b.digest
                                JOIN repositories r ON r.id = rb.repository_id
                                WHERE b.root_cid = $1 AND NOT b.missing AND r.visibility = 'public')
                     OR EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id
                                WHERE m.image_cid = $1 AND r.visibility = 'public')
                     OR EXISTS (SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id
                                WHERE t.image_cid = $1 AND r.visibility = 'public')",
                &[&cid],
            )
            .await
            .map_err(pg)?
            .get(0))
    }
    async fn blob_is_public(&self, digest: &str) -> MetaResult<bool> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                                JOIN blobs b ON b.digest = rb.digest
                                WHERE rb.digest = $1 AND NOT b.missing AND r.visibility = 'public')",
                &[&digest],
            )
            .await
            .map_err(pg)?
            .get(0))
    }
}
