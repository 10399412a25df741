//! A fleet pulling one DAG at once over real links: nodes in network namespaces of a lab
//! (`common::lab`), each link shaped with `tbf`. Needs root, as CI runs; elsewhere every test
//! here fails with the reason unless `AF_TEST_NO_LAB=1` says to skip the lab.

mod common;

use common::lab::{mesh, Lab, LabNode, SharedDb, LAB_API, LAB_GATEWAY};
use std::path::Path;
use std::time::{Duration, Instant};

/// A lab of `n` members, or `None` when the run said to go without one.
fn lab(n: usize) -> Option<Lab> {
    if std::env::var("AF_TEST_NO_LAB").is_ok_and(|v| v == "1") {
        eprintln!("skipped: AF_TEST_NO_LAB=1");
        return None;
    }
    Some(Lab::new(n).unwrap_or_else(|e| panic!("{e} (AF_TEST_NO_LAB=1 skips the lab's tests)")))
}

fn start(lab: &Lab, dir: &Path, i: usize, extra: &[&str]) -> LabNode {
    lab.start_af(i, Path::new(env!("CARGO_BIN_EXE_af")), &dir.join(format!("n{i}")), extra).unwrap()
}

/// The seed holds a 32 MiB file, three nodes pin it at once over 100 Mbit/s links: every pin
/// completes (before, all three failed within seconds: a node still fetching said DONT_HAVE, a
/// busy seed went silent, and the want ran out of peers), the nodes pass on what they have
/// (they send blocks to each other, not only the seed to them), and all of them together receive
/// at most 1.15 times what they needed.
#[test]
fn one_seed_three_nodes_pin_one_file_at_once_over_shaped_links() {
    let Some(lab) = lab(4) else { return };
    lab.shape_all(100).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<LabNode> = (0..4).map(|i| start(&lab, dir.path(), i, &[])).collect();
    let size = 32 << 20;
    let file = dir.path().join("layer");
    std::fs::write(&file, common::xorshift_bytes(30, size)).unwrap();
    let root = nodes[0].add_file(&file).unwrap();
    mesh(&nodes.iter().collect::<Vec<_>>()).unwrap();

    let started = Instant::now();
    let results: Vec<(Result<String, String>, Duration)> = std::thread::scope(|s| {
        let pins: Vec<_> = nodes[1..]
            .iter()
            .map(|n| {
                let root = &root;
                s.spawn(move || {
                    let t = Instant::now();
                    (n.rpc(&format!("pin/add?arg={root}")), t.elapsed())
                })
            })
            .collect();
        pins.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let all = started.elapsed();
    for (i, (result, took)) in results.iter().enumerate() {
        let n = &nodes[i + 1];
        assert!(result.is_ok(), "node {} failed after {took:?}: {result:?}\n{}", i + 1, n.log_text());
        eprintln!("node {} pinned {} MiB in {:.2} s", i + 1, size >> 20, took.as_secs_f64());
    }
    // Every node holds the file, byte for byte.
    for n in &nodes[1..] {
        let out = dir.path().join(format!("cat{}", n.member));
        n.curl(&["-X", "POST", "-o", &out.display().to_string(), &format!("http://127.0.0.1:{}/api/v0/cat?arg={root}&offline=true", common::lab::LAB_RPC)]).unwrap();
        assert_eq!(common::sha256(&std::fs::read(&out).unwrap()), common::sha256(&std::fs::read(&file).unwrap()), "node {}", n.member);
    }
    traffic_is_shared(&nodes, size as u64, all);
}

/// Node 0 held `size` bytes the others all fetched at once, in `all`: the others passed
/// blocks on to each other (not only node 0 to each of them), and together they received at
/// most 1.15 times what they needed.
fn traffic_is_shared(nodes: &[LabNode], size: u64, all: Duration) {
    let sent: Vec<u64> = nodes.iter().map(|n| n.bitswap_stat("DataSent")).collect();
    let received: u64 = nodes[1..].iter().map(|n| n.bitswap_stat("DataReceived") + n.bitswap_stat("DupDataReceived")).sum();
    let duplicates: Vec<u64> = nodes[1..].iter().map(|n| n.bitswap_stat("DupDataReceived") >> 20).collect();
    let needed = (nodes.len() as u64 - 1) * size;
    eprintln!(
        "all in {:.2} s; node 0 sent {:.2}x the file, the others {:?} MiB; received {:.3}x what was needed (duplicates {duplicates:?} MiB)",
        all.as_secs_f64(),
        sent[0] as f64 / size as f64,
        sent[1..].iter().map(|s| s >> 20).collect::<Vec<_>>(),
        received as f64 / needed as f64
    );
    assert!(sent[1..].iter().sum::<u64>() > 0, "the nodes passed nothing on to each other: {sent:?}");
    assert!(received as f64 <= 1.15 * needed as f64, "the nodes received {received} bytes for {needed} needed");
}

/// Origin M trusts replica V (and V trusts M); V pins M's private layer by its CID, over a slow
/// link. Stranger S, connected to V alone, asks V for the layer's blocks while V fetches them
/// and after: V never gives S one (V would have given S a block V holds publicly, the control),
/// nor does V's gateway serve the layer.
#[test]
fn a_private_layer_fetched_by_a_trusted_replica_never_reaches_a_stranger() {
    let Some(lab) = lab(3) else { return };
    // M's uplink slow: V's fetch lasts seconds.
    lab.shape(0, Some(24), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut m, mut v, s) = (start(&lab, dir.path(), 0, &[]), start(&lab, dir.path(), 1, &[]), start(&lab, dir.path(), 2, &[]));
    m.restart_with(&["--trusted-peer", &v.peer_id.clone()]).unwrap();
    v.restart_with(&["--trusted-peer", &m.peer_id.clone()]).unwrap();

    // A private layer on M: pushed to a repository nobody made public.
    let layer = dir.path().join("layer");
    std::fs::write(&layer, common::xorshift_bytes(31, 12 << 20)).unwrap();
    let digest = common::sha256(&std::fs::read(&layer).unwrap());
    let api = |path: &str| format!("http://127.0.0.1:{LAB_API}{path}");
    m.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", layer.display()),
        &api(&format!("/v2/secret/app/blobs/uploads/?digest={digest}")),
    ])
    .unwrap();
    let head = m.curl(&["-I", &api(&format!("/v2/secret/app/blobs/{digest}"))]).unwrap();
    let root = head.lines().find(|l| l.to_ascii_lowercase().starts_with("ipfs-cid:")).and_then(|l| l.split_once(':')).expect("the blob's root CID").1.trim().to_string();
    let ls: serde_json::Value = serde_json::from_str(&m.rpc(&format!("ls?arg={root}")).unwrap()).unwrap();
    let mut blocks: Vec<String> = ls["Objects"][0]["Links"].as_array().unwrap().iter().map(|l| l["Hash"].as_str().unwrap().to_string()).collect();
    blocks.insert(0, root.clone());
    assert!(blocks.len() > 10, "{ls}");

    // The control: a block V holds publicly does reach S this way.
    let public = dir.path().join("public");
    std::fs::write(&public, b"V's own public file").unwrap();
    let public_cid = v.add_file(&public).unwrap();

    v.rpc(&format!("swarm/connect?arg={}", m.swarm_addr())).unwrap();
    s.rpc(&format!("swarm/connect?arg={}", v.swarm_addr())).unwrap();
    let control = s.rpc(&format!("block/get?arg={public_cid}")).unwrap();
    assert!(control.contains("V's own public file"), "the control: S gets V's public block: {control:?}");
    let baseline = s.bitswap_stat("DataReceived");

    let stranger_asks = |when: &str| {
        for cid in blocks.iter().step_by(3) {
            let got = s.curl(&["-X", "POST", "--max-time", "5", &format!("http://127.0.0.1:{}/api/v0/block/get?arg={cid}", common::lab::LAB_RPC)]);
            assert!(got.is_err(), "{when}: S got block {cid} of M's private layer from V");
        }
    };
    std::thread::scope(|scope| {
        let pin = scope.spawn(|| v.rpc(&format!("pin/add?arg={root}")));
        let mut rounds = 0;
        while !pin.is_finished() {
            stranger_asks("during V's fetch");
            rounds += 1;
        }
        let pinned = pin.join().unwrap();
        assert!(pinned.is_ok(), "V's pin failed: {pinned:?}\n{}", v.log_text());
        assert!(rounds >= 1, "S asked during the fetch");
    });
    stranger_asks("after V's fetch");
    assert_eq!(s.bitswap_stat("DataReceived"), baseline, "S received bytes from V");
    // V's gateway does not serve it either, and V's own operator reads it whole.
    let gateway = v.curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{LAB_GATEWAY}/ipfs/{root}")]);
    assert!(gateway.is_err() || gateway.as_deref() != Ok("200"), "V's gateway served the private layer: {gateway:?}");
    let out = dir.path().join("whole");
    v.curl(&["-X", "POST", "-o", &out.display().to_string(), &format!("http://127.0.0.1:{}/api/v0/cat?arg={root}&offline=true", common::lab::LAB_RPC)]).unwrap();
    assert_eq!(common::sha256(&std::fs::read(&out).unwrap()), digest);
}

/// Two seeds hold the file, three nodes pin it at once, and one seed is killed a second and a
/// half in (about half-way): every pin completes from the other seed and from each other.
#[test]
fn a_seed_killed_half_way_leaves_every_pin_complete() {
    let Some(lab) = lab(5) else { return };
    lab.shape_all(100).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<LabNode> = (0..5).map(|i| start(&lab, dir.path(), i, &[])).collect();
    let file = dir.path().join("layer");
    std::fs::write(&file, common::xorshift_bytes(32, 32 << 20)).unwrap();
    let root = nodes[0].add_file(&file).unwrap();
    assert_eq!(nodes[1].add_file(&file).unwrap(), root);
    mesh(&nodes.iter().collect::<Vec<_>>()).unwrap();
    let mut victim = nodes.remove(0);
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let pins: Vec<_> = nodes[1..].iter().map(|n| s.spawn(|| n.rpc(&format!("pin/add?arg={root}")))).collect();
        std::thread::sleep(Duration::from_millis(1500));
        let unfinished = pins.iter().filter(|p| !p.is_finished()).count();
        victim.kill();
        assert_eq!(unfinished, 3, "the pins were done before the seed was killed: the test shows nothing");
        pins.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "node {} failed: {r:?}\n{}", i + 2, nodes[i + 1].log_text());
    }
    for n in &nodes[1..] {
        let out = dir.path().join(format!("cat{}", n.member));
        n.curl(&["-X", "POST", "-o", &out.display().to_string(), &format!("http://127.0.0.1:{}/api/v0/cat?arg={root}&offline=true", common::lab::LAB_RPC)]).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap(), "node {}", n.member);
    }
}

/// Four nodes share one PostgreSQL; a layer of a private repository is pushed to one of them,
/// and the three others are asked for it through the OCI API at once (as `docker pull` of a new
/// image does in a rollout), over 100 Mbit/s links: every node streams it whole and
/// byte-identical (pull-through from peers), the three pass blocks to each other while they
/// pull (not only the holder to each of them), and all of them together receive at most 1.15
/// times what they needed. A stranger (a node of its own) connected to a puller asks it for
/// the layer's blocks meanwhile and after, and never gets one.
#[test]
fn three_nodes_pull_a_layer_only_one_holds_through_the_oci_api_at_once() {
    let Some(lab) = lab(5) else { return };
    lab.shape_all(100).unwrap();
    let db = SharedDb::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<LabNode> = (0..4).map(|i| start(&lab, dir.path(), i, &["--database-url", &db.url])).collect();
    let stranger = start(&lab, dir.path(), 4, &[]);
    let size = 32 << 20;
    let file = dir.path().join("layer");
    std::fs::write(&file, common::xorshift_bytes(33, size)).unwrap();
    let digest = nodes[0].push_blob("fleet/app", &file).unwrap();
    let head = nodes[0].curl(&["-I", &format!("http://127.0.0.1:{LAB_API}/v2/fleet/app/blobs/{digest}")]).unwrap();
    let root = head.lines().find(|l| l.to_ascii_lowercase().starts_with("ipfs-cid:")).and_then(|l| l.split_once(':')).expect("the blob's root CID").1.trim().to_string();
    let ls: serde_json::Value = serde_json::from_str(&nodes[0].rpc(&format!("ls?arg={root}")).unwrap()).unwrap();
    let mut blocks: Vec<String> = ls["Objects"][0]["Links"].as_array().unwrap().iter().map(|l| l["Hash"].as_str().unwrap().to_string()).collect();
    blocks.insert(0, root.clone());
    stranger.rpc(&format!("swarm/connect?arg={}", nodes[1].swarm_addr())).unwrap();
    let stranger_asks = |when: &str| {
        for cid in blocks.iter().step_by(8) {
            let got = stranger.curl(&["-X", "POST", "--max-time", "2", &format!("http://127.0.0.1:{}/api/v0/block/get?arg={cid}", common::lab::LAB_RPC)]);
            assert!(got.is_err(), "{when}: the stranger got block {cid} of a private layer");
        }
    };
    // Every node knows the others (heartbeats, then the shared change counter).
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let results: Vec<(Result<(), String>, Duration)> = std::thread::scope(|s| {
        let pulls: Vec<_> = nodes[1..]
            .iter()
            .map(|n| {
                let (digest, out) = (&digest, dir.path().join(format!("pulled{}", n.member)));
                s.spawn(move || {
                    let t = Instant::now();
                    (n.get_blob("fleet/app", digest, &out), t.elapsed())
                })
            })
            .collect();
        let mut rounds = 0;
        while pulls.iter().any(|p| !p.is_finished()) {
            stranger_asks("during the pulls");
            rounds += 1;
        }
        assert!(rounds >= 1, "the stranger asked during the pulls");
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    stranger_asks("after the pulls");
    assert_eq!(stranger.bitswap_stat("DataReceived"), 0, "the stranger received bytes");
    let all = started.elapsed();
    for (i, (result, took)) in results.iter().enumerate() {
        let n = &nodes[i + 1];
        assert!(result.is_ok(), "node {} failed after {took:?}: {result:?}\n{}", n.member, n.log_text());
        let pulled = std::fs::read(dir.path().join(format!("pulled{}", n.member))).unwrap();
        assert_eq!(common::sha256(&pulled), digest, "node {}", n.member);
        eprintln!("node {} pulled {} MiB in {:.2} s", n.member, size >> 20, took.as_secs_f64());
    }
    traffic_is_shared(&nodes, size as u64, all);
    // Published on each: served from its own store afterwards.
    for n in &nodes[1..] {
        let again = dir.path().join(format!("again{}", n.member));
        n.get_blob("fleet/app", &digest, &again).unwrap();
        assert_eq!(std::fs::read(&again).unwrap().len(), size);
    }
}
