//! Who may hold a connection to this node, and for how long it may take to prove itself.
//!
//! rust-libp2p's `connection_limits` counts every connection alike: strangers could fill
//! `--max-peers`, after which trusted peers and the node's own dials were refused. Here:
//! - a connection in its handshake is counted per source address as well as in total, so silent
//!   sockets from one address hold a few slots, not all of them (the transport's handshake
//!   deadline, `HANDSHAKE_DEADLINE` in `swarm`, frees them);
//! - strangers' inbound connections take at most `max - reserve` slots; the reserve is for
//!   trusted peers, fellow nodes and the node's own dials;
//! - when the slots are full, a trusted peer or an own dial closes the least useful stranger,
//!   and a new stranger replaces one only if that one has been useless (no Bitswap bytes either
//!   way) for [`GRACE`].

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::{dummy, CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a stranger's connection may stay useless before a newcomer may take its place.
pub const GRACE: Duration = Duration::from_secs(30);

/// Who the node trusts (trusted peers, fellow nodes), and how useful a peer has been (bytes
/// exchanged over Bitswap).
pub type Judge = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;
pub type Usefulness = Arc<dyn Fn(&PeerId) -> u64 + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Established connections, all peers together.
    pub max_established: usize,
    /// Of those, kept for trusted peers and own dials.
    pub reserve: usize,
    pub per_peer: usize,
    /// Inbound connections in their handshake, in total and from one IP address.
    pub max_pending: usize,
    pub pending_per_ip: usize,
}

impl Limits {
    /// The limits for `max_established` connections: an eighth of them (at least one, and
    /// never all) reserved.
    pub fn new(max_established: usize) -> Limits {
        let reserve = (max_established / 8).max(1).min(max_established.saturating_sub(1));
        Limits { max_established, reserve, per_peer: 4, max_pending: 64, pending_per_ip: 8 }
    }
}

struct Connection {
    peer: PeerId,
    /// A stranger's inbound connection (what the reserve keeps out).
    stranger_inbound: bool,
    since: Instant,
}

pub struct Behaviour {
    limits: Limits,
    trusted: Judge,
    useful: Usefulness,
    pending: HashMap<ConnectionId, Option<IpAddr>>,
    pending_per_ip: HashMap<IpAddr, usize>,
    established: HashMap<ConnectionId, Connection>,
    per_peer: HashMap<PeerId, usize>,
    /// Connections made way for: to be closed on the next poll, and being closed (no longer
    /// counted).
    to_close: VecDeque<(PeerId, ConnectionId)>,
    closing: HashSet<ConnectionId>,
    waker: Option<Waker>,
}

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0} connections in their handshake from this address")]
    PendingPerIp(usize),
    #[error("{0} connections in their handshake")]
    Pending(usize),
    #[error("the peer holds {0} connections already")]
    PerPeer(usize),
    #[error("no connection slot is free for a stranger ({0} taken)")]
    Full(usize),
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Behaviour {
    pub fn new(limits: Limits, trusted: Judge, useful: Usefulness) -> Behaviour {
        Behaviour {
            limits,
            trusted,
            useful,
            pending: HashMap::new(),
            pending_per_ip: HashMap::new(),
            established: HashMap::new(),
            per_peer: HashMap::new(),
            to_close: VecDeque::new(),
            closing: HashSet::new(),
            waker: None,
        }
    }

    fn end_pending(&mut self, id: &ConnectionId) {
        if let Some(Some(ip)) = self.pending.remove(id) {
            if let Some(n) = self.pending_per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.pending_per_ip.remove(&ip);
                }
            }
        }
    }

    /// Established connections not being closed already.
    fn open(&self) -> impl Iterator<Item = (&ConnectionId, &Connection)> {
        self.established.iter().filter(|(id, _)| !self.closing.contains(*id))
    }

    /// The stranger connection least worth keeping: least useful, then oldest. With
    /// `only_useless`, only one that has been useless for [`GRACE`].
    fn victim(&self, only_useless: bool) -> Option<(PeerId, ConnectionId)> {
        self.open()
            .filter(|(_, c)| c.stranger_inbound)
            .map(|(id, c)| ((self.useful)(&c.peer), c.since, c.peer, *id))
            .filter(|(useful, since, _, _)| !only_useless || (*useful == 0 && since.elapsed() >= GRACE))
            .min_by_key(|(useful, since, _, _)| (*useful, *since))
            .map(|(_, _, peer, id)| (peer, id))
    }

    fn make_way(&mut self, victim: (PeerId, ConnectionId)) {
        tracing::debug!(peer = %victim.0, "closing a stranger's connection to make way");
        self.closing.insert(victim.1);
        self.to_close.push_back(victim);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether a new connection of `peer` may be established (`inbound`: the peer dialled).
    fn admit(&mut self, peer: &PeerId, inbound: bool) -> Result<(), ConnectionDenied> {
        let mine = self.per_peer.get(peer).copied().unwrap_or(0);
        if mine >= self.limits.per_peer {
            return Err(ConnectionDenied::new(Refused::PerPeer(mine)));
        }
        let privileged = !inbound || (self.trusted)(peer);
        let open = self.open().count();
        if privileged {
            if open >= self.limits.max_established {
                match self.victim(false) {
                    Some(v) => self.make_way(v),
                    None => return Err(ConnectionDenied::new(Refused::Full(open))),
                }
            }
            return Ok(());
        }
        let strangers = self.open().filter(|(_, c)| c.stranger_inbound).count();
        let room = self.limits.max_established - self.limits.reserve;
        if strangers >= room || open >= self.limits.max_established {
            match self.victim(true) {
                Some(v) => self.make_way(v),
                None => return Err(ConnectionDenied::new(Refused::Full(strangers))),
            }
        }
        Ok(())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(&mut self, id: ConnectionId, _local: &Multiaddr, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        if self.pending.len() >= self.limits.max_pending {
            return Err(ConnectionDenied::new(Refused::Pending(self.pending.len())));
        }
        let ip = ip_of(remote);
        if let Some(ip) = ip {
            let n = self.pending_per_ip.entry(ip).or_default();
            if *n >= self.limits.pending_per_ip {
                return Err(ConnectionDenied::new(Refused::PendingPerIp(*n)));
            }
            *n += 1;
        }
        self.pending.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(&mut self, id: ConnectionId, peer: PeerId, _local: &Multiaddr, _remote: &Multiaddr) -> Result<THandler<Self>, ConnectionDenied> {
        self.end_pending(&id);
        self.admit(&peer, true)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(&peer, false)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished { peer_id, connection_id, endpoint, .. }) => {
                let stranger_inbound = matches!(endpoint, ConnectedPoint::Listener { .. }) && !(self.trusted)(&peer_id);
                self.established.insert(connection_id, Connection { peer: peer_id, stranger_inbound, since: Instant::now() });
                *self.per_peer.entry(peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { peer_id, connection_id, .. }) => {
                if self.established.remove(&connection_id).is_some() {
                    if let Some(n) = self.per_peer.get_mut(&peer_id) {
                        *n -= 1;
                        if *n == 0 {
                            self.per_peer.remove(&peer_id);
                        }
                    }
                }
                self.closing.remove(&connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.end_pending(&connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _id: ConnectionId, event: THandlerOutEvent<Self>) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        while let Some((peer, id)) = self.to_close.pop_front() {
            if self.established.contains_key(&id) {
                return Poll::Ready(ToSwarm::CloseConnection { peer_id: peer, connection: CloseConnection::One(id) });
            }
            self.closing.remove(&id);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
