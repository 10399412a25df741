//! `cargo bench --bench client`: `af registry push --from oci:` and `pull --to oci:` of an image
//! of ten 100 MiB layers (`AF_BENCH_LAYERS`, `AF_BENCH_LAYER_MIB`) against `skopeo copy` of the
//! same image between the same layout and a fresh node per client and round, in the same run:
//! two rounds, the order alternating. Target: af at least skopeo's speed.
//!
//! Then the same through the local engine (podman's Docker-compatible service on a socket of
//! the bench's own): `af registry push` from it against `skopeo copy docker-daemon:...`, and
//! `af registry pull` into it against `skopeo copy ... docker-daemon:`, of an image of
//! `AF_BENCH_ENGINE_LAYERS` (4) such layers (fewer: podman's vfs storage copies every layer
//! below each one it writes). The image leaves the engine before each pull.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh node with its data in `data`: the process and its API's host:port.
fn start_node(data: &Path) -> (Proc, String) {
    let node = Serve::new(data).spawn();
    (node.proc, node.api)
}

fn af(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_af"));
    c.args(args).env("DOCKER_CONFIG", "/nonexistent-af-bench").stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn with_engine(mut cmd: Command, docker_host: &str) -> Command {
    cmd.env("DOCKER_HOST", docker_host);
    cmd
}

fn timed(mut cmd: Command) -> f64 {
    settle();
    let t = Instant::now();
    run(&mut cmd);
    t.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let layers: usize = std::env::var("AF_BENCH_LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mib: u64 = std::env::var("AF_BENCH_LAYER_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-client");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let layout = dir.join("layout");
    let bytes = build_layout(&layout, layers, mib);
    let mb = bytes as f64 / 1e6;

    let src = format!("oci:{}:t", layout.display());
    let (mut af_push, mut sk_push, mut af_pull, mut sk_pull) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..2 {
        // A node of its own for each client: skopeo remembers where it saw blobs (its blob-info
        // cache, by registry host) and would mount them instead of sending them.
        let (_af_node, af_host) = start_node(&dir.join(format!("af-node{round}")));
        let (_sk_node, sk_host) = start_node(&dir.join(format!("sk-node{round}")));
        let af_repo = format!("{af_host}/bench/app:t");
        let sk_repo = format!("{sk_host}/bench/app:t");
        let push_af = || timed(af(&["registry", "push", &af_repo, "--from", &src, "-q"]));
        let push_sk = || {
            let mut c = Command::new("skopeo");
            c.args(["--insecure-policy", "copy", "--dest-tls-verify=false", &src, &format!("docker://{sk_repo}")]);
            timed(c)
        };
        let pull_to = |name: &str| dir.join(format!("{name}{round}"));
        let pull_af = || timed(af(&["registry", "pull", &af_repo, "--to", &format!("oci:{}:t", pull_to("af").display()), "-q"]));
        let pull_sk = || {
            let mut c = Command::new("skopeo");
            c.args(["--insecure-policy", "copy", "--src-tls-verify=false", &format!("docker://{sk_repo}"), &format!("oci:{}:t", pull_to("sk").display())]);
            timed(c)
        };
        if round == 0 {
            af_push.push(push_af());
            sk_push.push(push_sk());
            af_pull.push(pull_af());
            sk_pull.push(pull_sk());
        } else {
            sk_push.push(push_sk());
            af_push.push(push_af());
            sk_pull.push(pull_sk());
            af_pull.push(pull_af());
        }
    }
    let best = |v: &[f64]| mb / v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (ap, sp, al, sl) = (best(&af_push), best(&sk_push), best(&af_pull), best(&sk_pull));
    println!("image of {layers} x {mib} MiB layers ({mb:.0} MB) between an OCI layout and a node on loopback; best of 2 rounds, order alternating");
    println!("push: af {ap:.0} MB/s, skopeo copy {sp:.0} MB/s; af/skopeo {:.2} (target >= 1)", ap / sp);
    println!("pull: af {al:.0} MB/s, skopeo copy {sl:.0} MB/s; af/skopeo {:.2} (target >= 1)", al / sl);
    engine_rounds(&dir, mib);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A docker archive (`docker save`'s format) of `layers` layers, each a tar of one file of
/// `mib` MiB, tagged `name`.
fn build_archive(path: &Path, layers: usize, mib: u64, name: &str) -> u64 {
    let work = path.with_extension("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut archive = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(path).unwrap()));
    let (mut names, mut diff_ids, mut total) = (Vec::new(), Vec::new(), 0);
    for i in 0..layers {
        let data = work.join(format!("f{i}"));
        make_layer_seeded(&data, mib << 20, 100 + i as u64);
        let layer = work.join(format!("layer{i}.tar"));
        let mut t = tar::Builder::new(std::fs::File::create(&layer).unwrap());
        t.append_path_with_name(&data, format!("f{i}")).unwrap();
        t.into_inner().unwrap();
        std::fs::remove_file(&data).unwrap();
        let (diff_id, size) = sha256_file(&layer);
        let entry = format!("{}.tar", diff_id.trim_start_matches("sha256:"));
        archive.append_path_with_name(&layer, &entry).unwrap();
        std::fs::remove_file(&layer).unwrap();
        names.push(entry);
        diff_ids.push(diff_id);
        total += size;
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let config_path = work.join("config.json");
    std::fs::write(&config_path, &config).unwrap();
    let (config_digest, _) = sha256_file(&config_path);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    archive.append_path_with_name(&config_path, &config_name).unwrap();
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [name], "Layers": names}]).to_string();
    let manifest_path = work.join("manifest.json");
    std::fs::write(&manifest_path, manifest).unwrap();
    archive.append_path_with_name(&manifest_path, "manifest.json").unwrap();
    archive.into_inner().unwrap();
    let _ = std::fs::remove_dir_all(&work);
    total + config.len() as u64
}

fn engine_rounds(dir: &Path, mib: u64) {
    let layers: usize = std::env::var("AF_BENCH_ENGINE_LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let storage = dir.join("podman");
    let sock = storage.join("podman.sock");
    std::fs::create_dir_all(&storage).unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.args(["--storage-driver", "vfs", "--root"]).arg(storage.join("root")).arg("--runroot").arg(storage.join("run"));
        c
    };
    let _service = Proc(podman().args(["system", "service", "--time=0"]).arg(format!("unix://{}", sock.display())).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let docker_host = format!("unix://{}", sock.display());
    let archive = dir.join("engine.tar");
    let bytes = build_archive(&archive, layers, mib, "bench/engine:t");
    let mb = bytes as f64 / 1e6;
    let (mut af_push, mut sk_push, mut af_pull, mut sk_pull) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let clear = || {
        let _ = podman().args(["rmi", "-af"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    };
    for round in 0..2 {
        clear();
        run(podman().arg("load").arg("-i").arg(&archive));
        let (_af_node, af_host) = start_node(&dir.join(format!("af-engine-node{round}")));
        let (_sk_node, sk_host) = start_node(&dir.join(format!("sk-engine-node{round}")));
        let (af_repo, sk_repo) = (format!("{af_host}/bench/engine:t"), format!("{sk_host}/bench/engine:t"));
        let push_af = || timed(with_engine(af(&["registry", "push", &af_repo, "-q"]), &docker_host));
        let push_sk = || {
            let mut c = Command::new("skopeo");
            c.args(["--insecure-policy", "copy", "--src-daemon-host", &docker_host, "--dest-tls-verify=false", "docker-daemon:bench/engine:t", &format!("docker://{sk_repo}")]);
            timed(c)
        };
        let pull_af = || timed(with_engine(af(&["registry", "pull", &af_repo, "-q"]), &docker_host));
        let pull_sk = || {
            let mut c = Command::new("skopeo");
            c.args([
                "--insecure-policy",
                "copy",
                "--dest-daemon-host",
                &docker_host,
                "--src-tls-verify=false",
                &format!("docker://{sk_repo}"),
                &format!("docker-daemon:{sk_repo}"),
            ]);
            timed(c)
        };
        if round == 0 {
            af_push.push(push_af());
            sk_push.push(push_sk());
        } else {
            sk_push.push(push_sk());
            af_push.push(push_af());
        }
        clear();
        let (first, second): (&dyn Fn() -> f64, &dyn Fn() -> f64) = if round == 0 { (&pull_af, &pull_sk) } else { (&pull_sk, &pull_af) };
        let a = first();
        clear();
        let b = second();
        let (af_t, sk_t) = if round == 0 { (a, b) } else { (b, a) };
        af_pull.push(af_t);
        sk_pull.push(sk_t);
    }
    clear();
    let best = |v: &[f64]| mb / v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (ap, sp, al, sl) = (best(&af_push), best(&sk_push), best(&af_pull), best(&sk_pull));
    println!("image of {layers} x {mib} MiB layers ({mb:.0} MB) between podman's engine service and a node on loopback; best of 2 rounds, order alternating");
    println!("push from the engine: af {ap:.0} MB/s, skopeo copy docker-daemon: {sp:.0} MB/s; af/skopeo {:.2} (target >= 1)", ap / sp);
    println!("pull into the engine: af {al:.0} MB/s, skopeo copy docker-daemon: {sl:.0} MB/s; af/skopeo {:.2} (target >= 1)", al / sl);
}
