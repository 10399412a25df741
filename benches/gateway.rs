//! `cargo bench --bench gateway`: one public 1 GiB layer (`AF_BENCH_SIZE_MIB`) pulled through
//! the IPFS gateway (`/ipfs/<cid>`, a UnixFS walk with every block verified) against the same
//! blob through the OCI API (a ranged read of the blob file), in the same run; the same layer as
//! a CAR (`?format=car` and `af registry export`); and raw-block GETs per second with 64
//! connections. Medians of 3 interleaved rounds; curl and wrk as clients.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

struct Node {
    child: std::process::Child,
    api: String,
    gateway: String,
    data: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn af(args: &[&str], data: &Path) {
    let ok = Command::new(env!("CARGO_BIN_EXE_af")).args(args).arg("--data-dir").arg(data).stdout(Stdio::null()).status().unwrap().success();
    assert!(ok, "af {args:?}");
}

fn timed_mbps(size: u64, args: &[&str]) -> f64 {
    let t = Instant::now();
    let got = curl(&[&["-o", "/dev/null", "-w", "%{size_download}"][..], args].concat());
    let secs = t.elapsed().as_secs_f64();
    assert!(got.trim().parse::<u64>().unwrap() >= size);
    size as f64 / 1e6 / secs
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size_mib: u64 = std::env::var("AF_BENCH_SIZE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let size = size_mib << 20;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-gateway");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let layer = dir.join("layer.bin");
    let digest = make_layer(&layer, size);
    let (api_port, gw_port) = (free_port(), free_port());
    let data = dir.join("af");
    let child = Command::new(env!("CARGO_BIN_EXE_af"))
        .env("AF_SWARM", "/ip4/127.0.0.1/tcp/0")
        .args(["registry", "serve", "--metrics", "127.0.0.1:0", "--auth", "none", "--rpc", "127.0.0.1:0"])
        .args(["--api", &format!("127.0.0.1:{api_port}"), "--gateway", &format!("127.0.0.1:{gw_port}"), "--data-dir"])
        .arg(&data)
        .env("AF_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node { child, api: format!("http://127.0.0.1:{api_port}"), gateway: format!("http://127.0.0.1:{gw_port}"), data };
    for _ in 0..200 {
        if Command::new("curl").args(["-s", "-o", "/dev/null", &format!("{}/v2/", node.api)]).status().unwrap().success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    curl(&["-o", "/dev/null", "-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", &layer.display().to_string(), &format!("{}/v2/bench/layer/blobs/uploads?digest={digest}", node.api)]);
    let small = dir.join("small.bin");
    let small_digest = make_layer(&small, 4096);
    curl(&["-o", "/dev/null", "-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", &small.display().to_string(), &format!("{}/v2/bench/layer/blobs/uploads?digest={small_digest}", node.api)]);
    af(&["registry", "visibility", "bench/layer", "public"], &node.data);
    let cid_of = |d: &str| {
        let h = curl(&["-I", &format!("{}/v2/bench/layer/blobs/{d}", node.api)]);
        h.lines().find_map(|l| l.strip_prefix("ipfs-cid: ").or_else(|| l.strip_prefix("Ipfs-Cid: "))).expect("Ipfs-Cid").trim().to_string()
    };
    let (cid, small_cid) = (cid_of(&digest), cid_of(&small_digest));

    let (mut oci, mut gw, mut car, mut export) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        oci.push(timed_mbps(size, &[&format!("{}/v2/bench/layer/blobs/{digest}", node.api)]));
        gw.push(timed_mbps(size, &[&format!("{}/ipfs/{cid}", node.gateway)]));
        car.push(timed_mbps(size, &[&format!("{}/ipfs/{cid}?format=car", node.gateway)]));
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_af"))
            .args(["registry", "export", &format!("bench/layer@{digest}")])
            .arg("--data-dir")
            .arg(&node.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // A blob alone has no image DAG, so export needs a manifest: measured once one exists.
        if out.success() {
            export.push(size as f64 / 1e6 / t.elapsed().as_secs_f64());
        }
    }
    let (o, g, c) = (median(&mut oci), median(&mut gw), median(&mut car));
    println!("{size_mib} MiB layer, warm page cache, medians of 3 interleaved rounds (curl)");
    println!("OCI API blob GET {o:.0} MB/s; gateway /ipfs/<cid> {g:.0} MB/s: gateway/OCI {:.2} (target >= 1)", g / o);
    println!("gateway ?format=car {c:.0} MB/s");
    if !export.is_empty() {
        println!("af registry export {:.0} MB/s", median(&mut export));
    }
    let (rps, p99) = wrk_load(&format!("{}/ipfs/{small_cid}?format=raw", node.gateway), &[], "af gateway");
    println!("raw-block GETs (4 KiB block, 64 connections): {rps:.0}/s, p99 {p99:.2} ms");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
