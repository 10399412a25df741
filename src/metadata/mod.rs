//! The metadata store: repositories, blob links, manifests, tags, referrers and upload sessions.
//!
//! [`MetadataStore`] is the seam; SQLite ([`sqlite::SqliteStore`]) is the embedded default. Every
//! method is one transaction: callers never see a half-applied change.

pub mod auth;
mod batch;
pub mod postgres;
pub mod sqlite;
mod sqlite_auth;

pub use auth::{AuthStore, Role, TokenKind, TokenRecord, User, Visibility};

use crate::digest::Digest;
use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    /// The database cannot be reached right now; the request may be retried.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    #[error("metadata store failed: {0}")]
    Backend(String),
    /// A concurrent transaction conflicted with this one; it is retried (PostgreSQL only).
    #[error("metadata transaction conflict: {0}")]
    Conflict(String),
    #[error("metadata store holds an invalid value: {0}")]
    Corrupt(String),
    /// The database's disk is full; writes may succeed once space returns.
    #[error("metadata store is out of disk space: {0}")]
    Full(String),
}

impl MetadataError {
    /// Its kind, as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataError::Unavailable(_) => "unavailable",
            MetadataError::Backend(_) => "backend",
            MetadataError::Conflict(_) => "conflict",
            MetadataError::Corrupt(_) => "corrupt",
            MetadataError::Full(_) => "full",
        }
    }
}

/// What the registry holds, counted (for metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub repositories: i64,
    pub manifests: i64,
    pub blobs: i64,
    pub blob_bytes: i64,
    pub upload_sessions: i64,
}

/// One statement for [`Totals`], valid on both backends.
pub const TOTALS_SQL: &str = "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests), (SELECT COUNT(*) FROM blobs), \
(SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs), (SELECT COUNT(*) FROM upload_sessions)";

pub type MetaResult<T> = Result<T, MetadataError>;

/// A manifest as stored: its verbatim bytes plus what the API needs without reparsing them.
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    /// `artifactType`, or for an image manifest without one its config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's `annotations` object as JSON text, for referrers descriptors.
    pub annotations: Option<String>,
    pub content: Bytes,
    /// The CID of the manifest's image DAG (`crate::image`): read by digest, the untagged one;
    /// read by tag, the one naming that tag. None when its blobs were absent (sparse).
    pub image_cid: Option<String>,
}

/// A manifest to store, with what it references and the tags to point at it.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub record: ManifestRecord,
    /// Blobs that must be linked to the repository (config, distributable layers).
    pub blobs: Vec<Digest>,
    /// Manifests that must exist in the repository (index children).
    pub manifests: Vec<Digest>,
    pub tags: Vec<String>,
    /// The image CID of the manifest under each of `tags`.
    pub tag_images: std::collections::HashMap<String, String>,
    /// Whether `blobs` and `manifests` must be present (false: a sparse manifest is accepted and
    /// its references are still recorded).
    pub require_references: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifestOutcome {
    Stored,
    /// A referenced blob or manifest is not in the repository; nothing was stored.
    MissingReference(Digest),
}

pub use crate::names::Reference;

/// Where a page of referrers starts and how large it may be.
#[derive(Debug, Clone)]
pub struct ReferrerPage {
    pub after: Option<Digest>,
    pub budget: u64,
    pub max: u32,
}

/// The SQL of a page of referrers (the same on SQLite and PostgreSQL, `?N` / `$N` aside): rows
/// whose running size before them is under the budget.
pub(crate) const REFERRERS_PAGE: &str = "SELECT digest, media_type, size, artifact_type, annotations FROM (
    SELECT m.digest, m.media_type, length(m.content) AS size, m.artifact_type, m.annotations,
           sum(coalesce(length(m.annotations), 0) + 256) OVER (ORDER BY m.digest ROWS UNBOUNDED PRECEDING)
             - (coalesce(length(m.annotations), 0) + 256) AS start
    FROM manifests m JOIN repositories r ON r.id = m.repository_id
    WHERE r.name = $1 AND m.subject = $2 AND ($3::TEXT IS NULL OR m.artifact_type = $3) AND ($4::TEXT IS NULL OR m.digest > $4)
  ) page WHERE start < $5 ORDER BY digest LIMIT $6";

/// Blob roots and image CIDs of public repositories (SQLite spells `NOT b.missing` as
/// `b.missing = 0`).
pub(crate) const PUBLIC_ROOTS: &str = "SELECT b.root_cid FROM blobs b JOIN repository_blobs rb ON rb.digest = b.digest
      JOIN repositories r ON r.id = rb.repository_id WHERE r.visibility = 'public' AND NOT b.missing
    UNION SELECT m.image_cid FROM manifests m JOIN repositories r ON r.id = m.repository_id
      WHERE r.visibility = 'public' AND m.image_cid IS NOT NULL
    UNION SELECT t.image_cid FROM tags t JOIN repositories r ON r.id = t.repository_id
      WHERE r.visibility = 'public' AND t.image_cid IS NOT NULL";

/// Whether referrers follow `$4` (same parameters as [`REFERRERS_PAGE`]'s first four).
pub(crate) const REFERRERS_AFTER: &str = "SELECT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id
    WHERE r.name = $1 AND m.subject = $2 AND ($3::TEXT IS NULL OR m.artifact_type = $3) AND m.digest > $4)";

/// One entry of a referrers response.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UploadSession {
    pub id: Uuid,
    pub repository: String,
    /// The verified digest the upload was being published under, if it got that far.
    pub finishing: Option<Digest>,
}

/// A blob as a repository sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// The root CID of the blob's UnixFS DAG.
    pub root_cid: String,
    /// When the blob was last pushed, mounted or read in this repository (seconds since the
    /// epoch); read only, ignored by [`MetadataStore::commit_blob`].
    pub touched_at: i64,
}

/// A blob row a GC removed.
#[derive(Debug, Clone)]
pub struct SweptBlob {
    pub digest: Digest,
    pub size: u64,
    /// False when a scrub had already marked it missing (its file is in quarantine).
    pub had_file: bool,
}

/// What [`MetadataStore::collect_garbage`] removed.
#[derive(Debug, Clone, Default)]
pub struct GarbageCollected {
    pub manifests: u64,
    /// Links between a repository and a blob no kept manifest of it references.
    pub links: u64,
    pub blobs: Vec<SweptBlob>,
}

/// Where a paged read of the live roots ([`MetadataStore::live_roots_page`]) goes on from: the
/// source (0: blobs' roots, 1: manifests' image DAGs, 2: tags' image DAGs) and the last key read
/// there (a repository id and a digest or tag; 0 for blobs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootsCursor {
    pub source: u8,
    pub repository: i64,
    pub key: String,
}

/// The three sources of live roots, in the order a paged read takes them.
pub const ROOT_SOURCES: u8 = 3;

/// A page of live roots from rows (repository id, key, root) read after `after`: the roots, and
/// the cursor of the next page (the next source once this one gave fewer than `limit` rows).
fn roots_page(after: RootsCursor, limit: u32, rows: Vec<(i64, String, Option<String>)>) -> (Vec<String>, Option<RootsCursor>) {
    let next = match rows.last() {
        Some((repository, key, _)) if rows.len() as u32 >= limit => Some(RootsCursor { source: after.source, repository: *repository, key: key.clone() }),
        _ => (after.source + 1 < ROOT_SOURCES).then(|| RootsCursor { source: after.source + 1, ..Default::default() }),
    };
    (rows.into_iter().filter_map(|(_, _, root)| root).collect(), next)
}

/// A page of a sorted listing: items after `last` (exclusive), at most `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub last: Option<String>,
    pub limit: Option<usize>,
}

/// A node sharing the metadata, as its heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its peer ID.
    pub id: String,
    pub api_url: String,
    pub swarm_addrs: Vec<String>,
}

impl NodeRecord {
    fn from_columns(id: String, api_url: String, swarm: String) -> Self {
        NodeRecord { id, api_url, swarm_addrs: swarm.split_whitespace().map(String::from).collect() }
    }
}

/// Contract shared by every backend:
/// - Names and digests passed in are already validated.
/// - A blob is visible in a repository (via [`MetadataStore::blob_info`]) only after
///   [`MetadataStore::commit_blob`] or a mount linked it, and only while its file exists.
/// - A tag always points at a manifest that exists in the same repository.
#[async_trait]
pub trait MetadataStore: AuthStore + Send + Sync + 'static {
    /// A blob, if it is linked to `repo`.
    async fn blob_info(&self, repo: &str, digest: &Digest) -> MetaResult<Option<BlobInfo>>;
    /// Records a verified, published blob with the root CID of its DAG, links it to `repo` and
    /// ends `upload` if given.
    async fn commit_blob(&self, repo: &str, digest: &Digest, blob: &BlobInfo, upload: Option<Uuid>) -> MetaResult<()>;
    /// Links a blob already linked to `from` (or, with `from` = None, to any repository) into
    /// `repo`. Returns its size, or None when the source does not hold it.
    async fn mount_blob(&self, repo: &str, from: Option<&str>, digest: &Digest) -> MetaResult<Option<u64>>;
    /// Every blob not marked missing, with its size.
    async fn list_blobs(&self) -> MetaResult<Vec<(Digest, u64)>>;
    /// Marks a blob missing (its file is corrupt or gone): no repository serves it until it is
    /// committed again.
    async fn mark_blob_missing(&self, digest: &Digest) -> MetaResult<()>;
    /// Records that `repo`'s link to a blob was just used (a GC spares it for a grace period);
    /// false when the link is gone (a GC took it after it was read).
    async fn touch_blob(&self, repo: &str, digest: &Digest) -> MetaResult<bool>;
    /// Pins the manifest `reference` names; its digest, or None if there is no such manifest.
    async fn pin(&self, repo: &str, reference: &Reference) -> MetaResult<Option<Digest>>;
    async fn unpin(&self, repo: &str, digest: &Digest) -> MetaResult<bool>;
    async fn list_pins(&self) -> MetaResult<Vec<(String, Digest)>>;
    /// Deletes manifests that are not kept (tagged, pinned, created at or after `cutoff`, an
    /// index child or a referrer of a kept one), then blob links no kept manifest references and
    /// not touched since `cutoff`, then blobs left with no link, older than `cutoff` and not being
    /// published by an upload. Returns what went; the caller removes the files. Atomic per row
    /// against writers: a row goes only if it is garbage in the transaction that deletes it
    /// (PostgreSQL: one transaction, which locks only the rows it deletes; SQLite, whose one
    /// writer would stop every push meanwhile: short transactions of a few hundred rows, each
    /// checking its rows again).
    async fn collect_garbage(&self, cutoff: i64) -> MetaResult<GarbageCollected>;
    /// The blob whose DAG has root `cid`, if one is stored (and not missing).
    async fn blob_by_root(&self, cid: &str) -> MetaResult<Option<Digest>>;
    /// Registers this node (or renews its heartbeat): it answers at `api_url`, and its swarm at
    /// `swarm_addrs`. Returns whether the node was not registered before.
    async fn heartbeat(&self, node: &str, api_url: &str, swarm_addrs: &[String]) -> MetaResult<bool>;
    /// Records that `node` holds the file of blob `digest`.
    async fn record_holder(&self, digest: &Digest, node: &str) -> MetaResult<()>;
    /// The nodes other than `except` that hold `digest` and beat within `alive_secs`, the
    /// freshest first.
    async fn live_holders(&self, digest: &Digest, except: &str, alive_secs: i64) -> MetaResult<Vec<NodeRecord>>;
    /// Every node other than `except` that beat within `alive_secs`.
    async fn live_nodes(&self, except: &str, alive_secs: i64) -> MetaResult<Vec<NodeRecord>>;
    /// Every CID something in the metadata names: blob roots and image CIDs.
    /// Makes a repository (created if needed) public or private.
    async fn set_public(&self, repo: &str, public: bool) -> MetaResult<()>;
    /// Sets how many nodes keep a repository's images (None: the node's default).
    async fn set_replicas(&self, repo: &str, replicas: Option<u32>) -> MetaResult<()>;
    /// What [`Self::set_replicas`] set for a repository.
    async fn replicas(&self, repo: &str) -> MetaResult<Option<u32>>;
    /// Whether a repository is public; None when there is no such repository.
    async fn visibility(&self, repo: &str) -> MetaResult<Option<bool>>;
    /// Whether a repository is public; one that did not exist is created, public if
    /// `public_if_new`, in the same transaction.
    async fn visibility_or_create(&self, repo: &str, public_if_new: bool) -> MetaResult<bool>;
    /// A repository that did not exist is created as a replica of `origin` (a registry node's
    /// peer ID), public if `public_if_new`. Then: whether it is public, if it is `origin`'s
    /// replica (made now or before); None if it is anything else (made here, or another
    /// origin's), which a replica's pin must not write into.
    async fn replica_or_create(&self, repo: &str, origin: &str, public_if_new: bool, stamp: i64) -> MetaResult<Option<bool>>;
    /// Records that a claim of `origin` signed at `stamp` applies to its replica `repo`: true
    /// if `stamp` is newer than any applied before (false for an older one, replayed).
    async fn advance_replica(&self, repo: &str, origin: &str, stamp: i64) -> MetaResult<bool>;
    /// The node whose cluster pins made `repo` here (a replica), or None (the registry's own,
    /// or no such repository).
    async fn replica_of(&self, repo: &str) -> MetaResult<Option<String>>;
    /// Bumps the shared change generation (see `registry::Registry::generation`); returns it.
    async fn bump_generation(&self) -> MetaResult<i64>;
    /// Records that `node` has seen `generation` (never lowers it).
    async fn ack_generation(&self, node: &str, generation: i64) -> MetaResult<()>;
    /// Live nodes other than `except` that have not yet seen `generation`.
    async fn lagging_nodes(&self, generation: i64, except: &str, alive_secs: i64) -> MetaResult<Vec<String>>;
    /// The shared change generation.
    async fn generation(&self) -> MetaResult<i64>;
    /// Blob roots and image CIDs of public repositories: what the node offers to anyone.
    async fn public_roots(&self) -> MetaResult<Vec<String>>;
    /// Every live root, a page at a time: blob roots, image DAGs of manifests and of tags.
    async fn live_roots(&self) -> MetaResult<Vec<String>> {
        let (mut all, mut at) = (Vec::new(), Some(RootsCursor::default()));
        while let Some(cursor) = at {
            let (roots, next) = self.live_roots_page(&cursor, 1000).await?;
            all.extend(roots);
            at = next;
        }
        all.sort();
        all.dedup();
        Ok(all)
    }
    /// Up to `limit` rows of live roots after `after` (a row without a root, such as a sparse
    /// manifest, counts and gives none), and where the next page starts (None: all read). Keyset
    /// pages on primary keys: a GC reads millions without holding them, and rows written
    /// meanwhile are young (kept by their age) if a page passed them.
    async fn live_roots_page(&self, after: &RootsCursor, limit: u32) -> MetaResult<(Vec<String>, Option<RootsCursor>)>;
    /// Which of `digests` have a blob row now, not marked missing (one a GC removed may have
    /// been pushed again).
    async fn existing_blobs(&self, digests: &[Digest]) -> MetaResult<Vec<Digest>>;
    /// Removes the link between `repo` and a blob; true if there was one.
    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> MetaResult<bool>;

    /// Opens an upload session for `owner` (a user, or an address for anonymous pushes), unless
    /// that owner already has `max_open` sessions open: false then, and nothing is written.
    async fn create_upload(&self, repo: &str, id: Uuid, owner: &str, max_open: u64) -> MetaResult<bool>;
    async fn get_upload(&self, id: Uuid) -> MetaResult<Option<UploadSession>>;
    async fn touch_upload(&self, id: Uuid) -> MetaResult<()>;
    /// Records that the upload's content was verified as `digest` and is about to be published.
    async fn mark_upload_finishing(&self, id: Uuid, digest: &Digest) -> MetaResult<()>;
    async fn delete_upload(&self, id: Uuid) -> MetaResult<bool>;
    async fn list_uploads(&self) -> MetaResult<Vec<UploadSession>>;
    /// Repositories, manifests, blobs, their bytes and upload sessions, counted.
    async fn totals(&self) -> MetaResult<Totals>;
    /// Uploads not touched for `idle_secs` seconds or more.
    async fn idle_uploads(&self, idle_secs: u64) -> MetaResult<Vec<Uuid>>;

    async fn put_manifest(&self, repo: &str, manifest: NewManifest) -> MetaResult<PutManifestOutcome>;
    async fn get_manifest(&self, repo: &str, reference: &Reference) -> MetaResult<Option<ManifestRecord>>;
    /// Deletes a manifest and every tag pointing at it; true if it existed.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> MetaResult<bool>;
    async fn delete_tag(&self, repo: &str, tag: &str) -> MetaResult<bool>;
    /// Tags of `repo` in lexical order, or None when the repository is unknown.
    async fn list_tags(&self, repo: &str, page: &Page) -> MetaResult<Option<Vec<String>>>;
    async fn list_repositories(&self, page: &Page) -> MetaResult<Vec<String>>;
    /// One page of the public repositories that hold a manifest, in name order.
    async fn list_public_repositories(&self, page: &Page) -> MetaResult<Vec<String>>;
    /// One page of the manifests of `repo` whose subject is `subject` (of `artifact_type`, if
    /// given), in digest order after `page.after`: as many as start within `page.budget` bytes
    /// (each counted as its annotations plus 256), at least one, at most `page.max`. True when
    /// more follow.
    async fn referrers(&self, repo: &str, subject: &Digest, artifact_type: Option<&str>, page: &ReferrerPage) -> MetaResult<(Vec<Referrer>, bool)>;
}
