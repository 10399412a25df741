//! Keeping blocks fetched from peers (`pin/add`, an operator's `block/get`): one writer per walk
//! commits them in batches, so a DAG of a thousand blocks costs a few transactions (and fsyncs)
//! instead of a thousand, and the walk never waits for the disk. A block handed over is offered
//! at once, before it is committed: the walk finds it here, and peers are told HAVE and served
//! it through the block service (`exposure::Policy::landing`, judged as the blocks already
//! committed for the same owner), so a fleet fetching one DAG passes each block on as soon as
//! it is verified, not once a writer starved of CPU gets to it (eight nodes pulling at once on
//! two cores: 0.46 s a 4 MiB commit, and up to 80 blocks waiting).
//!
//! What is handed over and not committed is bounded by the [`Room`] the fetching session shares:
//! past [`HELD`] blocks it sends no further want-block, so a slow disk slows the fetch instead of
//! filling memory.

use crate::blockstore::Owner;
use crate::exposure::{Policy, Receiving};
use crate::registry::Registry;
use bytes::Bytes;
use cid::Cid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, Notify};

/// Bytes committed in one transaction at most.
const BATCH_BYTES: usize = 4 << 20;
/// Blocks waiting for the writer: with 1 MiB blocks, this many MiB at most.
const QUEUE: usize = 8;
/// Blocks handed over and not committed past which the session fetching them places no
/// further want-block (those already sent still arrive: at most its peers' share each).
pub const HELD: usize = 16;

/// Blocks a keeper holds and has not committed, shared with the session that fetches them.
#[derive(Default)]
pub struct Room {
    held: AtomicUsize,
    freed: Notify,
}

impl Room {
    /// Whether the keeper holds [`HELD`] blocks or more.
    pub fn full(&self) -> bool {
        self.held.load(Ordering::Relaxed) >= HELD
    }

    /// Resolves once blocks were committed since the last call.
    pub async fn freed(&self) {
        self.freed.notified().await
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

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
    /// The same blocks, as the block service offers them.
    landing: Arc<Receiving>,
    server: Arc<super::bitswap::Server>,
    room: Arc<Room>,
}

impl Keeper {
    /// A writer keeping blocks for `owner`; `server` is told of each block handed over, so
    /// peers it told "not here" hear HAVE, and `policy` offers it until it is committed.
    pub fn new(reg: Arc<Registry>, owner: Owner, server: Arc<super::bitswap::Server>, policy: &Arc<Policy>) -> Keeper {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        let landing = Arc::new(policy.landing(owner.clone()));
        let room = Arc::new(Room::default());
        let keeper = Keeper { jobs, waiting, landing, server, room };
        tokio::spawn(write(reg, owner, rx, keeper.writer()));
        keeper
    }

    /// What the writer shares with the keeper (not the way to it: the writer ends with the last
    /// keeper).
    fn writer(&self) -> Writer {
        Writer { waiting: self.waiting.clone(), landing: self.landing.clone(), server: self.server.clone(), room: self.room.clone() }
    }

    /// The room the session fetching for this keeper shares.
    pub fn room(&self) -> Arc<Room> {
        self.room.clone()
    }

    /// A block handed over and not yet committed.
    pub fn waiting(&self, cid: &Cid) -> Option<Bytes> {
        self.waiting.lock().expect("keeper lock").get(cid).cloned()
    }

    /// Hands `data` (verified against `cid`) to the writer, and offers it from now on; waits
    /// only when the writer is behind.
    pub async fn keep(&self, cid: Cid, data: Bytes) {
        {
            let mut waiting = self.waiting.lock().expect("keeper lock");
            if waiting.contains_key(&cid) {
                return;
            }
            waiting.insert(cid, data.clone());
        }
        self.room.held.fetch_add(1, Ordering::Relaxed);
        self.landing.arrived(cid, data);
        self.server.arrived_here(&[cid]);
        match self.jobs.reserve().await {
            Ok(place) => place.send(Job::Keep(cid)),
            Err(_) => self.writer().done(&[cid]),
        }
    }

    /// Waits until every block handed over so far is committed; the first failure to commit
    /// any of them since the last flush.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Flush(tx)).await.map_err(|_| "the block writer stopped".to_string())?;
        rx.await.map_err(|_| "the block writer stopped".to_string())?
    }
}

/// The writer's side of a keeper.
struct Writer {
    waiting: Arc<Mutex<HashMap<Cid, Bytes>>>,
    landing: Arc<Receiving>,
    server: Arc<super::bitswap::Server>,
    room: Arc<Room>,
}

impl Writer {
    /// `cids` are committed (or failed to be): no longer held here.
    fn done(&self, cids: &[Cid]) {
        let mut waiting = self.waiting.lock().expect("keeper lock");
        for cid in cids {
            waiting.remove(cid);
        }
        drop(waiting);
        self.landing.written(cids);
        self.room.release(cids.len());
    }
}

async fn write(reg: Arc<Registry>, owner: Owner, mut rx: mpsc::Receiver<Job>, w: Writer) {
    let waiting = w.waiting.clone();
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
                // Told when handed over; again for a block the block service had no room to
                // offer before.
                Ok(()) => w.server.arrived_here(&cids),
                Err(e) => {
                    tracing::warn!(error = %e, "fetched blocks were not kept");
                    failed.get_or_insert(e.to_string());
                }
            }
            w.done(&cids);
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(failed.take().map_or(Ok(()), Err));
        }
    }
}
