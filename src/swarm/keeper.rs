//! Keeping blocks fetched from peers (`pin/add`, an operator's `block/get`): one writer per walk
//! commits them in batches, so a DAG of a thousand blocks costs a few transactions (and fsyncs)
//! instead of a thousand, and the walk never waits for the disk. A block handed over but not yet
//! committed is still found here, so the walk does not fetch it twice.

use crate::blockstore::Owner;
use crate::registry::Registry;
use bytes::Bytes;
use cid::Cid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Bytes committed in one transaction at most.
const BATCH_BYTES: usize = 4 << 20;
/// Blocks waiting for the writer: with 1 MiB blocks, this many MiB at most.
const QUEUE: usize = 8;

enum Job {
    Keep(Cid),
    /// Answered once everything handed over before it is committed.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The way to a walk's writer; cheap to clone. The writer ends when the last one is dropped,
/// after committing what it was given.
#[derive(Clone)]
pub struct Keeper {
    jobs: mpsc::Sender<Job>,
    /// Handed over, not yet committed.
    waiting: Arc<Mutex<HashMap<Cid, Bytes>>>,
}

impl Keeper {
    /// A writer keeping blocks for `owner`; `server` is told of each batch committed, so peers
    /// it told "not here" hear HAVE.
    pub fn new(reg: Arc<Registry>, owner: Owner, server: Arc<super::bitswap::Server>) -> Keeper {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(write(reg, owner, rx, waiting.clone(), server));
        Keeper { jobs, waiting }
    }

    /// A block handed over and not yet committed.
    pub fn waiting(&self, cid: &Cid) -> Option<Bytes> {
        self.waiting.lock().expect("keeper lock").get(cid).cloned()
    }

    /// Hands `data` (verified against `cid`) to the writer; waits only when it is behind. The
    /// writer's place is taken before the block is: blocks handed over and not committed stay
    /// [`QUEUE`] and a batch, however many fetches end at once.
    pub async fn keep(&self, cid: Cid, data: Bytes) {
        let Ok(place) = self.jobs.reserve().await else { return };
        if self.waiting.lock().expect("keeper lock").insert(cid, data).is_some() {
            return;
        }
        place.send(Job::Keep(cid));
    }

    /// Waits until every block handed over so far is committed; the first failure to commit
    /// any of them since the last flush.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Flush(tx)).await.map_err(|_| "the block writer stopped".to_string())?;
        rx.await.map_err(|_| "the block writer stopped".to_string())?
    }
}

async fn write(reg: Arc<Registry>, owner: Owner, mut rx: mpsc::Receiver<Job>, waiting: Arc<Mutex<HashMap<Cid, Bytes>>>, server: Arc<super::bitswap::Server>) {
    let mut failed: Option<String> = None;
    let mut flushes = Vec::new();
    while let Some(job) = rx.recv().await {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = Some(job);
        // Whatever is queued goes in the same transaction, up to BATCH_BYTES.
        while let Some(job) = next.take() {
            match job {
                Job::Keep(cid) => {
                    if let Some(data) = waiting.lock().expect("keeper lock").get(&cid).cloned() {
                        bytes += data.len();
                        batch.push((cid, data));
                    }
                }
                Job::Flush(reply) => flushes.push(reply),
            }
            if bytes < BATCH_BYTES && flushes.is_empty() {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let cids: Vec<Cid> = batch.iter().map(|(cid, _)| *cid).collect();
            match reg.store_blocks(batch, owner.clone()).await {
                Ok(()) => server.arrived_here(&cids),
                Err(e) => {
                    tracing::warn!(error = %e, "fetched blocks were not kept");
                    failed.get_or_insert(e.to_string());
                }
            }
            let mut waiting = waiting.lock().expect("keeper lock");
            for cid in cids {
                waiting.remove(&cid);
            }
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(failed.take().map_or(Ok(()), Err));
        }
    }
}
