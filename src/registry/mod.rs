//! The registry core: what a push or a pull means, independent of HTTP.
//!
//! It owns the rules that span the blob store and the metadata store: a blob becomes visible only
//! after its bytes were hashed, fsync'd, renamed into place and the metadata committed; an upload
//! session is served by one request at a time; a manifest is stored only when what it references
//! is present.

mod changes;
mod gc;
mod manifests;
mod reads;
mod scrub;
mod uploads;

impl Registry {
    /// What the registry holds, counted (every node's, on a shared database).
    pub async fn totals(&self) -> Result<crate::metadata::Totals> {
        Ok(self.meta.totals().await?)
    }
}
pub use uploads::ReceivedDag;

pub use changes::IpnsPutError;
pub use gc::GcReport;
pub use scrub::{Finding, ScrubReport};

use crate::blockstore::{BlockIndex, BlockIndexError};
use crate::digest::Digest;
use crate::manifest::ManifestError;
use crate::metadata::{AuthStore, MetadataError, MetadataStore};
use crate::storage::{BlobStore, StorageError};
use crate::unixfs::Profile;
use bytes::Bytes;
use futures_util::Stream;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("upload {0} is unknown")]
    UploadUnknown(Uuid),
    #[error("chunk starts at {start} but the upload holds {offset} bytes")]
    ChunkOutOfOrder { start: u64, offset: u64 },
    #[error("Content-Range covers {expected} bytes but {received} arrived")]
    ChunkLength { expected: u64, received: u64 },
    #[error("content digest is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("request body broke off: {0}")]
    Body(String),
    #[error("blob {0} is unknown")]
    BlobUnknown(Digest),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest references {0}, which is not in this repository")]
    ManifestReference(Digest),
    #[error("the reference's digest is {expected} but the manifest's is {actual}")]
    ManifestDigest { expected: Digest, actual: Digest },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    BlockIndex(#[from] BlockIndexError),
    #[error("blob {digest} is held by the node at {url}")]
    Elsewhere { digest: Digest, url: String },
    #[error("blob {0} is known but no live node holds its bytes")]
    NoHolder(Digest),
    #[error("{owner} has {max} upload sessions open, the most one may; finish or cancel some")]
    TooManyUploads { owner: String, max: u64 },
    #[error("block {cid} does not match its hash: {detail}")]
    BlockCorrupt { cid: String, detail: String },
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// How long new content is safe from a GC by default.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A block that does not match its CID is the registry's `BlockCorrupt`.
pub(crate) fn corrupt(e: BlockIndexError) -> RegistryError {
    match e {
        BlockIndexError::Mismatch { cid, detail } => RegistryError::BlockCorrupt { cid, detail },
        other => other.into(),
    }
}

/// Upload sessions one owner may hold open, unless configured otherwise.
pub const DEFAULT_MAX_UPLOADS: u64 = 64;

/// How often a serving node looks for changes other processes made (see
/// [`Registry::watch_shared_changes`]): the longest an exposure answer cached before such a
/// change outlives it.
pub const SHARED_CHANGES_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a visibility change waits for the live nodes to see it.
pub const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A node whose heartbeat is older than this is taken for down.
pub const NODE_ALIVE_SECS: i64 = 30;

/// The registry: the one owner of content state (blobs, manifests, tags, pins, visibility and
/// the block index). Listeners and the CLI change that state only through its methods, which is
/// how every change bumps the generation and sends its event.
pub struct Registry {
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    blocks: BlockIndex,
    profile: Profile,
    settings: Settings,
    /// What changed, for the rest of the node (see `events`).
    events: crate::events::Events,
    /// Bumped after every change that can alter what may leave the node (see [`Self::generation`]).
    generation: AtomicU64,
    /// The shared generation last seen in the metadata, for changes made by other processes.
    shared_generation: AtomicI64,
    /// Bumps of the shared generation this process made since the watcher last looked: a rise
    /// no larger than this is this process's own, already announced by its events.
    own_bumps: AtomicI64,
    sessions: uploads::Sessions,
    /// The peer IDs of the other live nodes sharing the metadata: one registry, so they are
    /// trusted with its private content (see `exposure`).
    fellows: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Fetches blobs this node lacks from elsewhere (the swarm), once the node has one.
    remote: std::sync::OnceLock<Arc<dyn Remote>>,
}

/// A way to fetch a blob this node knows (by its root CID) but does not hold: the swarm's
/// pull-through. Concurrent calls for one blob share one fetch. The blob is kept once its
/// digest matched, through the same path as an upload.
pub trait Remote: Send + Sync + 'static {
    fn pull(&self, repo: &str, digest: &Digest, info: &crate::metadata::BlobInfo, holders: Vec<crate::metadata::NodeRecord>) -> Arc<crate::storage::Arriving>;
}

/// How a serving node tunes the registry; the defaults suit tools and tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Accept manifests whose blobs or child manifests are absent (partial mirrors of multi-arch
    /// images); by default they are refused with MANIFEST_BLOB_UNKNOWN.
    pub sparse_manifests: bool,
    /// How stale a blob link's `touched_at` may get before a read refreshes it: a quarter of
    /// the GC grace period, so a blob a client has just seen is never collected under it.
    pub touch_after: std::time::Duration,
    /// This node's id among nodes sharing the metadata (its peer ID), once it serves.
    pub node_id: Option<String>,
    /// Upload sessions one owner (a user, or an address for anonymous pushes) may hold open.
    pub max_uploads: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { sparse_manifests: false, touch_after: DEFAULT_GRACE / 4, node_id: None, max_uploads: DEFAULT_MAX_UPLOADS }
    }
}

/// Where a chunk claims to start (`Content-Range`), and how long it says it is.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRange {
    pub start: u64,
    pub end_inclusive: u64,
}

/// A request body: any stream of byte chunks.
pub trait Body: Stream<Item = std::result::Result<Bytes, Self::Error>> + Unpin {
    type Error: std::fmt::Display;
}
impl<S, E: std::fmt::Display> Body for S
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    type Error = E;
}

impl Registry {
    /// Opens the registry and reconciles uploads: a data file without a session row, or a session
    /// without a data file, is the remains of a crash and is removed.
    pub async fn open(meta: Arc<dyn MetadataStore>, blobs: BlobStore, blocks: BlockIndex, profile: Profile) -> Result<Self> {
        let registry = Self::attach(meta, blobs, blocks, profile);
        registry.reconcile_uploads().await?;
        Ok(registry)
    }

    /// A registry over stores another process may be serving: no start-up reconciliation (it
    /// would race that process's uploads). For offline tools such as `verify`.
    pub fn attach(meta: Arc<dyn MetadataStore>, blobs: BlobStore, blocks: BlockIndex, profile: Profile) -> Self {
        Registry {
            meta,
            blobs,
            blocks,
            profile,
            settings: Settings::default(),
            events: Default::default(),
            generation: AtomicU64::new(0),
            shared_generation: AtomicI64::new(i64::MIN),
            own_bumps: AtomicI64::new(0),
            sessions: Default::default(),
            fellows: Default::default(),
            remote: Default::default(),
        }
    }

    /// Every state change from now on (see `events`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::events::Event> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: crate::events::Event) {
        self.events.send(event);
    }

    pub fn configure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How new blobs are cut into UnixFS DAGs.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Users, organisations, tokens and the signing key: the account store the auth module owns.
    /// Content state is not reachable through it.
    pub fn accounts(&self) -> Arc<dyn AuthStore> {
        self.meta.clone()
    }

    /// A number that grows after every change that can alter what may leave the node
    /// (visibility, deletes, unlinks, mounts, new content, pins, GC), made here or, once
    /// [`Self::watch_shared_changes`] saw it, by another process sharing the metadata. A cache
    /// of exposure answers keeps an answer only while this is what it was when the answer was
    /// read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// After a change is written and before the method making it returns: local caches forget
    /// now, other processes at their next look at the shared counter.
    /// Returns the shared generation the change made.
    async fn changed(&self) -> Result<i64> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let shared = self.meta.bump_generation().await?;
        self.own_bumps.fetch_add(1, Ordering::SeqCst);
        Ok(shared)
    }

    /// Looks at the shared change counter once: a change made by another process (the CLI, a
    /// node on the same PostgreSQL) bumps the local generation, then this node acknowledges it
    /// (see [`Self::set_visibility`]). The node calls this every [`SHARED_CHANGES_EVERY`].
    pub async fn watch_shared_changes(&self) -> Result<()> {
        let shared = self.meta.generation().await?;
        let before = self.shared_generation.swap(shared, Ordering::SeqCst);
        let own = self.own_bumps.swap(0, Ordering::SeqCst);
        if before != shared {
            self.generation.fetch_add(1, Ordering::SeqCst);
            // The first look only learns the counter. A rise beyond this process's own bumps is
            // someone else's change (one racing this look is seen at the next).
            if before != i64::MIN && shared - before > own {
                self.emit(crate::events::Event::ChangedElsewhere);
            }
            if let Some(node) = &self.settings.node_id {
                self.meta.ack_generation(node, shared).await?;
                self.refresh_fellows(node).await?;
            }
        }
        Ok(())
    }

    async fn refresh_fellows(&self, me: &str) -> Result<()> {
        let live = self.meta.live_nodes(me, NODE_ALIVE_SECS).await?;
        *self.fellows.write().expect("fellows lock") = live.into_iter().map(|n| n.id).collect();
        Ok(())
    }

    /// The other live nodes sharing this registry's metadata.
    pub async fn live_fellows(&self) -> Result<Vec<crate::metadata::NodeRecord>> {
        Ok(match &self.settings.node_id {
            Some(me) => self.meta.live_nodes(me, NODE_ALIVE_SECS).await?,
            None => Vec::new(),
        })
    }

    /// Is `peer` another live node sharing this registry's metadata?
    pub fn is_fellow(&self, peer: &str) -> bool {
        self.fellows.read().expect("fellows lock").contains(peer)
    }

    /// Lets blobs this node lacks be fetched through `remote` (set once, by the node).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Waits until every live node sharing the metadata (this one aside: its caches forgot
    /// already) has seen `generation`, for at most [`ACK_WAIT`]. Returns the nodes that had not.
    async fn await_nodes(&self, generation: i64) -> Result<Vec<String>> {
        let me = self.settings.node_id.as_deref().unwrap_or("");
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let lagging = self.meta.lagging_nodes(generation, me, NODE_ALIVE_SECS).await?;
            if lagging.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(lagging);
            }
            tokio::time::sleep(SHARED_CHANGES_EVERY / 5).await;
        }
    }

    /// Keeps the node alive in the shared metadata, for nodes that look for a blob's holder or
    /// ask whether a peer is one of them. A node that just joined bumps the change generation,
    /// so the others learn of it at once (see [`Self::watch_shared_changes`]).
    pub async fn heartbeat(&self, api_url: &str, swarm_addrs: &[String]) -> Result<()> {
        if let Some(node) = &self.settings.node_id {
            if self.meta.heartbeat(node, api_url, swarm_addrs).await? {
                self.changed().await?;
            }
            self.refresh_fellows(node).await?;
        }
        Ok(())
    }
}
