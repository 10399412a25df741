//! `cargo bench --bench registry`: af against the reference registry (distribution v3, built from
//! the Go module proxy) in the same run, on the same disk, with the same client.
//!
//! Measures: push of one large layer (default 1 GiB, `AF_BENCH_SIZE_MIB`) against what
//! `dd conv=fsync` writes to the same disk; pull of it (both with curl, after a `sync`, so that
//! neither the client nor the other server's unwritten data is measured); manifest GETs by tag
//! with 64 connections (wrk, one thread, since client and servers share the machine); peak RSS of each server while
//! the layer is pushed. Prints every figure and the ratios.

mod common;

use common::*;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DISTRIBUTION: &str = "github.com/distribution/distribution/v3/cmd/registry@v3.1.2";

struct Server {
    name: &'static str,
    child: Proc,
    base: String,
}

fn wait_ready(base: &str) {
    let c = reqwest::blocking::Client::new();
    for _ in 0..200 {
        if c.get(format!("{base}/v2/")).send().is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{base} did not start");
}

fn gobin() -> PathBuf {
    std::env::var("GOBIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join("go/bin"))
}

fn start_af(dir: &Path) -> Server {
    let node = Serve::new(&dir.join("af")).spawn();
    Server { name: "af", child: node.proc, base: format!("http://{}", node.api) }
}

fn start_distribution(dir: &Path) -> Server {
    let bin = gobin().join("registry");
    if !bin.exists() {
        eprintln!("building the reference registry: go install {DISTRIBUTION}");
        let ok = Command::new("go").args(["install", DISTRIBUTION]).status().unwrap().success();
        assert!(ok, "go install {DISTRIBUTION} failed");
    }
    let port = free_port();
    let config = dir.join("distribution.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("distribution").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin).arg("serve").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base);
    Server { name: "distribution", child: Proc(child), base }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()).map(|kb| kb / 1024.0).unwrap_or(f64::NAN)
}

/// dd's fsync'd write speed to the same disk, MB/s.
fn dd_mbps(src: &Path, dir: &Path, size: u64) -> f64 {
    settle();
    let out = dir.join("dd.out");
    let t = Instant::now();
    let ok = Command::new("dd").arg(format!("if={}", src.display())).arg(format!("of={}", out.display())).args(["bs=1M", "conv=fsync", "status=none"]).status().unwrap().success();
    assert!(ok);
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(out).ok();
    size as f64 / 1e6 / secs
}

fn absolute(server: &Server, location: &str) -> String {
    if location.starts_with("http") {
        location.to_string()
    } else {
        format!("{}{location}", server.base)
    }
}

/// Docker's way: POST, one streamed PATCH, empty PUT with the digest. MB/s.
fn push(server: &Server, layer: &Path, digest: &str, size: u64) -> f64 {
    settle();
    let t = Instant::now();
    let headers = curl(&["-D", "-", "-o", "/dev/null", "-X", "POST", &format!("{}/v2/bench/layer/blobs/uploads/", server.base)]);
    let location = |h: &str| {
        let loc = h.lines().find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: "))).expect("Location").trim();
        absolute(server, loc)
    };
    let loc = location(&headers);
    let headers = curl(&["-D", "-", "-o", "/dev/null", "-X", "PATCH", "-H", "Content-Type: application/octet-stream", "-T", &layer.display().to_string(), &loc]);
    let loc = location(&headers);
    let sep = if loc.contains('?') { '&' } else { '?' };
    curl(&["-o", "/dev/null", "-X", "PUT", "-H", "Content-Length: 0", &format!("{loc}{sep}digest={digest}")]);
    size as f64 / 1e6 / t.elapsed().as_secs_f64()
}

fn pull(server: &Server, digest: &str, size: u64) -> f64 {
    let t = Instant::now();
    let got = curl(&["-o", "/dev/null", "-w", "%{size_download}", &format!("{}/v2/bench/layer/blobs/{digest}", server.base)]);
    assert_eq!(got.trim().parse::<u64>().unwrap(), size);
    size as f64 / 1e6 / t.elapsed().as_secs_f64()
}

fn push_small_image(server: &Server) {
    let c = reqwest::blocking::Client::new();
    let blob = |data: &[u8]| {
        let d = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        // POST then PUT: the reference registry does not take monolithic POSTs.
        let r = c.post(format!("{}/v2/bench/app/blobs/uploads/", server.base)).send().unwrap();
        assert_eq!(r.status(), 202);
        let loc = absolute(server, r.headers()["Location"].to_str().unwrap());
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = c.put(format!("{loc}{sep}digest={d}")).body(data.to_vec()).send().unwrap();
        assert_eq!(r.status(), 201);
        d
    };
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = vec![42u8; 4096];
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(&layer), "size": layer.len()}],
    });
    let r = c
        .put(format!("{}/v2/bench/app/manifests/latest", server.base))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// (requests/s, p99 ms) for manifest GETs by tag with 64 connections.
fn manifest_load(server: &Server) -> (f64, f64) {
    settle();
    let url = format!("{}/v2/bench/app/manifests/latest", server.base);
    wrk_load(&url, &["Accept: application/vnd.oci.image.manifest.v1+json"], server.name)
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test --benches) runs nothing heavy.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size_mib: u64 = std::env::var("AF_BENCH_SIZE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let size = size_mib * 1024 * 1024;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-work");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let layer = dir.join("layer.bin");
    eprintln!("writing a {size_mib} MiB layer");
    let digest = make_layer(&layer, size);

    let af = start_af(&dir);
    let dist = start_distribution(&dir);
    // The disk's speed drifts from minute to minute on a shared machine: interleave dd and both
    // pushes, round after round, and compare medians.
    let rounds: usize = std::env::var("AF_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (mut dds, mut af_push, mut dist_push) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("push round {}/{rounds}", round + 1);
        dds.push(dd_mbps(&layer, &dir, size));
        af_push.push(push(&af, &layer, &digest, size));
        dist_push.push(push(&dist, &layer, &digest, size));
    }
    let dd = median(&mut dds);
    let pushes = [median(&mut af_push), median(&mut dist_push)];
    let mut rows = Vec::new();
    for (server, push_mbps) in [&af, &dist].into_iter().zip(pushes) {
        let rss = peak_rss_mib(server.child.0.id());
        // Drop the page cache's copy of what was just written so the pull reads like a cold one
        // would for both servers (best effort: needs root).
        settle();
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
        let pull_mbps = pull(server, &digest, size);
        // Again, now from the page cache: what the server itself costs.
        let warm_mbps = pull(server, &digest, size);
        push_small_image(server);
        let (rps, p99) = manifest_load(server);
        rows.push((server.name, push_mbps, pull_mbps, warm_mbps, rss, rps, p99));
    }
    let (a, d) = (rows[0], rows[1]);
    println!("\nlayer {size_mib} MiB; medians of {rounds} interleaved rounds; dd conv=fsync on the same disk: {dd:.0} MB/s");
    println!("{:<14}{:>11}{:>16}{:>16}{:>14}{:>16}{:>9}", "server", "push MB/s", "cold pull MB/s", "warm pull MB/s", "peak RSS MiB", "manifest req/s", "p99 ms");
    for (name, push, pull, warm, rss, rps, p99) in &rows {
        println!("{name:<14}{push:>11.0}{pull:>16.0}{warm:>16.0}{rss:>14.1}{rps:>16.0}{p99:>9.2}");
    }
    println!("af push / dd:                 {:.2} (target >= 0.90)", a.1 / dd);
    println!("distribution push / dd:       {:.2} (distribution does not fsync blobs)", d.1 / dd);
    println!("af pull / distribution:       cold {:.2}, warm {:.2} (target >= 1.00)", a.2 / d.2, a.3 / d.3);
    println!("af / distribution manifests:  {:.2} (target >= 5.00; af p99 {:.2} ms, target < 10)", a.5 / d.5, a.6);
    println!("af peak RSS during push:      {:.1} MiB (target < 64)", a.4);
    let _ = std::fs::remove_dir_all(&dir);
}
