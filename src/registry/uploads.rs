//! Upload sessions: chunks hashed as they arrive, a blob published only once its digest matched.

use super::{Body, ChunkRange, Registry, RegistryError, Result};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::metadata::BlobInfo;
use crate::storage::{append_stream, SideHasher, StorageError};
use crate::unixfs::{CollectingImporter, DagBlock};
use std::sync::Arc;
use uuid::Uuid;

/// What has been computed over an upload's first `offset` bytes: its sha256 and its UnixFS DAG,
/// so chunks are hashed as they arrive and never reread. Lost on restart and rebuilt from the
/// file then.
struct Hashes {
    offset: u64,
    digest: Hasher,
    dag: UploadDag,
}

/// How an upload's UnixFS DAG is known: computed from its bytes, or, for a blob fetched from
/// peers, the DAG it came as (each block verified against its CID as it arrived). Keeping the
/// received DAG keeps the root CID the blob is known by (a peer's node may chunk differently)
/// and spares hashing every byte once more.
enum UploadDag {
    Computed(CollectingImporter),
    Received { root: cid::Cid, consumed: u64, blocks: ReceivedDag },
}

/// The blocks of a blob's DAG in the order they came, recorded by whoever fetches it: leaves as
/// ranges of the file, other blocks with their bytes.
pub type ReceivedDag = Arc<std::sync::Mutex<Vec<DagBlock>>>;

impl UploadDag {
    fn consumed(&self) -> u64 {
        match self {
            UploadDag::Computed(dag) => dag.consumed(),
            UploadDag::Received { consumed, .. } => *consumed,
        }
    }

    fn finish(self) -> (cid::Cid, Vec<DagBlock>) {
        match self {
            UploadDag::Computed(dag) => {
                let (root, blocks) = dag.finish();
                (root.cid, blocks)
            }
            UploadDag::Received { root, blocks, .. } => (root, std::mem::take(&mut *blocks.lock().expect("received DAG lock"))),
        }
    }
}

impl SideHasher for CollectingImporter {
    fn update(&mut self, data: &[u8]) {
        CollectingImporter::update(self, data)
    }
}

impl SideHasher for UploadDag {
    fn update(&mut self, data: &[u8]) {
        match self {
            UploadDag::Computed(dag) => SideHasher::update(dag, data),
            UploadDag::Received { consumed, .. } => *consumed += data.len() as u64,
        }
    }
}

#[derive(Default)]
struct SessionState {
    hashed: Option<Hashes>,
    /// Told the file's length after each write, for readers of a blob arriving from peers.
    progress: Option<crate::storage::Written>,
    /// Told once every byte matched the digest, before the blob is kept: those readers' last
    /// bytes then wait for the digest, not for the file's sync and the metadata's commit.
    verified: Option<Box<dyn FnOnce() + Send>>,
}

type SessionLock = Arc<tokio::sync::Mutex<SessionState>>;

#[derive(Default)]
pub(super) struct Sessions(std::sync::Mutex<std::collections::HashMap<Uuid, SessionLock>>);

impl Registry {
    pub(super) async fn reconcile_uploads(&self) -> Result<()> {
        let (meta, blobs, blocks, profile) = (&self.meta, &self.blobs, &self.blocks, self.profile);
        let sessions = meta.list_uploads().await?;
        let known: std::collections::HashSet<Uuid> = sessions.iter().map(|s| s.id).collect();
        let mut on_disk = std::collections::HashSet::new();
        for (id, path) in blobs.list_uploads()? {
            if known.contains(&id) {
                on_disk.insert(id);
            } else {
                tracing::info!(path = %path.display(), "removing upload data without a session");
                std::fs::remove_file(&path).map_err(|source| StorageError::Io { path: path.display().to_string(), source })?;
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

    fn session_lock(&self, id: Uuid) -> SessionLock {
        self.sessions.0.lock().expect("sessions lock").entry(id).or_default().clone()
    }

    fn forget_session(&self, id: Uuid) {
        self.sessions.0.lock().expect("sessions lock").remove(&id);
    }

    /// Opens an upload session in `repo` for `owner` (who pays for it: a user name, or
    /// `address:<ip>` for anonymous pushes).
    pub async fn start_upload(&self, repo: &str, owner: &str) -> Result<Uuid> {
        let id = Uuid::new_v4();
        // Row first: a data file without a row is swept at start, so a crash between the two
        // leaves nothing behind.
        if !self.meta.create_upload(repo, id, owner, self.settings.max_uploads).await? {
            return Err(RegistryError::TooManyUploads { owner: owner.to_string(), max: self.settings.max_uploads });
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
                .map(|offset| Hashes { offset, digest, dag: UploadDag::Computed(dag) })
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        Ok(h)
    }

    async fn append_locked<B: Body>(&self, id: Uuid, state: &mut SessionState, range: Option<ChunkRange>, body: B) -> Result<u64> {
        let h = self.current_hash(id, state).await?;
        let offset = h.offset;
        if let Some(r) = range {
            if r.start != offset || r.end_inclusive < r.start {
                state.hashed = Some(h);
                return Err(RegistryError::ChunkOutOfOrder { start: r.start, offset });
            }
        }
        let out = match append_stream(&self.blobs, id, offset, h.digest, h.dag, body, state.progress.clone()).await {
            Ok(out) => out,
            Err(e) => {
                // A write that failed (a full disk) leaves the session as it was, and frees what
                // it had written of the chunk.
                if let Err(cut) = self.blobs.truncate_upload(&id, offset) {
                    tracing::warn!(upload = %id, error = %cut, "could not cut a failed chunk back off its upload");
                }
                state.hashed = None;
                return Err(e.into());
            }
        };
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
    pub async fn finish_upload<B: Body>(&self, repo: &str, id: Uuid, digest: &Digest, range: Option<ChunkRange>, body: Option<B>) -> Result<u64> {
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
                tokio::task::spawn_blocking(move || store.hash_upload(&id, other)).await.map_err(|e| StorageError::Task(e.to_string()))??.1.finish()
            }
        };
        if &actual != digest {
            self.discard(id).await?;
            return Err(RegistryError::DigestMismatch { expected: digest.clone(), actual });
        }
        if let Some(tell) = state.verified.take() {
            tell();
        }
        let (root, dag_blocks) = hashes.dag.finish();
        let root = root.to_string();
        self.meta.mark_upload_finishing(id, digest).await?;
        let store = self.blobs.clone();
        let d = digest.clone();
        let (size, gc_lock) = tokio::task::spawn_blocking(move || {
            let lock = store.gc_lock(false)?;
            store.publish(&id, &d).map(|size| (size, lock))
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        // Blocks are indexed before the blob becomes visible, so every visible blob has its DAG.
        self.blocks.record_blob_dag(digest, dag_blocks).await?;
        let info = BlobInfo { size, root_cid: root, touched_at: 0 };
        let known = self.meta.blob_info(repo, digest).await?.is_some();
        self.meta.commit_blob(repo, digest, &info, Some(id)).await?;
        // Held from the rename to the commit, no longer: a GC's batch waits for every holder.
        drop(gc_lock);
        if !known {
            self.changed().await?;
            let event = crate::events::Event::BlobPublished { repository: repo.to_string(), digest: digest.clone(), root: info.root_cid };
            self.emit(event);
        }
        if let Some(node) = &self.settings.node_id {
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
        self.finish_one_shot(repo, id, digest, body).await
    }

    /// Records blob `digest` in `repo` by its root CID and size, without its bytes: an image
    /// imported by CID names blobs that peers hold. Its first read fetches it (see
    /// [`Self::open_blob`]), and only bytes that match the digest are kept or served whole.
    pub async fn adopt_blob(&self, repo: &str, digest: &Digest, size: u64, root: &cid::Cid) -> Result<()> {
        let info = BlobInfo { size, root_cid: root.to_string(), touched_at: 0 };
        self.meta.commit_blob(repo, digest, &info, None).await?;
        self.changed().await?;
        self.emit(crate::events::Event::BlobPublished { repository: repo.to_string(), digest: digest.clone(), root: info.root_cid });
        Ok(())
    }

    /// A blob fetched from elsewhere (`body`: its bytes in order, each already verified against
    /// its block's CID, as the DAG at `root` whose blocks `dag` records by the time the body
    /// ends), kept through the upload path: hashed as it is written, published only if its
    /// digest matches, with the DAG it came as. `progress` follows it for readers (see
    /// `storage::Arriving`): the upload file and its length as it grows, that every byte
    /// matched the digest, then the published file, or the failure.
    pub async fn receive_blob<B: Body>(
        &self,
        repo: &str,
        digest: &Digest,
        owner: &str,
        (root, dag): (cid::Cid, ReceivedDag),
        body: B,
        progress: tokio::sync::watch::Sender<crate::storage::Progress>,
    ) -> Result<u64> {
        let progress = Arc::new(progress);
        let result = async {
            let id = self.start_upload(repo, owner).await?;
            let file = self.blobs.upload_path(&id);
            progress.send_modify(|p| p.file = Some(file));
            let report = progress.clone();
            let lock = self.session_lock(id);
            let mut state = lock.lock().await;
            state.progress = Some(Arc::new(move |n| report.send_modify(|p| p.written = n)));
            let verdict = progress.clone();
            let matched = digest.clone();
            state.verified = Some(Box::new(move || {
                tracing::debug!(digest = %matched, "every byte arrived and matched the digest; keeping the blob");
                verdict.send_modify(|p| p.verified = true)
            }));
            let dag = UploadDag::Received { root, consumed: 0, blocks: dag };
            state.hashed = Some(Hashes { offset: 0, digest: Algorithm::Sha256.hasher(), dag });
            drop(state);
            self.finish_one_shot(repo, id, digest, body).await
        }
        .await;
        let blob = self.blobs.blob_path(digest);
        progress.send_modify(|p| match &result {
            Ok(size) => {
                (p.file, p.written, p.end) = (Some(blob), *size, Some(Ok(())));
            }
            Err(e) => p.end = Some(Err(e.to_string().into())),
        });
        result
    }

    /// Finishes a whole blob sent in one go into upload `id`; a failure leaves no session behind.
    async fn finish_one_shot<B: Body>(&self, repo: &str, id: Uuid, digest: &Digest, body: B) -> Result<u64> {
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
}
