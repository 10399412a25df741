//! Bitswap 1.2.0 (and 1.1.0, 1.0.0), the server side: a peer's wants are answered from the block
//! service, each block only if the exposure policy lets it go to that peer; a block it may not
//! have is answered exactly as an absent one (DONT_HAVE when asked for, silence otherwise).
//!
//! As Kubo and boxo do: replies go on this node's own stream of the protocol the peer spoke
//! (`outbox`: one per peer, not the peer's stream); presences
//! are sent at once in their own message, never behind blocks; blocks are packed into messages
//! of at most [`BLOCKS_PER_MESSAGE`] bytes.

use super::fetch::Arrival;
use super::message::{self, Block, BlockPresence, Message, PresenceType, WantType};
use crate::exposure::{Audience, Policy};
use cid::Cid;
use futures_util::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
/// Inbound streams served at once, all peers together; past it, new streams wait. Peers keep
/// one stream open per direction while they have traffic (as this node does, `outbox`).
const CONCURRENT_STREAMS: usize = 1024;
/// An inbound stream with no message for this long is closed (its permit goes to others).
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Replies that may be reading and sending blocks at once (each holds at most a message, 2 MiB,
/// and a block): bounds the memory all peers together can make the node spend on replies.
const SENDING: usize = 16;

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
    pub blocks_sent: AtomicU64,
    pub data_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Blocks that came after they were no longer wanted (a second peer's copy).
    pub duplicates: AtomicU64,
}

pub struct Server {
    policy: Arc<Policy>,
    /// One outbound stream per peer and protocol for everything this node sends.
    pub outboxes: super::outbox::Outboxes,
    /// Peers that broke the protocol, for the swarm to disconnect.
    misbehaving: tokio::sync::mpsc::UnboundedSender<PeerId>,
    pub stats: Stats,
    streams: tokio::sync::Semaphore,
    /// Replies reading blocks at once: each holds up to a message of blocks in memory.
    sending: tokio::sync::Semaphore,
    /// What this node waits for from peers (the client side, `fetch`).
    pub wants: super::fetch::Wants,
    ledgers: std::sync::Mutex<std::collections::HashMap<PeerId, Ledger>>,
}

impl Server {
    /// Registers the Bitswap protocols on `control` and serves them until the swarm ends.
    pub fn spawn(
        policy: Arc<Policy>,
        mut control: libp2p_stream::Control,
        misbehaving: tokio::sync::mpsc::UnboundedSender<PeerId>,
    ) -> Arc<Server> {
        let streams = tokio::sync::Semaphore::new(CONCURRENT_STREAMS);
        let server = Arc::new(Server { policy, outboxes: super::outbox::Outboxes::new(control.clone()), misbehaving, stats: Stats::default(), streams, sending: tokio::sync::Semaphore::new(SENDING), wants: Default::default(), ledgers: Default::default() });
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

    async fn serve_stream(&self, peer: PeerId, mut stream: libp2p::Stream, protocol: StreamProtocol) {
        let Ok(_permit) = self.streams.acquire().await else { return };
        loop {
            let Ok(next) = tokio::time::timeout(STREAM_IDLE, message::read(&mut stream)).await else { return };
            match next {
                Ok(Some(m)) => {
                    self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.answer(peer, &protocol, m).await {
                        tracing::debug!(%peer, error = %e, "bitswap reply failed");
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // A malformed, oversized or truncated message: the peer is dropped.
                    tracing::info!(%peer, error = %e, "bitswap: disconnecting a peer that sent a bad message");
                    let _ = self.misbehaving.send(peer);
                    return;
                }
            }
        }
    }

    /// Takes the blocks and presences a message brings, then answers its wants (cancels need
    /// nothing: every want is answered at once). Presences go first, in one message; then the
    /// blocks are read one by one and sent in messages of at most [`BLOCKS_PER_MESSAGE`], so a
    /// reply never holds more than that in memory, whatever the peer asked for.
    async fn answer(&self, peer: PeerId, protocol: &StreamProtocol, m: Message) -> Result<(), String> {
        // Bitswap 1.0.0 blocks are CIDv0: dag-pb, sha2-256.
        let v0 = m.blocks.into_iter().map(|data| (vec![0x00, 0x70, 0x12, 0x20], data));
        for (prefix, data) in m.payload.into_iter().map(|b| (b.prefix, b.data)).chain(v0) {
            let len = data.len() as u64;
            match self.wants.arrived(peer, &prefix, data) {
                Arrival::Wanted => {
                    self.stats.blocks_received.fetch_add(1, Ordering::Relaxed);
                    self.account(peer, |l| l.received += len);
                }
                Arrival::Late => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
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
        let Some(wantlist) = m.wantlist else { return Ok(()) };
        let audience = Audience::Peer(peer.to_base58().into());
        let mut presences = Vec::new();
        let mut blocks = Vec::new();
        for entry in wantlist.entries.iter().filter(|e| !e.cancel).take(MAX_WANTS) {
            let Ok(cid) = Cid::try_from(entry.block.as_slice()) else { continue };
            let want_block = entry.want_type == WantType::Block as i32 || *protocol != BITSWAP_120;
            let presence = |kind: PresenceType| BlockPresence { cid: cid.to_bytes(), r#type: kind as i32 };
            let dont_have = entry.send_dont_have && *protocol == BITSWAP_120;
            let may = self.policy.may_send(&cid, &audience).await.map_err(|e| e.to_string())?;
            match (may, want_block) {
                (true, true) => blocks.push(cid),
                (true, false) => presences.push(presence(PresenceType::Have)),
                (false, _) if dont_have => presences.push(presence(PresenceType::DontHave)),
                (false, _) => {}
            }
        }
        if !presences.is_empty() {
            self.outboxes.send(peer, protocol, Message { block_presences: std::mem::take(&mut presences), ..Default::default() }).await?;
        }
        let mut batch = Message::default();
        let mut batch_bytes = 0;
        let _sending = if blocks.is_empty() { None } else { Some(self.sending.acquire().await.map_err(|e| e.to_string())?) };
        for cid in blocks {
            // Looked up again rather than keeping the first pass's location: an inline block's
            // location holds its bytes, and a message may want 1024 of them.
            let Some(data) = self.block(&cid, &audience).await.map_err(|e| e.to_string())? else {
                if *protocol == BITSWAP_120 {
                    batch.block_presences.push(BlockPresence { cid: cid.to_bytes(), r#type: PresenceType::DontHave as i32 });
                }
                continue;
            };
            if batch_bytes > 0 && batch_bytes + data.len() > BLOCKS_PER_MESSAGE {
                self.outboxes.send(peer, protocol, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += data.len();
            self.stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
            self.stats.data_sent.fetch_add(data.len() as u64, Ordering::Relaxed);
            let len = data.len() as u64;
            self.account(peer, |l| l.sent += len);
            if *protocol == BITSWAP_100 {
                batch.blocks.push(data);
            } else {
                batch.payload.push(Block { prefix: message::prefix(&cid), data });
            }
        }
        if batch_bytes > 0 || !batch.block_presences.is_empty() {
            self.outboxes.send(peer, protocol, batch).await?;
        }
        Ok(())
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
    pub fn ledger(&self, peer: &PeerId) -> Ledger {
        self.ledgers.lock().expect("ledgers lock").get(peer).copied().unwrap_or_default()
    }

    /// The block's bytes (verified) if `audience` may have them.
    async fn block(&self, cid: &Cid, audience: &Audience) -> crate::registry::Result<Option<Vec<u8>>> {
        Ok(self.policy.block_for(cid, audience).await?.filter(|b| b.len() <= MAX_BLOCK).map(|b| b.to_vec()))
    }
}
