//! A stranger on the swarm cannot starve, bloat, amplify or read through the node (issue 29):
//! hostile peers of the test's own (libp2p from Cargo.lock) attack while an honest Kubo daemon
//! fetches public blocks, which must keep coming in under a second, and the node's memory stays
//! under 256 MiB.

mod common;
use common::kubo_daemon::KuboDaemon;
use common::raw_peer::RawPeer;
use common::*;
use std::time::{Duration, Instant};

fn raw_cid(data: &[u8]) -> cid::Cid {
    af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &<sha2::Sha256 as sha2::Digest>::digest(data).into())
}

fn want(cids: impl IntoIterator<Item = Vec<u8>>, kind: af_registry::swarm::message::WantType) -> af_registry::swarm::message::Message {
    use af_registry::swarm::message::*;
    let entries = cids.into_iter().map(|block| Entry { block, priority: 1, cancel: false, want_type: kind as i32, send_dont_have: true }).collect();
    Message { wantlist: Some(Wantlist { entries, full: false }), ..Default::default() }
}

/// An honest peer: a Kubo daemon connected to the node, fetching public blocks through its HTTP
/// API, each block once (Kubo keeps what it fetched).
struct Honest {
    kubo: KuboDaemon,
    api: String,
    blocks: Vec<(cid::Cid, String)>,
}

impl Honest {
    /// Kubo, connected to `node`, and `n` public one-block blobs on the node for it to fetch.
    fn new(node: &Node, n: usize) -> Honest {
        let blocks = (0..n)
            .map(|i| {
                let data = xorshift_bytes(1000 + i as u64, 50_000);
                let digest = push_blob(node, "open/honest", &data);
                (raw_cid(&data), digest)
            })
            .collect();
        make_public(node, "open/honest");
        let kubo = KuboDaemon::start();
        let out = kubo.ipfs(&["swarm", "connect", &loopback_addr(node)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let api = std::fs::read_to_string(kubo.kubo.path().join("api")).unwrap();
        let api = api.trim().to_string();
        let port = api.rsplit('/').next().unwrap().to_string();
        Honest { kubo, api: format!("http://127.0.0.1:{port}"), blocks }
    }

    /// Fetches the next public block; how long it took (None: not within 10 s).
    fn fetch(&mut self) -> Option<Duration> {
        let (cid, digest) = self.blocks.pop().expect("a block left to fetch");
        let started = Instant::now();
        let r = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap().post(format!("{}/api/v0/block/get?arg={cid}", self.api)).send().ok()?;
        let bytes = r.bytes().ok()?;
        let took = started.elapsed();
        assert_eq!(sha256(&bytes), digest, "Kubo got the block's bytes");
        Some(took)
    }

    fn assert_served(&mut self, during: &str) {
        let _ = &self.kubo;
        let took = self.fetch();
        eprintln!("honest fetch during {during}: {took:?}");
        assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "during {during}, an honest peer waited {took:?} for a public block");
    }
}

/// Items 2 to 5: silent streams, a peer that never reads its replies, messages of a million
/// empty wants, and a peer repeating its wants, from peers on one connection each. An honest Kubo gets each public block in
/// under a second throughout, and the node's memory stays under 256 MiB.
#[test]
fn hostile_peers_neither_starve_nor_bloat_the_node() {
    use af_registry::swarm::message::*;
    let node = Node::start();
    let addr = loopback_addr(&node);
    // Public 1 MiB blocks: one reply to them fills a stream's window many times over.
    let big: Vec<cid::Cid> = (0..4)
        .map(|i| {
            let data = xorshift_bytes(77 + i, 1 << 20);
            push_blob(&node, "open/big", &data);
            raw_cid(&data)
        })
        .collect();
    make_public(&node, "open/big");
    let memory = node.watch_memory();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Three peers hold 1,050 silent streams before the honest peer first asks (a stream it has
    // open already would carry its wants whatever the limit).
    let silent: Vec<RawPeer> = rt.block_on(async {
        let mut peers = Vec::new();
        for _ in 0..3 {
            let mut p = RawPeer::connect(&addr).await;
            p.open_silent(350).await;
            peers.push(p);
        }
        peers
    });
    let mut honest = Honest::new(&node, 8);
    honest.assert_served("1,050 silent streams");

    // A peer that never reads: 16 messages wanting the 1 MiB blocks, again every second.
    let stalling = rt.spawn({
        let (addr, big) = (addr.clone(), big.clone());
        async move {
            let mut p = RawPeer::connect_reading(&addr, false).await;
            for _ in 0..10 {
                for _ in 0..16 {
                    p.send(&want(big.iter().map(|c| c.to_bytes()), WantType::Block)).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            p
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    honest.assert_served("a peer that never reads its replies");

    // Messages of about a million empty wants (2 bytes each on the wire) behind one real want,
    // on streams kept open, from a peer that never reads: 120 of them, 240 MB.
    let flooding = rt.spawn({
        let (addr, big) = (addr.clone(), big[0]);
        async move {
            let mut p = RawPeer::connect_reading(&addr, false).await;
            let mut body = Vec::new();
            let mut list = Vec::new();
            let first = Entry { block: big.to_bytes(), priority: 1, cancel: false, want_type: WantType::Block as i32, send_dont_have: true };
            prost::Message::encode_length_delimited(&first, &mut list).unwrap();
            list.splice(0..0, [0x0a]);
            while list.len() < 2_000_000 {
                list.extend_from_slice(&[0x0a, 0x00]);
            }
            body.push(0x0a);
            af_registry::varint::encode(&mut body, list.len() as u64);
            body.extend_from_slice(&list);
            let mut frame = Vec::new();
            af_registry::varint::encode(&mut frame, body.len() as u64);
            frame.extend_from_slice(&body);
            for _ in 0..120 {
                p.send_raw_keeping(&frame).await;
            }
            p
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    honest.assert_served("messages of a million wants");
    // A peer that reads, asking for the 1 MiB blocks 1,024 times a message, ten messages a second.
    let repeating = rt.spawn({
        let (addr, big) = (addr.clone(), big.clone());
        async move {
            let mut p = RawPeer::connect(&addr).await;
            for _ in 0..30 {
                p.send(&want(big.iter().flat_map(|c| std::iter::repeat_n(c.to_bytes(), 256)), WantType::Block)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            p
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    honest.assert_served("a peer repeating its wants");
    let _repeating = rt.block_on(repeating).unwrap();
    let _stalling = rt.block_on(stalling).unwrap();
    let _flooding = rt.block_on(flooding).unwrap();
    honest.assert_served("after the floods");
    let peak = memory.peak_kib();
    eprintln!("the node's peak anonymous memory under the attacks: {} MiB", peak >> 10);
    assert!(peak < 256 << 10, "the node's anonymous memory reached {} MiB", peak >> 10);
    drop(silent);
    // The node is well and answers over HTTP.
    assert_eq!(client().get(node.url("/v2/")).send().unwrap().status(), 200);
}

/// Item 5: 1,024 want-blocks of one 1 MiB block in one message are one want: the block is sent
/// once (it was sent 1,024 times, and again for each copy).
#[test]
fn duplicate_wants_are_one_want() {
    use af_registry::swarm::message::WantType;
    let node = Node::start();
    let data = xorshift_bytes(5, 1 << 20);
    let digest = push_blob(&node, "open/dup", &data);
    make_public(&node, "open/dup");
    let cid = raw_cid(&data);
    let addr = loopback_addr(&node);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut peer = RawPeer::connect(&addr).await;
        peer.send(&want(std::iter::repeat_n(cid.to_bytes(), 1024), WantType::Block)).await;
        let replies = peer.replies(Duration::from_secs(5)).await;
        let blocks: Vec<_> = replies.iter().flat_map(|m| m.payload.iter()).collect();
        assert_eq!(blocks.len(), 1, "the block came {} times", blocks.len());
        assert_eq!(sha256(&blocks[0].data), digest);
    });
    let stat = node.rpc_json("bitswap/stat");
    assert_eq!(stat["DataSent"].as_u64().unwrap(), 1 << 20, "{stat}");
}

/// Item 8: a message of wants for held private blocks is answered in about the time one for
/// absent blocks is (both DONT_HAVE): the private ones took 2.6 times as long, which told a
/// stranger which private blocks the node holds.
#[test]
fn held_private_blocks_answer_as_fast_as_absent_ones() {
    use af_registry::swarm::message::{PresenceType, WantType};
    let node = Node::start();
    let private: Vec<Vec<u8>> = (0..512u64)
        .map(|i| {
            let data = xorshift_bytes(20_000 + i, 64);
            push_blob(&node, "team/secret", &data);
            raw_cid(&data).to_bytes()
        })
        .collect();
    let absent: Vec<Vec<u8>> = (0..512u64).map(|i| raw_cid(&xorshift_bytes(90_000 + i, 64)).to_bytes()).collect();
    let addr = loopback_addr(&node);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (held, missing) = rt.block_on(async {
        let mut peer = RawPeer::connect(&addr).await;
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..24 {
            for (i, cids) in [&private, &absent].into_iter().enumerate() {
                let started = Instant::now();
                peer.send(&want(cids.iter().cloned(), WantType::Have)).await;
                let mut answered = 0;
                while answered < cids.len() {
                    let m = tokio::time::timeout(Duration::from_secs(10), peer.messages.recv()).await.expect("an answer").expect("a message");
                    assert!(m.payload.is_empty());
                    assert!(m.block_presences.iter().all(|p| p.r#type == PresenceType::DontHave as i32), "a private block is never HAVE");
                    answered += m.block_presences.len();
                }
                // The first rounds warm caches on both sides.
                if round >= 4 {
                    times[i].push(started.elapsed());
                }
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        (median(&mut times[0]), median(&mut times[1]))
    });
    let ratio = held.as_secs_f64() / missing.as_secs_f64();
    eprintln!("512 wants: held private {held:?}, absent {missing:?}, ratio {ratio:.2}");
    assert!((0.67..1.5).contains(&ratio), "held private {held:?} against absent {missing:?}");
}

/// Item 6: silent sockets from one address hold a few handshake slots, not all of them, and
/// each for at most the handshake deadline: honest peers connect while 100 sit silent.
#[test]
fn silent_sockets_cannot_hold_the_handshake_slots() {
    let node = Node::start();
    let addr = loopback_addr(&node);
    let port: u16 = addr.split('/').nth(4).unwrap().parse().unwrap();
    let silent: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into()).ok()?;
            s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).ok()?;
            Some(s.into())
        })
        .collect();
    assert!(silent.len() >= 90, "only {} sockets opened", silent.len());
    std::thread::sleep(Duration::from_millis(300));
    let others: Vec<Node> = (0..3).map(|_| Node::start()).collect();
    for other in &others {
        let started = Instant::now();
        let r = other.rpc_post(&format!("swarm/connect?arg={addr}"));
        assert!(r.status().is_success(), "an honest dial failed after {:?}: {}", started.elapsed(), r.text().unwrap());
    }
    // The node closes a silent socket at its handshake deadline (libp2p's default was 10 s).
    let mut first = silent.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match std::io::Read::read(&mut first, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    assert!(started.elapsed() < Duration::from_secs(7), "a silent socket was kept {:?}", started.elapsed());
}

/// Runs `swarm` for `for_ms` milliseconds.
async fn drive(swarm: &mut libp2p::Swarm<Claimer>, for_ms: u64) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    while tokio::time::timeout_at(deadline, swarm.select_next_some()).await.is_ok() {}
}

#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Claimer {
    identify: libp2p::identify::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
}

/// Issue 33, item 4: a DHT peer that answers Identify again and again with new listen
/// addresses (about 100 each time, on 107 connections) leaves a few of them in the node's routing table,
/// not 10,000: the node's memory stays flat.
#[test]
fn identify_cannot_fill_the_peer_table() {
    let node = Node::start();
    let addr: libp2p::Multiaddr = loopback_addr(&node).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let memory = node.watch_memory();
    let claimer = rt.block_on(async {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|key| {
                let me = key.public().to_peer_id();
                let mut kad = libp2p::kad::Behaviour::with_config(me, libp2p::kad::store::MemoryStore::new(me), libp2p::kad::Config::new(af_registry::swarm::KAD_PROTOCOL));
                kad.set_mode(Some(libp2p::kad::Mode::Server));
                let identify = libp2p::identify::Behaviour::new(libp2p::identify::Config::new("ipfs/0.1.0".into(), key.public()).with_push_listen_addr_updates(true));
                Claimer { identify, kad }
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let node_id = af_registry::swarm::peer_of(&addr).unwrap();
        swarm.dial(addr.clone()).unwrap();
        drive(&mut swarm, 1000).await;
        let mut claimed: Vec<libp2p::Multiaddr> = Vec::new();
        for round in 0..107u32 {
            for a in claimed.drain(..) {
                swarm.remove_external_address(&a);
            }
            for i in 0..100u32 {
                let a: libp2p::Multiaddr = format!("/ip4/10.{}.{}.{}/tcp/{}", round % 250, i, round / 250, 1000 + i).parse().unwrap();
                swarm.add_external_address(a.clone());
                claimed.push(a);
            }
            // Each new connection's Identify answer carries them.
            let _ = swarm.disconnect_peer_id(node_id);
            drive(&mut swarm, 30).await;
            let _ = swarm.dial(addr.clone());
            drive(&mut swarm, 150).await;
        }
        drive(&mut swarm, 1000).await;
        *swarm.local_peer_id()
    });
    let known: serde_json::Value = node.rpc_json("swarm/addrs");
    let kept = known["Addrs"][claimer.to_string()].as_array().map_or(0, Vec::len);
    let all: usize = known["Addrs"].as_object().unwrap().values().map(|a| a.as_array().unwrap().len()).sum();
    eprintln!("addresses the node keeps for the peer: {kept} (all peers: {all})");
    assert!(kept > 0 && kept <= 8, "{kept} addresses kept of 10,700 claimed");
    let growth = memory.growth_kib();
    eprintln!("the node's memory grew {} MiB under 107 Identify answers of 100 new addresses", growth >> 10);
    assert!(growth < 48 << 10, "the node's memory grew {} MiB", growth >> 10);
    assert_eq!(client().get(node.url("/v2/")).send().unwrap().status(), 200);
}
