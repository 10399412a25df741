//! `cargo bench --bench cluster` (needs IPFS Cluster, Kubo, skopeo: scripts/install-test-deps.sh):
//! replication through IPFS Cluster, in one run:
//! - four of our nodes behind four cluster peers (127.0.0.2-5); an image of `AF_BENCH_MIB` MiB
//!   (default 1024, four layers) pushed to A, kept on A alone (`--replicas 1`); then its
//!   repository set to three replicas: the time until two more nodes hold it whole, against the
//!   time one fresh node takes to copy the same image once over the swarm (`pin/add` from A,
//!   measured first). Target: at most 1.5x.
//! - the same image on three Kubo 0.42 daemons behind a cluster of their own: imported into the
//!   first (`dag import`), then pinned with three replicas; the time until the other two hold it,
//!   against one fresh Kubo daemon's `ipfs pin add` of it from the first.
//! - the CPU every copy took (user + system time of the nodes involved, over wall time): how much
//!   of the two cores one copy already keeps busy bounds what a second one at once can gain.
//! - one of our holders killed with its cluster peer: the time until the fourth node holds it.

#[allow(dead_code)]
#[path = "../tests/common/cluster_peer.rs"]
mod cluster_peer;
mod common;

use cluster_peer::ClusterPeer;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `ok` every 200 ms for up to `secs`: the seconds it took.
fn wait(secs: u64, what: &str, mut ok: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed().as_secs_f64()
}

/// User + system CPU seconds `pids` have used so far (`/proc/<pid>/stat`).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick: f64 = String::from_utf8_lossy(&Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout).trim().parse().unwrap_or(100.0);
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name (which may hold spaces): utime and stime are 12th and 13th.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        })
        .sum::<f64>()
        / tick
}

fn post(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "-X", "POST", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One of our nodes: its swarm on `ip`, its RPC on `rpc`, in front of the cluster API `cluster`.
fn start_node(dir: &Path, ip: &str, rpc: u16, cluster: Option<&str>) -> (Proc, String) {
    let mut serve = Serve::new(dir).set("--replicas", "1").set("--rpc", &format!("127.0.0.1:{rpc}")).set("--swarm", &format!("/ip4/{ip}/tcp/0")).log_to(&dir.with_extension("log"));
    if let Some(url) = cluster {
        serve = serve.set("--cluster-api", url);
    }
    let node = serve.spawn();
    (node.proc, node.api)
}

/// A Kubo daemon with no routing (it fetches from the peers it is connected to): the process, its
/// repository and its API port.
fn start_kubo(repo: &Path) -> (Proc, u16) {
    let ipfs = || {
        let mut c = Command::new("ipfs");
        c.env("IPFS_PATH", repo).env("IPFS_TELEMETRY", "off");
        c
    };
    assert!(ipfs().args(["init", "--empty-repo", "--profile", "test"]).stdout(Stdio::null()).status().unwrap().success());
    assert!(ipfs().args(["config", "--json", "Routing.Type", "\"none\""]).status().unwrap().success());
    let log = repo.with_extension("log");
    let daemon = Proc(ipfs().arg("daemon").stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null()).spawn().unwrap());
    wait(60, "Kubo's daemon", || std::fs::read_to_string(&log).unwrap_or_default().contains("Daemon is ready"));
    let api = std::fs::read_to_string(repo.join("api")).unwrap();
    (daemon, api.trim().rsplit('/').next().unwrap().parse().unwrap())
}

/// Each peer's status of `cid`, from the REST API (lighter than a process per poll: every poll
/// makes every peer ask its node).
fn statuses(peer: &ClusterPeer, cid: &str) -> Vec<(String, String)> {
    let out = Command::new("curl").args(["-s", &format!("{}/pins/{cid}", peer.url)]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["peer_map"].as_object().map(|m| m.iter().map(|(p, s)| (p.clone(), s["status"].as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default()
}

fn pinned(peer: &ClusterPeer, cid: &str) -> usize {
    statuses(peer, cid).iter().filter(|(_, s)| s == "pinned").count()
}

/// Starts every peer knowing the others, and waits until each one's free-space metric is in.
fn start_cluster(peers: &mut [ClusterPeer]) {
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let others: Vec<String> = addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
        p.start(&others);
    }
    let n = peers.len();
    wait(90, "every cluster peer's metric", || {
        String::from_utf8_lossy(&peers[0].ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).matches("\"valid\": true").count() >= n
    });
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mib: u64 = std::env::var("AF_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cluster");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = build_layout(&dir.join("layout"), 4, mib / 4);
    let mb = bytes as f64 / 1e6;

    // Our four nodes and their cluster; the image on A alone.
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let rpcs: Vec<u16> = ips.iter().map(|_| free_port()).collect();
    let mut peers: Vec<ClusterPeer> = ips.iter().enumerate().map(|(i, ip)| ClusterPeer::init(&dir, &format!("p{i}"), ip, rpcs[i])).collect();
    let mut nodes: Vec<Option<(Proc, String)>> = ips.iter().enumerate().map(|(i, ip)| Some(start_node(&dir.join(format!("node{i}")), ip, rpcs[i], Some(&peers[i].url)))).collect();
    start_cluster(&mut peers);
    let host = nodes[0].as_ref().unwrap().1.clone();
    let a_data = dir.join("node0");
    assert!(Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "bench/app", "public", "--data-dir"]).arg(&a_data).status().unwrap().success());
    let pushed = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:t", dir.join("layout").display()))
        .arg(format!("docker://{host}/bench/app:t"))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let head = Command::new("curl").args(["-sI", "-H", "Accept: application/vnd.oci.image.manifest.v1+json", &format!("http://{host}/v2/bench/app/manifests/t")]).output().unwrap();
    let cid = String::from_utf8_lossy(&head.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ipfs-image-cid: ").or(l.strip_prefix("Ipfs-Image-Cid: ")).map(|c| c.trim().to_string()))
        .expect("an image CID");
    wait(60, "the image pinned on A", || pinned(&peers[0], &cid) == 1);

    // The reference: one fresh node copies it once over the swarm.
    let r_rpc = free_port();
    let (reference, _) = start_node(&dir.join("reference"), "127.0.0.6", r_rpc, None);
    let node_pids = |nodes: &[Option<(Proc, String)>]| nodes.iter().flatten().map(|(p, _)| p.0.id()).collect::<Vec<u32>>();
    let copy_pids = [node_pids(&nodes[..1]), vec![reference.0.id()]].concat();
    let id: serde_json::Value = serde_json::from_str(&post(&format!("http://127.0.0.1:{}/api/v0/id", rpcs[0]))).unwrap();
    let a_addr = id["Addresses"].as_array().unwrap().iter().filter_map(|v| v.as_str()).find(|s| s.starts_with("/ip4/127.0.0.2/tcp/")).unwrap().to_string();
    post(&format!("http://127.0.0.1:{r_rpc}/api/v0/swarm/connect?arg={a_addr}"));
    settle();
    let (t, cpu) = (Instant::now(), cpu_seconds(&copy_pids));
    let out = post(&format!("http://127.0.0.1:{r_rpc}/api/v0/pin/add?arg={cid}"));
    let copy = t.elapsed().as_secs_f64();
    let copy_cores = (cpu_seconds(&copy_pids) - cpu) / copy;
    assert!(out.contains(&cid), "the reference copy failed: {out}");

    // Three replicas: the cluster brings two more nodes a copy each.
    settle();
    let all_pids = node_pids(&nodes);
    let (t, cpu) = (Instant::now(), cpu_seconds(&all_pids));
    assert!(Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "replicas", "bench/app", "3", "--data-dir"]).arg(&a_data).stdout(Stdio::null()).status().unwrap().success());
    let mut first_replica = None;
    let mut started = None;
    wait(600, "three replicas", || {
        let status = statuses(&peers[0], &cid);
        if started.is_none() && status.iter().filter(|(_, s)| s == "pinning" || s == "pinned").count() >= 3 {
            started = Some(t.elapsed().as_secs_f64());
        }
        let n = status.iter().filter(|(_, s)| s == "pinned").count();
        if n >= 2 && first_replica.is_none() {
            first_replica = Some(t.elapsed().as_secs_f64());
        }
        n == 3
    });
    let replicate = t.elapsed().as_secs_f64();
    let replicate_cores = (cpu_seconds(&all_pids) - cpu) / replicate;
    let (started, first_replica) = (started.unwrap_or(replicate), first_replica.unwrap_or(replicate));

    // A holder other than A dies: the fourth node takes its place.
    let holders: Vec<String> = statuses(&peers[0], &cid).into_iter().filter(|(_, s)| s == "pinned").map(|(p, _)| p).collect();
    let victim = (1..4).find(|i| holders.contains(&peers[*i].id)).unwrap();
    let t = Instant::now();
    peers[victim].stop();
    nodes[victim] = None;
    wait(600, "a replacement replica", || pinned(&peers[0], &cid) == 3 && !statuses(&peers[0], &cid).iter().any(|(p, s)| *p == peers[victim].id && s == "pinned"));
    let rereplicate = t.elapsed().as_secs_f64();

    // Kubo: the same image, imported into the first of three daemons, then pinned three times.
    let car = dir.join("image.car");
    assert!(Command::new("curl").args(["-s", "-X", "POST", "-o"]).arg(&car).arg(format!("http://127.0.0.1:{}/api/v0/dag/export?arg={cid}", rpcs[0])).status().unwrap().success());
    drop(nodes);
    drop(peers);
    let kubos: Vec<(Proc, u16)> = (0..3).map(|i| start_kubo(&dir.join(format!("kubo{i}")))).collect();
    let kubo_cli = |i: usize| {
        let mut c = Command::new("ipfs");
        c.env("IPFS_PATH", dir.join(format!("kubo{i}"))).env("IPFS_TELEMETRY", "off");
        c
    };
    let secret = "c0ffee".repeat(10) + "c0ff";
    let kips = ["127.0.0.7", "127.0.0.8", "127.0.0.9"];
    let mut kpeers: Vec<ClusterPeer> = kubos.iter().enumerate().map(|(i, (_, port))| ClusterPeer::init_in(&dir, &format!("k{i}"), kips[i], *port, &secret)).collect();
    start_cluster(&mut kpeers);
    let imported = kubo_cli(0).args(["dag", "import"]).arg(&car).output().unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));

    // Kubo's one copy: a fourth daemon, outside the cluster, pins it from the first.
    let (kubo_copy, kubo_copy_cores) = {
        let fresh = start_kubo(&dir.join("kubo3"));
        let addrs = String::from_utf8_lossy(&kubo_cli(0).args(["id", "-f", "<addrs>"]).output().unwrap().stdout).into_owned();
        let addr = addrs.lines().find(|a| a.contains("/tcp/") && !a.contains("/ws")).expect("a TCP address of Kubo").to_string();
        assert!(kubo_cli(3).args(["swarm", "connect", &addr]).stdout(Stdio::null()).status().unwrap().success());
        settle();
        let pids = [kubos[0].0 .0.id(), fresh.0 .0.id()];
        let (t, cpu) = (Instant::now(), cpu_seconds(&pids));
        assert!(kubo_cli(3).args(["pin", "add", &cid]).stdout(Stdio::null()).status().unwrap().success());
        let copy = t.elapsed().as_secs_f64();
        (copy, (cpu_seconds(&pids) - cpu) / copy)
    };
    let first = kpeers[0].id.clone();
    settle();
    let kubo_pids: Vec<u32> = kubos.iter().map(|(p, _)| p.0.id()).collect();
    let (t, cpu) = (Instant::now(), cpu_seconds(&kubo_pids));
    let pin = kpeers[0].ctl().args(["pin", "add", "--rmin", "3", "--rmax", "3", "--allocations", &first, &cid]).output().unwrap();
    assert!(pin.status.success(), "{}", String::from_utf8_lossy(&pin.stderr));
    wait(900, "three Kubo replicas", || pinned(&kpeers[0], &cid) == 3);
    let kubo = t.elapsed().as_secs_f64();
    let kubo_cores = (cpu_seconds(&kubo_pids) - cpu) / kubo;
    drop(kpeers);
    drop(kubos);

    println!("image of {mb:.0} MB (four layers) on 127.0.0.x loopback");
    println!("one copy over the swarm (pin/add on a fresh node): {copy:.2} s, {:.0} MB/s, {copy_cores:.2} cores busy", mb / copy);
    println!("two more replicas through IPFS Cluster (replicas 1 -> 3): {replicate:.2} s, {replicate_cores:.2} cores busy; /one copy {:.2} (target <= 1.5)", replicate / copy);
    println!("  both replicas pinning after {started:.2} s, the first one done after {first_replica:.2} s");
    println!("Kubo 0.42, one copy (ipfs pin add on a fresh daemon): {kubo_copy:.2} s, {:.0} MB/s, {kubo_copy_cores:.2} cores busy", mb / kubo_copy);
    println!("three Kubo 0.42 daemons, two more replicas: {kubo:.2} s, {kubo_cores:.2} cores busy; /one Kubo copy {:.2}; ours/Kubo {:.2}", kubo / kubo_copy, replicate / kubo);
    println!("a holder killed: a replacement replica after {rereplicate:.2} s (failure detection included)");
    let _ = std::fs::remove_dir_all(&dir);
}
