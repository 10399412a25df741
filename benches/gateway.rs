//! `cargo bench --bench gateway`: one public 1 GiB layer (`AF_BENCH_SIZE_MIB`) pulled through
//! the IPFS gateway (`/ipfs/<cid>`, a UnixFS walk with every block verified) against the same
//! blob through the OCI API (a ranged read of the blob file), in the same run; the same layer as
//! a CAR (`?format=car` and `af registry export`); and raw-block GETs per second with 64
//! connections. Medians of 3 interleaved rounds; curl and wrk as clients.
//!
//! Against Kubo 0.42's gateway (a daemon of its own, offline, the same image DAG imported from
//! our `dag/export`), in the same run: `?format=tar` of the image (its OCI layout, the layer
//! included) and `?format=car` of the layer (target: at least Kubo's speed), and the time to the
//! first byte of a directory listing no request has read yet (the image's three directories).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

struct Node {
    _proc: Proc,
    api: String,
    gateway: String,
    data: std::path::PathBuf,
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

/// Seconds to the first byte of `url` (curl's `time_starttransfer`).
fn first_byte(url: &str) -> f64 {
    curl(&["-o", "/dev/null", "-w", "%{time_starttransfer}", url]).trim().parse().unwrap()
}

/// A Kubo daemon, offline, its gateway on `port`: the process and its CLI.
fn start_kubo(repo: &Path, port: u16) -> (Proc, impl Fn() -> Command) {
    let repo = repo.to_path_buf();
    let ipfs = move || {
        let mut c = Command::new("ipfs");
        c.env("IPFS_PATH", &repo).env("IPFS_TELEMETRY", "off");
        c
    };
    assert!(ipfs().args(["init", "--empty-repo", "--profile", "test"]).stdout(Stdio::null()).status().unwrap().success());
    assert!(ipfs().args(["config", "Addresses.Gateway", &format!("/ip4/127.0.0.1/tcp/{port}")]).status().unwrap().success());
    let log = std::env::temp_dir().join(format!("af-bench-kubo-{port}.log"));
    let daemon = Proc(ipfs().args(["daemon", "--offline"]).stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null()).spawn().unwrap());
    for _ in 0..300 {
        if std::fs::read_to_string(&log).unwrap_or_default().contains("Daemon is ready") {
            return (daemon, ipfs);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("Kubo's daemon did not start");
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
    let data = dir.join("af");
    let started = Serve::new(&data).spawn();
    let rpc = started.rpc.clone();
    let node = Node { _proc: started.proc, api: format!("http://{}", started.api), gateway: format!("http://{}", started.gateway), data };
    push_blob(&node.api, "bench/layer", &layer, &digest);
    let small = dir.join("small.bin");
    let small_digest = make_layer(&small, 4096);
    push_blob(&node.api, "bench/layer", &small, &small_digest);
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

    // An image of the layer, and the same DAG on Kubo's gateway.
    let config = dir.join("config.json");
    std::fs::write(&config, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
    let (config_digest, config_size) = sha256_file(&config);
    curl(&["-o", "/dev/null", "-X", "POST", "-T", &config.display().to_string(), &format!("{}/v2/bench/layer/blobs/uploads?digest={config_digest}", node.api)]);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}],
    });
    let manifest_file = dir.join("manifest.json");
    std::fs::write(&manifest_file, manifest.to_string()).unwrap();
    let put = curl(&[
        "-s",
        "-i",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "-T",
        &manifest_file.display().to_string(),
        &format!("{}/v2/bench/layer/manifests/t", node.api),
    ]);
    let image = put.lines().find_map(|l| l.strip_prefix("ipfs-image-cid: ").or_else(|| l.strip_prefix("Ipfs-Image-Cid: "))).map(|c| c.trim().to_string());
    let image = image.unwrap_or_else(|| {
        let h = curl(&["-I", "-H", "Accept: application/vnd.oci.image.manifest.v1+json", &format!("{}/v2/bench/layer/manifests/t", node.api)]);
        h.lines().find_map(|l| l.strip_prefix("ipfs-image-cid: ").or_else(|| l.strip_prefix("Ipfs-Image-Cid: "))).expect("an image CID").trim().to_string()
    });
    let car_file = dir.join("image.car");
    curl(&["-o", &car_file.display().to_string(), "-X", "POST", &format!("http://{rpc}/api/v0/dag/export?arg={image}")]);
    let kubo_port = free_port();
    let (kubo, ipfs) = start_kubo(&dir.join("kubo"), kubo_port);
    assert!(ipfs().args(["dag", "import", "--pin-roots"]).arg(&car_file).stdout(Stdio::null()).status().unwrap().success());
    let _ = std::fs::remove_file(&car_file);
    let kubo_gw = format!("http://127.0.0.1:{kubo_port}");
    // Cold listings first: no request has read these directories yet, on either gateway.
    let dirs = [format!("/ipfs/{image}/"), format!("/ipfs/{image}/blobs/"), format!("/ipfs/{image}/blobs/sha256/")];
    let (mut ours_fb, mut kubo_fb) = (Vec::new(), Vec::new());
    for d in &dirs {
        ours_fb.push(first_byte(&format!("{}{d}", node.gateway)) * 1e3);
        kubo_fb.push(first_byte(&format!("{kubo_gw}{d}")) * 1e3);
    }
    let (mut tar_ours, mut tar_kubo, mut car_ours, mut car_kubo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        tar_ours.push(timed_mbps(size, &[&format!("{}/ipfs/{image}?format=tar", node.gateway)]));
        tar_kubo.push(timed_mbps(size, &[&format!("{kubo_gw}/ipfs/{image}?format=tar")]));
        car_ours.push(timed_mbps(size, &[&format!("{}/ipfs/{cid}?format=car", node.gateway)]));
        car_kubo.push(timed_mbps(size, &[&format!("{kubo_gw}/ipfs/{cid}?format=car")]));
    }
    let (to, tk, co, ck) = (median(&mut tar_ours), median(&mut tar_kubo), median(&mut car_ours), median(&mut car_kubo));
    println!("against Kubo 0.42's gateway, the same DAG, medians of 3 interleaved rounds:");
    println!("?format=tar of the image: ours {to:.0} MB/s, Kubo {tk:.0} MB/s: ours/Kubo {:.2} (target >= 1)", to / tk);
    println!("?format=car of the layer: ours {co:.0} MB/s, Kubo {ck:.0} MB/s: ours/Kubo {:.2} (target >= 1)", co / ck);
    println!("first byte of a cold directory listing (median of the image's 3 directories): ours {:.1} ms, Kubo {:.1} ms", median(&mut ours_fb), median(&mut kubo_fb));
    drop(kubo);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
