//! A Bitswap session: one task that fetches blocks from a set of peers on behalf of one walk (a
//! pull, a pin). Its callers ask for blocks ([`Session::get`]) as fast as they like; the task
//! sends each want as want-block to one peer, the one with the fewest wants outstanding (so
//! several providers serve one blob at once) among those that have not refused more than they
//! gave, and every peer's new wants go in one message.
//! DONT_HAVE moves a want to the next peer, silence for [`REWANT`] too; a want nobody can
//! answer ends with [`SwarmError::NotFound`]. When every peer it knows refused, it looks for
//! providers on the DHT.
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
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a want waits for its peer before it goes to another.
pub const REWANT: Duration = Duration::from_secs(2);
/// How long a want waits in all.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Other peers asked want-have for a block, besides the one asked for it.
const PROBES: usize = 2;
/// Providers asked of the DHT when no known peer has a block.
const PROVIDERS: usize = 8;

type Reply = oneshot::Sender<Result<Bytes, SwarmError>>;

/// The way to a session's task; cheap to clone. The task ends when the last one is dropped.
#[derive(Clone)]
pub struct Session {
    asks: mpsc::UnboundedSender<(Cid, Reply)>,
}

impl Session {
    /// A session over the connected peers and `hints` (peers said to hold the content, with
    /// addresses to dial them at).
    pub fn new(swarm: Handle, hints: Vec<(PeerId, Vec<Multiaddr>)>) -> Session {
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(swarm, hints, rx));
        Session { asks }
    }

    /// Block `cid`, verified.
    pub async fn get(&self, cid: Cid) -> Result<Bytes, SwarmError> {
        self.ask(cid).await.map_err(|_| SwarmError::Stopped)?
    }

    /// Asks for block `cid` at once; the answer comes on the receiver. Asks made together are
    /// sent together (one message per peer). Dropping the receiver withdraws the want.
    pub fn ask(&self, cid: Cid) -> oneshot::Receiver<Result<Bytes, SwarmError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.asks.send((cid, tx));
        rx
    }
}

struct Want {
    waiters: Vec<Reply>,
    /// The peer asked last, and when.
    asked: Option<(PeerId, Instant)>,
    refused: HashSet<PeerId>,
    /// Peers that said HAVE: asked first when the want moves on.
    has: HashSet<PeerId>,
    /// Other peers were asked want-have for it.
    probed: bool,
    /// Every peer sent this want (either kind): told to cancel it once it is settled.
    told: HashSet<PeerId>,
    since: Instant,
    /// A DHT search for providers was made for it; `searching` while it runs.
    searched: bool,
    searching: bool,
}

struct Task {
    swarm: Handle,
    inbox: Inbox,
    peers: Vec<PeerId>,
    /// Wants outstanding per peer.
    load: HashMap<PeerId, usize>,
    wants: HashMap<Cid, Want>,
    found: mpsc::UnboundedSender<(Cid, Vec<PeerId>)>,
    /// Cancels owed, sent with the next dispatch.
    cancels: HashMap<PeerId, Vec<Cid>>,
    /// Per peer, blocks it sent this session and wants it refused: a peer that refuses more
    /// than it gives is asked last (it does not hold this content, or not yet).
    record: HashMap<PeerId, (u64, u64)>,
}

async fn run(swarm: Handle, hints: Vec<(PeerId, Vec<Multiaddr>)>, mut asks: mpsc::UnboundedReceiver<(Cid, Reply)>) {
    let inbox = swarm.bitswap.wants.open();
    let (found, mut found_rx) = mpsc::unbounded_channel();
    let mut task = Task { swarm, inbox, peers: Vec::new(), load: HashMap::new(), wants: HashMap::new(), found, cancels: HashMap::new(), record: HashMap::new() };
    task.gather(hints).await;
    let mut tick = tokio::time::interval(REWANT / 4);
    let mut open = true;
    while open || !task.wants.is_empty() {
        tokio::select! {
            ask = asks.recv(), if open => match ask {
                Some((cid, reply)) => {
                    task.ask(cid, reply);
                    while let Ok((cid, reply)) = asks.try_recv() {
                        task.ask(cid, reply);
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
            _ = tick.tick() => task.expire(),
        }
        task.dispatch();
    }
    let cids: Vec<Cid> = task.wants.keys().copied().collect();
    task.swarm.bitswap.wants.close(&task.inbox, cids);
    task.send_cancels();
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

    fn ask(&mut self, cid: Cid, reply: Reply) {
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
                probed: false,
                told: HashSet::new(),
                since: now,
                searched: false,
                searching: false,
            },
        );
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
            if let Some(n) = self.load.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn hear(&mut self, news: News) {
        match news {
            News::Block { cid, data, from } => {
                self.record.entry(from).or_default().0 += 1;
                self.settle(&cid, Ok(data), Some(from))
            }
            News::DontHave { cid, from } => {
                self.record.entry(from).or_default().1 += 1;
                let Some(w) = self.wants.get_mut(&cid) else { return };
                w.refused.insert(from);
                if w.asked.is_some_and(|(p, _)| p == from) {
                    w.asked = None;
                    if let Some(n) = self.load.get_mut(&from) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            News::Have { cid, from } => {
                if let Some(w) = self.wants.get_mut(&cid) {
                    w.has.insert(from);
                }
            }
        }
    }

    /// Wants whose peer stayed silent go to another; wants too old, or nobody waits for any
    /// more, end.
    fn expire(&mut self) {
        let now = Instant::now();
        let mut dead = Vec::new();
        let mut silent = Vec::new();
        for (cid, w) in &self.wants {
            if now.duration_since(w.since) >= FETCH_TIMEOUT || w.waiters.iter().all(|r| r.is_closed()) {
                dead.push(*cid);
            } else if let Some((peer, at)) = w.asked {
                if now.duration_since(at) >= REWANT {
                    silent.push((*cid, peer));
                }
            }
        }
        for cid in dead {
            self.settle(&cid, Err(SwarmError::NotFound(cid.to_string())), None);
        }
        for (cid, peer) in silent {
            if let Some(n) = self.load.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
            if let Some(w) = self.wants.get_mut(&cid) {
                w.asked = None;
                // Asked again later if no other peer can be (a reply lost to a reset stream).
                if self.peers.len() > 1 {
                    w.refused.insert(peer);
                }
            }
        }
    }

    /// Sends every unasked want as want-block to one peer that has not refused it (one that
    /// said HAVE first, then one that has not refused more than it gave this session, then the
    /// least loaded: among peers that do not all hold the content, wants go where it is); a want that had to move on (DONT_HAVE, silence)
    /// also goes as want-have to up to [`PROBES`] others, so its next move goes where the block
    /// is. (Probing every want from the start cost four providers two thirds of their speed:
    /// each probe's answer is one more inbound stream, and libp2p-stream drops them in bursts.)
    /// One message per peer and kind. A want every peer refused looks for providers, then fails.
    fn dispatch(&mut self) {
        let wants = &self.swarm.bitswap.wants;
        self.peers.retain(|p| !wants.is_banned(p));
        let mut outbox: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        let mut probes: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        let mut unanswerable = Vec::new();
        for (cid, w) in self.wants.iter_mut().filter(|(_, w)| w.asked.is_none() && !w.searching) {
            let open = || self.peers.iter().filter(|p| !w.refused.contains(p));
            let poor = |p: &PeerId| self.record.get(p).is_some_and(|(gave, refused)| refused > gave);
            let choice = open().min_by_key(|p| (!w.has.contains(p), poor(p), self.load.get(p).copied().unwrap_or(0))).copied();
            match choice {
                Some(peer) => {
                    if !w.refused.is_empty() && !w.probed {
                        w.probed = true;
                        for other in open().filter(|p| **p != peer).take(PROBES) {
                            probes.entry(*other).or_default().push(*cid);
                            w.told.insert(*other);
                        }
                    }
                    w.asked = Some((peer, Instant::now()));
                    w.told.insert(peer);
                    *self.load.entry(peer).or_default() += 1;
                    outbox.entry(peer).or_default().push(*cid);
                }
                None if !w.searched => {
                    // Asked again once the search adds peers (or fails, and so does the want).
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
                None => unanswerable.push(*cid),
            }
        }
        for cid in unanswerable {
            self.settle(&cid, Err(SwarmError::NotFound(cid.to_string())), None);
        }
        let messages = outbox
            .into_iter()
            .map(|(p, c)| (p, super::wants::wants_message(&c, WantType::Block)))
            .chain(probes.into_iter().map(|(p, c)| (p, super::wants::wants_message(&c, WantType::Have))));
        for (peer, message) in messages {
            self.send(peer, message);
        }
        self.send_cancels();
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
        if let Some(w) = self.wants.get_mut(&cid) {
            w.searching = false;
            if self.peers.iter().all(|p| w.refused.contains(p)) {
                self.settle(&cid, Err(SwarmError::NotFound(cid.to_string())), None);
            }
        }
    }
}
