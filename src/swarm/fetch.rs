//! Bitswap, the client side's bookkeeping: which sessions want which blocks, and the judgement of
//! every block a peer sends. A block's CID is computed from the bytes that came (Bitswap 1.1+
//! sends only a CID prefix), so a corrupted block is a block nobody wanted: a peer that sends
//! one is misbehaving, and is disconnected and kept out of sessions for [`BAN`].

use super::keeper::Keeper;
use super::message::{Entry, Message, WantType, Wantlist};
use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a peer that sent a wrong block is left out of sessions.
pub const BAN: Duration = Duration::from_secs(600);
/// CIDs remembered as wanted lately, to tell a late or duplicate block from a wrong one.
const WANTED_LATELY: usize = 1 << 16;

/// What a peer said about a block a session wants.
#[derive(Debug)]
pub enum News {
    /// The block, verified: its bytes hash to `cid`.
    Block {
        cid: Cid,
        data: Bytes,
        from: PeerId,
    },
    DontHave {
        cid: Cid,
        from: PeerId,
    },
    Have {
        cid: Cid,
        from: PeerId,
    },
}

/// What a block that arrived was.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A session waited for it.
    Wanted,
    /// Wanted a moment ago (a duplicate from a second peer, or after a timeout moved on).
    Late,
    /// Nobody asked for anything that hashes so: corrupted, or unsolicited.
    Wrong,
}

type SessionId = u64;
/// The sessions waiting for a block, each with its mailbox.
type Waiting = Vec<(SessionId, mpsc::UnboundedSender<News>)>;

#[derive(Default)]
pub struct Wants {
    interest: Mutex<HashMap<Cid, Waiting>>,
    lately: Mutex<(HashSet<Cid>, VecDeque<Cid>)>,
    banned: Mutex<HashMap<PeerId, Instant>>,
    next: AtomicU64,
}

/// A session's mailbox: what peers said about the blocks it wants. Dropping it withdraws them.
pub struct Inbox {
    id: SessionId,
    tx: mpsc::UnboundedSender<News>,
    pub rx: mpsc::UnboundedReceiver<News>,
}

impl Wants {
    pub fn open(&self) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        Inbox { id: self.next.fetch_add(1, Ordering::Relaxed), tx, rx }
    }

    /// `inbox` waits for `cid`.
    pub fn want(&self, inbox: &Inbox, cid: Cid) {
        let mut interest = self.interest.lock().expect("wants lock");
        let waiting = interest.entry(cid).or_default();
        if waiting.iter().all(|(id, _)| *id != inbox.id) {
            waiting.push((inbox.id, inbox.tx.clone()));
        }
        drop(interest);
        let mut lately = self.lately.lock().expect("lately lock");
        if lately.0.insert(cid) {
            lately.1.push_back(cid);
            if lately.1.len() > WANTED_LATELY {
                if let Some(old) = lately.1.pop_front() {
                    lately.0.remove(&old);
                }
            }
        }
    }

    /// `inbox` no longer waits for `cid`.
    pub fn unwant(&self, inbox: &Inbox, cid: &Cid) {
        let mut interest = self.interest.lock().expect("wants lock");
        if let Some(waiting) = interest.get_mut(cid) {
            waiting.retain(|(id, _)| *id != inbox.id);
            if waiting.is_empty() {
                interest.remove(cid);
            }
        }
    }

    /// Withdraws everything `inbox` waits for.
    pub fn close(&self, inbox: &Inbox, cids: impl IntoIterator<Item = Cid>) {
        for cid in cids {
            self.unwant(inbox, &cid);
        }
    }

    /// A block arrived from `from`: handed to every session waiting for the CID its bytes hash
    /// to (each is then no longer waiting for it).
    pub fn arrived(&self, from: PeerId, prefix: &[u8], data: Vec<u8>) -> Arrival {
        let Some(cid) = cid_of(prefix, &data) else { return Arrival::Wrong };
        let waiting = self.interest.lock().expect("wants lock").remove(&cid);
        match waiting {
            Some(waiting) => {
                let data = Bytes::from(data);
                for (_, tx) in waiting {
                    let _ = tx.send(News::Block { cid, data: data.clone(), from });
                }
                Arrival::Wanted
            }
            None if self.lately.lock().expect("lately lock").0.contains(&cid) => Arrival::Late,
            None => Arrival::Wrong,
        }
    }

    /// `from` says whether it has `cid`.
    pub fn presence(&self, from: PeerId, cid: Cid, have: bool) {
        if let Some(waiting) = self.interest.lock().expect("wants lock").get(&cid) {
            for (_, tx) in waiting {
                let news = if have { News::Have { cid, from } } else { News::DontHave { cid, from } };
                let _ = tx.send(news);
            }
        }
    }

    /// Leaves `peer` out of sessions for [`BAN`].
    pub fn ban(&self, peer: PeerId) {
        let mut banned = self.banned.lock().expect("banned lock");
        let now = Instant::now();
        banned.retain(|_, until| *until > now);
        banned.insert(peer, now + BAN);
    }

    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.lock().expect("banned lock").get(peer).is_some_and(|until| *until > Instant::now())
    }
}

/// The CID of `data` under `prefix` (version, codec, multihash code and length), if its hash is
/// one this node computes.
pub fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
    let mut fields = [0u64; 4];
    let mut at = 0;
    for f in &mut fields {
        let (v, n) = crate::varint::decode(prefix.get(at..)?).ok()??;
        *f = v;
        at += n;
    }
    let [version, codec, code, len] = fields;
    if code != crate::unixfs::SHA2_256 || len != 32 {
        return None;
    }
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(data).into();
    let mh = cid::multihash::Multihash::<64>::wrap(code, &digest).ok()?;
    match version {
        0 if codec == crate::unixfs::DAG_PB => Cid::new_v0(mh).ok(),
        1 => Some(Cid::new_v1(codec, mh)),
        _ => None,
    }
}

/// A message cancelling earlier wants of `cids`.
pub fn cancels_message(cids: &[Cid]) -> Message {
    let entries = cids.iter().map(|cid| Entry { block: cid.to_bytes(), priority: 0, cancel: true, want_type: WantType::Block as i32, send_dont_have: false }).collect();
    Message { wantlist: Some(Wantlist { entries, full: false }), ..Default::default() }
}

/// A message wanting `cids` (`kind`, with send-dont-have).
pub fn wants_message(cids: &[Cid], kind: WantType) -> Message {
    let entries = cids.iter().map(|cid| Entry { block: cid.to_bytes(), priority: 1, cancel: false, want_type: kind as i32, send_dont_have: true }).collect();
    Message { wantlist: Some(Wantlist { entries, full: false }), ..Default::default() }
}

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
                if ahead.keeper.waiting(&cid).is_none() && !ahead.reg.has_block(&cid).await.unwrap_or(true) {
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
