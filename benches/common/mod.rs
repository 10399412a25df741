//! What the benchmarks share: how a node starts, ports, test data, the clients (curl, wrk) and
//! statistics.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// A child process killed when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Pushes the file at `file` as blob `digest` of `repo` in one monolithic POST to the API at
/// `api` (a base URL).
pub fn push_blob(api: &str, repo: &str, file: &Path, digest: &str) {
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        &file.display().to_string(),
        &format!("{api}/v2/{repo}/blobs/uploads?digest={digest}"),
    ]);
}

/// `af registry serve` as every bench starts it: its data in one directory, no authentication,
/// logs at warn, every listener on loopback at a free port and the swarm on a free TCP port of
/// 127.0.0.1; [`Serve::set`] changes a flag or adds one, [`Serve::spawn`] starts it.
pub struct Serve {
    data: std::path::PathBuf,
    flags: Vec<(String, String)>,
    stderr: Option<std::fs::File>,
}

/// A node a bench started, killed when dropped.
pub struct AfNode {
    pub proc: Proc,
    /// host:port of each listener.
    pub api: String,
    pub gateway: String,
    pub rpc: String,
    pub metrics: String,
    /// From the spawn to the API's first answer.
    pub ready_after: std::time::Duration,
}

impl Serve {
    pub fn new(data: &Path) -> Serve {
        let listen = || format!("127.0.0.1:{}", free_port());
        let flags = [
            ("--auth", "none".to_string()),
            ("--api", listen()),
            ("--gateway", listen()),
            ("--rpc", listen()),
            ("--metrics", listen()),
            ("--swarm", "/ip4/127.0.0.1/tcp/0".to_string()),
        ];
        Serve { data: data.to_path_buf(), flags: flags.into_iter().map(|(f, v)| (f.to_string(), v)).collect(), stderr: None }
    }

    /// Sets `flag` to `value` (replacing the default), or adds it.
    pub fn set(mut self, flag: &str, value: &str) -> Serve {
        match self.flags.iter_mut().find(|(f, _)| f == flag) {
            Some((_, v)) => *v = value.to_string(),
            None => self.flags.push((flag.to_string(), value.to_string())),
        }
        self
    }

    /// Where the node's log goes (default: nowhere).
    pub fn log_to(mut self, file: &Path) -> Serve {
        self.stderr = Some(std::fs::File::create(file).unwrap());
        self
    }

    fn flag(&self, flag: &str) -> String {
        self.flags.iter().find(|(f, _)| f == flag).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// Starts the node and waits (up to 10 minutes) for its API to answer.
    pub fn spawn(self) -> AfNode {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_af"));
        cmd.args(["registry", "serve", "--data-dir"]).arg(&self.data);
        for (flag, value) in &self.flags {
            cmd.args([flag, value]);
        }
        cmd.env("AF_LOG", "warn").stdout(std::process::Stdio::null());
        match &self.stderr {
            Some(f) => cmd.stderr(f.try_clone().unwrap()),
            None => cmd.stderr(std::process::Stdio::null()),
        };
        let started = std::time::Instant::now();
        let proc = Proc(cmd.spawn().unwrap());
        let api = self.flag("--api");
        let client = reqwest::blocking::Client::new();
        while !client.get(format!("http://{api}/v2/")).send().is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < std::time::Duration::from_secs(600), "the node on {} did not start", self.data.display());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        AfNode { proc, api, gateway: self.flag("--gateway"), rpc: self.flag("--rpc"), metrics: self.flag("--metrics"), ready_after: started.elapsed() }
    }
}

/// Writes `size` pseudo-random (incompressible) bytes to `path`; returns their sha256 digest.
pub fn make_layer(path: &Path, size: u64) -> String {
    make_layer_seeded(path, size, 0)
}

/// [`make_layer`] with bytes of their own for each `seed`.
pub fn make_layer_seeded(path: &Path, size: u64, seed: u64) -> String {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Flushes everything dirty first, so that what one server left in the page cache (distribution
/// does not fsync) is not written back during the next measurement.
pub fn settle() {
    let _ = Command::new("sync").status();
}

/// curl, an efficient client, so the servers and not the client are measured.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--fail"]).args(args).output().expect("curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn parse_wrk_duration(s: &str) -> f64 {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}

/// (requests/s, p99 ms) of GETs of `url` with 64 connections: wrk, one thread (client and server
/// share the machine), 2 s of warm-up, then 10 s measured. Fails on any non-2xx answer.
pub fn wrk_load(url: &str, headers: &[&str], who: &str) -> (f64, f64) {
    wrk_script_load(url, headers, None, who)
}

/// [`wrk_load`] with a Lua script choosing each request.
pub fn wrk_script_load(url: &str, headers: &[&str], script: Option<&std::path::Path>, who: &str) -> (f64, f64) {
    let mut args: Vec<std::ffi::OsString> = headers.iter().flat_map(|h| ["-H".into(), h.into()]).collect();
    if let Some(script) = script {
        args.extend(["-s".into(), script.as_os_str().to_owned()]);
    }
    let warm = Command::new("wrk").args(["-t1", "-c64", "-d2s"]).args(&args).arg(url).output().expect("wrk (apt-get install wrk)");
    assert!(warm.status.success());
    let out = Command::new("wrk").args(["-t1", "-c64", "-d10s", "--latency"]).args(&args).arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"));
    assert!(!text.contains("Non-2xx"), "{who} answered errors under load: {text}");
    let p99 = text.lines().find(|l| l.trim_start().starts_with("99%")).and_then(|l| l.split_whitespace().nth(1)).map(parse_wrk_duration).unwrap_or(f64::NAN);
    (rps, p99)
}

pub fn sha256_file(path: &Path) -> (String, u64) {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap();
    (format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))), bytes.len() as u64)
}

/// An OCI layout at `dir` holding one image, tagged `t`, of `layers` layers of `mib` MiB each.
pub fn build_layout(dir: &Path, layers: usize, mib: u64) -> u64 {
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
