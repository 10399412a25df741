//! `cargo bench --bench fleet`: a fleet pulling one public layer at once over real links. Nodes
//! run in network namespaces of a lab (`tests/common/lab.rs`), every link shaped with `tbf` to
//! 100 Mbit/s both ways (`AF_BENCH_LINK_MBIT`). Each pull is an RPC `pin/add` of the layer's
//! CID (256 MiB, `AF_BENCH_SIZE_MIB`), the nodes fully meshed. In the same run, on the same
//! links: af-registry and Kubo (`~/go/bin/ipfs`, when installed), each figure printed beside the
//! link's limit, measured first with one HTTP stream (`python3 -m http.server` and curl).
//!
//! Cases: one seed → one node; one seed → N nodes at once (`AF_BENCH_FLEET`, 8): the slowest
//! against one node alone, the bytes all nodes sent against what they needed, peak RSS per node;
//! four seeds → one node whose own link is unshaped; two seeds → N nodes with one seed killed
//! half-way (af-registry only); `docker pull` (skopeo) of one image at N nodes sharing one
//! PostgreSQL (`AF_TEST_POSTGRES_URL`, as the tests) where one node holds it, against one node
//! pulling it alone (af-registry only); IPFS Cluster keeping an image (`AF_BENCH_CLUSTER_MIB`,
//! 1024 MiB) on three nodes (`--replicas 3`) against one copy (af-registry only).
//! `AF_BENCH_CASES` picks some (pin, four, killed, docker, cluster). Needs root (the lab).

#[allow(dead_code)]
#[path = "../tests/common/cluster_peer.rs"]
mod cluster_peer;
#[path = "../tests/common/lab.rs"]
mod lab;

use lab::{mesh, Lab, LabNode};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Which node software a case runs.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Af,
    Kubo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Af => "af-registry",
            Kind::Kubo => "Kubo",
        }
    }
}

struct Bench {
    lab: Lab,
    dir: tempfile::TempDir,
    file: PathBuf,
    size: u64,
    kubo: Option<PathBuf>,
    runs: usize,
}

fn kubo_bin() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = Path::new(&home).join("go/bin/ipfs");
    if p.exists() {
        return Some(p);
    }
    Command::new("ipfs").arg("version").output().ok().filter(|o| o.status.success()).map(|_| PathBuf::from("ipfs"))
}

impl Bench {
    /// Counts a new run, and removes the last run's data (unless `AF_BENCH_KEEP` is set): every
    /// run leaves nine nodes' copies of the layer, and the whole bench's filled this machine's disk.
    fn next_run(&mut self) {
        if self.runs > 0 && std::env::var("AF_BENCH_KEEP").is_err() {
            let _ = std::fs::remove_dir_all(self.dir.path().join(format!("run{}", self.runs)));
        }
        self.runs += 1;
    }

    /// Starts `kind` in each of `members`, each on a fresh data directory.
    fn start(&mut self, kind: Kind, members: &[usize]) -> Vec<LabNode> {
        self.next_run();
        members
            .iter()
            .map(|&i| {
                let dir = self.dir.path().join(format!("run{}/n{i}", self.runs));
                match kind {
                    Kind::Af => self.lab.start_af(i, Path::new(env!("CARGO_BIN_EXE_af")), &dir, &[]),
                    Kind::Kubo => self.lab.start_kubo(i, self.kubo.as_deref().expect("Kubo is installed"), &dir),
                }
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// The seeds hold the layer (af-registry: pushed to a public repository; Kubo: `add` with
    /// the same 1 MiB chunks); everyone is connected to everyone.
    fn prepare(&self, kind: Kind, seeds: &[&LabNode], all: &[&LabNode]) -> String {
        let mut cid = String::new();
        let file = self.file.display().to_string();
        for s in seeds {
            cid = match kind {
                Kind::Af => s.push_public_layer(Path::new(env!("CARGO_BIN_EXE_af")), "fleet/layer", &self.file),
                Kind::Kubo => s
                    .curl(&[
                        "-X",
                        "POST",
                        "-F",
                        &format!("file=@{file}"),
                        &format!("http://127.0.0.1:{}/api/v0/add?cid-version=1&raw-leaves=true&chunker=size-1048576", lab::LAB_RPC),
                    ])
                    .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).map_err(|e| e.to_string()))
                    .map(|v| v["Hash"].as_str().unwrap_or_default().to_string()),
            }
            .unwrap_or_else(|e| panic!("{e}"));
        }
        mesh(all).unwrap_or_else(|e| panic!("{e}"));
        cid
    }

    /// The pulls of `cid` at `nodes`, all at once: each one's time, or its failure; `during`
    /// runs meanwhile (given how long since the start).
    fn pull_all(&self, nodes: &[&LabNode], cid: &str, during: impl Fn(Duration) + Sync) -> Vec<Result<Duration, String>> {
        let started = Instant::now();
        std::thread::scope(|s| {
            let pulls: Vec<_> = nodes.iter().map(|n| s.spawn(move || n.rpc(&format!("pin/add?arg={cid}")).map(|_| started.elapsed()))).collect();
            while pulls.iter().any(|p| !p.is_finished()) {
                during(started.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            pulls.into_iter().map(|p| p.join().unwrap()).collect()
        })
    }

    fn mib_s(&self, t: Duration) -> f64 {
        self.size as f64 / 1048576.0 / t.as_secs_f64()
    }
}

/// What one HTTP stream gets through a shaped link: member 0 serves the layer, member 1 reads it.
fn link_limit(b: &Bench) -> f64 {
    let mut server = b
        .lab
        .command(0, "python3")
        .args(["-m", "http.server", "9000", "--bind", &b.lab.members[0].ip, "--directory"])
        .arg(b.file.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    std::thread::sleep(Duration::from_millis(800));
    let url = format!("http://{}:9000/{}", b.lab.members[0].ip, b.file.file_name().unwrap().to_string_lossy());
    let out = b.lab.command(1, "curl").args(["-s", "-o", "/dev/null", "-w", "%{speed_download}", &url]).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap_or(0.0) / 1048576.0
}

fn one_to_one(b: &mut Bench, kind: Kind, limit: f64) -> Option<Duration> {
    let nodes = b.start(kind, &[0, 1]);
    let cid = b.prepare(kind, &[&nodes[0]], &[&nodes[0], &nodes[1]]);
    let t = b.pull_all(&[&nodes[1]], &cid, |_| {}).remove(0);
    match t {
        Ok(t) => {
            println!("{:<12} one seed → one node: {:>6.2} s, {:>6.2} MiB/s = {:>4.0}% of the link", kind.name(), t.as_secs_f64(), b.mib_s(t), 100.0 * b.mib_s(t) / limit);
            Some(t)
        }
        Err(e) => {
            println!("{:<12} one seed → one node: FAILED: {e}", kind.name());
            None
        }
    }
}

fn one_to_many(b: &mut Bench, kind: Kind, n: usize, alone: Option<Duration>) {
    let members: Vec<usize> = (0..=n).collect();
    let nodes = b.start(kind, &members);
    let all: Vec<&LabNode> = nodes.iter().collect();
    let cid = b.prepare(kind, &[all[0]], &all);
    let anon_peak = std::sync::Mutex::new(vec![0u64; n]);
    let results = b.pull_all(&all[1..], &cid, |_| {
        let mut peak = anon_peak.lock().unwrap();
        for (i, node) in all[1..].iter().enumerate() {
            peak[i] = peak[i].max(node.anon_kib().unwrap_or(0));
        }
    });
    let anon = anon_peak.into_inner().unwrap().into_iter().max().unwrap_or(0) >> 10;
    let times: Vec<f64> = results.iter().filter_map(|r| r.as_ref().ok()).map(|t| t.as_secs_f64()).collect();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let slowest = times.iter().cloned().fold(0.0, f64::max);
    let sent: Vec<u64> = nodes.iter().map(|n| n.bitswap_stat("DataSent")).collect();
    let duplicates: u64 = nodes[1..].iter().map(|n| n.bitswap_stat("DupDataReceived")).sum();
    let needed = n as f64 * b.size as f64;
    let rss: Vec<u64> = nodes[1..].iter().filter_map(|n| n.peak_rss_kib()).map(|k| k >> 10).collect();
    println!(
        "{:<12} one seed → {n} nodes at once: {}/{n} complete; slowest {:.2} s = {} one node alone; fastest {:.2} s",
        kind.name(),
        times.len(),
        slowest,
        alone.map(|a| format!("{:.2}x", slowest / a.as_secs_f64())).unwrap_or("?".into()),
        times.iter().cloned().fold(f64::MAX, f64::min),
    );
    println!(
        "{:<12}   bytes sent by all = {:.3}x what the {n} needed (the seed {:.2}x the layer, each other node {:.2}x on average; duplicates {} MiB); peak per node: RSS {} MiB (anonymous {anon} MiB)",
        "",
        sent.iter().sum::<u64>() as f64 / needed,
        sent[0] as f64 / b.size as f64,
        sent[1..].iter().sum::<u64>() as f64 / n as f64 / b.size as f64,
        duplicates >> 20,
        rss.iter().max().map(|m| m.to_string()).unwrap_or("?".into())
    );
    for e in failed.iter().take(3) {
        println!("{:<12}   a pull failed: {e}", "");
    }
}

fn four_to_one(b: &mut Bench, kind: Kind, limit: f64) {
    let link = env_or("AF_BENCH_LINK_MBIT", 100) as u32;
    b.lab.shape(4, None, None).unwrap();
    let nodes = b.start(kind, &[0, 1, 2, 3, 4]);
    let all: Vec<&LabNode> = nodes.iter().collect();
    let cid = b.prepare(kind, &all[..4], &all);
    let r = b.pull_all(&all[4..], &cid, |_| {}).remove(0);
    let sent: Vec<String> = nodes[..4].iter().map(|n| format!("{:.0}%", 100.0 * n.bitswap_stat("DataSent") as f64 / b.size as f64)).collect();
    match r {
        Ok(t) => println!(
            "{:<12} four seeds → one node (its link unshaped): {:.2} s, {:.2} MiB/s = {:.0}% of the four uplinks; each seed sent {}",
            kind.name(),
            t.as_secs_f64(),
            b.mib_s(t),
            100.0 * b.mib_s(t) / (4.0 * limit),
            sent.join(" ")
        ),
        Err(e) => println!("{:<12} four seeds → one node: FAILED: {e}", kind.name()),
    }
    b.lab.shape(4, Some(link), Some(link)).unwrap();
}

fn seed_killed(b: &mut Bench, n: usize, alone: Option<Duration>) {
    let members: Vec<usize> = (0..n + 2).collect();
    let mut nodes = b.start(Kind::Af, &members);
    let cid = {
        let all: Vec<&LabNode> = nodes.iter().collect();
        b.prepare(Kind::Af, &all[..2], &all)
    };
    let half = alone.unwrap_or(Duration::from_secs(20)) / 2;
    let victim = std::sync::Mutex::new(Some(nodes.remove(0)));
    let rest: Vec<&LabNode> = nodes.iter().collect();
    let results = b.pull_all(&rest[1..], &cid, |t| {
        if t >= half {
            if let Some(mut seed) = victim.lock().unwrap().take() {
                seed.kill();
            }
        }
    });
    let done = results.iter().filter(|r| r.is_ok()).count();
    let slowest = results.iter().filter_map(|r| r.as_ref().ok()).map(|t| t.as_secs_f64()).fold(0.0, f64::max);
    println!("{:<12} two seeds → {n} nodes, one seed killed at {:.1} s: {done}/{n} complete, slowest {slowest:.2} s", Kind::Af.name(), half.as_secs_f64());
    for e in results.iter().filter_map(|r| r.as_ref().err()).take(3) {
        println!("{:<12}   a pull failed: {e}", "");
    }
}

/// An OCI layout in `dir` holding image `t`: a small config and `layers` (files) as they are
/// (skopeo compresses them when it pushes them).
fn layout(dir: &Path, layers: &[&Path]) -> PathBuf {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> String {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        hex
    };
    let mut descriptors = Vec::new();
    for layer in layers {
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(layer).unwrap(), &mut hasher).unwrap();
        let hex = hex::encode(hasher.finalize());
        std::fs::copy(layer, blobs.join(&hex)).unwrap();
        let size = std::fs::metadata(layer).unwrap().len();
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{hex}"), "size": size}));
    }
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_hex = put(config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": descriptors,
    })
    .to_string();
    let manifest_hex = put(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_hex}"), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir.to_path_buf()
}

/// Writes `size` bytes that never repeat a block to `path`, a MiB at a time.
fn noise_file(path: &Path, size: u64, seed: u64) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9e3779b97f4a7c15 ^ seed.wrapping_mul(0x2545f4914f6cdd1d);
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut written = 0;
    while written < size {
        chunk.clear();
        while chunk.len() < (1 << 20) && written + (chunk.len() as u64) < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.truncate((size - written).min(chunk.len() as u64) as usize);
        out.write_all(&chunk).unwrap();
        written += chunk.len() as u64;
    }
    out.flush().unwrap();
}

/// `skopeo copy` in member `i`'s namespace, from `from` to `to`.
fn skopeo(b: &Bench, i: usize, from: &str, to: &str) -> Result<(), String> {
    let out = b
        .lab
        .command(i, "skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "-q", from, to])
        .output()
        .map_err(|e| format!("skopeo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("skopeo copy {from} {to}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `docker pull` of one image at `n` nodes at once (skopeo, through each node's OCI API) where
/// only one node holds it, the nodes sharing one PostgreSQL: the slowest against one node
/// pulling it alone (on fresh nodes and database, same links), every copy byte-identical.
fn registry_pulls(b: &mut Bench, n: usize) {
    let image = format!("docker://127.0.0.1:{}/fleet/app:t", lab::LAB_API);
    let oci = layout(&b.dir.path().join("oci"), &[&b.file]);
    // The layer as the registry holds it, the same for every node.
    let layer = std::sync::Mutex::new(None::<String>);
    // The pulling nodes' peak anonymous memory and peak RSS, in KiB.
    let (anon_peak, rss_peak) = (std::sync::Mutex::new(0u64), std::sync::Mutex::new(0u64));
    // Each puller's time or failure, and the bytes each node sent.
    type Pulled = (Vec<Result<Duration, String>>, Vec<u64>);
    let run = |b: &mut Bench, pullers: usize| -> Option<Pulled> {
        let db = match lab::SharedDb::new() {
            Ok(db) => db,
            Err(e) => {
                println!("{:<12} docker pull at N nodes: skipped: {e}", Kind::Af.name());
                return None;
            }
        };
        b.next_run();
        let nodes: Vec<LabNode> = (0..=pullers)
            .map(|i| {
                let dir = b.dir.path().join(format!("run{}/n{i}", b.runs));
                b.lab.start_af(i, Path::new(env!("CARGO_BIN_EXE_af")), &dir, &["--database-url", &db.url]).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        skopeo(b, 0, &format!("oci:{}:t", oci.display()), &image).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let results: Vec<Result<Duration, String>> = std::thread::scope(|s| {
            let pulls: Vec<_> = (1..=pullers)
                .map(|i| {
                    let (b, image) = (&*b, &image);
                    let out = b.dir.path().join(format!("run{}/pulled{i}", b.runs));
                    let layer = &layer;
                    s.spawn(move || {
                        skopeo(b, i, image, &format!("dir:{}", out.display()))?;
                        let t = started.elapsed();
                        // skopeo compressed the layer when it pushed it: the manifest names it.
                        let manifest: serde_json::Value =
                            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                        let digest = manifest["layers"][0]["digest"].as_str().unwrap_or_default().trim_start_matches("sha256:").to_string();
                        let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(out.join(&digest)).map_err(|e| e.to_string())?));
                        let mut first = layer.lock().unwrap();
                        if got != digest || first.get_or_insert(digest.clone()) != &digest {
                            return Err(format!("node {i}: the layer pulled is not the one pushed"));
                        }
                        Ok(t)
                    })
                })
                .collect();
            while pulls.iter().any(|p| !p.is_finished()) {
                let mut peak = anon_peak.lock().unwrap();
                *peak = nodes[1..].iter().filter_map(LabNode::anon_kib).fold(*peak, u64::max);
                drop(peak);
                std::thread::sleep(Duration::from_millis(100));
            }
            pulls.into_iter().map(|p| p.join().unwrap()).collect()
        });
        let sent = nodes.iter().map(|n| n.bitswap_stat("DataSent")).collect();
        *rss_peak.lock().unwrap() = nodes[1..].iter().filter_map(LabNode::peak_rss_kib).max().unwrap_or(0);
        Some((results, sent))
    };
    let Some((alone, _)) = run(b, 1) else { return };
    let alone = match &alone[0] {
        Ok(t) => *t,
        Err(e) => {
            println!("{:<12} docker pull, one node alone: FAILED: {e}", Kind::Af.name());
            return;
        }
    };
    println!("{:<12} docker pull (skopeo), one node alone: {:.2} s, {:.2} MiB/s", Kind::Af.name(), alone.as_secs_f64(), b.mib_s(alone));
    let Some((results, sent)) = run(b, n) else { return };
    let times: Vec<f64> = results.iter().filter_map(|r| r.as_ref().ok()).map(|t| t.as_secs_f64()).collect();
    let slowest = times.iter().cloned().fold(0.0, f64::max);
    println!(
        "{:<12} docker pull (skopeo) at {n} nodes at once, one holder: {}/{n} complete and byte-identical; slowest {slowest:.2} s = {:.2}x one alone; the holder sent {:.2}x the layer, each other node {:.2}x on average; peak per node: RSS {} MiB (anonymous {} MiB)",
        Kind::Af.name(),
        times.len(),
        slowest / alone.as_secs_f64(),
        sent[0] as f64 / b.size as f64,
        sent[1..].iter().sum::<u64>() as f64 / n as f64 / b.size as f64,
        *rss_peak.lock().unwrap() >> 10,
        *anon_peak.lock().unwrap() >> 10,
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()).take(3) {
        println!("{:<12}   a pull failed: {e}", "");
    }
}

/// `curl -s` in member `i`'s namespace: its output.
fn curl_in(b: &Bench, i: usize, args: &[&str]) -> String {
    String::from_utf8_lossy(&b.lab.command(i, "curl").arg("-s").args(args).output().unwrap().stdout).into_owned()
}

/// How many cluster peers report `cid` pinned (asked of peer 0's REST API, in its namespace).
fn cluster_pinned(b: &Bench, peer: &cluster_peer::ClusterPeer, cid: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(&curl_in(b, 0, &[&format!("{}/pins/{cid}", peer.url)])).unwrap_or_default();
    v["peer_map"].as_object().map(|m| m.values().filter(|s| s["status"] == "pinned").count()).unwrap_or(0)
}

fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > Duration::from_secs(secs) {
            println!("{:<12}   timed out waiting for {what}", "");
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// IPFS Cluster replicating an image (`AF_BENCH_CLUSTER_MIB`, 1024 MiB, four layers) held by
/// node A to two more nodes at once (`--replicas 3`), each of the three behind a cluster peer
/// in its own namespace, over the same shaped links: the time until both hold it whole,
/// against one fresh node copying it once from A (`pin/add`), measured first.
fn cluster_replicas(b: &mut Bench) {
    let name = Kind::Af.name();
    if Command::new("ipfs-cluster-service").arg("--version").output().is_err() {
        println!("{name:<12} IPFS Cluster --replicas 3: skipped: ipfs-cluster-service is not installed (scripts/install-test-deps.sh)");
        return;
    }
    let mib = env_or("AF_BENCH_CLUSTER_MIB", 1024) as u64;
    let root = b.dir.path().join("cluster");
    std::fs::create_dir_all(&root).unwrap();
    let files: Vec<PathBuf> = (0..4u64)
        .map(|i| {
            let f = root.join(format!("layer{i}"));
            noise_file(&f, (mib << 20) / 4, 100 + i);
            f
        })
        .collect();
    let oci = layout(&root.join("oci"), &files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    b.next_run();
    let af = Path::new(env!("CARGO_BIN_EXE_af"));
    let mut peers: Vec<cluster_peer::ClusterPeer> =
        (0..3).map(|i| cluster_peer::ClusterPeer::init_in_namespace(&root, &format!("p{i}"), &b.lab.members[i].ns, &b.lab.members[i].ip, lab::LAB_RPC)).collect();
    let nodes: Vec<LabNode> = (0..3)
        .map(|i| {
            let dir = b.dir.path().join(format!("run{}/n{i}", b.runs));
            b.lab.start_af(i, af, &dir, &["--replicas", "1", "--cluster-api", &peers[i].url]).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let others: Vec<String> = addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
        p.start(&others);
    }
    let metrics = wait_until(90, "every cluster peer's metric", || {
        String::from_utf8_lossy(&peers[0].ctl().args(["health", "metrics", "freespace"]).output().unwrap().stdout).matches("\"valid\": true").count() >= 3
    });
    if !metrics {
        return;
    }
    mesh(&nodes.iter().collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
    let visibility = Command::new(af).args(["registry", "visibility", "bench/app", "public", "--data-dir"]).arg(&nodes[0].data_dir).output().unwrap();
    assert!(visibility.status.success(), "{}", String::from_utf8_lossy(&visibility.stderr));
    skopeo(b, 0, &format!("oci:{}:t", oci.display()), &format!("docker://127.0.0.1:{}/bench/app:t", lab::LAB_API)).unwrap_or_else(|e| panic!("{e}"));
    let head = curl_in(b, 0, &["-I", "-H", "Accept: application/vnd.oci.image.manifest.v1+json", &format!("http://127.0.0.1:{}/v2/bench/app/manifests/t", lab::LAB_API)]);
    let cid = head.lines().find_map(|l| l.to_ascii_lowercase().starts_with("ipfs-image-cid:").then(|| l.split_once(':').unwrap().1.trim().to_string())).expect("an image CID");
    if !wait_until(120, "the image pinned on A", || cluster_pinned(b, &peers[0], &cid) == 1) {
        return;
    }

    // The reference: one fresh node copies it once from A.
    let reference = b.lab.start_af(3, af, &b.dir.path().join(format!("run{}/n3", b.runs)), &[]).unwrap_or_else(|e| panic!("{e}"));
    reference.rpc(&format!("swarm/connect?arg={}", nodes[0].swarm_addr())).unwrap();
    let t = Instant::now();
    if let Err(e) = reference.rpc(&format!("pin/add?arg={cid}")) {
        println!("{name:<12} IPFS Cluster: the reference copy failed: {e}");
        return;
    }
    let copy = t.elapsed().as_secs_f64();
    drop(reference);

    // Three replicas: the cluster has two more nodes fetch it at once.
    let t = Instant::now();
    let replicas = Command::new(af).args(["registry", "replicas", "bench/app", "3", "--data-dir"]).arg(&nodes[0].data_dir).output().unwrap();
    assert!(replicas.status.success(), "{}", String::from_utf8_lossy(&replicas.stderr));
    let mut first = None;
    let done = wait_until(900, "three replicas", || {
        let n = cluster_pinned(b, &peers[0], &cid);
        if n >= 2 && first.is_none() {
            first = Some(t.elapsed().as_secs_f64());
        }
        n == 3
    });
    let both = t.elapsed().as_secs_f64();
    let sent: Vec<String> = nodes.iter().map(|n| format!("{:.2}", n.bitswap_stat("DataSent") as f64 / (mib << 20) as f64)).collect();
    println!(
        "{name:<12} IPFS Cluster --replicas 3 of a {mib} MiB image (4 layers): one fresh node copies it from A in {copy:.2} s ({:.2} MiB/s); two more copies at once {}: {both:.2} s = {:.2}x one copy (the first in {:.2} s); each node sent {} times the image",
        mib as f64 / copy,
        if done { "done" } else { "NOT done" },
        both / copy,
        first.unwrap_or(both),
        sent.join(" ")
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let size = (env_or("AF_BENCH_SIZE_MIB", 256) as u64) << 20;
    let n = env_or("AF_BENCH_FLEET", 8);
    let link = env_or("AF_BENCH_LINK_MBIT", 100) as u32;
    if let Err(e) = Lab::available() {
        println!("fleet bench skipped: {e}");
        return;
    }
    let lab = Lab::new(n + 2).unwrap_or_else(|e| panic!("{e}"));
    lab.shape_all(link).unwrap();
    let dir = tempfile::tempdir().unwrap();
    if std::env::var("AF_BENCH_KEEP").is_ok() {
        println!("the nodes' data and logs stay in {}", dir.path().display());
    }
    let file = dir.path().join("layer");
    // Bytes that never repeat a block: every leaf is a block of its own.
    noise_file(&file, size, 0);
    let keep = std::env::var("AF_BENCH_KEEP").is_ok();
    let mut b = Bench { lab, dir, file, size, kubo: kubo_bin(), runs: 0 };
    let limit = link_limit(&b);
    println!("fleet: a {} MiB layer, links of {link} Mbit/s both ways; one HTTP stream gets {limit:.2} MiB/s (the link's limit)", size >> 20);
    let mut kinds = vec![Kind::Af];
    match &b.kubo {
        Some(_) => kinds.push(Kind::Kubo),
        None => println!("Kubo: not installed (scripts/install-test-deps.sh builds it); its figures are missing"),
    }
    let only = std::env::var("AF_BENCH_ONLY").ok();
    kinds.retain(|k| only.as_deref().is_none_or(|o| k.name().eq_ignore_ascii_case(o)));
    // AF_BENCH_CASES: some of pin,four,killed,docker,cluster (all by default).
    let cases = std::env::var("AF_BENCH_CASES").unwrap_or_else(|_| "pin,four,killed,docker,cluster".into());
    let case = |name: &str| cases.split(',').any(|c| c.trim() == name);
    for &kind in &kinds {
        let alone = if case("pin") || case("killed") { one_to_one(&mut b, kind, limit) } else { None };
        if case("pin") {
            one_to_many(&mut b, kind, n, alone);
        }
        if case("four") {
            four_to_one(&mut b, kind, limit);
        }
        if kind == Kind::Af && case("killed") {
            seed_killed(&mut b, n, alone);
        }
        if kind == Kind::Af && case("docker") {
            registry_pulls(&mut b, n);
        }
        if kind == Kind::Af && case("cluster") {
            cluster_replicas(&mut b);
        }
    }
    if keep {
        // Kept for reading the nodes' logs (AF_TEST_NODE_LOG sets their filter).
        let _ = b.dir.keep();
    }
}
