//! Garbage collection: mark what is kept, sweep the rest once it is older than a grace period.
//!
//! Kept: tagged and pinned manifests, the children of kept indexes, the referrers of kept
//! manifests (signatures and SBOMs follow their image), the blobs kept manifests reference, blobs
//! an upload is publishing, and the blocks of every kept blob's DAG and image DAG. Anything younger
//! than the grace period is kept too: an index's children are pushed before the index, a blob
//! before its manifest, and a client that has just seen a blob may be about to reference it (blob
//! reads refresh a link's age for this reason).
//!
//! Online: nothing waits for a GC longer than one of its batches. The metadata sweep deletes a
//! row only in a transaction that finds it garbage, so it is atomic against manifest pushes (a
//! manifest is stored only if its blobs are still there); on SQLite, whose one writer every push
//! needs, those transactions are short batches. Files are moved out of `blobs/` a batch at a time under the exclusive
//! `gc.lock`, which publishing holds shared, so a blob pushed again during a GC keeps its file
//! (its row is back when its batch looks); they are unlinked from `trash/` at the end. The
//! block mark holds no lock (see `BlockIndex::sweep_unreachable` for why what it cannot see is
//! kept), and the block sweep takes the lock per batch.

use super::{Registry, Result};
use crate::digest::Digest;
use crate::storage::{BlobStore, StorageError};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::clock::unix_now;

/// Blobs removed under one hold of the GC lock.
const BLOBS_PER_BATCH: usize = 256;
/// Live roots read from the metadata at a time.
const ROOTS_PAGE: u32 = 1000;

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
        self.gc_run(grace, None).await
    }

    /// [`Self::gc`], telling `removed` the CID of each block it removes from the block index as
    /// it goes, a batch at a time (blobs' own blocks go with their files and are counted, not
    /// listed). Memory holds a batch, not every CID; a slow reader slows the sweep, and one that
    /// goes away stops being told.
    pub async fn gc_listing(&self, grace: Duration, removed: tokio::sync::mpsc::Sender<cid::Cid>) -> Result<GcReport> {
        self.gc_run(grace, Some(removed)).await
    }

    async fn gc_run(&self, grace: Duration, list: Option<tokio::sync::mpsc::Sender<cid::Cid>>) -> Result<GcReport> {
        let outcome = self.collect(grace, list).await;
        release_free_heap();
        let metrics = &crate::metrics::METRICS;
        metrics.gc_runs.with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }]).inc();
        if let Ok(report) = &outcome {
            metrics.gc_reclaimed.inc_by(report.bytes);
        }
        outcome
    }

    async fn collect(&self, grace: Duration, list: Option<tokio::sync::mpsc::Sender<cid::Cid>>) -> Result<GcReport> {
        let cutoff = unix_now() - grace.as_secs() as i64;
        let cutoff_time = UNIX_EPOCH + Duration::from_secs(cutoff.max(0) as u64);
        let mut report = GcReport::default();
        let mut phases = Phases::start();
        let mut batches = BatchTimes::default();
        // Atomic per row against manifest pushes (one is stored only if its blobs are).
        let swept = self.meta.collect_garbage(cutoff).await?;
        phases.mark("metadata");
        report.manifests = swept.manifests;
        report.links = swept.links;
        let sizes: HashMap<Digest, u64> = swept.blobs.iter().map(|b| (b.digest.clone(), b.size)).collect();
        let digests: Vec<Digest> = swept.blobs.iter().map(|b| b.digest.clone()).collect();
        for (digest, trashed) in self.remove_blobs(digests, &mut batches).await? {
            let size = sizes.get(&digest).copied().unwrap_or(0);
            report.blobs += 1;
            report.bytes += if trashed { size } else { 0 };
            tracing::info!(%digest, size, "gc removed a blob");
        }
        phases.mark("blobs");
        // Files no row names, a directory at a time (memory holds one directory's names).
        let publishing: HashSet<Digest> = self.meta.list_uploads().await?.into_iter().filter_map(|u| u.finishing).collect();
        for (alg, dir) in self.on_disk(|store| store.blob_dirs()).await? {
            let old = self.on_disk(move |store| store.blob_files_in(alg, &dir, cutoff_time)).await?;
            if old.is_empty() {
                continue;
            }
            let named: HashSet<Digest> = self.meta.existing_blobs(&old).await?.into_iter().collect();
            let orphans = old.into_iter().filter(|d| !named.contains(d) && !publishing.contains(d)).collect();
            for (digest, trashed) in self.remove_blobs(orphans, &mut batches).await? {
                if trashed {
                    tracing::info!(%digest, "gc removed a blob file no metadata names");
                    report.orphan_files += 1;
                }
            }
        }
        phases.mark("files");
        let (roots, reading) = self.stream_live_roots();
        let store = self.blobs.clone();
        let hold = move || store.gc_lock_for_batch().map_err(crate::blockstore::BlockIndexError::from);
        let swept_blocks = self.blocks.sweep_unreachable(roots, cutoff, list, hold).await;
        reading.await.map_err(|e| StorageError::Task(e.to_string()))??;
        let (blocks, block_bytes) = swept_blocks?;
        report.blocks = blocks;
        report.block_bytes = block_bytes;
        phases.mark("blocks");
        self.on_disk(|store| store.empty_trash()).await?;
        phases.mark("unlink");
        // No phase holds the GC lock for more than one batch: pushes wait for a batch at most.
        tracing::info!(
            phases_ms = ?phases.to_string(),
            blobs = report.blobs,
            blocks = report.blocks,
            blob_batches = batches.count,
            blob_lock_wait_ms = batches.waited.as_millis() as u64,
            blob_lock_hold_ms = batches.held.as_millis() as u64,
            longest_blob_hold_ms = batches.longest.as_millis() as u64,
            "gc finished"
        );
        if report.manifests + report.links + report.blobs + report.orphan_files + report.blocks > 0 {
            self.changed().await?;
            let blobs = swept.blobs.iter().map(|b| b.digest.clone()).collect();
            self.emit(crate::events::Event::Swept { blobs, manifests: report.manifests, blocks: report.blocks });
        }
        Ok(report)
    }

    /// Removes blobs the metadata no longer has (swept just now, or files no row names), a
    /// batch at a time under the GC lock held exclusively: a blob pushed again since it was
    /// swept (publishing holds the lock shared from its rename to its commit) has a row again
    /// and keeps its file and blocks. Their blocks are forgotten first, while the files are there
    /// to copy a leaf another DAG shares from; the files go to `trash/`. Each digest removed,
    /// with whether it had a file.
    async fn remove_blobs(&self, digests: Vec<Digest>, times: &mut BatchTimes) -> Result<Vec<(Digest, bool)>> {
        let mut removed = Vec::new();
        for batch in digests.chunks(BLOBS_PER_BATCH) {
            let asked = Instant::now();
            let lock = self.on_disk(|store| store.gc_lock_for_batch()).await?;
            let got = Instant::now();
            let back: HashSet<Digest> = self.meta.existing_blobs(batch).await?.into_iter().collect();
            let gone: Vec<Digest> = batch.iter().filter(|d| !back.contains(d)).cloned().collect();
            self.blocks.forget_blobs(gone.clone()).await?;
            let trashed = self.on_disk(move |store| trash_all(store, gone)).await?;
            drop(lock);
            times.add(got - asked, got.elapsed());
            removed.extend(trashed);
        }
        Ok(removed)
    }

    /// The metadata's live roots, read a page at a time into a bounded channel while the mark
    /// takes them (memory holds a page, not millions of CIDs); the task ends with the read.
    fn stream_live_roots(&self) -> (tokio::sync::mpsc::Receiver<Vec<cid::Cid>>, tokio::task::JoinHandle<Result<()>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let meta = self.meta.clone();
        let reading = tokio::spawn(async move {
            let mut at = Some(crate::metadata::RootsCursor::default());
            while let Some(cursor) = at {
                let (roots, next) = meta.live_roots_page(&cursor, ROOTS_PAGE).await?;
                let page = roots.iter().filter_map(|c| c.parse::<cid::Cid>().ok()).collect();
                if tx.send(page).await.is_err() {
                    return Ok(());
                }
                at = next;
            }
            Ok(())
        });
        (rx, reading)
    }

    /// Runs blob-store file-system calls (renames, directory walks, flock) on a blocking
    /// thread: on a disk mounted with `discard` an unlink alone takes milliseconds, and a GC makes
    /// thousands, which would stall every request sharing the runtime's thread.
    pub(super) async fn on_disk<T: Send + 'static>(&self, f: impl FnOnce(&BlobStore) -> std::result::Result<T, StorageError> + Send + 'static) -> Result<T> {
        let store = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StorageError::Task(e.to_string()))??)
    }
}

/// Moves each blob's file to `trash/`: each blob, with whether its file was there.
fn trash_all(store: &BlobStore, digests: Vec<Digest>) -> std::result::Result<Vec<(Digest, bool)>, StorageError> {
    digests
        .into_iter()
        .map(|digest| {
            let had_file = store.trash_blob(&digest)?;
            Ok((digest, had_file))
        })
        .collect()
}

/// How the blob batches of a GC went: how many, how long they waited for the lock and held it
/// (what a push may wait for), for its closing log line.
#[derive(Default)]
struct BatchTimes {
    count: u64,
    waited: Duration,
    held: Duration,
    longest: Duration,
}

impl BatchTimes {
    fn add(&mut self, waited: Duration, held: Duration) {
        self.count += 1;
        self.waited += waited;
        self.held += held;
        self.longest = self.longest.max(held);
    }
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
