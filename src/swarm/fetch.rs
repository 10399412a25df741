//! Walks that fetch what the node lacks from peers: the operator's (`pin/add`, `block/get`),
//! kept or passed on, and the gateway's on-demand reads.

use super::frontier::{links_of, Frontier};
use super::keeper::Keeper;
use bytes::Bytes;
use cid::Cid;
use std::sync::{Arc, Mutex};

/// A block source for the operator's walks that fetches what the node lacks from peers and keeps
/// it (through a [`Keeper`], for the pin it arrives under): `pin/add` and `block/get` of content
/// only peers have.
///
/// Ahead of the walk, the DAG's frontier (every link of every dag-pb block fetched so far) is
/// fetched [`PREFETCH`] blocks at a time, each picked at random: nodes pulling one DAG at once
/// then ask its seed for different blocks and trade the rest among themselves, where in one
/// order they would all want the same block of the same seed at once. What arrives goes to the
/// keeper (to disk), not to memory; the walk, in its own order, finds it there, and a block the
/// walk reaches before its turn is fetched at once.
pub struct Fetching {
    reg: Arc<crate::registry::Registry>,
    session: super::session::Session,
    /// `None`: blocks are passed on, not kept, and nothing is wanted ahead of the walk.
    ahead: Option<Arc<Ahead>>,
}

/// Blocks wanted at once ahead of a walk, each asked of every peer (want-have): what any of
/// them gets, this node hears of and can take from it. Memory does not grow with it: what
/// arrives goes to the keeper, and the session sends no want-block while the keeper holds
/// [`super::keeper::HELD`] blocks.
pub const PREFETCH: usize = 256;

/// The DAG's frontier and the fetches under way.
struct Ahead {
    reg: Arc<crate::registry::Registry>,
    session: super::session::Session,
    keeper: Keeper,
    plan: Mutex<Frontier>,
    arrived: tokio::sync::Notify,
}

impl Ahead {
    /// Adds `links` (of block `parent`) to the frontier and starts fetches while there is room.
    fn queue(self: &Arc<Self>, parent: &Cid, links: Vec<Cid>) {
        self.plan.lock().expect("prefetch lock").add(parent, links);
        while let Some(cid) = self.plan.lock().expect("prefetch lock").next(PREFETCH) {
            self.start(cid);
        }
    }

    /// Fetches `cid` (unless held), keeps it, and puts the links of a dag-pb block on the
    /// frontier.
    fn start(self: &Arc<Self>, cid: Cid) {
        let ahead = self.clone();
        tokio::spawn(async move {
            let mut links = Vec::new();
            let held = ahead.keeper.waiting(&cid).is_some() || ahead.reg.block_index().has(&cid).await.unwrap_or(false);
            if !held {
                let place = ahead.plan.lock().expect("prefetch lock").place(&cid);
                if let Ok(Ok(bytes)) = ahead.session.ask_at(cid, place).await {
                    links = links_of(&cid, &bytes);
                    ahead.keeper.keep(cid, bytes).await;
                }
            }
            ahead.plan.lock().expect("prefetch lock").landed(&cid);
            ahead.arrived.notify_waiters();
            ahead.queue(&cid, links);
        });
    }

    /// Waits for `cid` if a fetch of it is under way or due (started at once if so); it is then
    /// with the keeper or in the store, or its fetch failed.
    async fn wait_for(self: &Arc<Self>, cid: &Cid) {
        loop {
            let arrived = self.arrived.notified();
            let start = {
                let mut plan = self.plan.lock().expect("prefetch lock");
                if plan.in_flight(cid) {
                    false
                } else if plan.claim_due(cid) {
                    true
                } else {
                    return;
                }
            };
            if start {
                self.start(*cid);
            }
            arrived.await;
        }
    }
}

impl Fetching {
    pub fn new(reg: Arc<crate::registry::Registry>, swarm: super::Handle, keeper: Keeper) -> Self {
        Self::recording(reg, swarm, keeper, None)
    }

    /// A fetching source that tells `underway` when a block comes from a peer this node trusts.
    pub fn recording(reg: Arc<crate::registry::Registry>, swarm: super::Handle, keeper: Keeper, underway: Option<Arc<crate::exposure::Underway>>) -> Self {
        let session = super::session::Session::recording(swarm, Vec::new(), underway, Some(keeper.room()));
        let ahead = Arc::new(Ahead { reg: reg.clone(), session: session.clone(), keeper, plan: Mutex::default(), arrived: tokio::sync::Notify::new() });
        Fetching { reg, session, ahead: Some(ahead) }
    }

    /// Walks that read from peers without keeping what they read (an import by CID reads the
    /// layout's manifests, which the registry stores its own way).
    pub fn passing(reg: Arc<crate::registry::Registry>, swarm: super::Handle) -> Self {
        Fetching { reg, session: super::session::Session::new(swarm, Vec::new()), ahead: None }
    }

    /// The block, local or fetched (and kept, with a keeper).
    async fn get(&self, cid: &Cid) -> crate::dag::Result<Option<Bytes>> {
        if let Some(ahead) = &self.ahead {
            ahead.wait_for(cid).await;
        }
        let keeper = self.ahead.as_ref().map(|a| &a.keeper);
        if let Some(bytes) = keeper.and_then(|k| k.waiting(cid)) {
            return Ok(Some(bytes));
        }
        if let Some(bytes) = self.reg.get_block(cid).await? {
            return Ok(Some(bytes));
        }
        let bytes = self.session.get(*cid).await.map_err(|e| crate::dag::DagError::NotFound(e.to_string()))?;
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
            if let Some(ahead) = &self.ahead {
                ahead.queue(cid, links_of(cid, &bytes));
            }
            Ok(Some((bytes, crate::exposure::Admission::Vouching)))
        })
    }

    fn sees_all(&self) -> bool {
        true
    }

    fn vouch(&self, _links: Vec<Cid>) {}

    /// Held once its fetch ahead landed it with the keeper or in the store (verified on
    /// arrival); fetched and kept now if not.
    fn holds<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, crate::dag::Result<bool>> {
        Box::pin(async move {
            if let Some(ahead) = &self.ahead {
                ahead.wait_for(cid).await;
                if ahead.keeper.waiting(cid).is_some() {
                    return Ok(true);
                }
            }
            if self.reg.block_index().has(cid).await.unwrap_or(false) {
                return Ok(true);
            }
            Ok(self.get(cid).await?.is_some())
        })
    }
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
