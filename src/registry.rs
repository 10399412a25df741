//! The registry core: what a push or a pull means, independent of HTTP.
//!
//! It owns the rules that span the blob store and the metadata store: a blob becomes visible only
//! after its bytes were hashed, fsync'd, renamed into place and the metadata committed; an upload
//! session is served by one request at a time; a manifest is stored only when what it references
//! is present.

use crate::blockstore::{BlockIndex, BlockIndexError, Location};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::manifest::{self, ManifestError};
use crate::metadata::{
    BlobInfo, ManifestRecord, MetadataError, MetadataStore, NewManifest, PutManifestOutcome, Reference,
};
use crate::storage::{append_stream, BlobStore, SideHasher, StorageError};
use crate::image::{self, LayoutBlobs, TopManifest};
use crate::unixfs::{self, CollectingImporter, Profile, Root};
use bytes::Bytes;
use futures_util::Stream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
fn corrupt(e: BlockIndexError) -> RegistryError {
    match e {
        BlockIndexError::Mismatch { cid, detail } => RegistryError::BlockCorrupt { cid, detail },
        other => other.into(),
    }
}

/// Upload sessions one owner may hold open, unless configured otherwise.
pub const DEFAULT_MAX_UPLOADS: u64 = 64;

/// A node whose heartbeat is older than this is taken for down.
pub const NODE_ALIVE_SECS: i64 = 30;

/// What has been computed over an upload's first `offset` bytes: its sha256 and its UnixFS DAG,
/// so chunks are hashed as they arrive and never reread. Lost on restart and rebuilt from the
/// file then.
struct Hashes {
    offset: u64,
    digest: Hasher,
    dag: CollectingImporter,
}

struct SessionState {
    hashed: Option<Hashes>,
}

impl SideHasher for CollectingImporter {
    fn update(&mut self, data: &[u8]) {
        CollectingImporter::update(self, data)
    }
}

type SessionLock = Arc<tokio::sync::Mutex<SessionState>>;

pub struct Registry {
    pub meta: Arc<dyn MetadataStore>,
    pub blobs: BlobStore,
    pub blocks: BlockIndex,
    /// How new blobs are cut into UnixFS DAGs.
    pub profile: Profile,
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
    /// What changed, for the rest of the node (see `events`).
    events: crate::events::Events,
    sessions: Mutex<HashMap<Uuid, SessionLock>>,
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
            sparse_manifests: false,
            touch_after: DEFAULT_GRACE / 4,
            node_id: None,
            max_uploads: DEFAULT_MAX_UPLOADS,
            events: Default::default(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    async fn reconcile_uploads(&self) -> Result<()> {
        let (meta, blobs, blocks, profile) = (&self.meta, &self.blobs, &self.blocks, self.profile);
        let sessions = meta.list_uploads().await?;
        let known: std::collections::HashSet<Uuid> = sessions.iter().map(|s| s.id).collect();
        let mut on_disk = std::collections::HashSet::new();
        for (id, path) in blobs.list_uploads()? {
            if known.contains(&id) {
                on_disk.insert(id);
            } else {
                tracing::info!(path = %path.display(), "removing upload data without a session");
                std::fs::remove_file(&path)
                    .map_err(|source| StorageError::Io { path: path.display().to_string(), source })?;
            }
        }
        for s in &sessions {
            if on_disk.contains(&s.id) {
                continue;
            }
            // No data file: either it was published (renamed into blobs/) and the commit did not
            // happen, which we complete now, or the session is beyond repair.
            let published = s.finishing.as_ref().filter(|d| blobs.has_blob(d));
            match published {
                Some(digest) => {
                    tracing::info!(upload = %s.id, %digest, "completing an upload published before a crash");
                    let store = blobs.clone();
                    let d = digest.clone();
                    let (size, dag, _gc_lock) = tokio::task::spawn_blocking(move || {
                        let lock = store.gc_lock(false)?;
                        let mut dag = CollectingImporter::new(profile);
                        store.scan_blob(&d, |data| dag.update(data)).map(|size| (size, dag, lock))
                    })
                    .await
                    .map_err(|e| StorageError::Task(e.to_string()))??;
                    let (root, dag_blocks) = dag.finish();
                    blocks.record_blob_dag(digest, dag_blocks).await?;
                    let info = BlobInfo { size, root_cid: root.cid.to_string(), touched_at: 0 };
                    meta.commit_blob(&s.repository, digest, &info, Some(s.id)).await?;
                }
                None => {
                    tracing::info!(upload = %s.id, "removing upload session without data");
                    meta.delete_upload(s.id).await?;
                }
            }
        }
        Ok(())
    }

    /// Every state change from now on (see `events`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::events::Event> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: crate::events::Event) {
        self.events.send(event);
    }

    /// Makes `repo` (created if needed) public or private.
    pub async fn set_visibility(&self, repo: &str, public: bool) -> Result<()> {
        let before = self.meta.is_public(repo).await?.unwrap_or(false);
        self.meta.set_public(repo, public).await?;
        if before != public {
            self.emit(crate::events::Event::VisibilityChanged { repository: repo.to_string(), public });
        }
        Ok(())
    }

    fn session_lock(&self, id: Uuid) -> SessionLock {
        self.sessions
            .lock()
            .expect("sessions lock")
            .entry(id)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(SessionState { hashed: None })))
            .clone()
    }

    fn forget_session(&self, id: Uuid) {
        self.sessions.lock().expect("sessions lock").remove(&id);
    }

    /// Opens an upload session in `repo` for `owner` (who pays for it: a user name, or
    /// `address:<ip>` for anonymous pushes).
    pub async fn start_upload(&self, repo: &str, owner: &str) -> Result<Uuid> {
        let id = Uuid::new_v4();
        // Row first: a data file without a row is swept at start, so a crash between the two
        // leaves nothing behind.
        if !self.meta.create_upload(repo, id, owner, self.max_uploads).await? {
            return Err(RegistryError::TooManyUploads { owner: owner.to_string(), max: self.max_uploads });
        }
        if let Err(e) = self.blobs.create_upload(&id) {
            self.meta.delete_upload(id).await?;
            return Err(e.into());
        }
        Ok(id)
    }

    async fn check_session(&self, repo: &str, id: Uuid) -> Result<()> {
        match self.meta.get_upload(id).await? {
            Some(s) if s.repository == repo => Ok(()),
            _ => Err(RegistryError::UploadUnknown(id)),
        }
    }

    /// Bytes received so far by an upload.
    pub async fn upload_offset(&self, repo: &str, id: Uuid) -> Result<u64> {
        self.check_session(repo, id).await?;
        let lock = self.session_lock(id);
        let _guard = lock.lock().await;
        self.blobs.upload_len(&id)?.ok_or(RegistryError::UploadUnknown(id))
    }

    /// The hashes matching the file's current length, rebuilt from disk when unknown.
    async fn current_hash(&self, id: Uuid, state: &mut SessionState) -> Result<Hashes> {
        let len = self.blobs.upload_len(&id)?.ok_or(RegistryError::UploadUnknown(id))?;
        if let Some(h) = state.hashed.take() {
            if h.offset == len && h.dag.consumed() == len {
                return Ok(h);
            }
        }
        let store = self.blobs.clone();
        let profile = self.profile;
        let h = tokio::task::spawn_blocking(move || {
            let mut digest = Algorithm::Sha256.hasher();
            let mut dag = CollectingImporter::new(profile);
            store
                .scan_upload(&id, |data| {
                    digest.update(data);
                    dag.update(data);
                })
                .map(|offset| Hashes { offset, digest, dag })
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        Ok(h)
    }

    async fn append_locked<B: Body>(
        &self,
        id: Uuid,
        state: &mut SessionState,
        range: Option<ChunkRange>,
        body: B,
    ) -> Result<u64> {
        let h = self.current_hash(id, state).await?;
        let offset = h.offset;
        if let Some(r) = range {
            if r.start != offset || r.end_inclusive < r.start {
                state.hashed = Some(h);
                return Err(RegistryError::ChunkOutOfOrder { start: r.start, offset });
            }
        }
        let out = append_stream(&self.blobs, id, offset, h.digest, h.dag, body).await?;
        // The DAG saw every chunk received, the file only those written: keep both only if they
        // agree, otherwise they are rebuilt from the file next time.
        state.hashed = (out.side.consumed() == out.len).then_some(Hashes { offset: out.len, digest: out.hasher, dag: out.side });
        if let Err(e) = out.result {
            return Err(RegistryError::Body(e.to_string()));
        }
        if let Some(r) = range {
            let expected = r.end_inclusive.checked_sub(r.start).and_then(|n| n.checked_add(1)).unwrap_or(u64::MAX);
            if out.received != expected {
                // A refused chunk leaves the session as it was: cut the file back.
                self.blobs.truncate_upload(&id, offset)?;
                state.hashed = None;
                return Err(RegistryError::ChunkLength { expected, received: out.received });
            }
        }
        Ok(out.len)
    }

    /// Appends a chunk (PATCH). Returns the new offset.
    pub async fn append<B: Body>(&self, repo: &str, id: Uuid, range: Option<ChunkRange>, body: B) -> Result<u64> {
        self.check_session(repo, id).await?;
        let lock = self.session_lock(id);
        let mut state = lock.lock().await;
        let len = self.append_locked(id, &mut state, range, body).await?;
        self.meta.touch_upload(id).await?;
        Ok(len)
    }

    /// Completes an upload (PUT): appends the final chunk if any, verifies the digest, publishes
    /// the blob and commits it. On a digest mismatch the upload is discarded.
    pub async fn finish_upload<B: Body>(
        &self,
        repo: &str,
        id: Uuid,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: Option<B>,
    ) -> Result<u64> {
        self.check_session(repo, id).await?;
        let lock = self.session_lock(id);
        let mut state = lock.lock().await;
        if let Some(body) = body {
            self.append_locked(id, &mut state, range, body).await?;
        }
        let hashes = self.current_hash(id, &mut state).await?;
        let actual = match digest.algorithm() {
            Algorithm::Sha256 => hashes.digest.clone().finish(),
            other => {
                let store = self.blobs.clone();
                tokio::task::spawn_blocking(move || store.hash_upload(&id, other))
                    .await
                    .map_err(|e| StorageError::Task(e.to_string()))??
                    .1
                    .finish()
            }
        };
        if &actual != digest {
            self.discard(id).await?;
            return Err(RegistryError::DigestMismatch { expected: digest.clone(), actual });
        }
        let (root, dag_blocks) = hashes.dag.finish();
        self.meta.mark_upload_finishing(id, digest).await?;
        let store = self.blobs.clone();
        let d = digest.clone();
        let (size, _gc_lock) = tokio::task::spawn_blocking(move || {
            let lock = store.gc_lock(false)?;
            store.publish(&id, &d).map(|size| (size, lock))
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        // Blocks are indexed before the blob becomes visible, so every visible blob has its DAG.
        self.blocks.record_blob_dag(digest, dag_blocks).await?;
        let info = BlobInfo { size, root_cid: root.cid.to_string(), touched_at: 0 };
        let known = self.meta.blob_info(repo, digest).await?.is_some();
        self.meta.commit_blob(repo, digest, &info, Some(id)).await?;
        if !known {
            let event = crate::events::Event::BlobPublished { repository: repo.to_string(), digest: digest.clone(), root: info.root_cid };
            self.emit(event);
        }
        if let Some(node) = &self.node_id {
            self.meta.record_holder(digest, node).await?;
        }
        drop(state);
        self.forget_session(id);
        Ok(size)
    }

    async fn discard(&self, id: Uuid) -> Result<()> {
        self.blobs.remove_upload(&id)?;
        self.meta.delete_upload(id).await?;
        self.forget_session(id);
        Ok(())
    }

    /// Cancels an upload (DELETE on the session).
    pub async fn cancel_upload(&self, repo: &str, id: Uuid) -> Result<()> {
        self.check_session(repo, id).await?;
        let lock = self.session_lock(id);
        let _guard = lock.lock().await;
        self.discard(id).await
    }

    /// Discards uploads idle for `max_idle` or longer; one being written to right now is left
    /// alone (its lock is held). Returns how many were discarded.
    pub async fn expire_uploads(&self, max_idle: std::time::Duration) -> Result<usize> {
        let mut expired = 0;
        for id in self.meta.idle_uploads(max_idle.as_secs()).await? {
            let lock = self.session_lock(id);
            let Ok(_guard) = lock.try_lock() else { continue };
            self.discard(id).await?;
            tracing::info!(upload = %id, "expired an idle upload");
            expired += 1;
        }
        Ok(expired)
    }

    /// A whole blob in one request (POST `?digest=` with a body).
    pub async fn put_blob<B: Body>(&self, repo: &str, digest: &Digest, owner: &str, body: B) -> Result<u64> {
        let id = self.start_upload(repo, owner).await?;
        match self.finish_upload(repo, id, digest, None, Some(body)).await {
            Ok(size) => Ok(size),
            Err(e) => {
                // A failed one-shot upload leaves no session behind for anyone to resume.
                if let Err(cleanup) = self.discard(id).await {
                    tracing::warn!(upload = %id, error = %cleanup, "could not discard failed upload");
                }
                Err(e)
            }
        }
    }

    /// Opens a blob of `repo` for reading: its bytes (a stream of any range), its length and what
    /// the metadata says of it.
    pub async fn open_blob(&self, repo: &str, digest: &Digest) -> Result<(crate::storage::BlobBytes, u64, BlobInfo)> {
        let Some(info) = self.meta.blob_info(repo, digest).await? else {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        };
        // A client that saw the blob may reference it next: keep it out of a GC's reach.
        if crate::clock::unix_now() - info.touched_at > self.touch_after.as_secs() as i64 {
            self.meta.touch_blob(repo, digest).await?;
        }
        match self.blobs.open_blob(digest)? {
            Some((file, len)) => Ok((crate::storage::BlobBytes::Local(file), len, info)),
            None => {
                // Another node sharing the metadata may hold it.
                let holders = match &self.node_id {
                    Some(me) => self.meta.live_holders(digest, me, NODE_ALIVE_SECS).await?,
                    None => Vec::new(),
                };
                match holders.into_iter().next() {
                    Some(url) => Err(RegistryError::Elsewhere { digest: digest.clone(), url }),
                    None => {
                        tracing::warn!(%digest, "blob is in the metadata but no live node holds its file");
                        Err(RegistryError::NoHolder(digest.clone()))
                    }
                }
            }
        }
    }

    /// The bytes of block `cid` if this node holds it, verified (see `blockstore`). For the
    /// node's own use: whatever leaves the node is read through a `dag::Reader`, which asks the
    /// exposure policy.
    pub async fn get_block(&self, cid: &cid::Cid) -> Result<Option<Bytes>> {
        self.blocks.get(cid).await.map_err(corrupt)
    }

    /// The bytes at `location`, verified against `cid`.
    pub async fn read_block(&self, cid: &cid::Cid, location: Location) -> Result<Option<Bytes>> {
        self.blocks.read_at(cid, location).await.map_err(corrupt)
    }

    /// The root of a blob's DAG with its Tsize, read from the root block.
    async fn blob_root(&self, info: &BlobInfo) -> Result<Option<Root>> {
        let cid: cid::Cid = info
            .root_cid
            .parse()
            .map_err(|e| MetadataError::Corrupt(format!("root CID {}: {e}", info.root_cid)))?;
        // A raw root is the whole blob: its Tsize is the blob's size, no need to read it.
        if cid.codec() == unixfs::RAW {
            return Ok(Some(Root { cid, filesize: info.size, tsize: info.size }));
        }
        let Some(bytes) = self.get_block(&cid).await? else { return Ok(None) };
        let node = unixfs::decode_node(&bytes)
            .map_err(|e| RegistryError::BlockCorrupt { cid: cid.to_string(), detail: e.to_string() })?;
        let tsize = bytes.len() as u64 + node.links.iter().map(|l| l.tsize).sum::<u64>();
        Ok(Some(Root { cid, filesize: info.size, tsize }))
    }

    /// Everything the image layout of a manifest holds under `blobs/`, or None when some of it
    /// is absent from the repository (a sparse manifest has no image DAG).
    async fn layout_blobs(
        &self,
        repo: &str,
        digest: &Digest,
        content: &[u8],
        parsed: &manifest::ParsedManifest,
    ) -> Result<Option<LayoutBlobs>> {
        let mut layout = LayoutBlobs::default();
        layout.add_manifest(digest.clone(), content, self.profile);
        let mut pending = vec![(parsed.blobs.clone(), parsed.manifests.clone())];
        while let Some((blobs, manifests)) = pending.pop() {
            for blob in blobs {
                if layout.contains(&blob) {
                    continue;
                }
                let Some(info) = self.meta.blob_info(repo, &blob).await? else { return Ok(None) };
                let Some(root) = self.blob_root(&info).await? else { return Ok(None) };
                layout.add_blob(blob, root);
            }
            for child in manifests {
                if layout.contains(&child) {
                    continue;
                }
                let Some(record) = self.meta.get_manifest(repo, &Reference::Digest(child.clone())).await? else {
                    return Ok(None);
                };
                let Ok(parsed) = manifest::parse(Some(&record.media_type), &record.content) else { return Ok(None) };
                layout.add_manifest(child, &record.content, self.profile);
                pending.push((parsed.blobs, parsed.manifests));
            }
        }
        Ok(Some(layout))
    }

    /// Stores a manifest under `reference` (a tag or its digest) plus extra `tags`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        mut tags: Vec<String>,
    ) -> Result<ManifestRecord> {
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of_bytes(algorithm, &body);
        match reference {
            Reference::Digest(d) if d != &digest => {
                return Err(RegistryError::ManifestDigest { expected: d.clone(), actual: digest })
            }
            Reference::Tag(t) => tags.insert(0, t.clone()),
            Reference::Digest(_) => {}
        }
        tags.dedup();
        let parsed = manifest::parse(content_type, &body)?;
        let mut tag_images = HashMap::new();
        let mut image_cid = None;
        if let Some(layout) = self.layout_blobs(repo, &digest, &body, &parsed).await? {
            let top = TopManifest { repository: repo, media_type: &parsed.media_type, digest: &digest, size: body.len() as u64 };
            let untagged = image::build(&top, &layout, None, self.profile);
            image_cid = Some(untagged.root.to_string());
            let mut blocks = untagged.blocks;
            for tag in &tags {
                let dag = image::build(&top, &layout, Some(tag), self.profile);
                tag_images.insert(tag.clone(), dag.root.to_string());
                blocks.extend(dag.blocks);
            }
            // Recorded before the metadata names them, so a reader never finds a CID whose
            // blocks are missing; the GC's grace period covers the window in between.
            blocks.sort_by_key(|b| b.0);
            blocks.dedup_by(|a, b| a.0 == b.0);
            let owner = image_cid.clone().map(crate::blockstore::Owner::Image).unwrap_or(crate::blockstore::Owner::Nothing);
            self.blocks.record_inline(blocks, owner).await?;
        }
        let record = ManifestRecord {
            digest,
            media_type: parsed.media_type,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject,
            annotations: parsed.annotations,
            content: body,
            image_cid,
        };
        let new = NewManifest {
            record: record.clone(),
            blobs: parsed.blobs,
            manifests: parsed.manifests,
            tags,
            tag_images,
            require_references: !self.sparse_manifests,
        };
        // What is new, for the event: the manifest itself, and tags that named something else.
        let existed = self.meta.get_manifest(repo, &Reference::Digest(new.record.digest.clone())).await?.is_some();
        let mut moved = Vec::new();
        for tag in &new.tags {
            let now = self.meta.get_manifest(repo, &Reference::Tag(tag.clone())).await?;
            if now.is_none_or(|m| m.digest != new.record.digest) {
                moved.push((tag.clone(), new.tag_images.get(tag).cloned()));
            }
        }
        match self.meta.put_manifest(repo, new.clone()).await? {
            PutManifestOutcome::Stored => {
                if !existed || !moved.is_empty() {
                    self.emit(crate::events::Event::ImageStored {
                        repository: repo.to_string(),
                        digest: new.record.digest.clone(),
                        image: new.record.image_cid.clone(),
                        tags: moved,
                    });
                }
                Ok(ManifestRecord {
                    // As a read by the same reference would say.
                    image_cid: match reference {
                        Reference::Tag(t) => new.tag_images.get(t).cloned(),
                        Reference::Digest(_) => record.image_cid.clone(),
                    },
                    ..record
                })
            }
            PutManifestOutcome::MissingReference(d) => Err(RegistryError::ManifestReference(d)),
        }
    }
}
