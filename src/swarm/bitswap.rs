//! Bitswap 1.2.0 (and 1.1.0, 1.0.0), the server side: a peer's wants are answered from the block
//! service, each block only if the exposure policy lets it go to that peer; a block it may not
//! have is answered exactly as an absent one (DONT_HAVE when asked for, silence otherwise).
//!
//! As Kubo and boxo do: replies go on this node's own stream of the protocol the peer spoke
//! (`outbox`: one per peer, not the peer's stream); presences
//! are sent at once in their own message, never behind blocks; blocks are packed into messages
//! of at most [`BLOCKS_PER_MESSAGE`] bytes.

use super::message::{self, Block, BlockPresence, Message, PresenceType, WantType};
use super::wants::Arrival;
use crate::exposure::{Audience, Policy};
use cid::Cid;
use futures_util::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Semaphore;

pub const BITSWAP_120: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
pub const BITSWAP_110: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.1.0");
pub const BITSWAP_100: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.0.0");
pub const PROTOCOLS: [StreamProtocol; 3] = [BITSWAP_120, BITSWAP_110, BITSWAP_100];

/// The most wants of one message looked at; the rest are ignored.
pub const MAX_WANTS: usize = 1024;
/// The largest block sent (Kubo's limit).
pub const MAX_BLOCK: usize = 2 << 20;
/// Blocks packed into one reply message, in bytes (a block larger than this goes alone).
pub const BLOCKS_PER_MESSAGE: usize = 2 << 20;
/// Inbound Bitswap streams one peer may hold open at once; a stream past it is reset at once.
/// Kubo keeps one open per direction while it has traffic (as this node does, `outbox`); Helia
/// opens one per message and closes it once written, several at a time, so the bound leaves
/// room for a burst of those (at 8, bursts lost blocks under load).
pub const STREAMS_PER_PEER: usize = 64;
/// Inbound streams of all peers together (the connection limit bounds peers first: this only
/// caps what a flood of new peer IDs could add).
pub const STREAMS_TOTAL: usize = 4096;
/// An inbound stream with no message for this long is closed.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Once a message's length has arrived, its body must arrive within this.
const MESSAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Bytes of inbound messages being read at once, per peer and all peers together (KiB). A peer
/// holds at most its share, whatever it announces; all peers together at most the total.
const INBOUND_PER_PEER_KIB: u32 = 8 << 10;
const INBOUND_TOTAL_KIB: u32 = 128 << 10;

/// Wants one peer may have waiting for an answer; later ones are ignored until these are
/// answered (as boxo caps a peer's wantlist). Duplicates are one want.
pub const WANTS_PER_PEER: usize = 1024;

/// Wants this node answered DONT_HAVE (or silence) that it remembers, to tell the peer HAVE once
/// the block arrives here (boxo keeps a peer's wants until cancelled, for the same reason): a
/// node still fetching a DAG then feeds the peers fetching it with it. Per peer, all peers
/// together, and for how long.
pub const PENDING_PER_PEER: usize = WANTS_PER_PEER;
const PENDING_TOTAL: usize = 1 << 16;
const PENDING_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Want-blocks of one peer's taken from its queue at once.
const BLOCKS_PER_BATCH: usize = 8;

/// Replies being built or sent at once, all peers together; each holds at most a message of
/// blocks (2 MiB). A peer's replies go one at a time, so a peer that never reads holds one slot,
/// not the pool.
const REPLY_SLOTS: usize = 32;

/// What went between this node and one peer, for `bitswap/ledger`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ledger {
    /// Block bytes sent to the peer, and received from it.
    pub sent: u64,
    pub received: u64,
    /// Blocks either way.
    pub exchanged: u64,
}

/// Peers a ledger is kept for; past it, the oldest-looking half is dropped (a count of bytes is
/// not worth memory a stranger can make us spend).
const MAX_LEDGERS: usize = 4096;

/// What the server has done, for `bitswap/stat`.
#[derive(Default)]
pub struct Stats {
    pub blocks_received: AtomicU64,
    /// Bytes of the blocks received (wanted, and duplicates).
    pub data_received: AtomicU64,
    pub duplicate_data: AtomicU64,
    pub blocks_sent: AtomicU64,
    pub data_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Blocks that came after they were no longer wanted (a second peer's copy).
    pub duplicates: AtomicU64,
}

pub struct Server {
    /// This server, for the answering tasks it starts.
    me: Weak<Server>,
    policy: Arc<Policy>,
    /// One outbound stream per peer and protocol for everything this node sends.
    pub outboxes: super::outbox::Outboxes,
    /// Peers that broke the protocol, for the swarm to disconnect.
    misbehaving: tokio::sync::mpsc::UnboundedSender<PeerId>,
    pub stats: Stats,
    /// Inbound streams open, all peers together.
    streams: AtomicUsize,
    /// Message bytes being read, all peers together (KiB).
    inbound: Arc<Semaphore>,
    /// Replies being built or sent, all peers together.
    replies: Arc<Semaphore>,
    /// Each peer with open streams or wants waiting.
    peers: Mutex<HashMap<PeerId, Arc<PeerState>>>,
    /// What this node waits for from peers (the client side, `fetch`).
    pub wants: super::wants::Wants,
    ledgers: Mutex<HashMap<PeerId, Ledger>>,
    /// Wants answered "not here", remembered until the block arrives, the peer cancels, or
    /// [`PENDING_FOR`] passes.
    pending: Mutex<Pending>,
}

/// Peers told DONT_HAVE of a block, by block.
#[derive(Default)]
struct Pending {
    by_cid: HashMap<Cid, Vec<(PeerId, std::time::Instant)>>,
    per_peer: HashMap<PeerId, usize>,
    total: usize,
}

impl Pending {
    fn add(&mut self, peer: PeerId, cid: Cid) {
        let now = std::time::Instant::now();
        if self.total >= PENDING_TOTAL {
            self.expire(now);
        }
        let mine = self.per_peer.get(&peer).copied().unwrap_or(0);
        if mine >= PENDING_PER_PEER || self.total >= PENDING_TOTAL {
            return;
        }
        let peers = self.by_cid.entry(cid).or_default();
        match peers.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, at)) => *at = now,
            None => {
                peers.push((peer, now));
                *self.per_peer.entry(peer).or_default() += 1;
                self.total += 1;
            }
        }
    }

    fn remove(&mut self, peer: &PeerId, cid: &Cid) {
        let Some(peers) = self.by_cid.get_mut(cid) else { return };
        let before = peers.len();
        peers.retain(|(p, _)| p != peer);
        let (gone, empty) = (before - peers.len(), peers.is_empty());
        if empty {
            self.by_cid.remove(cid);
        }
        self.forgot(peer, gone);
    }

    /// Forgets every want of `peer`'s (a full wantlist replaced them).
    fn clear_peer(&mut self, peer: &PeerId) {
        if self.per_peer.get(peer).copied().unwrap_or(0) == 0 {
            return;
        }
        let mut gone = 0;
        self.by_cid.retain(|_, peers| {
            let before = peers.len();
            peers.retain(|(p, _)| p != peer);
            gone += before - peers.len();
            !peers.is_empty()
        });
        self.forgot(peer, gone);
    }

    /// The peers still waiting for `cid`, forgotten here.
    fn take(&mut self, cid: &Cid) -> Vec<PeerId> {
        let now = std::time::Instant::now();
        let peers = self.by_cid.remove(cid).unwrap_or_default();
        for (peer, _) in &peers {
            self.forgot(peer, 1);
        }
        peers.into_iter().filter(|(_, at)| now.duration_since(*at) < PENDING_FOR).map(|(p, _)| p).collect()
    }

    fn expire(&mut self, now: std::time::Instant) {
        let mut gone: Vec<PeerId> = Vec::new();
        self.by_cid.retain(|_, peers| {
            peers.retain(|(p, at)| {
                let keep = now.duration_since(*at) < PENDING_FOR;
                if !keep {
                    gone.push(*p);
                }
                keep
            });
            !peers.is_empty()
        });
        for p in gone {
            self.forgot(&p, 1);
        }
    }

    fn forgot(&mut self, peer: &PeerId, n: usize) {
        self.total = self.total.saturating_sub(n);
        if let Some(c) = self.per_peer.get_mut(peer) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.per_peer.remove(peer);
            }
        }
    }
}

/// One peer's share of the server: its streams, its message bytes, its waiting wants.
struct PeerState {
    streams: AtomicUsize,
    inbound: Arc<Semaphore>,
    wants: Mutex<Waiting>,
    /// Whether a task is answering this peer's want-haves, and its want-blocks.
    answering: [AtomicBool; 2],
}

/// A peer's two kinds of wants, each answered by a task of its own: a want-have is answered
/// while blocks are being sent to the same peer, not after them (behind a megabyte of blocks
/// on a shared uplink, a HAVE came seconds late, and the asker went to the seed instead).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Presences = 0,
    Blocks = 1,
}

/// A peer's wants not answered yet, one per CID, in arrival order per kind.
#[derive(Default)]
struct Waiting {
    /// Want-haves; one that became a want-block since is skipped here and answered with the
    /// blocks.
    haves: VecDeque<Cid>,
    blocks: VecDeque<Cid>,
    by_cid: HashMap<Cid, Want>,
    /// Cancels of wants already taken for an answer under way: their blocks are not sent.
    cancelled: HashSet<Cid>,
}

#[derive(Clone)]
struct Want {
    block: bool,
    dont_have: bool,
    protocol: StreamProtocol,
}

impl Waiting {
    /// Takes a message's wantlist: a cancel withdraws, a want joins (a duplicate merges into
    /// the one waiting), a full list replaces what waited.
    fn take(&mut self, list: &message::Wantlist, protocol: &StreamProtocol) {
        if list.full {
            self.clear();
        }
        for entry in &list.entries {
            let Ok(cid) = Cid::try_from(entry.block.as_slice()) else { continue };
            if entry.cancel {
                // A want-have that became a want-block is in both queues.
                if self.by_cid.remove(&cid).is_some() {
                    self.haves.retain(|c| *c != cid);
                    self.blocks.retain(|c| *c != cid);
                } else if self.cancelled.len() < BLOCKS_PER_BATCH * 4 {
                    self.cancelled.insert(cid);
                }
                continue;
            }
            let block = entry.want_type == WantType::Block as i32 || *protocol != BITSWAP_120;
            let dont_have = entry.send_dont_have && *protocol == BITSWAP_120;
            let full = self.by_cid.len() >= WANTS_PER_PEER;
            match self.by_cid.get_mut(&cid) {
                Some(w) => {
                    if block && !w.block {
                        self.blocks.push_back(cid);
                    }
                    w.block |= block;
                    w.dont_have |= dont_have;
                }
                None if !full => {
                    self.by_cid.insert(cid, Want { block, dont_have, protocol: protocol.clone() });
                    if block { &mut self.blocks } else { &mut self.haves }.push_back(cid);
                }
                None => {}
            }
        }
    }

    /// A want-have the node makes for the peer itself: a block it once lacked arrived.
    fn recheck(&mut self, cid: Cid) {
        if self.by_cid.len() < WANTS_PER_PEER && !self.by_cid.contains_key(&cid) {
            self.by_cid.insert(cid, Want { block: false, dont_have: false, protocol: BITSWAP_120 });
            self.haves.push_back(cid);
        }
    }

    fn clear(&mut self) {
        self.haves.clear();
        self.blocks.clear();
        self.by_cid.clear();
    }

    fn is_empty(&self, kind: Kind) -> bool {
        match kind {
            Kind::Presences => self.haves.is_empty(),
            Kind::Blocks => self.blocks.is_empty(),
        }
    }

    /// The next wants of `kind` to answer: want-haves a message's worth, want-blocks
    /// [`Self::next_blocks`].
    fn next(&mut self, kind: Kind) -> Vec<(Cid, Want)> {
        match kind {
            Kind::Blocks => self.next_blocks(),
            Kind::Presences => {
                let mut out = Vec::new();
                while out.len() < MAX_WANTS {
                    let Some(cid) = self.haves.pop_front() else { break };
                    if self.by_cid.get(&cid).is_some_and(|w| !w.block) {
                        out.push((cid, self.by_cid.remove(&cid).expect("looked up")));
                    }
                }
                out
            }
        }
    }

    /// The next want-blocks to answer, in order: up to [`BLOCKS_PER_BATCH`] (the rest wait in
    /// the queue, where a cancel still reaches them: a peer that found a block elsewhere does not
    /// get it from here too).
    fn next_blocks(&mut self) -> Vec<(Cid, Want)> {
        let mut out = Vec::new();
        self.cancelled.clear();
        while out.len() < BLOCKS_PER_BATCH {
            let Some(cid) = self.blocks.pop_front() else { break };
            if let Some(w) = self.by_cid.remove(&cid) {
                out.push((cid, w));
            }
        }
        out
    }
}

/// A stream's hold on its peer's and the node's stream counts, given back when dropped.
struct StreamSlot<'a> {
    server: &'a Server,
    peer: PeerId,
    state: Arc<PeerState>,
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.state.streams.fetch_sub(1, Ordering::AcqRel);
        self.server.streams.fetch_sub(1, Ordering::AcqRel);
        self.server.forget_if_idle(&self.peer);
    }
}

impl Server {
    /// Registers the Bitswap protocols on `control` and serves them until the swarm ends.
    pub fn spawn(policy: Arc<Policy>, mut control: libp2p_stream::Control, misbehaving: tokio::sync::mpsc::UnboundedSender<PeerId>) -> Arc<Server> {
        let server = Arc::new_cyclic(|me| Server {
            me: me.clone(),
            policy,
            outboxes: super::outbox::Outboxes::new(control.clone()),
            misbehaving,
            stats: Stats::default(),
            streams: AtomicUsize::new(0),
            inbound: Arc::new(Semaphore::new(INBOUND_TOTAL_KIB as usize)),
            replies: Arc::new(Semaphore::new(REPLY_SLOTS)),
            peers: Default::default(),
            wants: Default::default(),
            ledgers: Default::default(),
            pending: Default::default(),
        });
        for protocol in PROTOCOLS {
            let mut incoming = control.accept(protocol.clone()).expect("each Bitswap protocol is registered once");
            let server = server.clone();
            // libp2p-stream's inbound queue has no buffer: this loop only spawns.
            tokio::spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    let (server, protocol) = (server.clone(), protocol.clone());
                    tokio::spawn(async move { server.serve_stream(peer, stream, protocol).await });
                }
            });
        }
        server
    }

    fn me(&self) -> Option<Arc<Server>> {
        self.me.upgrade()
    }

    /// `peer`'s state, made if it has none, with `streams` more streams counted (and how many it
    /// now has): under the
    /// peers' lock, so a state is never dropped (`forget_if_idle`) between its lookup and the
    /// count of a new stream.
    fn peer(&self, peer: PeerId, streams: usize) -> (Arc<PeerState>, usize) {
        let mut peers = self.peers.lock().expect("peers lock");
        let state = peers.entry(peer).or_insert_with(|| {
            Arc::new(PeerState {
                streams: AtomicUsize::new(0),
                inbound: Arc::new(Semaphore::new(INBOUND_PER_PEER_KIB as usize)),
                wants: Default::default(),
                answering: Default::default(),
            })
        });
        let now = state.streams.fetch_add(streams, Ordering::AcqRel) + streams;
        (state.clone(), now)
    }

    /// Drops a peer's state once it has no stream, no waiting want and no answer under way.
    fn forget_if_idle(&self, peer: &PeerId) {
        let mut peers = self.peers.lock().expect("peers lock");
        if let Some(state) = peers.get(peer) {
            let idle = state.streams.load(Ordering::Acquire) == 0
                && !state.answering.iter().any(|a| a.load(Ordering::Acquire))
                && state.wants.lock().expect("wants lock").by_cid.is_empty();
            if idle {
                peers.remove(peer);
            }
        }
    }

    /// Takes a stream slot of `peer`'s, if it has one left and the node too.
    fn open_stream(&self, peer: PeerId) -> Option<StreamSlot<'_>> {
        let (state, mine) = self.peer(peer, 1);
        let all = self.streams.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = StreamSlot { server: self, peer, state };
        (mine <= STREAMS_PER_PEER && all <= STREAMS_TOTAL).then_some(slot)
    }

    async fn serve_stream(&self, peer: PeerId, mut stream: libp2p::Stream, protocol: StreamProtocol) {
        let Some(slot) = self.open_stream(peer) else {
            tracing::debug!(%peer, "bitswap: a stream past the peer's or the node's limit is reset");
            return;
        };
        loop {
            let len = match tokio::time::timeout(STREAM_IDLE, message::read_length(&mut stream)).await {
                Err(_) | Ok(Ok(None)) => return,
                Ok(Ok(Some(len))) => len,
                Ok(Err(e)) => return self.bad_message(peer, &e.to_string()),
            };
            // The bytes it may take are counted before any is read: the peer's share first, so
            // one peer waits on itself, then the node's.
            let kib = (len as u32).div_ceil(1024).max(1);
            let deadline = tokio::time::Instant::now() + MESSAGE_DEADLINE;
            let Ok(Ok(_mine)) = tokio::time::timeout_at(deadline, slot.state.inbound.clone().acquire_many_owned(kib)).await else { return };
            let Ok(Ok(_all)) = tokio::time::timeout_at(deadline, self.inbound.clone().acquire_many_owned(kib)).await else { return };
            let m = match tokio::time::timeout_at(deadline, message::read_body(&mut stream, len)).await {
                Err(_) => return,
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return self.bad_message(peer, &e.to_string()),
            };
            self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.take(peer, &slot.state, &protocol, m) {
                tracing::debug!(%peer, error = %e, "bitswap: message refused");
                return;
            }
        }
    }

    /// A malformed, oversized or truncated message: the peer is dropped.
    fn bad_message(&self, peer: PeerId, error: &str) {
        tracing::info!(%peer, %error, "bitswap: disconnecting a peer that sent a bad message");
        let _ = self.misbehaving.send(peer);
    }

    /// Takes the blocks and presences a message brings, and queues its wants for the peer's
    /// answering task (started if none runs). The stream goes on reading meanwhile: a message
    /// is never kept alive while its answer waits on the peer.
    fn take(&self, peer: PeerId, state: &Arc<PeerState>, protocol: &StreamProtocol, m: Message) -> Result<(), String> {
        // Bitswap 1.0.0 blocks are CIDv0: dag-pb, sha2-256.
        let v0 = m.blocks.into_iter().map(|data| (vec![0x00, 0x70, 0x12, 0x20], data));
        for (prefix, data) in m.payload.into_iter().map(|b| (b.prefix, b.data)).chain(v0) {
            let len = data.len() as u64;
            match self.wants.arrived(peer, &prefix, data) {
                Arrival::Wanted => {
                    self.stats.blocks_received.fetch_add(1, Ordering::Relaxed);
                    self.stats.data_received.fetch_add(len, Ordering::Relaxed);
                    self.account(peer, |l| l.received += len);
                }
                Arrival::Late => {
                    tracing::debug!(%peer, "a block no longer wanted");
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    self.stats.duplicate_data.fetch_add(len, Ordering::Relaxed);
                }
                Arrival::Wrong => {
                    tracing::warn!(%peer, "bitswap: disconnecting a peer that sent a block nobody asked for (corrupted?)");
                    self.wants.ban(peer);
                    let _ = self.misbehaving.send(peer);
                    return Err("a wrong block".into());
                }
            }
        }
        for presence in &m.block_presences {
            if let Ok(cid) = Cid::try_from(presence.cid.as_slice()) {
                self.wants.presence(peer, cid, presence.r#type == PresenceType::Have as i32);
            }
        }
        let Some(list) = m.wantlist else { return Ok(()) };
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if list.full {
                pending.clear_peer(&peer);
            }
            for entry in list.entries.iter().filter(|e| e.cancel) {
                if let Ok(cid) = Cid::try_from(entry.block.as_slice()) {
                    pending.remove(&peer, &cid);
                }
            }
        }
        state.wants.lock().expect("wants lock").take(&list, protocol);
        self.answer_soon(peer, state);
        Ok(())
    }

    /// Starts the peer's answering task of each kind that has wants waiting, unless it runs.
    fn answer_soon(&self, peer: PeerId, state: &Arc<PeerState>) {
        for kind in [Kind::Presences, Kind::Blocks] {
            if state.wants.lock().expect("wants lock").is_empty(kind) {
                continue;
            }
            if state.answering[kind as usize].compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            let Some(server) = self.me() else { return };
            let state = state.clone();
            tokio::spawn(async move { server.answer_all(peer, state, kind).await });
        }
    }

    /// Answers `peer`'s waiting wants of `kind`, a message's worth at a time, until none waits.
    /// One task a peer and kind: its answers go in order, and a peer that does not read waits on
    /// itself alone.
    async fn answer_all(self: Arc<Self>, peer: PeerId, state: Arc<PeerState>, kind: Kind) {
        let answering = &state.answering[kind as usize];
        loop {
            let batch = state.wants.lock().expect("wants lock").next(kind);
            if batch.is_empty() {
                answering.store(false, Ordering::Release);
                // A want queued between the look and the store would have found the flag set.
                let more = !state.wants.lock().expect("wants lock").is_empty(kind);
                if more && answering.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    continue;
                }
                self.forget_if_idle(&peer);
                return;
            }
            if let Err(e) = self.answer(peer, &state, batch).await {
                tracing::debug!(%peer, error = %e, "bitswap reply failed; the peer's waiting wants are dropped");
                state.wants.lock().expect("wants lock").clear();
            }
        }
    }

    /// Answers wants: presences of want-haves first, in one message; then the blocks of
    /// want-blocks are looked up, judged and read one by one (a refused or absent one answered
    /// DONT_HAVE in the same messages) and sent in messages of at most [`BLOCKS_PER_MESSAGE`]. Every want costs the same lookups
    /// whether its block is absent, refused or allowed, up to reading an allowed block, so how
    /// long an answer takes does not tell a held private block from an absent one.
    async fn answer(&self, peer: PeerId, state: &PeerState, wants: Vec<(Cid, Want)>) -> Result<(), String> {
        let audience = Audience::Peer(peer.to_base58().into());
        let mut presences: Vec<(StreamProtocol, BlockPresence)> = Vec::new();
        let mut blocks = Vec::new();
        for (cid, want) in wants {
            let presence = |kind: PresenceType| (want.protocol.clone(), BlockPresence { cid: cid.to_bytes(), r#type: kind as i32 });
            // A want-block is looked up once, when its block is read below.
            if want.block {
                blocks.push((cid, want));
                continue;
            }
            match self.policy.may_send(&cid, &audience).await.map_err(|e| e.to_string())? {
                true => presences.push(presence(PresenceType::Have)),
                false => {
                    self.remember(peer, cid, &want);
                    // Being fetched to be passed on to this asker: HAVE follows, and a DONT_HAVE
                    // now would send the asker to the seed for it too (see `Wants::fetching`).
                    let passing = match self.wants.fetching(&cid) {
                        Some(to_strangers) => to_strangers || self.trusts(&peer),
                        None => false,
                    };
                    if want.dont_have && !(want.protocol == BITSWAP_120 && passing) {
                        presences.push(presence(PresenceType::DontHave));
                    }
                }
            }
        }
        for protocol in PROTOCOLS {
            let of: Vec<BlockPresence> = presences.iter().filter(|(p, _)| *p == protocol).map(|(_, b)| b.clone()).collect();
            if !of.is_empty() {
                self.outboxes.send(peer, &protocol, Message { block_presences: of, ..Default::default() }).await?;
            }
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let _slot = self.replies.acquire().await.map_err(|e| e.to_string())?;
        let mut batch: Option<(StreamProtocol, Message, usize)> = None;
        for (cid, want) in blocks {
            if batch.as_ref().is_some_and(|(p, _, _)| *p != want.protocol) {
                let (p, m, _) = batch.take().expect("checked");
                self.outboxes.send(peer, &p, m).await?;
            }
            let (protocol, message, bytes) = batch.get_or_insert_with(|| (want.protocol.clone(), Message::default(), 0));
            if state.wants.lock().expect("wants lock").cancelled.contains(&cid) {
                continue;
            }
            let Some(data) = self.block(&cid, &audience).await.map_err(|e| e.to_string())? else {
                self.remember(peer, cid, &want);
                if *protocol == BITSWAP_120 && want.dont_have {
                    message.block_presences.push(BlockPresence { cid: cid.to_bytes(), r#type: PresenceType::DontHave as i32 });
                }
                continue;
            };
            if *bytes > 0 && *bytes + data.len() > BLOCKS_PER_MESSAGE {
                self.outboxes.send(peer, protocol, std::mem::take(message)).await?;
                *bytes = 0;
            }
            *bytes += data.len();
            // Which block went to whom, and when: what tells a fleet's seed sending a block
            // twice (to two pullers) from one puller asking twice.
            tracing::debug!(%peer, %cid, "bitswap block sent");
            self.stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
            self.stats.data_sent.fetch_add(data.len() as u64, Ordering::Relaxed);
            let len = data.len() as u64;
            self.account(peer, |l| l.sent += len);
            if *protocol == BITSWAP_100 {
                message.blocks.push(data);
            } else {
                message.payload.push(Block { prefix: message::prefix(&cid), data });
            }
        }
        if let Some((protocol, m, bytes)) = batch {
            if bytes > 0 || !m.block_presences.is_empty() {
                self.outboxes.send(peer, &protocol, m).await?;
            }
        }
        Ok(())
    }

    /// Remembers a want this node could not answer with a block, to say HAVE once it can: a peer
    /// of Bitswap 1.2.0 (the only one presences reach).
    fn remember(&self, peer: PeerId, cid: Cid, want: &Want) {
        if want.protocol == BITSWAP_120 {
            self.pending.lock().expect("pending lock").add(peer, cid);
        }
    }

    /// Blocks that just arrived in the store: every peer told earlier that this node lacked one
    /// is asked, on its behalf, whether it may have it now (the answer goes through the exposure
    /// policy as any want's: HAVE if it may, nothing if not).
    pub fn arrived_here(&self, cids: &[Cid]) {
        let mut due: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.total == 0 {
                return;
            }
            for cid in cids {
                for peer in pending.take(cid) {
                    due.entry(peer).or_default().push(*cid);
                }
            }
        }
        for (peer, cids) in due {
            let (state, _) = self.peer(peer, 0);
            {
                let mut wants = state.wants.lock().expect("wants lock");
                for cid in cids {
                    wants.recheck(cid);
                }
            }
            self.answer_soon(peer, &state);
        }
    }

    /// `peer`'s last connection closed: the wants remembered for it are forgotten (it would not
    /// hear the HAVE; if it comes back, it sends its wantlist again).
    pub fn peer_gone(&self, peer: &PeerId) {
        self.pending.lock().expect("pending lock").clear_peer(peer);
    }

    fn account(&self, peer: PeerId, f: impl FnOnce(&mut Ledger)) {
        let mut ledgers = self.ledgers.lock().expect("ledgers lock");
        if ledgers.len() >= MAX_LEDGERS && !ledgers.contains_key(&peer) {
            let drop: Vec<PeerId> = ledgers.keys().take(MAX_LEDGERS / 2).copied().collect();
            drop.iter().for_each(|p| {
                ledgers.remove(p);
            });
        }
        let ledger = ledgers.entry(peer).or_default();
        f(ledger);
        ledger.exchanged += 1;
    }

    /// What went between this node and `peer`.
    /// Whether `peer` is trusted with everything (a `--trusted-peer`, a node on the same
    /// database): what it sends this node may have been sent only because it trusts this node
    /// back.
    pub fn trusts(&self, peer: &PeerId) -> bool {
        self.policy.trusts(&peer.to_base58())
    }

    pub fn ledger(&self, peer: &PeerId) -> Ledger {
        self.ledgers.lock().expect("ledgers lock").get(peer).copied().unwrap_or_default()
    }

    /// The block's bytes (verified) if `audience` may have them.
    async fn block(&self, cid: &Cid, audience: &Audience) -> crate::registry::Result<Option<bytes::Bytes>> {
        Ok(self.policy.get(cid, audience).await?.filter(|b| b.len() <= MAX_BLOCK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::test_cid as cid;

    fn wantlist(entries: &[(u32, WantType, bool)]) -> message::Wantlist {
        let entries = entries
            .iter()
            .map(|(n, kind, cancel)| message::Entry { block: cid(*n).to_bytes(), want_type: *kind as i32, cancel: *cancel, send_dont_have: true, ..Default::default() })
            .collect();
        message::Wantlist { entries, full: false }
    }

    /// A want-have that comes after a peer's want-blocks is answered by the presence queue
    /// first, not after those blocks went out; one that becomes a want-block is answered once,
    /// with the blocks; a cancel withdraws a want from its queue.
    #[test]
    fn want_haves_do_not_wait_behind_a_peers_blocks() {
        let mut waiting = Waiting::default();
        let blocks: Vec<(u32, WantType, bool)> = (0..20).map(|n| (n, WantType::Block, false)).collect();
        waiting.take(&wantlist(&blocks), &BITSWAP_120);
        waiting.take(&wantlist(&[(100, WantType::Have, false), (101, WantType::Have, false), (102, WantType::Have, false)]), &BITSWAP_120);
        // 101 becomes a want-block, 102 is cancelled.
        waiting.take(&wantlist(&[(101, WantType::Block, false), (102, WantType::Have, true)]), &BITSWAP_120);

        let presences: Vec<Cid> = waiting.next(Kind::Presences).into_iter().map(|(c, _)| c).collect();
        assert_eq!(presences, [cid(100)], "the want-have first, alone");
        assert!(waiting.is_empty(Kind::Presences));
        let mut sent = Vec::new();
        loop {
            let batch = waiting.next(Kind::Blocks);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= BLOCKS_PER_BATCH);
            assert!(batch.iter().all(|(_, w)| w.block));
            sent.extend(batch.into_iter().map(|(c, _)| c));
        }
        let mut expected: Vec<Cid> = (0..20).map(cid).collect();
        expected.push(cid(101));
        assert_eq!(sent, expected, "the want-blocks in order, the upgraded want-have last, once");
        assert!(waiting.by_cid.is_empty());
    }

    /// A peer asking for ever more blocks this node lacks is remembered for at most
    /// PENDING_PER_PEER of them; all peers together for at most PENDING_TOTAL; a cancel, a full
    /// wantlist or the block's arrival forgets them, and the counts follow.
    #[test]
    fn wants_remembered_for_later_are_bounded_per_peer_and_in_total() {
        let mut pending = Pending::default();
        let hostile = PeerId::random();
        for n in 0..(PENDING_PER_PEER as u32 * 3) {
            pending.add(hostile, cid(n));
        }
        assert_eq!(pending.per_peer[&hostile], PENDING_PER_PEER);
        assert_eq!(pending.total, PENDING_PER_PEER);
        // Asking again for the same block is one want.
        pending.add(hostile, cid(0));
        assert_eq!(pending.total, PENDING_PER_PEER);

        let peers = PENDING_TOTAL / PENDING_PER_PEER + 4;
        let others: Vec<PeerId> = (0..peers).map(|_| PeerId::random()).collect();
        for (i, p) in others.iter().enumerate() {
            for n in 0..PENDING_PER_PEER as u32 {
                pending.add(*p, cid(1_000_000 + (i as u32) * 10_000 + n));
            }
        }
        assert_eq!(pending.total, PENDING_TOTAL, "all peers together");
        assert_eq!(pending.by_cid.values().map(Vec::len).sum::<usize>(), PENDING_TOTAL);

        pending.remove(&hostile, &cid(0));
        assert_eq!(pending.per_peer[&hostile], PENDING_PER_PEER - 1);
        assert_eq!(pending.take(&cid(1)), vec![hostile], "the block arrived: the peer is told");
        assert!(pending.take(&cid(1)).is_empty(), "once");
        pending.clear_peer(&hostile);
        assert!(!pending.per_peer.contains_key(&hostile));
        assert_eq!(pending.total, pending.by_cid.values().map(Vec::len).sum::<usize>());
    }
}
