//! Walks that fetch what the node lacks from peers: the operator's (`pin/add`, `block/get`),
//! kept or passed on, and the gateway's on-demand reads.

use super::keeper::Keeper;
use bytes::Bytes;
use cid::Cid;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// A block source for the operator's walks that fetches what the node lacks from peers and keeps
/// it (through a [`Keeper`], for the pin it arrives under): `pin/add` and `block/get` of content
/// only peers have. The links of every dag-pb block the walk meets are wanted ahead of it, in
/// the walk's order (depth first), at most [`PREFETCH`] at a time, so the walk finds its blocks
/// arriving rather than asking one at a time.
pub struct Fetching {
    reg: Arc<crate::registry::Registry>,
    session: super::session::Session,
    /// `None`: blocks are passed on, not kept, and nothing is wanted ahead of the walk.
    ahead: Option<Arc<Ahead>>,
}

/// Links wanted ahead of a walk (with 1 MiB leaves, this many MiB in flight).
pub const PREFETCH: usize = 16;

/// The links a walk will want next, and the fetches under way for them. A block fetched ahead
/// holds its place in the window until the walk takes it, so no more than [`PREFETCH`] blocks
/// wait in memory however far the peers run ahead.
struct Ahead {
    reg: Arc<crate::registry::Registry>,
    session: super::session::Session,
    keeper: Keeper,
    plan: Mutex<Plan>,
    permits: Arc<tokio::sync::Semaphore>,
    arrived: tokio::sync::Notify,
}

#[derive(Default)]
struct Plan {
    /// In the walk's order.
    queue: VecDeque<Cid>,
    seen: HashSet<Cid>,
    in_flight: HashSet<Cid>,
    ready: HashMap<Cid, (Bytes, tokio::sync::OwnedSemaphorePermit)>,
}

impl Ahead {
    /// `links` go first in line, in their order (the walk visits them before what was queued).
    fn queue(self: &Arc<Self>, links: impl DoubleEndedIterator<Item = Cid>) {
        {
            let mut plan = self.plan.lock().expect("prefetch lock");
            for cid in links.rev() {
                if crate::dag::well_known(&cid).is_none() && plan.seen.insert(cid) {
                    plan.queue.push_front(cid);
                }
            }
        }
        self.top_up();
    }

    /// Starts fetches for what is next in line once half the window is free: wants go in
    /// batches, one message per peer.
    fn top_up(self: &Arc<Self>) {
        if self.permits.available_permits() < PREFETCH / 2 {
            return;
        }
        while let Ok(permit) = self.permits.clone().try_acquire_owned() {
            let cid = {
                let mut plan = self.plan.lock().expect("prefetch lock");
                let Some(cid) = plan.queue.pop_front() else { break };
                plan.in_flight.insert(cid);
                cid
            };
            let ahead = self.clone();
            tokio::spawn(async move {
                let mut fetched = None;
                if ahead.keeper.waiting(&cid).is_none() && !ahead.reg.block_index().has(&cid).await.unwrap_or(true) {
                    if let Ok(Ok(bytes)) = ahead.session.ask(cid).await {
                        ahead.keeper.keep(cid, bytes.clone()).await;
                        fetched = Some(bytes);
                    }
                }
                {
                    let mut plan = ahead.plan.lock().expect("prefetch lock");
                    plan.in_flight.remove(&cid);
                    if let Some(bytes) = fetched {
                        plan.ready.insert(cid, (bytes, permit));
                    }
                }
                ahead.arrived.notify_waiters();
                ahead.top_up();
            });
        }
    }

    /// Block `cid` if it was fetched ahead (waiting for the fetch if it is under way); its place
    /// in the window is freed.
    async fn take(self: &Arc<Self>, cid: &Cid) -> Option<Bytes> {
        loop {
            let arrived = self.arrived.notified();
            let (taken, pending) = {
                let mut plan = self.plan.lock().expect("prefetch lock");
                (plan.ready.remove(cid), plan.in_flight.contains(cid))
            };
            if let Some((bytes, permit)) = taken {
                drop(permit);
                self.top_up();
                return Some(bytes);
            }
            if !pending {
                return None;
            }
            arrived.await;
        }
    }
}

impl Fetching {
    pub fn new(reg: Arc<crate::registry::Registry>, swarm: super::Handle, keeper: Keeper) -> Self {
        let session = super::session::Session::new(swarm, Vec::new());
        let permits = Arc::new(tokio::sync::Semaphore::new(PREFETCH));
        let ahead = Arc::new(Ahead { reg: reg.clone(), session: session.clone(), keeper, plan: Mutex::default(), permits, arrived: tokio::sync::Notify::new() });
        Fetching { reg, session, ahead: Some(ahead) }
    }

    /// Walks that read from peers without keeping what they read (an import by CID reads the
    /// layout's manifests, which the registry stores its own way).
    pub fn passing(reg: Arc<crate::registry::Registry>, swarm: super::Handle) -> Self {
        Fetching { reg, session: super::session::Session::new(swarm, Vec::new()), ahead: None }
    }

    /// The block, local or fetched (and kept, with a keeper).
    async fn get(&self, cid: &Cid) -> crate::dag::Result<Option<Bytes>> {
        if let Some(bytes) = futures_util::future::OptionFuture::from(self.ahead.as_ref().map(|a| a.take(cid))).await.flatten() {
            return Ok(Some(bytes));
        }
        let keeper = self.ahead.as_ref().map(|a| &a.keeper);
        if let Some(bytes) = keeper.and_then(|k| k.waiting(cid)) {
            return Ok(Some(bytes));
        }
        if let Some(bytes) = self.reg.get_block(cid).await? {
            return Ok(Some(bytes));
        }
        let Ok(bytes) = self.session.get(*cid).await else { return Ok(None) };
        if let Some(keeper) = keeper {
            keeper.keep(*cid, bytes.clone()).await;
        }
        Ok(Some(bytes))
    }
}

impl crate::dag::BlockSource for Fetching {
    fn fetch<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, crate::dag::Result<Option<(Bytes, crate::exposure::Admission)>>> {
        Box::pin(async move {
            let Some(bytes) = self.get(cid).await? else { return Ok(None) };
            if let (true, Some(ahead)) = (cid.codec() == crate::unixfs::DAG_PB, &self.ahead) {
                if let Ok(node) = crate::unixfs::decode_node(&bytes) {
                    ahead.queue(node.links.into_iter().map(|l| l.cid));
                }
            }
            Ok(Some((bytes, crate::exposure::Admission::Vouching)))
        })
    }

    fn sees_all(&self) -> bool {
        true
    }

    fn vouch(&self, _links: Vec<Cid>) {}
}

/// Blocks from peers for a reader of the store (`dag::Reader::fetching`): the session is opened
/// only when the first missing block is asked for, so requests the node answers itself cost the
/// swarm nothing.
pub struct OnDemand {
    swarm: super::Handle,
    session: tokio::sync::OnceCell<super::session::Session>,
}

impl OnDemand {
    pub fn new(swarm: super::Handle) -> Self {
        OnDemand { swarm, session: tokio::sync::OnceCell::new() }
    }
}

impl crate::dag::Elsewhere for OnDemand {
    fn get<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let session = self.session.get_or_init(|| async { super::session::Session::new(self.swarm.clone(), Vec::new()) }).await;
            session.get(*cid).await.ok()
        })
    }
}
