//! `cargo bench --bench client`: `af registry push --from oci:` and `pull --to oci:` of an image
//! of ten 100 MiB layers (`AF_BENCH_LAYERS`, `AF_BENCH_LAYER_MIB`) against `skopeo copy` of the
//! same image between the same layout and a fresh node per client and round, in the same run:
//! two rounds, the order alternating. Target: af at least skopeo's speed.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sha256_file(path: &Path) -> (String, u64) {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap();
    (format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))), bytes.len() as u64)
}

/// An OCI layout at `dir` holding one image, tagged `t`, of `layers` layers of `mib` MiB each.
fn build_layout(dir: &Path, layers: usize, mib: u64) -> u64 {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut descriptors = Vec::new();
    let mut total = 0;
    for i in 0..layers {
        let tmp = dir.join("layer.tmp");
        let digest = make_layer_seeded(&tmp, mib << 20, i as u64 + 1);
        std::fs::rename(&tmp, blobs.join(digest.trim_start_matches("sha256:"))).unwrap();
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": mib << 20}));
        total += mib << 20;
    }
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_path = dir.join("config.tmp");
    std::fs::write(&config_path, config).unwrap();
    let (config_digest, config_size) = sha256_file(&config_path);
    std::fs::rename(&config_path, blobs.join(config_digest.trim_start_matches("sha256:"))).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    })
    .to_string();
    let manifest_path = dir.join("manifest.tmp");
    std::fs::write(&manifest_path, &manifest).unwrap();
    let (manifest_digest, manifest_size) = sha256_file(&manifest_path);
    std::fs::rename(&manifest_path, blobs.join(manifest_digest.trim_start_matches("sha256:"))).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    total + config_size
}

/// A fresh node with its data in `data`: the process and its API's host:port.
fn start_node(data: &Path) -> (Proc, String) {
    let port = free_port();
    let node = Proc(
        Command::new(env!("CARGO_BIN_EXE_af"))
            .args(["registry", "serve", "--auth", "none", "--metrics", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--swarm", "/ip4/127.0.0.1/tcp/0"])
            .args(["--api", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .env("AF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if Command::new("curl").args(["-sf", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/v2/")]).status().unwrap().success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (node, format!("127.0.0.1:{port}"))
}

fn af(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_af"));
    c.args(args).env("DOCKER_CONFIG", "/nonexistent-af-bench").stdout(Stdio::null()).stderr(Stdio::null());
    c
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
    let _ = std::fs::remove_dir_all(&dir);
}
