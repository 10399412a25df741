//! A Bitswap session: one task that fetches blocks from a set of peers on behalf of one walk (a
//! pull, a pin). Its callers ask for blocks ([`Session::get`]) as fast as they like; the task
//! sends each new want first as want-have to up to [`BROADCAST`] peers, then as want-block to
//! one peer, and every peer's new wants go in one message.
//!
//! Where a want-block goes: first to a peer that said HAVE, then to one that has not refused
//! more than it gave, then to the least loaded; at most [`PER_PEER`] at a time per peer, the
//! rest waiting here. Peers fetching the same content answer DONT_HAVE (or, while they are
//! fetching that very block to pass it on, nothing) and HAVE once they have the block (the
//! server remembers what it could not answer); a want a peer is fetching waits for its HAVE, so
//! a busy seed serves each block about once and nodes fetching one DAG at once feed each other.
//!
//! A seed (the content's origin: named by the caller, or a peer whose first answers were nearly
//! all HAVE) is asked for a block another peer said HAVE of only after [`SEED_PATIENCE`], and
//! only once no block this node wants is held by the seeds alone; each node fetching from it
//! asks it first for blocks of its own stripe: the seed's uplink goes to blocks the fleet does
//! not hold yet, each about once.
//!
//! Contention is no failure: a want whose peer sends nothing at all moves on after [`REWANT`]
//! (and may come back), after [`STALLED`] if that peer delivered earlier in the session or said
//! HAVE of it (it is busy, not gone); a peer that is still delivering is waited for.
//! A want fails only when every peer it knows (connected, named by the DHT) said it lacks the
//! block and none said HAVE for [`PARKED`], or when nothing at all arrived for
//! [`FETCH_TIMEOUT`]; the error says which.
//!
//! Verification happens before a block reaches here (`wants::Wants::arrived` hashes it), and a
//! peer that sent a wrong block is banned there and skipped here.

use super::message::WantType;
use super::wants::{Inbox, News};
use super::{Handle, SwarmError};
use bytes::Bytes;
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a want waits for a peer that sends nothing at all before it goes to another.
pub const REWANT: Duration = Duration::from_secs(2);
/// How long a want waits for a peer that delivered blocks earlier and has sent nothing since:
/// a seed serving many peers at once sends each of them a block now and then.
pub const STALLED: Duration = Duration::from_secs(8);
/// How long a session goes on with nothing arriving from anyone before its wants fail.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a want every known peer refused waits for one of them to say HAVE (it may be
/// fetching the block itself), once anything arrived in the session.
pub const PARKED: Duration = Duration::from_secs(10);
/// Peers asked want-have for a block, besides the one asked for it.
pub const BROADCAST: usize = 8;
/// Want-blocks one peer has outstanding at most (4 and 2 did as well as each other on 100 Mbit/s
/// links with 1 MiB blocks, 8 queued more of a seed's uplink twice): the rest wait here, not in the peer's queue
/// (nor in its socket buffers), so they can still go to a peer that says HAVE meanwhile.
pub const PER_PEER: usize = 4;
/// Wants asked of peers (want-have) and not sent yet, at most: the rest are asked as these go.
/// As many as a walk wants at once ([`super::fetch::PREFETCH`]): a node learns of every block
/// it wants as soon as any peer has it (the peer remembers the want and says HAVE then), so it
/// takes from the fleet whatever is there; with 48, a pulling node knew of a tenth of what the
/// others held and its link idled (8 nodes at once: 2.2x one alone, 1.7x with every want asked).
const PROBE_AHEAD: usize = 256;
/// How long a want nobody said HAVE of waits before it goes to a peer that did not: a peer
/// that holds it answers the want-have within this.
const HAVE_GRACE: Duration = Duration::from_millis(150);
/// How long a want waits for a peer fetching it (asked want-have, it said neither HAVE nor
/// DONT_HAVE) to say HAVE before it goes elsewhere.
const FETCHER_GRACE: Duration = Duration::from_secs(3);
/// Providers asked of the DHT when no known peer has a block.
const PROVIDERS: usize = 8;
/// How often the session looks at who is connected (peers joining, peers gone).
const REFRESH: Duration = Duration::from_secs(2);
/// How long a want another (non-seed) peer said HAVE of waits for that peer before a seed is
/// asked for it instead: a seed's uplink spent on a block the fleet already holds is a block of
/// nobody's missing from the fleet.
const SEED_PATIENCE: Duration = Duration::from_secs(5);
/// A peer whose first answers to this many want-haves or more were HAVE, at least 9 in 10, holds
/// the whole content: a seed, asked only for what no other peer has (a `pin/add` knows no
/// origin beforehand, as a pull-through does).
const SEED_ANSWERS: u32 = 32;
/// How long a node's DONT_HAVE of a block of its stripe (it is not fetching it) stands for
/// taking that block from the seed instead.
const RECHECK_FRESH: Duration = Duration::from_secs(1);
/// Blocks of other nodes' stripes a node has asked a seed for at once, at most: a node behind
/// is helped, and the seed's uplink still goes mostly to blocks each node fetches for all.
const STEALS: usize = 1;

type Reply = oneshot::Sender<Result<Bytes, SwarmError>>;

/// What a session is told at its start.
struct Observers {
    /// Told when a block comes from a peer this node trusts.
    underway: Option<Arc<crate::exposure::Underway>>,
    /// Asked last (see [`Session::with_seeds`]).
    seeds: Vec<PeerId>,
    /// The keeper of what it fetches: while it holds too much, no further want-block goes out.
    room: Option<Arc<super::keeper::Room>>,
}

/// The way to a session's task; cheap to clone. The task ends when the last one is dropped.
#[derive(Clone)]
pub struct Session {
    asks: mpsc::UnboundedSender<(Cid, u64, Reply)>,
}

impl Session {
    /// A session over the connected peers and `hints` (peers said to hold the content, with
    /// addresses to dial them at).
    pub fn new(swarm: Handle, hints: Vec<(PeerId, Vec<Multiaddr>)>) -> Session {
        Self::recording(swarm, hints, None, None)
    }

    /// A session that tells `underway` when a block comes from a peer this node trusts, and
    /// sends want-blocks only while the keeper of what it fetches has `room`.
    pub fn recording(swarm: Handle, hints: Vec<(PeerId, Vec<Multiaddr>)>, underway: Option<Arc<crate::exposure::Underway>>, room: Option<Arc<super::keeper::Room>>) -> Session {
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(swarm, hints, rx, Observers { underway, seeds: Vec::new(), room }));
        Session { asks }
    }

    /// A session over `hints` where `seeds` (the origin of the content) are asked for a block
    /// only when no other peer said HAVE of it: nodes pulling from one origin at once then take
    /// from each other what one of them has, and leave the origin's uplink for what none has
    /// yet.
    pub fn with_seeds(swarm: Handle, hints: Vec<(PeerId, Vec<Multiaddr>)>, seeds: Vec<PeerId>) -> Session {
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(swarm, hints, rx, Observers { underway: None, seeds, room: None }));
        Session { asks }
    }

    /// Block `cid`, verified.
    pub async fn get(&self, cid: Cid) -> Result<Bytes, SwarmError> {
        self.ask(cid).await.map_err(|_| SwarmError::Stopped)?
    }

    /// Asks for block `cid` at once; the answer comes on the receiver. Asks made together are
    /// sent together (one message per peer). Dropping the receiver withdraws the want.
    pub fn ask(&self, cid: Cid) -> oneshot::Receiver<Result<Bytes, SwarmError>> {
        self.ask_at(cid, super::frontier::place_of(&cid))
    }

    /// [`Session::ask`] for a block at `place` in its DAG (`frontier::Frontier::place`), which
    /// tells whose stripe it is.
    pub fn ask_at(&self, cid: Cid, place: u64) -> oneshot::Receiver<Result<Bytes, SwarmError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.asks.send((cid, place, tx));
        rx
    }
}

struct Want {
    waiters: Vec<Reply>,
    /// The peer asked for the block last, and when.
    asked: Option<(PeerId, Instant)>,
    /// Peers that said DONT_HAVE (and have not said HAVE since).
    refused: HashSet<PeerId>,
    /// Peers that said HAVE: asked first.
    has: HashSet<PeerId>,
    /// Peers that answered it at all (HAVE or DONT_HAVE).
    answered: HashSet<PeerId>,
    /// Peers it was asked of that stayed silent while sending nothing: asked after the others.
    silent: HashSet<PeerId>,
    /// Other peers were asked want-have for it.
    broadcast: bool,
    /// Every peer sent this want (either kind): told to cancel it once it is settled.
    told: HashSet<PeerId>,
    since: Instant,
    /// A DHT search for providers was made for it; `searching` while it runs.
    searched: bool,
    searching: bool,
    /// Since when every known peer has refused it.
    parked: Option<Instant>,
    /// When a peer that is no seed first said HAVE of it.
    shared: Option<Instant>,
    /// Its place in the order the session was asked in: among wants alike, the earlier goes
    /// first.
    seq: u64,
    /// Its place in its DAG: whose stripe it is.
    place: u64,
    /// Of a block of another node's stripe that only a seed has: when that node was asked again
    /// whether it has it, and whether it said DONT_HAVE since (it is not fetching it).
    recheck: Option<(PeerId, Instant, bool)>,
}

struct Task {
    swarm: Handle,
    inbox: Inbox,
    peers: Vec<PeerId>,
    /// Wants outstanding per peer.
    load: HashMap<PeerId, usize>,
    wants: HashMap<Cid, Want>,
    found: mpsc::UnboundedSender<(Cid, Vec<PeerId>)>,
    /// Want-blocks that could not be sent, by peer.
    unsent: mpsc::UnboundedSender<(PeerId, Vec<Cid>)>,
    /// Cancels owed, sent with the next dispatch.
    cancels: HashMap<PeerId, Vec<Cid>>,
    /// Per peer, blocks it sent this session and want-blocks it refused: a peer that refuses
    /// more than it gives is asked last (it does not hold this content, or not yet).
    record: HashMap<PeerId, (u64, u64)>,
    /// When each peer last sent a block, and when anyone did.
    delivered: HashMap<PeerId, Instant>,
    progress: Option<Instant>,
    started: Instant,
    refreshed: Instant,
    observers: Observers,
    /// Wants asked so far.
    asked: u64,
    /// Peers asked for a block last among those that said HAVE of it: the origin of content
    /// many nodes fetch at once, whose uplink they share (see [`Session::with_seeds`]), given
    /// or told by their answers (`SEED_ANSWERS`).
    seeds: HashSet<PeerId>,
    /// Per peer, the want-haves whose first answer was HAVE, and all it first answered.
    first_answers: HashMap<PeerId, (u32, u32)>,
}

async fn run(swarm: Handle, hints: Vec<(PeerId, Vec<Multiaddr>)>, mut asks: mpsc::UnboundedReceiver<(Cid, u64, Reply)>, observers: Observers) {
    let inbox = swarm.bitswap.wants.open(observers.underway.clone());
    let (found, mut found_rx) = mpsc::unbounded_channel();
    let (unsent, mut unsent_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut task = Task {
        swarm,
        inbox,
        peers: Vec::new(),
        load: HashMap::new(),
        wants: HashMap::new(),
        found,
        unsent,
        cancels: HashMap::new(),
        record: HashMap::new(),
        delivered: HashMap::new(),
        progress: None,
        started: now,
        refreshed: now,
        asked: 0,
        seeds: observers.seeds.iter().copied().collect(),
        first_answers: HashMap::new(),
        observers,
    };
    task.gather(hints).await;
    let room = task.observers.room.clone();
    let mut tick = tokio::time::interval(REWANT / 4);
    let mut open = true;
    while open || !task.wants.is_empty() {
        tokio::select! {
            ask = asks.recv(), if open => match ask {
                Some((cid, place, reply)) => {
                    task.ask(cid, place, reply);
                    while let Ok((cid, place, reply)) = asks.try_recv() {
                        task.ask(cid, place, reply);
                    }
                }
                None => open = false,
            },
            Some(news) = task.inbox.rx.recv() => {
                task.hear(news);
                while let Ok(news) = task.inbox.rx.try_recv() {
                    task.hear(news);
                }
            }
            Some((cid, peers)) = found_rx.recv() => task.add_providers(cid, peers).await,
            Some((peer, cids)) = unsent_rx.recv() => task.unsent(peer, cids),
            _ = freed(&room) => {}
            _ = tick.tick() => {
                if task.refreshed.elapsed() >= REFRESH && !task.wants.is_empty() {
                    task.refresh().await;
                }
                task.expire();
            }
        }
        task.dispatch();
    }
    let cids: Vec<Cid> = task.wants.keys().copied().collect();
    task.swarm.bitswap.wants.close(&task.inbox, cids);
    task.send_cancels();
}

/// Resolves when the keeper committed blocks (never without a keeper).
async fn freed(room: &Option<Arc<super::keeper::Room>>) {
    match room {
        Some(room) => room.freed().await,
        None => std::future::pending().await,
    }
}

impl Task {
    /// Dials the hinted peers and takes every connected one.
    async fn gather(&mut self, hints: Vec<(PeerId, Vec<Multiaddr>)>) {
        for (peer, addrs) in hints {
            if peer == self.swarm.peer_id || self.peers.contains(&peer) {
                continue;
            }
            if self.swarm.dial_any(peer, addrs).await {
                self.peers.push(peer);
            }
        }
        if let Ok(connected) = self.swarm.peers().await {
            for (peer, _) in connected {
                if !self.peers.contains(&peer) {
                    self.peers.push(peer);
                }
            }
        }
    }

    /// Takes peers that connected since. A peer that left stays: a want sent to it dials it
    /// again (a peer may drop a connection and take the next), and one it cannot be sent to is
    /// taken for its refusal ([`Task::unsent`]).
    async fn refresh(&mut self) {
        self.refreshed = Instant::now();
        let Ok(connected) = self.swarm.peers().await else { return };
        for (peer, _) in connected {
            if !self.peers.contains(&peer) {
                self.peers.push(peer);
            }
        }
    }

    /// Want-blocks that could not be sent to `peer` (it cannot be reached): they go elsewhere.
    fn unsent(&mut self, peer: PeerId, cids: Vec<Cid>) {
        for cid in cids {
            let Some(w) = self.wants.get_mut(&cid) else { continue };
            w.refused.insert(peer);
            if w.asked.is_some_and(|(p, _)| p == peer) {
                w.asked = None;
                self.unload(&peer);
            }
        }
    }

    fn ask(&mut self, cid: Cid, place: u64, reply: Reply) {
        if let Some(w) = self.wants.get_mut(&cid) {
            w.waiters.push(reply);
            return;
        }
        self.swarm.bitswap.wants.want(&self.inbox, cid);
        let now = Instant::now();
        self.wants.insert(
            cid,
            Want {
                waiters: vec![reply],
                asked: None,
                refused: HashSet::new(),
                has: HashSet::new(),
                answered: HashSet::new(),
                silent: HashSet::new(),
                broadcast: false,
                told: HashSet::new(),
                since: now,
                searched: false,
                searching: false,
                parked: None,
                shared: None,
                seq: self.asked,
                place,
                recheck: None,
            },
        );
        self.asked += 1;
    }

    /// Ends want `cid` with `result` (a block from `from`, or a failure); every other peer it
    /// was sent to is told to cancel it, so none keeps it in its ledger and sends the block late.
    fn settle(&mut self, cid: &Cid, result: Result<Bytes, SwarmError>, from: Option<PeerId>) {
        if let Some(w) = self.wants.remove(cid) {
            self.release(&w);
            for peer in w.told.iter().filter(|p| Some(**p) != from) {
                self.cancels.entry(*peer).or_default().push(*cid);
            }
            self.swarm.bitswap.wants.unwant(&self.inbox, cid);
            for waiter in w.waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    fn release(&mut self, w: &Want) {
        if let Some((peer, _)) = w.asked {
            self.unload(&peer);
        }
    }

    fn unload(&mut self, peer: &PeerId) {
        if let Some(n) = self.load.get_mut(peer) {
            *n = n.saturating_sub(1);
        }
    }

    fn hear(&mut self, news: News) {
        match news {
            News::Block { cid, data, from } => {
                let now = Instant::now();
                self.record.entry(from).or_default().0 += 1;
                self.delivered.insert(from, now);
                self.progress = Some(now);
                if let Some(underway) = &self.observers.underway {
                    if self.swarm.bitswap.trusts(&from) {
                        underway.from_trusted();
                    }
                }
                self.settle(&cid, Ok(data), Some(from))
            }
            News::DontHave { cid, from } => {
                let Some(w) = self.wants.get_mut(&cid) else { return };
                if w.answered.insert(from) {
                    self.first_answers.entry(from).or_default().1 += 1;
                }
                w.refused.insert(from);
                w.has.remove(&from);
                if let Some((owner, at, idle)) = &mut w.recheck {
                    if *owner == from && !*idle {
                        (*at, *idle) = (Instant::now(), true);
                    }
                }
                if w.asked.is_some_and(|(p, _)| p == from) {
                    w.asked = None;
                    self.record.entry(from).or_default().1 += 1;
                    self.unload(&from);
                }
            }
            News::Have { cid, from } => {
                let Some(w) = self.wants.get_mut(&cid) else { return };
                if w.answered.insert(from) {
                    let (haves, all) = self.first_answers.entry(from).or_default();
                    (*haves, *all) = (*haves + 1, *all + 1);
                    if *all >= SEED_ANSWERS && *haves * 10 >= *all * 9 && self.seeds.insert(from) {
                        tracing::debug!(peer = %from, "a peer holding the whole content is taken for a seed");
                    }
                }
                if !self.seeds.contains(&from) {
                    w.shared.get_or_insert_with(Instant::now);
                }
                w.has.insert(from);
                w.refused.remove(&from);
                w.parked = None;
            }
        }
    }

    /// Wants whose peer sent nothing at all for [`REWANT`] go to another; wants nobody waits for
    /// any more end; wants end when nothing arrived for [`FETCH_TIMEOUT`] or every peer refused
    /// them for [`PARKED`].
    fn expire(&mut self) {
        let now = Instant::now();
        if tracing::enabled!(tracing::Level::TRACE) {
            let placed = self.wants.values().filter(|w| w.asked.is_some()).count();
            let held = self.wants.values().filter(|w| w.asked.is_none() && !w.has.is_empty()).count();
            let held_free = self.wants.values().filter(|w| w.asked.is_none() && w.has.iter().any(|p| self.load.get(p).copied().unwrap_or(0) < PER_PEER)).count();
            let mut loads: Vec<usize> = self.load.values().copied().collect();
            loads.sort_unstable();
            let room_full = self.observers.room.as_ref().is_some_and(|r| r.full());
            tracing::trace!(wants = self.wants.len(), placed, held, held_free, ?loads, room_full, "session state");
        }
        let quiet_since = self.progress.unwrap_or(self.started);
        let mut dead = Vec::new();
        let mut silent = Vec::new();
        for (cid, w) in &self.wants {
            let stalled = now.duration_since(w.since) >= FETCH_TIMEOUT && now.duration_since(quiet_since) >= FETCH_TIMEOUT;
            if stalled {
                dead.push((*cid, format!("nothing arrived from any of {} peers for {} s", self.peers.len(), FETCH_TIMEOUT.as_secs())));
            } else if w.waiters.iter().all(|r| r.is_closed()) {
                dead.push((*cid, "nobody waits for it".into()));
            } else if w.parked.is_some_and(|at| now.duration_since(at) >= PARKED) && !w.searching {
                dead.push((*cid, format!("none of the {} peers known has it: each said DONT_HAVE, and none said HAVE for {} s", w.refused.len(), PARKED.as_secs())));
            } else if let Some((peer, at)) = w.asked {
                // A peer that never sent this session anything nor said HAVE of it is given
                // REWANT; one that has is busy serving others, not gone (a seed serving many
                // nodes on a slow link answers a want-block after seconds): STALLED since its
                // last block.
                let patience = if self.delivered.contains_key(&peer) || w.has.contains(&peer) { STALLED } else { REWANT };
                let quiet = self.delivered.get(&peer).is_none_or(|t| now.duration_since(*t) >= patience);
                if now.duration_since(at) >= patience && quiet {
                    silent.push((*cid, peer));
                }
            }
        }
        for (cid, why) in dead {
            self.settle(&cid, Err(SwarmError::NotFound(format!("{cid}: {why}"))), None);
        }
        for (cid, peer) in silent {
            tracing::debug!(%cid, %peer, "a want moves on from a silent peer");
            self.unload(&peer);
            if let Some(w) = self.wants.get_mut(&cid) {
                w.asked = None;
                w.silent.insert(peer);
            }
        }
    }

    /// Sends every unasked want as want-block to one peer that has not refused it (one that said
    /// HAVE first, then one that did not stay silent, then one that has not refused more than it
    /// gave this session, then the least loaded), and the first time also as want-have to up to
    /// [`BROADCAST`] others, who say HAVE now or once they have it. One message per peer and
    /// kind. A want every peer refused looks for providers on the DHT, then waits ([`PARKED`]).
    fn dispatch(&mut self) {
        let wants = &self.swarm.bitswap.wants;
        self.peers.retain(|p| !wants.is_banned(p));
        let mut outbox: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        let mut probes: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        let mut unanswerable = Vec::new();
        let now = Instant::now();
        // Wants some peer said HAVE of go first, to those peers; the rest, once the peers asked
        // had a moment to say HAVE, to whoever has room (a seed everyone asks then serves
        // what nobody else has).
        // A want goes out first as want-have alone (when there is more than one peer); a peer
        // that then says nothing is fetching it itself (a node fetching to pass on answers so)
        // and its HAVE is waited for, up to FETCHER_GRACE, so a busy seed serves each block
        // about once. Wants some peer said HAVE of go first.
        let fetching_elsewhere = |w: &Want| w.broadcast && w.told.iter().any(|p| !w.answered.contains(p) && !w.has.contains(p));
        // Of what only a seed has, each of the nodes fetching from it asks first for the blocks
        // of its own stripe, in the order of their places; then, when its stripe is done,
        // takes over the blocks of the next node's stripe from their end (the other end from
        // the one that node works from), then of the node after it: two seldom ask the seed
        // for one block at once, and a node that falls behind is helped.
        let fleet = self.fleet();
        let me = self.swarm.peer_id;
        let n = fleet.len() as u64;
        let k = fleet.iter().position(|p| *p == me).unwrap_or(0) as u64;
        let seeds = &self.seeds;
        let held = |w: &Want| w.has.iter().any(|p| !seeds.contains(p));
        // Blocks another node holds first, in the order asked; then this node's stripe, by
        // place; then the other stripes, the next node's first, each from its far end.
        let rank = |w: &Want| match n > 1 && !held(w) {
            true if w.place % n == k => (1, w.place),
            true => (2 + (w.place % n + n - k) % n, u64::MAX - w.place),
            false => (0, w.seq),
        };
        let owner = |w: &Want| (n > 1).then(|| fleet[(w.place % n) as usize]).filter(|p| *p != me);
        let mut order: Vec<(bool, bool, (u64, u64), Cid)> =
            self.wants.iter().filter(|(_, w)| w.asked.is_none() && !w.searching).map(|(c, w)| (fetching_elsewhere(w), w.has.is_empty(), rank(w), *c)).collect();
        order.sort_unstable_by_key(|(elsewhere, nobody_has, rank, _)| (*elsewhere, *nobody_has, *rank));
        // Nodes asked again whether they are fetching a block of their stripe, at most as
        // many as the seeds have room for.
        let mut rechecks: usize = self.seeds.iter().map(|p| PER_PEER.saturating_sub(self.load.get(p).copied().unwrap_or(0))).sum();
        let mut stealing = self.wants.values().filter(|w| w.recheck.is_some() && w.asked.is_some_and(|(p, _)| self.seeds.contains(&p))).count();
        let several = self.peers.len() > 1;
        // The keeper holds enough: wants wait here (want-haves still go) until it commits some.
        let room = self.observers.room.as_ref().is_none_or(|r| !r.full());
        let mut probing = self.wants.values().filter(|w| w.broadcast && w.asked.is_none() && !fetching_elsewhere(w)).count();
        // No peer with room for a want-block: only the wants not asked of anyone yet, and those
        // every peer refused, have anything to do (with hundreds of wants and a fleet's HAVEs,
        // judging the rest for nothing was 2% of a fleet's CPU).
        let anyone_free = room && self.peers.iter().any(|p| self.load.get(p).copied().unwrap_or(0) < PER_PEER);
        let mut queue: Vec<(bool, bool, Cid)> = order.into_iter().map(|(e, n, _, c)| (e, n, c)).collect();
        let mut later = Vec::new();
        // While a block this node wants is held by no node but a seed, the seeds' uplink still
        // has blocks to send that reach the fleet only through it: a block another node holds
        // waits for that node (8 `docker pull`s: the seed sent 70 blocks the fleet held while
        // its last blocks only it had waited). Then the seeds help with what the others hold.
        let seeds_busy = self.wants.values().any(|w| !held(w));
        for pass in 0..2 {
            for (elsewhere, nobody_has, cid) in std::mem::take(&mut queue) {
                let w = self.wants.get_mut(&cid).expect("listed above");
                if !anyone_free && w.broadcast && self.peers.iter().any(|p| !w.refused.contains(p)) {
                    continue;
                }
                // Asked of peers before it is sent, up to PROBE_AHEAD: a peer that said DONT_HAVE
                // says HAVE once it has the block, so an early answer does not go stale.
                if several && !w.broadcast {
                    if probing >= PROBE_AHEAD {
                        continue;
                    }
                    probing += 1;
                }
                let open = || self.peers.iter().filter(|p| !w.refused.contains(p));
                let poor = |p: &PeerId| self.record.get(p).is_some_and(|(gave, refused)| refused > gave);
                let load = |p: &PeerId| self.load.get(p).copied().unwrap_or(0);
                let waited = now.duration_since(w.since);
                let young = (several && !w.broadcast) || (nobody_has && waited < HAVE_GRACE) || (elsewhere && waited < FETCHER_GRACE);
                let seed = |p: &PeerId| self.seeds.contains(p);
                // A peer that said HAVE and is no seed costs no seed anything: not waited on.
                let ready = |p: &PeerId| !young || (w.has.contains(p) && !seed(p) && !self.seeds.is_empty());
                // A block another peer holds is left to it for a while, whatever its load.
                let spared = w.shared.is_some_and(|at| now.duration_since(at) < SEED_PATIENCE);
                // A block another node holds goes to the seed only with the room the seed's
                // own blocks left (the second pass): it reaches this node all the same, where
                // a block only the seed has reaches the fleet only through the seed.
                let held_here = held(w);
                let mut choice = open()
                    .filter(|p| room && load(p) < PER_PEER && ready(p) && !(spared && seed(p)) && !(pass == 0 && held_here && seed(p)))
                    .min_by_key(|p| (!w.has.contains(p), seed(p), w.silent.contains(p), poor(p), load(p)))
                    .copied();
                // A block of another node's stripe goes to the seed only once that node, asked
                // again, said it is not fetching it, or has said nothing for STALLED (it is
                // fetching it, or stuck): a block it fetches comes from it, HAVE first.
                if let Some(owner) = owner(w).filter(|_| choice.is_some_and(|p| seed(&p)) && !held_here) {
                    let taken = match w.recheck {
                        Some((_, at, idle)) => (idle && now.duration_since(at) < RECHECK_FRESH) || (!idle && now.duration_since(at) >= STALLED),
                        None => false,
                    };
                    if taken && stealing < STEALS {
                        stealing += 1;
                    } else {
                        choice = None;
                        let due = w.recheck.is_none_or(|(_, at, idle)| idle && now.duration_since(at) >= RECHECK_FRESH);
                        if due && rechecks > 0 && stealing < STEALS {
                            rechecks -= 1;
                            w.recheck = Some((owner, now, false));
                            w.told.insert(owner);
                            probes.entry(owner).or_default().push(cid);
                        }
                    }
                }
                if open().next().is_some() && !w.broadcast {
                    w.broadcast = true;
                    for other in open().filter(|p| Some(**p) != choice && !w.has.contains(p)).take(BROADCAST) {
                        probes.entry(*other).or_default().push(cid);
                        w.told.insert(*other);
                    }
                }
                if pass == 0 && choice.is_none() && held_here && !spared && !self.seeds.is_empty() && !seeds_busy {
                    later.push((elsewhere, nobody_has, cid));
                }
                let cid = &cid;
                match choice {
                    Some(peer) => {
                        tracing::trace!(%cid, %peer, has = w.has.len(), chosen_has = w.has.contains(&peer), waited_ms = waited.as_millis() as u64, "want-block placed");
                        w.parked = None;
                        self.swarm.bitswap.wants.asked(&self.inbox, cid);
                        w.asked = Some((peer, now));
                        w.told.insert(peer);
                        *self.load.entry(peer).or_default() += 1;
                        outbox.entry(peer).or_default().push(*cid);
                    }
                    // Every peer that may have it is busy, or it waits for a HAVE: its turn comes.
                    None if open().next().is_some() => {}
                    None if !w.searched => {
                        // Asked again once the search adds peers (or parked, if it finds none).
                        (w.searched, w.searching) = (true, true);
                        let (swarm, found, cid) = (self.swarm.clone(), self.found.clone(), *cid);
                        tokio::spawn(async move {
                            let providers = swarm.find_providers(cid, PROVIDERS).await.unwrap_or_default();
                            let mut reached = Vec::new();
                            for (peer, addrs) in providers {
                                if peer != swarm.peer_id && swarm.dial_any(peer, addrs).await {
                                    reached.push(peer);
                                }
                            }
                            let _ = found.send((cid, reached));
                        });
                    }
                    // Nothing arrived yet from anyone: nobody here is fetching it either.
                    None if self.progress.is_none() => unanswerable.push((*cid, w.refused.len())),
                    None => {
                        w.parked.get_or_insert(now);
                    }
                }
            }
            queue = std::mem::take(&mut later);
        }
        for (cid, refused) in unanswerable {
            let why = format!("{cid}: none of the {refused} peers known has it (each said DONT_HAVE) and the DHT named no other");
            self.settle(&cid, Err(SwarmError::NotFound(why)), None);
        }
        for (peer, cids) in outbox {
            let (bitswap, unsent) = (self.swarm.bitswap.clone(), self.unsent.clone());
            tokio::spawn(async move {
                if let Err(e) = bitswap.outboxes.send(peer, &super::bitswap::BITSWAP_120, super::wants::wants_message(&cids, WantType::Block)).await {
                    tracing::debug!(%peer, error = %e, "wants not sent");
                    let _ = unsent.send((peer, cids));
                }
            });
        }
        for (peer, cids) in probes {
            self.send(peer, super::wants::wants_message(&cids, WantType::Have));
        }
        self.send_cancels();
    }

    /// Once a seed is known: this node and the session's peers that are no seeds, in order
    /// (the same at every node of a fully connected fleet). The blocks whose place is `k`
    /// modulo their number are the stripe of the `k`-th. Before: none.
    fn fleet(&self) -> Vec<PeerId> {
        if self.seeds.is_empty() {
            return Vec::new();
        }
        let mut fleet: Vec<PeerId> = self.peers.iter().filter(|p| !self.seeds.contains(p)).copied().collect();
        fleet.push(self.swarm.peer_id);
        fleet.sort_unstable();
        fleet
    }

    fn send_cancels(&mut self) {
        for (peer, cids) in std::mem::take(&mut self.cancels) {
            self.send(peer, super::wants::cancels_message(&cids));
        }
    }

    fn send(&self, peer: PeerId, message: super::message::Message) {
        let bitswap = self.swarm.bitswap.clone();
        tokio::spawn(async move {
            if let Err(e) = bitswap.outboxes.send(peer, &super::bitswap::BITSWAP_120, message).await {
                tracing::debug!(%peer, error = %e, "wants not sent");
            }
        });
    }

    /// Providers the DHT named for `cid` join the session; the want is asked again.
    async fn add_providers(&mut self, cid: Cid, peers: Vec<PeerId>) {
        for peer in peers {
            if !self.peers.contains(&peer) {
                self.peers.push(peer);
            }
        }
        let nobody = self.progress.is_none();
        if let Some(w) = self.wants.get_mut(&cid) {
            w.searching = false;
            if nobody && self.peers.iter().all(|p| w.refused.contains(p)) {
                let why = format!("{cid}: none of the {} peers known has it (each said DONT_HAVE) and the DHT named no other", w.refused.len());
                self.settle(&cid, Err(SwarmError::NotFound(why)), None);
            }
        }
    }
}
