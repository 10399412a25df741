//! IPFS Cluster (built from the vendored source by scripts/install-test-deps.sh) drives our nodes
//! through their Kubo-compatible RPC, as it drives Kubo: three of our nodes, each with its own
//! SQLite, behind three `ipfs-cluster-service` peers (CRDT consensus, re-pinning on) on 127.0.0.x.

mod common;
use common::cluster_peer::ClusterPeer;
use common::images::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `len` bytes no two chunks of which are alike.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(seed, len)
}

/// Waits for `what` (checked every 250 ms) for up to `secs` seconds.
fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether every peer sees every peer's valid free-space metric. Metrics travel by the same
/// pubsub as the pinset: a peer that sees them all hears the others, so a pin made next reaches
/// it (a peer that saw only its own once never learned of a pin allocated to it).
fn metrics_everywhere(peers: &[ClusterPeer]) -> bool {
    peers.iter().all(|p| String::from_utf8_lossy(&p.ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).matches("\"valid\": true").count() >= peers.len())
}

fn pinned(node: &Node, cid: &str) -> bool {
    node.rpc_post(&format!("pin/ls?arg={cid}&type=recursive&stream=true")).status().is_success()
}

/// skopeo pulls `repo:t` from `node`: the same blobs as `layout`.
fn pulls_same_image(node: &Node, repo: &str, layout: &Path, into: &Path) {
    let out = skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{}/{repo}:t", node.host())).arg(format!("oci:{}:t", into.display())).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), node.log_text());
    assert_same_blobs(layout, into, "t");
}

/// Three nodes with `--cluster-api`, each behind its cluster peer; A trusts B. A public image
/// pushed to A is pinned by A's registry with two replicas (A first): the other replica fetches
/// it over the swarm and serves it to skopeo, public there too. A private image goes to A and B
/// only and stays private on B. `af registry info` shows the replication. A dies with its cluster
/// peer: the cluster re-pins the public image on the third node, which fetches it from the
/// surviving replica and serves it; the private image never reaches C.
#[test]
fn the_cluster_keeps_each_image_on_two_nodes_and_replaces_a_dead_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let ports: Vec<u16> = (0..3).map(|_| free_addr().port()).collect();
    let mut peers: Vec<ClusterPeer> = ["pa", "pb", "pc"].iter().enumerate().map(|(i, name)| ClusterPeer::init(tmp.path(), name, ips[i], ports[i])).collect();
    let start = |i: usize, extra: &[&str]| {
        let (swarm, rpc) = (format!("/ip4/{}/tcp/0", ips[i]), format!("127.0.0.1:{}", ports[i]));
        let mut args = vec!["--swarm", &swarm, "--rpc", &rpc, "--cluster-api", &peers[i].url, "--gc-grace", "5s"];
        args.extend_from_slice(extra);
        Node::start_with(&args)
    };
    let b = start(1, &[]);
    let b_id = b.rpc_post("id").json::<serde_json::Value>().unwrap()["ID"].as_str().unwrap().to_string();
    let a = start(0, &["--trusted-peer", &b_id]);
    let c = start(2, &[]);
    let mut nodes = vec![a, b, c];
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let others: Vec<String> = addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
        p.start(&others);
    }
    let logs = |peers: &[ClusterPeer], nodes: &[Node]| {
        let cluster = peers.iter().map(|p| format!("--- {}\n{}", p.id, p.log())).collect::<Vec<_>>().join("\n");
        let nodes = nodes.iter().map(|n| format!("--- node {}\n{}", n.host(), n.log_text())).collect::<Vec<_>>().join("\n");
        format!("{cluster}\n{nodes}")
    };
    wait_for(
        60,
        "three cluster peers, each with its node",
        || {
            let out = peers[1].ctl().args(["peers", "ls"]).output().unwrap();
            let ids: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout).into_iter().filter_map(Result::ok).collect();
            ids.len() == 3 && ids.iter().all(|i| i["error"] == "" && i["ipfs"]["error"] == "" && i["ipfs"]["id"].as_str().is_some_and(|s| !s.is_empty()))
        },
        || logs(&peers, &nodes),
    );
    // Allocation needs every peer's free-space metric (from our nodes' repo/stat), spread by pubsub.
    wait_for(60, "every peer's free-space metric", || metrics_everywhere(&peers), || logs(&peers, &nodes));
    let pinned_on = |peer: &ClusterPeer, cid: &str| peer.status(cid).into_iter().filter(|(_, s)| s == "pinned").map(|(p, _)| p).collect::<Vec<String>>();
    let index_of = |cluster_id: &str| peers.iter().position(|p| p.id == cluster_id).unwrap();

    // The public image: its repository made public first, then pushed; A's registry pins it.
    let layout = build_image(tmp.path());
    make_public(&nodes[0], "team/app");
    push_layout(&layout, &format!("{}/team/app:t", nodes[0].host()));
    let public = image_cid(&nodes[0], "team/app", "t");
    wait_for(90, "two replicas of the public image", || pinned_on(&peers[1], &public).len() == 2, || logs(&peers, &nodes));
    let holders = pinned_on(&peers[1], &public);
    assert!(holders.contains(&peers[0].id), "A's own peer holds a replica: {holders:?}");
    let other = index_of(holders.iter().find(|h| **h != peers[0].id).unwrap());
    let spare = 3 - other;
    assert!(&nodes[other].log_text().contains("a pinned image is served"), "{}", &nodes[other].log_text());
    pulls_same_image(&nodes[other], "team/app", &layout, &tmp.path().join("from-replica"));
    let anonymous = client().get(nodes[other].gateway_url(&format!("/ipfs/{public}/index.json"))).send().unwrap();
    assert_eq!(anonymous.status(), 200, "the replica of a public image is public");
    assert!(!pinned(&nodes[spare], &public));

    let info =
        Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "info", &format!("{}/team/app:t", nodes[0].host()), "--json", "--cluster-api", &peers[0].url]).output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["replication"]["complete"], true, "{info}");
    assert_eq!(info["replication"]["replicas"], 2, "{info}");
    let text = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "info", &format!("{}/team/app:t", nodes[0].host()), "--cluster-api", &peers[0].url]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("Replication: 2 of 2 nodes"), "{}", String::from_utf8_lossy(&text.stdout));

    // The private image: on A and B (trusted) only, and private on B.
    push_layout(&layout, &format!("{}/team/secret:t", nodes[0].host()));
    let private = image_cid(&nodes[0], "team/secret", "t");
    wait_for(90, "the private image on A and B", || pinned(&nodes[0], &private) && pinned(&nodes[1], &private), || logs(&peers, &nodes));
    for path in ["", "/index.json", "/oci-layout"] {
        assert_eq!(client().get(nodes[1].gateway_url(&format!("/ipfs/{private}{path}"))).send().unwrap().status(), 404, "private on B: {path}");
    }
    assert!(!pinned(&nodes[2], &private));

    // A dies with its cluster peer: the public image is re-pinned on the spare node, from the
    // surviving replica; the private one never reaches C.
    peers[0].stop();
    nodes[0].kill9();
    wait_for(120, "the public image re-pinned on the spare node", || pinned(&nodes[spare], &public), || logs(&peers[1..], &nodes[1..]));
    wait_for(30, "the cluster to count it", || pinned_on(&peers[1], &public).contains(&peers[spare].id), || logs(&peers[1..], &nodes[1..]));
    pulls_same_image(&nodes[spare], "team/app", &layout, &tmp.path().join("from-spare"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!pinned(&nodes[2], &private), "a private image reached an untrusted node");
    assert!(!nodes[2].rpc_post(&format!("block/get?arg={private}&offline=true")).status().is_success(), "a private block reached an untrusted node");
}

/// What IPFS Cluster's `ipfshttp` connector asks of the RPC, answered in Kubo's shapes and read
/// back by Kubo's own CLI: `pin add --progress`, `pin ls --stream` (and one CID that is not
/// pinned: "not pinned"), `pin rm` of what is not pinned ("not pinned or pinned indirectly"),
/// `pin update`, `repo stat --size-only` with `--storage-max`, `repo gc`, `resolve`; and the
/// Cluster's own proxy API in front of the RPC: `ipfs add` through it puts the blocks on the
/// node with `block/put` (several per request) and pins them in the cluster.
#[test]
fn the_rpc_answers_as_clusters_connector_and_proxy_expect() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&["--storage-max", "5GB", "--gc-grace", "0s"]);
    let kubo = Kubo::new();
    let api = format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port());
    let ipfs = |args: &[&str]| kubo.cmd().args(["--api", &api]).args(args).output().unwrap();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let file = tmp.path().join("f.bin");
    std::fs::write(&file, noise(3_000_000, 1)).unwrap();
    let cid = ok(ipfs(&["add", "-Q", "--cid-version=1", "--pin=false", file.to_str().unwrap()]));

    // pin add with progress: Kubo's CLI reads the stream and says it pinned.
    let said = ok(ipfs(&["pin", "add", "--progress", &cid]));
    assert!(said.contains(&format!("pinned {cid} recursively")), "{said}");
    let raw = node.rpc_post(&format!("pin/add?arg={cid}&progress=true"));
    let lines: Vec<serde_json::Value> = raw.text().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["Pins"], serde_json::json!([cid]), "{lines:?}");
    assert!(lines.last().unwrap()["Progress"].as_u64().unwrap() >= 3, "every block walked is counted: {lines:?}");

    let listed = ok(ipfs(&["pin", "ls", "--stream", "--type", "recursive", &cid]));
    assert_eq!(listed, format!("{cid} recursive"));
    let other = ok(ipfs(&["add", "-Q", "--cid-version=1", "--pin=false", "--only-hash", "/etc/hostname"]));
    let not_pinned = ipfs(&["pin", "ls", "--type", "recursive", &other]);
    assert!(!not_pinned.status.success() && String::from_utf8_lossy(&not_pinned.stderr).trim_end().ends_with("not pinned"), "{}", String::from_utf8_lossy(&not_pinned.stderr));
    let r = node.rpc_post(&format!("pin/ls?arg={other}&type=recursive&stream=true"));
    assert_eq!(r.status(), 400);
    assert!(r.json::<serde_json::Value>().unwrap()["Message"].as_str().unwrap().ends_with("not pinned"));
    let rm = ipfs(&["pin", "rm", &other]);
    assert!(String::from_utf8_lossy(&rm.stderr).contains("not pinned or pinned indirectly"), "{}", String::from_utf8_lossy(&rm.stderr));

    // pin update: the new DAG pinned, the old one unpinned.
    let file2 = tmp.path().join("g.bin");
    std::fs::write(&file2, b"the next version").unwrap();
    let cid2 = ok(ipfs(&["add", "-Q", "--cid-version=1", "--pin=false", file2.to_str().unwrap()]));
    let updated = ok(ipfs(&["pin", "update", &cid, &cid2]));
    assert!(updated.contains(&cid2), "{updated}");
    let pins = ok(ipfs(&["pin", "ls", "--type", "recursive"]));
    assert!(pins.contains(&cid2) && !pins.contains(&cid), "{pins}");

    // repo stat: StorageMax from --storage-max; repo gc removes what nothing pins any more.
    let stat = ok(ipfs(&["repo", "stat", "--size-only", "--enc", "json"]));
    let stat: serde_json::Value = serde_json::from_str(&stat).unwrap();
    assert_eq!(stat["StorageMax"], 5_000_000_000u64);
    assert!(stat["RepoSize"].as_u64().unwrap() > 3_000_000, "{stat}");
    std::thread::sleep(Duration::from_millis(1100));
    let gc = ok(ipfs(&["repo", "gc"]));
    assert!(gc.lines().any(|l| l.contains(&cid)), "the unpinned file's root is among what repo gc removed: {gc}");
    assert!(!ipfs(&["block", "stat", "--offline", &cid]).status.success());
    assert!(ipfs(&["block", "stat", "--offline", &cid2]).status.success(), "the pinned DAG stays");
    assert_eq!(ok(ipfs(&["resolve", &format!("/ipfs/{cid2}")])), format!("/ipfs/{cid2}"));

    // Cluster's proxy in front of the RPC: `ipfs add` through it.
    let mut peer = ClusterPeer::init(tmp.path(), "solo", "127.0.0.1", node.rpc.port());
    let path = peer.dir.join("service.json");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let proxy = config["api"]["ipfsproxy"]["listen_multiaddress"].as_str().unwrap().to_string();
    peer.start(&[]);
    wait_for(30, "the cluster peer", || peer.ctl().arg("id").output().unwrap().status.success(), || peer.log());
    wait_for(
        30,
        "its free-space metric",
        || String::from_utf8_lossy(&peer.ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).contains("\"valid\": true"),
        || peer.log(),
    );
    let file3 = tmp.path().join("h.bin");
    std::fs::write(&file3, noise(2_500_000, 3)).unwrap();
    let via_proxy = kubo.cmd().args(["--api", &proxy, "add", "-Q", "--cid-version=1", file3.to_str().unwrap()]).output().unwrap();
    assert!(via_proxy.status.success(), "{}\n{}", String::from_utf8_lossy(&via_proxy.stderr), peer.log());
    let cid3 = String::from_utf8_lossy(&via_proxy.stdout).trim().to_string();
    assert_eq!(cid3, ok(kubo.cmd().args(["add", "-Q", "--cid-version=1", "--only-hash", file3.to_str().unwrap()]).output().unwrap()), "the CID Kubo gives the file");
    wait_for(30, "the cluster's pin", || peer.status(&cid3).iter().any(|(_, s)| s == "pinned"), || peer.log());
    let cat = ipfs(&["cat", &cid3]);
    assert_eq!(cat.stdout, std::fs::read(&file3).unwrap(), "the node holds what was added through the proxy");
    let cat = kubo.cmd().args(["--api", &proxy, "cat", &cid3]).output().unwrap();
    assert_eq!(cat.stdout, std::fs::read(&file3).unwrap(), "reads pass through the proxy");
}

/// Without a cluster: a node A trusts pins A's private image by CID after reading part of it
/// through its RPC (which keeps what it fetched). The image is served by its registry, in a
/// private repository, and nothing of it reaches the gateway until that repository is made
/// public. Unpinning removes the tag the pin gave; a tag the node had elsewhere stays.
#[test]
fn a_private_image_pinned_on_a_trusted_node_stays_private_there() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Node::start_with(&["--swarm", "/ip4/127.0.0.3/tcp/0"]);
    let b_id = b.rpc_post("id").json::<serde_json::Value>().unwrap()["ID"].as_str().unwrap().to_string();
    let a = Node::start_with(&["--swarm", "/ip4/127.0.0.2/tcp/0", "--trusted-peer", &b_id]);
    let layout = build_image(tmp.path());
    push_layout(&layout, &format!("{}/team/secret:t", a.host()));
    push_layout(&layout, &format!("{}/team/secret:v2", a.host()));
    let private = image_cid(&a, "team/secret", "t");
    let addr = loopback_addr(&a);
    assert!(b.rpc_post(&format!("swarm/connect?arg={addr}")).status().is_success());
    // B already has a tag v2 of its own in that repository, on another image.
    let mut other = build_image(&tmp.path().join("other").tap_mkdir());
    other.pop();
    let other_layout = other.join("oci");
    std::fs::write(other.join("hello.sh"), "#!/bin/sh\necho other\n").unwrap();
    run(Command::new("umoci").args(["insert", "--image", &format!("{}:t", other_layout.display())]).arg(other.join("hello.sh")).arg("/hello.sh"));
    push_layout(&other_layout, &format!("{}/team/secret:v2", b.host()));
    let b_v2 = client().head(b.url("/v2/team/secret/manifests/v2")).header("Accept", OCI_MANIFEST).send().unwrap().headers()["Docker-Content-Digest"].to_str().unwrap().to_string();

    let read = b.rpc_post(&format!("cat?arg={private}/index.json"));
    assert!(read.status().is_success(), "{}", read.text().unwrap());
    let pin = b.rpc_post(&format!("pin/add?arg={private}"));
    assert!(pin.status().is_success(), "{}", pin.text().unwrap());
    for path in ["", "/index.json", "/oci-layout"] {
        assert_eq!(client().get(b.gateway_url(&format!("/ipfs/{private}{path}"))).send().unwrap().status(), 404, "{path}");
    }
    pulls_same_image(&b, "team/secret", &layout, &tmp.path().join("pulled"));
    // A's v2 pinned on B, where v2 names another image: B's tag stays, the pin says so.
    let r = client().head(a.url("/v2/team/secret/manifests/v2")).header("Accept", OCI_MANIFEST).send().unwrap();
    let private_v2 = r.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string();
    let pin = b.rpc_post(&format!("pin/add?arg={private_v2}"));
    assert!(pin.status().is_success(), "{}", pin.text().unwrap());
    let v2 = client().head(b.url("/v2/team/secret/manifests/v2")).header("Accept", OCI_MANIFEST).send().unwrap().headers()["Docker-Content-Digest"].to_str().unwrap().to_string();
    assert_eq!(v2, b_v2, "the pin did not move B's own tag");
    let listed: serde_json::Value = b.rpc_post("pin/ls?type=recursive").json().unwrap();
    assert_eq!(listed["Keys"][&private]["Name"], "team/secret:t", "{listed}");
    let name = listed["Keys"][&private_v2]["Name"].as_str().unwrap().to_string();
    assert!(name.starts_with("tag conflict: team/secret:v2"), "{name}");
    assert!(b.log_text().contains("a pinned image would move a tag"));

    make_public(&b, "team/secret");
    wait_for(10, "the image public on B", || client().get(b.gateway_url(&format!("/ipfs/{private}/index.json"))).send().unwrap().status() == 200, || b.log_text());

    assert!(b.rpc_post(&format!("pin/rm?arg={private}")).status().is_success());
    assert_eq!(client().head(b.url("/v2/team/secret/manifests/t")).send().unwrap().status(), 404, "the tag the pin gave went with it");
    assert_eq!(client().head(b.url("/v2/team/secret/manifests/v2")).header("Accept", OCI_MANIFEST).send().unwrap().headers()["Docker-Content-Digest"].to_str().unwrap(), b_v2);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// A mixed cluster: our node and a Kubo daemon, each behind its cluster peer. A public image
/// pushed to our node is pinned with two replicas: Kubo fetches it from our node over Bitswap and
/// holds every block (its offline `dag export` is ours, byte for byte).
#[test]
fn kubo_holds_a_replica_in_a_mixed_cluster() {
    use common::kubo_daemon::KuboDaemon;
    let tmp = tempfile::tempdir().unwrap();
    let kubo = KuboDaemon::start();
    let kubo_api = std::fs::read_to_string(kubo.kubo.path().join("api")).unwrap();
    let kubo_port: u16 = kubo_api.trim().rsplit('/').next().unwrap().parse().unwrap();
    let port = free_addr().port();
    let mut peers = [ClusterPeer::init(tmp.path(), "pa", "127.0.0.2", port), ClusterPeer::init(tmp.path(), "pk", "127.0.0.5", kubo_port)];
    let (swarm, rpc_addr) = ("/ip4/127.0.0.2/tcp/0".to_string(), format!("127.0.0.1:{port}"));
    let a = Node::start_with(&["--swarm", &swarm, "--rpc", &rpc_addr, "--cluster-api", &peers[0].url]);
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    peers[0].start(&addrs[1..]);
    peers[1].start(&addrs[..1]);
    // What Kubo saw: its peers, what it still wants, what its cluster peer says of the pins.
    let kubo_view = || {
        let out = |args: &[&str]| String::from_utf8_lossy(&kubo.ipfs(args).stdout).into_owned();
        format!(
            "--- Kubo's peers\n{}--- Kubo's wantlist\n{}--- Kubo's cluster peer's pins\n{}",
            out(&["swarm", "peers"]),
            out(&["bitswap", "wantlist"]),
            String::from_utf8_lossy(&peers[1].ctl().args(["status"]).output().unwrap().stdout)
        )
    };
    let logs = || format!("{}\n{}\n--- node\n{}\n{}", peers[0].log(), peers[1].log(), a.log_text(), kubo_view());
    wait_for(60, "both peers' free-space metrics", || metrics_everywhere(&peers), logs);
    let layout = build_image(tmp.path());
    make_public(&a, "team/app");
    push_layout(&layout, &format!("{}/team/app:t", a.host()));
    let cid = image_cid(&a, "team/app", "t");
    // Kubo finds content only at the peers it is connected to (no routing here); Cluster's
    // connector connects them once, at its start, so the test makes sure of it.
    let a_addr = a.rpc_json("id")["Addresses"][0].as_str().unwrap().to_string();
    assert!(kubo.ipfs(&["swarm", "connect", &a_addr]).status.success());
    // Kubo's cluster peer takes the pin from ours through the CRDT: once in CI (four tests at
    // once) its fetch of the delta hung for IPFS Cluster's two minutes (`DAGSyncerTimeout`), as
    // in the compromised-peer test below; the wait covers the retry on the next rebroadcast.
    wait_for(240, "the image pinned on our node and on Kubo", || peers[0].status(&cid).iter().filter(|(_, s)| s == "pinned").count() == 2, logs);
    let ours = a.rpc_post(&format!("dag/export?arg={cid}&offline=true")).bytes().unwrap();
    let theirs = kubo.ipfs(&["dag", "export", "--offline", &cid]);
    assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stderr));
    assert!(theirs.stdout == ours.to_vec(), "Kubo holds the image's DAG as our node has it");
}

/// A node whose only peer answers its wants with corrupted blocks: its pin never completes, and
/// the cluster never counts it; once the node can reach an honest holder, the cluster's retry
/// completes it.
#[test]
fn corrupted_blocks_never_make_a_replica() {
    use common::raw_peer::RawPeer;
    let tmp = tempfile::tempdir().unwrap();
    let holder = Node::start_with(&["--swarm", "/ip4/127.0.0.2/tcp/0"]);
    let layout = build_image(tmp.path());
    make_public(&holder, "team/app");
    push_layout(&layout, &format!("{}/team/app:t", holder.host()));
    let cid = image_cid(&holder, "team/app", "t");

    let port = free_addr().port();
    let mut peer = ClusterPeer::init(tmp.path(), "pb", "127.0.0.3", port);
    let rpc_addr = format!("127.0.0.1:{port}");
    let b = Node::start_with(&["--swarm", "/ip4/127.0.0.3/tcp/0", "--rpc", &rpc_addr, "--cluster-api", &peer.url]);
    peer.start(&[]);
    let logs = || format!("{}\n--- node\n{}", peer.log(), b.log_text());
    wait_for(
        60,
        "the peer's free-space metric",
        || String::from_utf8_lossy(&peer.ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).contains("\"valid\": true"),
        logs,
    );

    let b_addr = loopback_addr(&b);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut evil = rt.block_on(RawPeer::connect(&b_addr));
    let pin = peer.ctl().args(["pin", "add", "--rmin", "1", "--rmax", "1", "--metadata", "af-visibility=public", &cid]).output().unwrap();
    assert!(pin.status.success(), "{}", String::from_utf8_lossy(&pin.stderr));
    // Every want B sends, answered with bytes that hash to nothing it asked for.
    let answered = rt.block_on(async {
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, evil.messages.recv()).await {
            for entry in m.wantlist.map(|w| w.entries).unwrap_or_default().into_iter().filter(|e| !e.cancel) {
                let cid = cid::Cid::try_from(entry.block.as_slice()).unwrap();
                let block = af_registry::swarm::message::Block { prefix: af_registry::swarm::message::prefix(&cid), data: b"not the block you wanted".to_vec().into() };
                evil.send(&af_registry::swarm::message::Message { payload: vec![block], ..Default::default() }).await;
                answered += 1;
            }
        }
        answered
    });
    assert!(answered > 0, "B asked the corrupting peer for nothing: {}", logs());
    assert!(!pinned(&b, &cid));
    assert!(!peer.status(&cid).iter().any(|(_, s)| s == "pinned"), "a corrupted replica counted");
    assert!(b.log_text().contains("sent a block nobody asked for"), "{}", b.log_text());
    assert!(!b.rpc_post(&format!("dag/export?arg={cid}&offline=true")).status().is_success(), "the DAG is not whole from corrupted blocks");

    // An honest holder within reach: the cluster's retry completes the pin.
    let holder_addr = loopback_addr(&holder);
    assert!(b.rpc_post(&format!("swarm/connect?arg={holder_addr}")).status().is_success());
    wait_for(60, "the pin completed from the honest holder", || peer.status(&cid).iter().any(|(_, s)| s == "pinned"), logs);
    holds_same_dag(&b, &holder, &cid);
}

/// `node` holds `cid`'s whole DAG, byte for byte `holder`'s (an offline `dag/export` of each).
/// An unsigned cluster pin of an image is held, not served by the registry (SECURITY.md), so
/// the bytes are what there is to compare.
fn holds_same_dag(node: &Node, holder: &Node, cid: &str) {
    let export = |n: &Node| {
        let r = n.rpc_post(&format!("dag/export?arg={cid}&offline=true"));
        assert!(r.status().is_success(), "{}", n.log_text());
        sha256(&r.bytes().unwrap())
    };
    assert_eq!(export(node), export(holder));
}

/// A node killed in the middle of a pin the cluster gave it (a 256 MiB layer coming over the
/// swarm): restarted, it completes the pin when the cluster retries, fetching only what it had
/// not kept yet, and serves the image.
#[test]
fn a_node_restarted_mid_pin_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let holder = Node::start_with(&["--swarm", "/ip4/127.0.0.2/tcp/0"]);
    let dir = tmp.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let layout = dir.join("oci");
    let image = format!("{}:t", layout.display());
    std::fs::write(dir.join("big.bin"), noise(256 << 20, 7)).unwrap();
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci").args(["insert", "--image", &image]).arg(dir.join("big.bin")).arg("/big.bin"));
    std::fs::remove_file(dir.join("big.bin")).unwrap();
    make_public(&holder, "team/big");
    push_layout(&layout, &format!("{}/team/big:t", holder.host()));
    let cid = image_cid(&holder, "team/big", "t");
    let holder_addr = loopback_addr(&holder);

    let port = free_addr().port();
    let mut peer = ClusterPeer::init(tmp.path(), "pb", "127.0.0.3", port);
    let rpc_addr = format!("127.0.0.1:{port}");
    let mut b = Node::start_with(&["--swarm", "/ip4/127.0.0.3/tcp/0", "--rpc", &rpc_addr, "--cluster-api", &peer.url]);
    peer.start(&[]);
    wait_for(
        60,
        "the peer's free-space metric",
        || String::from_utf8_lossy(&peer.ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).contains("\"valid\": true"),
        || peer.log(),
    );
    assert!(b.rpc_post(&format!("swarm/connect?arg={holder_addr}")).status().is_success());
    let pin = peer.ctl().args(["pin", "add", "--rmin", "1", "--rmax", "1", "--metadata", "af-visibility=public", &cid]).output().unwrap();
    assert!(pin.status.success(), "{}", String::from_utf8_lossy(&pin.stderr));
    let stored = |b: &Node| b.rpc_post("repo/stat?size-only=true").json::<serde_json::Value>().ok().and_then(|v| v["RepoSize"].as_u64()).unwrap_or(0);
    wait_for(60, "part of the layer kept on B", || stored(&b) > 40 << 20, || b.log_text());
    assert!(!pinned(&b, &cid), "the pin finished before the kill: the layer is too small to catch it");
    b.kill9();
    let kept = {
        b.restart();
        stored(&b)
    };
    assert!(kept > 40 << 20, "what B kept before the kill survived it: {kept}");
    assert!(b.rpc_post(&format!("swarm/connect?arg={holder_addr}")).status().is_success());
    wait_for(90, "the cluster's retry to complete the pin", || peer.status(&cid).iter().any(|(_, s)| s == "pinned"), || format!("{}\n{}", peer.log(), b.log_text()));
    let received = b.rpc_post("bitswap/stat").json::<serde_json::Value>().unwrap()["BlocksReceived"].as_u64().unwrap();
    assert!(received < 230, "after the restart B fetched {received} blocks of ~260: it started over");
    holds_same_dag(&b, &holder, &cid);
}

/// The registry's pins follow its tags: `af registry replicas` sets a repository's replication
/// factor (the pin asks for what peers there are, at least, and wants the rest as they come); a
/// tag moved to another image unpins the old one after the grace period, not before; a manifest
/// deleted is unpinned at once.
#[test]
fn the_registry_pins_follow_its_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let mut peer = ClusterPeer::init(tmp.path(), "pa", "127.0.0.2", port);
    let rpc_addr = format!("127.0.0.1:{port}");
    let a = Node::start_with(&["--swarm", "/ip4/127.0.0.2/tcp/0", "--rpc", &rpc_addr, "--cluster-api", &peer.url, "--gc-grace", "4s"]);
    peer.start(&[]);
    wait_for(
        60,
        "the peer's free-space metric",
        || String::from_utf8_lossy(&peer.ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).contains("\"valid\": true"),
        || peer.log(),
    );
    let pin_of = |cid: &str| -> Option<serde_json::Value> {
        let out = peer.ctl().args(["pin", "ls", cid]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().filter(|v| v["cid"] == cid)
    };
    let layout = build_image(tmp.path());
    make_public(&a, "team/app");
    push_layout(&layout, &format!("{}/team/app:t", a.host()));
    let first = image_cid(&a, "team/app", "t");
    wait_for(30, "the image pinned", || pin_of(&first).is_some(), || a.log_text());
    let pin = pin_of(&first).unwrap();
    assert_eq!(pin["name"], "team/app:t", "{pin}");
    assert_eq!((pin["replication_factor_min"].as_i64(), pin["replication_factor_max"].as_i64()), (Some(1), Some(2)), "two wanted, one peer there: {pin}");
    assert_eq!(pin["metadata"]["af-repository"], "team/app");
    assert_eq!(pin["metadata"]["af-visibility"], "public");
    wait_for(30, "the node holds it", || pinned(&a, &first), || a.log_text());

    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "replicas", "team/app", "3"]).arg("--data-dir").arg(&a.data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(30, "the repository's replication factor", || pin_of(&first).is_some_and(|p| p["replication_factor_max"] == 3), || a.log_text());

    // The tag moves: the old image stays pinned for the grace period, then goes.
    let mut other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_layout = build_image(&other);
    other.push("hello.sh");
    std::fs::write(&other, "#!/bin/sh\necho moved\n").unwrap();
    run(Command::new("umoci").args(["insert", "--image", &format!("{}:t", other_layout.display())]).arg(&other).arg("/hello.sh"));
    push_layout(&other_layout, &format!("{}/team/app:t", a.host()));
    let moved = Instant::now();
    let second = image_cid(&a, "team/app", "t");
    assert_ne!(first, second);
    wait_for(30, "the new image pinned", || pin_of(&second).is_some(), || a.log_text());
    assert!(pin_of(&first).is_some(), "the old image is kept for the grace period");
    wait_for(40, "the old image unpinned", || pin_of(&first).is_none(), || a.log_text());
    assert!(moved.elapsed() >= Duration::from_secs(4), "unpinned before the grace period ended");

    // The manifest deleted: unpinned at once.
    let digest = client().head(a.url("/v2/team/app/manifests/t")).header("Accept", OCI_MANIFEST).send().unwrap().headers()["Docker-Content-Digest"].to_str().unwrap().to_string();
    assert_eq!(client().delete(a.url(&format!("/v2/team/app/manifests/{digest}"))).send().unwrap().status(), 202);
    wait_for(3, "the deleted image unpinned", || pin_of(&second).is_none(), || a.log_text());
}

/// An image layout like `build_image`'s, with `text` in a file of its own: layers no other test
/// image shares.
fn variant(tmp: &Path, name: &str, text: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let layout = build_image(&dir);
    std::fs::write(dir.join("variant.txt"), text).unwrap();
    run(Command::new("umoci").args(["insert", "--image", &format!("{}:t", layout.display())]).arg(dir.join("variant.txt")).arg("/variant.txt"));
    layout
}

/// What a compromised cluster peer can and cannot do to a node (SECURITY.md). V and M, each
/// behind its cluster peer; M trusts V. The cluster peer of M is the attacker: it can pin
/// anything with any metadata.
/// - M's registry pins its public image of a repository V made itself (`team/secret`): V holds
///   the bytes, but writes no tag into its own repository, and its private image stays private.
/// - The attacker pins V's own private image with metadata saying public (signature forged):
///   V holds it and serves nothing of it.
/// - M's private image is replicated to V (a trusted peer), private there. The attacker re-pins
///   it saying public, unsigned: nothing changes on V. M makes a public image private: V follows
///   M's signed claim; the attacker then replays M's older claim (public): V stays private.
#[test]
fn a_compromised_cluster_peer_makes_a_node_hold_bytes_never_publish_or_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let ips = ["127.0.0.5", "127.0.0.6"];
    let ports: Vec<u16> = (0..2).map(|_| free_addr().port()).collect();
    let mut peers: Vec<ClusterPeer> = ["pv", "pm"].iter().enumerate().map(|(i, name)| ClusterPeer::init(tmp.path(), name, ips[i], ports[i])).collect();
    let start = |i: usize, extra: &[&str]| {
        let (swarm, rpc) = (format!("/ip4/{}/tcp/0", ips[i]), format!("127.0.0.1:{}", ports[i]));
        let mut args = vec!["--swarm", &swarm, "--rpc", &rpc, "--cluster-api", &peers[i].url, "--replicas", "2"];
        args.extend_from_slice(extra);
        Node::start_with(&args)
    };
    let v = start(0, &[]);
    let v_id = v.rpc_post("id").json::<serde_json::Value>().unwrap()["ID"].as_str().unwrap().to_string();
    let m = start(1, &["--trusted-peer", &v_id]);
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        p.start(&[addrs[1 - i].clone()]);
    }
    // What a failure shows: the nodes' warnings and their pin traffic, not every request line
    // (a CI log keeps only the start and the end of a long output).
    let telling = |log: String| log.lines().filter(|l| !l.contains(" INFO ") || (l.contains("pin") && !l.contains("pin/ls"))).collect::<Vec<_>>().join("\n");
    let logs = || {
        format!(
            "--- V\n{}\n--- M\n{}\n--- V's cluster peer\n{}\n--- M's cluster peer\n{}",
            telling(v.log_text()),
            telling(m.log_text()),
            telling(peers[0].log()),
            telling(peers[1].log())
        )
    };
    wait_for(60, "both peers' free-space metrics", || metrics_everywhere(&peers), logs);
    let gateway = |node: &Node, path: &str| client().get(node.gateway_url(path)).send().unwrap().status().as_u16();
    let tags = |node: &Node, repo: &str| -> Vec<String> {
        let v: serde_json::Value = node.as_admin(client().get(node.url(&format!("/v2/{repo}/tags/list")))).send().unwrap().json().unwrap();
        v["tags"].as_array().map(|t| t.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let layer_of = |node: &Node, repo: &str| -> String {
        let manifest: serde_json::Value = node.as_admin(client().get(node.url(&format!("/v2/{repo}/manifests/t"))).header("Accept", OCI_MANIFEST)).send().unwrap().json().unwrap();
        let digest = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
        let r = node.as_admin(client().head(node.url(&format!("/v2/{repo}/blobs/{digest}")))).send().unwrap();
        r.headers()["Ipfs-Cid"].to_str().unwrap().to_string()
    };
    // The attacker's pin: any CID, any metadata, allocated to V.
    let forge = |cid: &str, meta: &[(&str, &str)]| {
        let mut cmd = peers[1].ctl();
        cmd.args(["pin", "add", "--allocations", &peers[0].id, "--rmin", "1", "--rmax", "1"]);
        for (k, val) in meta {
            cmd.args(["--metadata", &format!("{k}={val}")]);
        }
        let out = cmd.arg(cid).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let pin_meta = |cid: &str| -> serde_json::Value {
        let out = peers[1].ctl().args(["pin", "ls", cid]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()["metadata"].clone()
    };

    // V's own private image.
    let mine = variant(tmp.path(), "mine", "V's own");
    push_layout(&mine, &format!("{}/team/secret:t", v.host()));
    let secret_layer = layer_of(&v, "team/secret");
    let secret_image = image_cid(&v, "team/secret", "t");
    assert_eq!(gateway(&v, &format!("/ipfs/{secret_layer}")), 404);

    // M's public image in a repository of the same name, tagged from-cluster.
    let theirs = variant(tmp.path(), "theirs", "M's");
    make_public(&m, "team/secret");
    run(skopeo().args(["copy", "--dest-tls-verify=false"]).arg(format!("oci:{}:t", theirs.display())).arg(format!("docker://{}/team/secret:from-cluster", m.host())));
    let injected = image_cid(&m, "team/secret", "from-cluster");
    // The first pin V's cluster peer takes from M's: once in CI its fetch of M's CRDT delta hung
    // for IPFS Cluster's two minutes (`DAGSyncerTimeout`, "error getting root delta priority");
    // the peer tries again on the next rebroadcast, so the wait covers a second try.
    wait_for(240, "V holds M's image", || pinned(&v, &injected), logs);
    assert_eq!(tags(&v, "team/secret"), ["t"], "a cluster pin wrote a tag into V's own repository");
    assert!(v.log_text().contains("a cluster pin may not write into it"), "{}", v.log_text());

    // The attacker pins V's private image saying public, with a forged signature.
    forge(&secret_image, &[("af-repository", "team/secret"), ("af-visibility", "public"), ("af-node", &v_id), ("af-stamp", "1"), ("af-signature", &"ab".repeat(64))]);
    wait_for(60, "V pins its own image for the attacker", || pinned(&v, &secret_image), logs);
    std::thread::sleep(Duration::from_secs(12));
    for path in [format!("/ipfs/{secret_layer}"), format!("/ipfs/{secret_image}/index.json")] {
        assert_eq!(gateway(&v, &path), 404, "{path} became readable on V");
    }

    // M's private image, replicated to V (trusted), private there; the attacker says public.
    let private = variant(tmp.path(), "private", "M's private");
    push_layout(&private, &format!("{}/shared/private:t", m.host()));
    let private_image = image_cid(&m, "shared/private", "t");
    let private_layer = layer_of(&m, "shared/private");
    wait_for(120, "V holds M's private image", || pinned(&v, &private_image) && tags(&v, "shared/private") == ["t"], logs);
    assert_eq!(gateway(&v, &format!("/ipfs/{private_layer}")), 404);
    let mut meta: Vec<(String, String)> = pin_meta(&private_image).as_object().unwrap().iter().map(|(k, val)| (k.clone(), val.as_str().unwrap().to_string())).collect();
    for (k, val) in meta.iter_mut() {
        if k == "af-visibility" {
            *val = "public".into();
        }
    }
    forge(&private_image, &meta.iter().map(|(k, val)| (k.as_str(), val.as_str())).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(gateway(&v, &format!("/ipfs/{private_layer}")), 404, "an unsigned claim made a replica public");

    // M's public image, replicated public; M makes it private (V follows); the attacker replays
    // M's older, signed, public claim.
    let open = variant(tmp.path(), "open", "M's open");
    make_public(&m, "shared/open");
    push_layout(&open, &format!("{}/shared/open:t", m.host()));
    let open_image = image_cid(&m, "shared/open", "t");
    let open_layer = layer_of(&m, "shared/open");
    wait_for(120, "V serves M's public image", || gateway(&v, &format!("/ipfs/{open_layer}")) == 200, logs);
    let old_claim = pin_meta(&open_image);
    assert_eq!(old_claim["af-visibility"], "public");
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "shared/open", "private"]).arg("--data-dir").arg(&m.data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(60, "V follows M's signed claim", || gateway(&v, &format!("/ipfs/{open_layer}")) == 404, logs);
    let replay: Vec<(String, String)> = old_claim.as_object().unwrap().iter().map(|(k, val)| (k.clone(), val.as_str().unwrap().to_string())).collect();
    forge(&open_image, &replay.iter().map(|(k, val)| (k.as_str(), val.as_str())).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(gateway(&v, &format!("/ipfs/{open_layer}")), 404, "a replayed claim made a replica public again");
}
