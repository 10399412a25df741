//! Garbage collection: mark what is kept, sweep the rest once it is older than a grace period.
//!
//! Kept: tagged and pinned manifests, the children of kept indexes, the referrers of kept
//! manifests (signatures and SBOMs follow their image), the blobs kept manifests reference, blobs
//! an upload is publishing, and the blocks of every kept blob's DAG and image DAG. Anything younger
//! than the grace period is kept too: an index's children are pushed before the index, a blob
//! before its manifest, and a client that has just seen a blob may be about to reference it (blob
//! reads refresh a link's age for this reason).
//!
//! The metadata sweep is one transaction, so it is atomic against manifest pushes (a manifest
//! is stored only if its blobs are still there). Files are moved out of `blobs/` under the
//! exclusive `gc.lock`, which publishing holds shared, so a blob re-uploaded during a GC keeps its
//! file; they are unlinked from `trash/` after the lock is released.

use super::{Registry, Result};
use crate::digest::Digest;
use crate::storage::{BlobStore, StorageError};
use std::collections::HashSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::clock::unix_now;

/// What a GC reclaimed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub manifests: u64,
    /// Repository-to-blob links removed (a blob may stay, linked elsewhere).
    pub links: u64,
    pub blobs: u64,
    /// Bytes of blob files unlinked.
    pub bytes: u64,
    /// Blob files no metadata named (left by a crash between rename and commit long ago).
    pub orphan_files: u64,
    pub blocks: u64,
    pub block_bytes: u64,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} manifests, {} blob links, {} blobs ({} bytes), {} orphan files, {} blocks ({} bytes)",
            self.manifests, self.links, self.blobs, self.bytes, self.orphan_files, self.blocks, self.block_bytes
        )
    }
}

impl Registry {
    /// Runs one GC; content younger than `grace` is kept whatever references it.
    pub async fn gc(&self, grace: Duration) -> Result<GcReport> {
        self.gc_run(grace, false).await.map(|(report, _)| report)
    }

    /// [`Self::gc`], with the CIDs of the blocks it removed from the block index (blobs' own
    /// blocks go with their files and are counted, not listed).
    pub async fn gc_listing(&self, grace: Duration) -> Result<(GcReport, Vec<cid::Cid>)> {
        self.gc_run(grace, true).await
    }

    async fn gc_run(&self, grace: Duration, list: bool) -> Result<(GcReport, Vec<cid::Cid>)> {
        let outcome = self.collect(grace, list).await;
        release_free_heap();
        let metrics = &crate::metrics::METRICS;
        metrics.gc_runs.with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }]).inc();
        if let Ok((report, _)) = &outcome {
            metrics.gc_reclaimed.inc_by(report.bytes);
        }
        outcome
    }

    async fn collect(&self, grace: Duration, list: bool) -> Result<(GcReport, Vec<cid::Cid>)> {
        let cutoff = unix_now() - grace.as_secs() as i64;
        let cutoff_time = UNIX_EPOCH + Duration::from_secs(cutoff.max(0) as u64);
        let mut report = GcReport::default();
        let mut phases = Phases::start();
        let lock = self.on_disk(|store| store.gc_lock(true)).await?;
        phases.mark("waited");
        let swept = self.meta.collect_garbage(cutoff).await?;
        phases.mark("metadata");
        report.manifests = swept.manifests;
        report.links = swept.links;
        // Their blocks first, while the files are there to copy a leaf another DAG shares from.
        self.blocks.forget_blobs(swept.blobs.iter().map(|b| b.digest.clone()).collect()).await?;
        phases.mark("forget");
        let with_files: Vec<Digest> = swept.blobs.iter().filter(|b| b.had_file).map(|b| b.digest.clone()).collect();
        let trashed: HashSet<Digest> = self.on_disk(move |store| trash_all(store, with_files)).await?;
        for blob in &swept.blobs {
            if trashed.contains(&blob.digest) {
                report.bytes += blob.size;
            }
            report.blobs += 1;
            tracing::info!(digest = %blob.digest, size = blob.size, "gc removed a blob");
        }
        phases.mark("trash");
        let known: HashSet<Digest> = self.meta.list_blobs().await?.into_iter().map(|(d, _)| d).collect();
        let publishing: HashSet<Digest> = self.meta.list_uploads().await?.into_iter().filter_map(|u| u.finishing).collect();
        let orphans: Vec<_> = self
            .on_disk(|store| store.list_blob_files())
            .await?
            .into_iter()
            .filter(|(digest, _, mtime)| !known.contains(digest) && !publishing.contains(digest) && *mtime < cutoff_time)
            .collect();
        let orphan_digests: Vec<Digest> = orphans.iter().map(|(d, _, _)| d.clone()).collect();
        self.blocks.forget_blobs(orphan_digests.clone()).await?;
        for (_, path, _) in &orphans {
            tracing::info!(path = %path.display(), "gc removed a blob file no metadata names");
        }
        report.orphan_files = self.on_disk(move |store| trash_all(store, orphan_digests)).await?.len() as u64;
        phases.mark("files");
        // Still under the exclusive lock: RPC writes hold it shared from storing their blocks to
        // pinning them, so the pins read here include every import that stored a block.
        let mut roots: Vec<String> = self.meta.live_roots().await?;
        roots.extend(self.blocks.pins().await?);
        let roots = roots.iter().filter_map(|c| c.parse::<cid::Cid>().ok()).collect();
        let direct = self.blocks.direct_pins().await?.iter().filter_map(|c| c.parse::<cid::Cid>().ok()).collect();
        let (blocks, block_bytes, removed) = self.blocks.sweep_unreachable(roots, direct, cutoff, list).await?;
        report.blocks = blocks;
        report.block_bytes = block_bytes;
        phases.mark("blocks");
        drop(lock);
        self.on_disk(|store| store.empty_trash()).await?;
        phases.mark("unlink");
        // Pushes wait through every phase from "metadata" to "blocks": the lock is held for those.
        tracing::info!(phases_ms = ?phases.to_string(), blobs = report.blobs, blocks = report.blocks, "gc finished");
        if report.manifests + report.links + report.blobs + report.orphan_files + report.blocks > 0 {
            self.changed().await?;
            let blobs = swept.blobs.iter().map(|b| b.digest.clone()).collect();
            self.emit(crate::events::Event::Swept { blobs, manifests: report.manifests, blocks: report.blocks });
        }
        Ok((report, removed))
    }

    /// Runs blob-store file-system calls (renames, directory walks, flock) on a blocking
    /// thread: on a disk mounted with `discard` an unlink alone takes milliseconds, and a GC makes
    /// thousands, which would stall every request sharing the runtime's thread.
    pub(super) async fn on_disk<T: Send + 'static>(&self, f: impl FnOnce(&BlobStore) -> std::result::Result<T, StorageError> + Send + 'static) -> Result<T> {
        let store = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StorageError::Task(e.to_string()))??)
    }
}

/// Moves each blob's file to `trash/`; returns the blobs whose file was there.
fn trash_all(store: &BlobStore, digests: Vec<Digest>) -> std::result::Result<HashSet<Digest>, StorageError> {
    let mut moved = HashSet::new();
    for digest in digests {
        if store.trash_blob(&digest)? {
            moved.insert(digest);
        }
    }
    Ok(moved)
}

/// How long each phase of a GC took, in the order they ran, for its closing log line.
struct Phases {
    last: Instant,
    marks: Vec<(&'static str, u128)>,
}

impl Phases {
    fn start() -> Self {
        Self { last: Instant::now(), marks: Vec::new() }
    }

    /// Ends the phase called `name`.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.marks.push((name, now.duration_since(self.last).as_millis()));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, ms)) in self.marks.iter().enumerate() {
            write!(f, "{}{name}={ms}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

/// A GC's mark holds sets of up to hundreds of MiB for a moment; glibc keeps what is freed in
/// its arenas, so without this the node's memory stays at its highest GC's. Returns the free
/// pages to the system (a few milliseconds).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free pages of malloc's own arenas back to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
