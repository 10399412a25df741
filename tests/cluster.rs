//! IPFS Cluster (built from the vendored source by scripts/install-test-deps.sh) drives our nodes
//! through their Kubo-compatible RPC, as it drives Kubo: three of our nodes, each with its own
//! SQLite, behind three `ipfs-cluster-service` peers (CRDT consensus, re-pinning on) on 127.0.0.x.

mod common;
use common::images::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One `ipfs-cluster-service` peer in front of one node's RPC, stopped when dropped.
struct ClusterPeer {
    child: Option<Child>,
    dir: PathBuf,
    id: String,
    /// The REST API, as ipfs-cluster-ctl's `--host` takes it.
    api: String,
    /// Its cluster swarm address, with its peer ID.
    addr: String,
}

const SECRET: &str = "5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5";

impl ClusterPeer {
    /// Configures a peer on `ip` for the node whose RPC is at `rpc`.
    fn init(root: &Path, name: &str, ip: &str, rpc: std::net::SocketAddr) -> ClusterPeer {
        let dir = root.join(name);
        run(Command::new("ipfs-cluster-service").arg("-c").arg(&dir).args(["init", "--consensus", "crdt"]));
        let identity: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("identity.json")).unwrap()).unwrap();
        let id = identity["id"].as_str().unwrap().to_string();
        let port = |_: &str| free_addr().port();
        let (swarm, api, proxy, pinsvc) = (port("swarm"), port("api"), port("proxy"), port("pinsvc"));
        let path = dir.join("service.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let rpc = format!("/ip4/127.0.0.1/tcp/{}", rpc.port());
        c["cluster"]["peername"] = name.into();
        c["cluster"]["secret"] = SECRET.into();
        c["cluster"]["listen_multiaddress"] = serde_json::json!([format!("/ip4/{ip}/tcp/{swarm}")]);
        c["cluster"]["disable_repinning"] = false.into();
        c["cluster"]["monitor_ping_interval"] = "1s".into();
        c["cluster"]["peer_watch_interval"] = "1s".into();
        c["cluster"]["state_sync_interval"] = "5s".into();
        c["cluster"]["pin_recover_interval"] = "5s".into();
        c["cluster"]["mdns_interval"] = "0s".into();
        c["monitor"]["pubsubmon"]["check_interval"] = "1s".into();
        for informer in ["disk", "pinqueue", "tags"] {
            c["informer"][informer]["metric_ttl"] = "3s".into();
        }
        c["api"]["restapi"]["http_listen_multiaddress"] = format!("/ip4/{ip}/tcp/{api}").into();
        c["api"]["ipfsproxy"]["listen_multiaddress"] = format!("/ip4/{ip}/tcp/{proxy}").into();
        c["api"]["ipfsproxy"]["node_multiaddress"] = rpc.clone().into();
        c["api"]["pinsvcapi"]["http_listen_multiaddress"] = format!("/ip4/{ip}/tcp/{pinsvc}").into();
        c["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = rpc.into();
        c["ipfs_connector"]["ipfshttp"]["connect_swarms_delay"] = "1s".into();
        c["ipfs_connector"]["ipfshttp"]["pin_timeout"] = "30s".into();
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        ClusterPeer { child: None, dir, id: id.clone(), api: format!("/ip4/{ip}/tcp/{api}"), addr: format!("/ip4/{ip}/tcp/{swarm}/p2p/{id}") }
    }

    /// Starts it knowing the `others`' addresses.
    fn start(&mut self, others: &[String]) {
        let path = self.dir.join("service.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        c["cluster"]["peer_addresses"] = serde_json::json!(others);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        let log = std::fs::File::create(self.dir.join("service.log")).unwrap();
        let child = Command::new("ipfs-cluster-service")
            .arg("-c")
            .arg(&self.dir)
            .arg("daemon")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ipfs-cluster-service (scripts/install-test-deps.sh builds it)");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    fn ctl(&self) -> Command {
        let mut c = Command::new("ipfs-cluster-ctl");
        c.args(["--host", &self.api, "--enc", "json"]);
        c
    }

    /// The cluster's status of `cid`: each cluster peer's ID with its status (`pinned`, ...).
    fn status(&self, cid: &str) -> Vec<(String, String)> {
        let out = self.ctl().args(["status", cid]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peer_map"].as_object().map(|m| m.iter().map(|(p, s)| (p.clone(), s["status"].as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default()
    }
}

impl Drop for ClusterPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `len` bytes no two chunks of which are alike.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Waits for `what` (checked every 250 ms) for up to `secs` seconds.
fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn rpc(node: &Node, call: &str) -> reqwest::blocking::Response {
    client().post(format!("http://{}/api/v0/{call}", node.rpc)).send().unwrap()
}

fn image_cid(node: &Node, repo: &str) -> String {
    let r = client().head(node.url(&format!("/v2/{repo}/manifests/t"))).header("Accept", OCI_MANIFEST).send().unwrap();
    r.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string()
}

fn pinned(node: &Node, cid: &str) -> bool {
    rpc(node, &format!("pin/ls?arg={cid}&type=recursive&stream=true")).status().is_success()
}

/// skopeo pulls `repo:t` from `node`: the same blobs as `layout`.
fn pulls_same_image(node: &Node, repo: &str, layout: &Path, into: &Path) {
    let out = skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{}/{repo}:t", node.host())).arg(format!("oci:{}:t", into.display())).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), node.log_text());
    assert_same_blobs(layout, into, "t");
}

/// An image pushed to A and pinned in the cluster on A and B (replication factor 2): B fetches it
/// over the swarm and serves it to skopeo; A and its cluster peer die; the cluster re-pins it on
/// C, which fetches it from B and serves it too. A private image of A pinned the same way never
/// reaches B, which A does not trust: B's pin fails and B knows nothing of it.
#[test]
fn the_cluster_keeps_an_image_on_two_nodes_and_replaces_a_dead_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::start_with(&["--swarm", "/ip4/127.0.0.2/tcp/0"]);
    let b = Node::start_with(&["--swarm", "/ip4/127.0.0.3/tcp/0"]);
    let c = Node::start_with(&["--swarm", "/ip4/127.0.0.4/tcp/0"]);
    let layout = build_image(tmp.path());
    push_layout(&layout, &format!("{}/team/app:t", a.host()));
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/app", "public"]).arg("--data-dir").arg(&a.data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    push_layout(&layout, &format!("{}/team/secret:t", a.host()));
    let (public, private) = (image_cid(&a, "team/app"), image_cid(&a, "team/secret"));

    let mut peers: Vec<ClusterPeer> =
        [(&a, "pa", "127.0.0.2"), (&b, "pb", "127.0.0.3"), (&c, "pc", "127.0.0.4")].iter().map(|(n, name, ip)| ClusterPeer::init(tmp.path(), name, ip, n.rpc)).collect();
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let others: Vec<String> = addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
        p.start(&others);
    }
    let logs = |peers: &[ClusterPeer]| peers.iter().map(|p| format!("--- {}\n{}", p.id, p.log())).collect::<Vec<_>>().join("\n");
    wait_for(60, "three cluster peers, each with its node", || {
        let out = peers[1].ctl().args(["peers", "ls"]).output().unwrap();
        let ids: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout).into_iter().filter_map(Result::ok).collect();
        ids.len() == 3 && ids.iter().all(|i| i["error"] == "" && i["ipfs"]["error"] == "" && i["ipfs"]["id"].as_str().is_some_and(|s| !s.is_empty()))
    }, || logs(&peers));

    // Allocation needs every peer's free-space metric (from our nodes' repo/stat), spread by pubsub.
    wait_for(60, "every peer's free-space metric", || {
        let out = peers[0].ctl().args(["health", "metrics", "freespace"]).output().unwrap();
        let metrics: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout).into_iter().filter_map(Result::ok).collect();
        let metrics: Vec<&serde_json::Value> = metrics.iter().flat_map(|m| m.as_array().cloned().unwrap_or_else(|| vec![m.clone()])).collect::<Vec<_>>().leak().iter().collect();
        metrics.iter().filter(|m| m["valid"] == true).count() >= 3
    }, || logs(&peers));
    let (pa, pb, pc) = (peers[0].id.clone(), peers[1].id.clone(), peers[2].id.clone());
    let pin = peers[0].ctl().args(["pin", "add", "--rmin", "2", "--rmax", "2", "--allocations", &format!("{pa},{pb}"), "--wait", "--wait-timeout", "2m", &public]).output().unwrap();
    assert!(pin.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&pin.stdout), String::from_utf8_lossy(&pin.stderr), logs(&peers));
    wait_for(60, "the image pinned on A and B", || pinned(&a, &public) && pinned(&b, &public), || logs(&peers));
    assert!(!pinned(&c, &public), "C holds no replica yet");
    pulls_same_image(&b, "team/app", &layout, &tmp.path().join("from-b"));
    assert!(b.log_text().contains("a pinned image is served"), "{}", b.log_text());

    // The private image: A serves it to nobody it does not trust, so B's pin cannot complete.
    let pin = peers[0].ctl().args(["pin", "add", "--rmin", "2", "--rmax", "2", "--allocations", &format!("{pa},{pb}"), &private]).output().unwrap();
    assert!(pin.status.success(), "{}", String::from_utf8_lossy(&pin.stderr));
    wait_for(60, "B's pin of the private image to fail", || peers[0].status(&private).iter().any(|(p, s)| *p == pb && s.contains("error")), || logs(&peers));
    assert!(!pinned(&b, &private));
    assert_eq!(client().get(b.url("/v2/team/secret/manifests/t")).send().unwrap().status(), 404);
    assert!(!rpc(&b, &format!("block/get?arg={private}&offline=true")).status().is_success(), "a private block reached an untrusted node");

    // A dies with its cluster peer: the cluster re-pins the public image on C, from B.
    peers[0].stop();
    a.kill9();
    wait_for(120, "the image re-pinned on C", || pinned(&c, &public), || format!("{}\n--- node C\n{}", logs(&peers[1..]), c.log_text()));
    wait_for(30, "the cluster to count C's replica", || peers[1].status(&public).iter().any(|(p, s)| *p == pc && s == "pinned"), || logs(&peers[1..]));
    pulls_same_image(&c, "team/app", &layout, &tmp.path().join("from-c"));
    pulls_same_image(&b, "team/app", &layout, &tmp.path().join("from-b-again"));
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
    let raw = client().post(format!("http://{}/api/v0/pin/add?arg={cid}&progress=true", node.rpc)).send().unwrap();
    let lines: Vec<serde_json::Value> = raw.text().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["Pins"], serde_json::json!([cid]), "{lines:?}");
    assert!(lines.last().unwrap()["Progress"].as_u64().unwrap() >= 3, "every block walked is counted: {lines:?}");

    let listed = ok(ipfs(&["pin", "ls", "--stream", "--type", "recursive", &cid]));
    assert_eq!(listed, format!("{cid} recursive"));
    let other = ok(ipfs(&["add", "-Q", "--cid-version=1", "--pin=false", "--only-hash", "/etc/hostname"]));
    let not_pinned = ipfs(&["pin", "ls", "--type", "recursive", &other]);
    assert!(!not_pinned.status.success() && String::from_utf8_lossy(&not_pinned.stderr).trim_end().ends_with("not pinned"), "{}", String::from_utf8_lossy(&not_pinned.stderr));
    let r = client().post(format!("http://{}/api/v0/pin/ls?arg={other}&type=recursive&stream=true", node.rpc)).send().unwrap();
    assert_eq!(r.status(), 500);
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
    let mut peer = ClusterPeer::init(tmp.path(), "solo", "127.0.0.1", node.rpc);
    let path = peer.dir.join("service.json");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let proxy = config["api"]["ipfsproxy"]["listen_multiaddress"].as_str().unwrap().to_string();
    peer.start(&[]);
    wait_for(30, "the cluster peer", || peer.ctl().arg("id").output().unwrap().status.success(), || peer.log());
    wait_for(30, "its free-space metric", || String::from_utf8_lossy(&peer.ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).contains("\"valid\": true"), || peer.log());
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
