//! The libp2p swarm on port 4001: TCP and QUIC, Noise, Yamux, Identify, Ping, Kademlia and
//! Bitswap, under the node's own Ed25519 key (so the peer ID the RPC's `id` shows is the
//! swarm's). One task owns the `Swarm`; the rest of the node talks to it through a [`Handle`].
//!
//! What exists: listening and dialling, Identify listing every protocol served, Ping, Kademlia
//! in server mode (no providing yet), and the Bitswap server (`bitswap`), which answers wants
//! through the exposure policy.

mod admission;
pub mod bitswap;
pub mod fetch;
mod frontier;
pub mod keeper;
pub mod message;
mod outbox;
mod provided;
mod providing;
pub mod pull;
pub mod session;
pub mod wants;

use crate::exposure::Policy;
use futures_util::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// Kubo's Kademlia messages reach 4 MiB; rust-libp2p's default is 16 KiB.
const KAD_MAX_PACKET: usize = 4 << 20;
/// Roots this node may provide on the DHT at once (every public blob root and image CID).
pub(super) const MAX_PROVIDED: usize = 1 << 18;
/// How long an idle connection stays open (Kubo keeps peers around; Bitswap needs them).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, thiserror::Error)]
pub enum SwarmError {
    #[error("swarm key: {0}")]
    Key(String),
    #[error("swarm transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {detail}")]
    Listen { addr: String, detail: String },
    #[error("the swarm has stopped")]
    Stopped,
    #[error("{0}")]
    Dial(String),
    #[error("block not found: {0}")]
    NotFound(String),
}

/// How the swarm listens and whom it knows at start.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    pub listen: Vec<Multiaddr>,
    /// Addresses others reach this node at (what Identify and provider records carry).
    pub announce: Vec<Multiaddr>,
    /// Peers to join the DHT through, each with `/p2p/<peer ID>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Connections established at once, all peers together.
    pub max_connections: u32,
}

/// Connections the swarm holds at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// How long a connection has for its handshake (transport, Noise, Yamux); libp2p's default of
/// 10 s let silent sockets hold the handshake slots (`admission`) at six a second.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(4);

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: admission::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    autonat: libp2p::autonat::Behaviour,
    kad: kad::Behaviour<provided::OwnProviderRecords>,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Connect(Multiaddr, oneshot::Sender<Result<PeerId, SwarmError>>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Peers(oneshot::Sender<Vec<(PeerId, Multiaddr)>>),
    KnownAddresses(oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
    Addresses(oneshot::Sender<Vec<Multiaddr>>),
    Provide(cid::Cid, oneshot::Sender<Result<(), SwarmError>>),
    Unprovide(cid::Cid),
    FindProviders(cid::Cid, usize, oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
}

/// A provider search under way: who was found so far, and who waits for them.
struct Search {
    found: Vec<(PeerId, Vec<Multiaddr>)>,
    want: usize,
    reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
}

/// The DHT key of a CID: its multihash's bytes, as Kubo keys provider records.
fn key(cid: &cid::Cid) -> kad::RecordKey {
    kad::RecordKey::new(&cid.hash().to_bytes())
}

/// The rest of the node's way to the swarm.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    pub peer_id: PeerId,
    pub bitswap: Arc<bitswap::Server>,
    /// Whether Kademlia serves the DHT (server mode) right now.
    dht_server: Arc<std::sync::atomic::AtomicBool>,
}

impl Handle {
    /// Every protocol the swarm serves now, as Identify lists them.
    pub fn protocols(&self) -> Vec<String> {
        let mut out: Vec<String> = bitswap::PROTOCOLS.iter().map(|p| p.to_string()).collect();
        out.extend(["/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0", "/libp2p/autonat/1.0.0"].map(String::from));
        if self.dht_server.load(std::sync::atomic::Ordering::Relaxed) {
            out.push(KAD_PROTOCOL.to_string());
        }
        out
    }
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SwarmError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| SwarmError::Stopped)?;
        rx.await.map_err(|_| SwarmError::Stopped)
    }

    /// Dials `addr` (which names the peer with `/p2p/`, or not) and waits for the connection.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, SwarmError> {
        self.ask(|tx| Command::Connect(addr, tx)).await?
    }

    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, SwarmError> {
        self.ask(|tx| Command::Disconnect(peer, tx)).await
    }

    /// Connected peers, each with the address of one connection.
    pub async fn peers(&self) -> Result<Vec<(PeerId, Multiaddr)>, SwarmError> {
        self.ask(Command::Peers).await
    }

    /// Every peer of the routing table with the addresses it keeps for it.
    pub async fn known_addresses(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, SwarmError> {
        self.ask(Command::KnownAddresses).await
    }

    /// Announces on the DHT that this node provides `cid` (republished until withdrawn).
    pub async fn provide(&self, cid: cid::Cid) -> Result<(), SwarmError> {
        self.ask(|tx| Command::Provide(cid, tx)).await?
    }

    /// Stops providing `cid` (the record lapses where it was stored).
    pub async fn unprovide(&self, cid: cid::Cid) -> Result<(), SwarmError> {
        self.commands.send(Command::Unprovide(cid)).await.map_err(|_| SwarmError::Stopped)
    }

    /// Up to `n` providers of `cid` found on the DHT (this node among them if it provides it),
    /// each with the addresses known for it.
    pub async fn find_providers(&self, cid: cid::Cid, n: usize) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, SwarmError> {
        self.ask(|tx| Command::FindProviders(cid, n, tx)).await
    }

    /// Connects to `peer` (at once if it is connected already) at the first of `addrs` that
    /// answers.
    pub async fn dial_any(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        if self.peers().await.is_ok_and(|p| p.iter().any(|(p, _)| *p == peer)) {
            return true;
        }
        for addr in addrs {
            if self.connect(addr.with_p2p(peer).unwrap_or_else(|a| a)).await.is_ok() {
                return true;
            }
        }
        false
    }

    /// The addresses this node listens on and announces.
    pub async fn addresses(&self) -> Result<Vec<Multiaddr>, SwarmError> {
        self.ask(Command::Addresses).await
    }
}

/// Starts the swarm with the node's Ed25519 seed, on a runtime of its own (two threads), so
/// peers never wait behind HTTP work nor HTTP behind peers.
pub fn start(seed: [u8; 32], policy: Arc<Policy>, config: SwarmConfig) -> Result<Handle, SwarmError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("swarm".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("swarm-worker").enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(SwarmError::Transport(e.to_string())));
                    return;
                }
            };
            runtime.block_on(async move {
                let for_providing = policy.clone();
                match build(seed, policy, &config) {
                    Ok((swarm, handle, rx)) => {
                        tokio::spawn(providing::run(for_providing, handle.clone()));
                        let _ = ready_tx.send(Ok(handle));
                        run(swarm, rx, config).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| SwarmError::Transport(e.to_string()))?;
    ready_rx.recv().map_err(|_| SwarmError::Stopped)?
}

/// What the swarm task is told: commands from the node, peers to drop from the protocols.
struct Inbox {
    commands: mpsc::Receiver<Command>,
    bad_peers: mpsc::UnboundedReceiver<PeerId>,
    /// Whom Bitswap banned (see `wants::Wants::ban`): their connections are closed as they open.
    bitswap: Arc<bitswap::Server>,
    /// Kademlia's mode, for [`Handle::protocols`].
    dht_server: Arc<std::sync::atomic::AtomicBool>,
}

type Built = (libp2p::Swarm<Behaviour>, Handle, Inbox);

fn build(seed: [u8; 32], policy: Arc<Policy>, config: &SwarmConfig) -> Result<Built, SwarmError> {
    let mut seed = seed;
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).map_err(|e| SwarmError::Key(e.to_string()))?;
    let transport = |e: &dyn std::fmt::Display| SwarmError::Transport(e.to_string());
    // The Bitswap server is made once the swarm exists; the admission of connections asks it how
    // useful a peer has been.
    let server: Arc<std::sync::OnceLock<std::sync::Weak<bitswap::Server>>> = Default::default();
    let useful: admission::Usefulness = {
        let server = server.clone();
        Arc::new(move |peer: &PeerId| {
            server
                .get()
                .and_then(|s| s.upgrade())
                .map(|s| {
                    let l = s.ledger(peer);
                    l.sent + l.received
                })
                .unwrap_or(0)
        })
    };
    let trusted: admission::Judge = {
        let policy = policy.clone();
        Arc::new(move |peer: &PeerId| policy.trusts(&peer.to_base58()))
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| transport(&e))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_max_packet_size(KAD_MAX_PACKET);
            // Strangers' records are not stored for them: the store holds what this node provides.
            kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
            // The store holds only this node's own provider records (strangers' are filtered
            // above), so its cap is what this node may provide: far past libp2p's 1024.
            let store = provided::OwnProviderRecords::new(peer_id, MAX_PROVIDED);
            let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
            // A DHT server only where others can reach it: forced by --swarm-announce, otherwise
            // once an external address is confirmed (AutoNAT's dial-backs). A node behind a NAT
            // stays a client, as Kubo's does, and does not poison others' routing tables.
            kad.set_mode(if config.announce.is_empty() { None } else { Some(kad::Mode::Server) });
            let agent = format!("af-registry/{}", env!("CARGO_PKG_VERSION"));
            Behaviour {
                limits: admission::Behaviour::new(admission::Limits::new(config.max_connections as usize), trusted, useful),
                identify: identify::Behaviour::new(identify::Config::new("ipfs/0.1.0".into(), key.public()).with_agent_version(agent)),
                ping: ping::Behaviour::default(),
                autonat: libp2p::autonat::Behaviour::new(peer_id, libp2p::autonat::Config::default()),
                kad,
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .with_connection_timeout(HANDSHAKE_DEADLINE)
        .build();
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| SwarmError::Listen { addr: addr.to_string(), detail: e.to_string() })?;
    }
    for addr in &config.announce {
        swarm.add_external_address(addr.clone());
    }
    let (misbehaving, bad_peers) = mpsc::unbounded_channel();
    let bitswap = bitswap::Server::spawn(policy, swarm.behaviour().stream.new_control(), misbehaving);
    let _ = server.set(Arc::downgrade(&bitswap));
    let (tx, rx) = mpsc::channel(64);
    let dht_server = Arc::new(std::sync::atomic::AtomicBool::new(!config.announce.is_empty()));
    let handle = Handle { commands: tx, peer_id: *swarm.local_peer_id(), bitswap: bitswap.clone(), dht_server: dht_server.clone() };
    Ok((swarm, handle, Inbox { commands: rx, bad_peers, bitswap, dht_server }))
}

/// The peer ID an address names with its last `/p2p/` component.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

async fn run(mut swarm: libp2p::Swarm<Behaviour>, mut inbox: Inbox, config: SwarmConfig) {
    for addr in &config.bootstrap {
        match peer_of(addr) {
            Some(peer) => {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            None => tracing::warn!(%addr, "a bootstrap address without /p2p/<peer ID> is ignored"),
        }
    }
    if !config.bootstrap.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
    // Our dials under way: the peer each names (if it does) and who waits for it.
    let mut dialling: HashMap<libp2p::swarm::ConnectionId, (Option<PeerId>, Vec<Reply<PeerId>>)> = HashMap::new();
    let mut connected: HashMap<PeerId, Multiaddr> = HashMap::new();
    let mut searches: HashMap<kad::QueryId, Search> = HashMap::new();
    loop {
        tokio::select! {
            Some(peer) = inbox.bad_peers.recv() => {
                let _ = swarm.disconnect_peer_id(peer);
            }
            command = inbox.commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Connect(addr, reply) => {
                        let peer = peer_of(&addr);
                        // A peer connected already, or being dialled: no second connection (a
                        // peer may hold only MAX_PER_PEER).
                        if let Some(p) = peer.filter(|p| connected.contains_key(p)) {
                            let _ = reply.send(Ok(p));
                            continue;
                        }
                        if let Some((_, waiting)) = dialling.values_mut().find(|(p, _)| p.is_some() && *p == peer) {
                            waiting.push(reply);
                            continue;
                        }
                        // From a port of its own, not the listening one: a connection the other
                        // side opened to this port earlier (or its TIME_WAIT) has the same
                        // addresses and ports, and the dial would fail "Address already in use".
                        let opts = match peer {
                            Some(peer) => libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                                .addresses(vec![addr])
                                .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                                .allocate_new_port()
                                .build(),
                            None => libp2p::swarm::dial_opts::DialOpts::unknown_peer_id().address(addr).allocate_new_port().build(),
                        };
                        let id = opts.connection_id();
                        match swarm.dial(opts) {
                            Ok(()) => { dialling.insert(id, (peer, vec![reply])); }
                            Err(e) => { let _ = reply.send(Err(SwarmError::Dial(e.to_string()))); }
                        }
                    }
                    Command::Disconnect(peer, reply) => {
                        let _ = reply.send(swarm.disconnect_peer_id(peer).is_ok());
                    }
                    Command::Peers(reply) => {
                        let _ = reply.send(connected.iter().map(|(p, a)| (*p, a.clone())).collect());
                    }
                    Command::KnownAddresses(reply) => {
                        let mut known = Vec::new();
                        for bucket in swarm.behaviour_mut().kad.kbuckets() {
                            for entry in bucket.iter() {
                                known.push((*entry.node.key.preimage(), entry.node.value.iter().cloned().collect()));
                            }
                        }
                        let _ = reply.send(known);
                    }
                    Command::Provide(cid, reply) => {
                        let result = swarm.behaviour_mut().kad.start_providing(key(&cid)).map(|_| ()).map_err(|e| SwarmError::Dial(e.to_string()));
                        let _ = reply.send(result);
                    }
                    Command::Unprovide(cid) => swarm.behaviour_mut().kad.stop_providing(&key(&cid)),
                    Command::FindProviders(cid, want, reply) => {
                        let id = swarm.behaviour_mut().kad.get_providers(key(&cid));
                        searches.insert(id, Search { found: Vec::new(), want: want.max(1), reply });
                    }
                    Command::Addresses(reply) => {
                        let mut out: Vec<Multiaddr> = swarm.listeners().cloned().collect();
                        out.extend(swarm.external_addresses().cloned());
                        out.dedup();
                        let _ = reply.send(out);
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "swarm listening"),
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                    if inbox.bitswap.wants.is_banned(&peer_id) {
                        tracing::debug!(%peer_id, "closing a connection from a banned peer");
                        let _ = swarm.disconnect_peer_id(peer_id);
                        answer(&mut dialling, connection_id, Err(SwarmError::Dial(format!("{peer_id} sent wrong blocks and is banned for a while"))));
                        continue;
                    }
                    connected.insert(peer_id, endpoint.get_remote_address().clone());
                    answer(&mut dialling, connection_id, Ok(peer_id));
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    connected.remove(&peer_id);
                    inbox.bitswap.peer_gone(&peer_id);
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    answer(&mut dialling, connection_id, Err(SwarmError::Dial(error.to_string())));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::GetProviders(result), step, .. })) => {
                    let Some(search) = searches.get_mut(&id) else { continue };
                    if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
                        for peer in providers {
                            if search.found.iter().all(|(p, _)| *p != peer) {
                                let addrs = if peer == *swarm.local_peer_id() {
                                    swarm.external_addresses().chain(swarm.listeners()).cloned().collect()
                                } else {
                                    known_addresses(&mut swarm, &peer)
                                };
                                search.found.push((peer, addrs));
                            }
                        }
                    }
                    if step.last || search.found.len() >= search.want {
                        if let Some(mut query) = swarm.behaviour_mut().kad.query_mut(&id) {
                            query.finish();
                        }
                        if let Some(search) = searches.remove(&id) {
                            let _ = search.reply.send(search.found);
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::ModeChanged { new_mode })) => {
                    tracing::info!(mode = %new_mode, "DHT mode");
                    inbox.dht_server.store(new_mode == kad::Mode::Server, std::sync::atomic::Ordering::Relaxed);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. })) => {
                    tracing::info!(status = ?new, "reachability");
                }
                // What a peer says it listens on feeds the routing table, if it serves the DHT:
                // a few addresses a peer at most, each short and of a transport this node dials.
                // A peer answering Identify again and again with new addresses once filled the
                // table with 42,265 of them (620 MiB), and the node dialled what it claimed.
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                    if info.protocols.contains(&KAD_PROTOCOL) =>
                {
                    let room = ADDRESSES_PER_PEER.saturating_sub(known_addresses(&mut swarm, &peer_id).len());
                    for addr in info.listen_addrs.into_iter().filter(dialable).take(room) {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                _ => {}
            }
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, SwarmError>>;

/// Tells everyone waiting for dial `id` how it went.
fn answer(dialling: &mut HashMap<libp2p::swarm::ConnectionId, (Option<PeerId>, Vec<Reply<PeerId>>)>, id: libp2p::swarm::ConnectionId, result: Result<PeerId, SwarmError>) {
    for reply in dialling.remove(&id).map(|(_, w)| w).unwrap_or_default() {
        let _ = reply.send(result.clone());
    }
}

/// Addresses the routing table keeps for one peer, whatever it claims.
pub(crate) const ADDRESSES_PER_PEER: usize = 8;

/// Whether `addr` is one this node would dial: an IP address, then TCP or QUIC, nothing long.
fn dialable(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    addr.len() <= 64
        && matches!(parts.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)))
        && matches!(parts.next(), Some(Protocol::Tcp(_) | Protocol::Udp(_)))
}

/// The addresses the routing table knows for `peer`.
fn known_addresses(swarm: &mut libp2p::Swarm<Behaviour>, peer: &PeerId) -> Vec<Multiaddr> {
    for bucket in swarm.behaviour_mut().kad.kbuckets() {
        for entry in bucket.iter() {
            if entry.node.key.preimage() == peer {
                return entry.node.value.iter().cloned().collect();
            }
        }
    }
    Vec::new()
}

/// A raw block's CID made from `n`, for unit tests.
#[cfg(test)]
pub(crate) fn test_cid(n: u32) -> cid::Cid {
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(n.to_be_bytes()).into();
    cid::Cid::new_v1(0x55, cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("a 32-byte digest"))
}
