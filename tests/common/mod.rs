//! Shared test harness: real `af` node processes on loopback, each with its own data directory.
#![allow(dead_code)]

pub mod accounts;
pub mod cluster_peer;
pub mod dags;
pub mod fake_registry;
pub mod images;
pub mod kubo_daemon;
pub mod lab;
pub mod raw_peer;

use reqwest::blocking::{Client, Response};
use sha2::{Digest as _, Sha256};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// `len` deterministic bytes that never repeat a chunk (xorshift of `seed`): every leaf of their
/// DAG is a block of its own.
/// A small deterministic generator (xorshift64) for tests that need repeatable choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub fn xorshift_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A free port on loopback, picked at random below the kernel's ephemeral range: a port the
/// kernel hands out (a listener on port 0, any outgoing connection) is never one of these, so
/// one picked here stays free until the node that is given it binds it, unless another test
/// picked the same (one in thousands). Ports given to other programs before the node starts
/// (IPFS Cluster's connector) depend on that.
pub fn free_addr() -> SocketAddr {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok()).unwrap_or(32768);
    if ephemeral_low > 12_000 {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 ^ ((std::process::id() as u64) << 32);
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..64 {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", rng.u16(10_000..ephemeral_low))) {
                return l.local_addr().unwrap();
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap()
}

/// A running node. Killed when dropped; its data directory lives as long as `dir`.
pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub gateway: SocketAddr,
    pub rpc: SocketAddr,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    pub log: PathBuf,
    /// The administrator's password when the node was started with `AF_ADMIN_PASSWORD`: the
    /// push helpers then authenticate as `admin`.
    pub admin_password: Option<String>,
}

impl Node {
    pub fn start() -> Node {
        Self::start_with(&[])
    }

    /// Runs `af <args> --data-dir <this node's>` (the commands that work on the data directory),
    /// whatever it answers.
    pub fn af(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_af")).args(args).arg("--data-dir").arg(&self.data_dir).output().expect("run af")
    }

    /// The URL of RPC command `call` (with its query string) on this node.
    pub fn rpc_url(&self, call: &str) -> String {
        format!("http://{}/api/v0/{call}", self.rpc)
    }

    /// POSTs RPC command `call`, whatever it answers.
    pub fn rpc_post(&self, call: &str) -> Response {
        client().post(self.rpc_url(call)).send().unwrap()
    }

    /// POSTs RPC command `call`, which must succeed, and reads its JSON answer.
    pub fn rpc_json(&self, call: &str) -> serde_json::Value {
        let r = self.rpc_post(call);
        let status = r.status();
        let body = r.text().unwrap();
        assert!(status.is_success(), "{call}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{call}: {e}: {body}"))
    }

    pub fn start_with(extra: &[&str]) -> Node {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_in(None, extra, env)
    }

    /// A node on `data_dir` (somewhere of the test's choosing, e.g. a small disk) if given.
    pub fn start_in(data_dir: Option<PathBuf>, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = data_dir.unwrap_or_else(|| dir.path().join("data"));
        let log = dir.path().join("node.log");
        let mut node = Node {
            child: None,
            addr: free_addr(),
            gateway: free_addr(),
            rpc: extra
                .iter()
                .position(|a| *a == "--rpc")
                .and_then(|i| extra.get(i + 1))
                .map(|a| format!("127.0.0.1:{}", a.rsplit(':').next().unwrap()).parse().unwrap())
                .unwrap_or_else(free_addr),
            data_dir,
            _dir: Some(dir),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log,
            admin_password: env.iter().find(|(k, _)| *k == "AF_ADMIN_PASSWORD").map(|(_, v)| v.to_string()),
        };
        node.spawn();
        node
    }

    /// Starts the node; a port another process took between `free_addr` and the bind (ports
    /// are picked free, then released) is picked again.
    fn spawn(&mut self) {
        for _ in 0..5 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => {
                    self.addr = free_addr();
                    self.gateway = free_addr();
                    if !self.extra.iter().any(|a| a == "--rpc") {
                        self.rpc = free_addr();
                    }
                }
                Err(log) => panic!("node did not start: {log}"),
            }
        }
        panic!("node did not start: no free ports: {}", self.log_text());
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_af"))
            .args(["registry", "serve", "--api", &self.addr.to_string(), "--gateway", &self.gateway.to_string(), "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.extra)
            .args(if self.extra.iter().any(|a| a == "--rpc") { vec![] } else { vec!["--rpc".to_string(), self.rpc.to_string()] })
            // Tests of everything but access control run an open node; auth tests pass --auth.
            .args(if self.extra.iter().any(|a| a == "--auth") { &[][..] } else { &["--auth", "none"][..] })
            // The node's own default filter unless the run asks for another.
            .env("AF_LOG", std::env::var("AF_TEST_NODE_LOG").unwrap_or_default())
            // Any free port: many nodes run at once.
            .env("AF_SWARM", "/ip4/127.0.0.1/tcp/0")
            .env("AF_METRICS", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start af");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/v2/")).send() {
                if r.status().is_success() || r.status() == 401 {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("node exited with {status}: {}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("node did not become ready: {}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log says `text` within `secs`: what a node does after a client's response
    /// ended (a pull-through's last bytes go once the digest matched, before the blob is kept).
    pub fn logs_within(&self, text: &str, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !self.log_text().contains(text) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        true
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }

    /// `rb` with the administrator's credentials, if the node has them.
    pub fn as_admin(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.admin_password {
            Some(p) => rb.basic_auth("admin", Some(p)),
            None => rb,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// SIGKILL: no chance to flush or clean up, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends SIGTERM, as a container runtime stopping the node would.
    pub fn terminate(&mut self) {
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
    }

    /// Waits up to `limit` for the node to exit: its status, None if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts the node again on its data directory (after it exited or was killed).
    pub fn start_again(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The node's process id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node runs").id()
    }

    /// The node's peak resident memory so far, in KiB (`VmHWM`).
    /// Starts watching the node's own memory (see [`MemoryWatch`]).
    pub fn watch_memory(&self) -> MemoryWatch {
        MemoryWatch::start(self.pid())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// A response header's value, or "" when it has none.
pub fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Pushes a blob in one POST; returns its digest.
pub fn push_blob(node: &Node, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = node
        .as_admin(client().post(node.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"))))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "push blob: {}", r.text().unwrap_or_default());
    d
}

/// An OCI image manifest over a config and layers (pushed first), as bytes.
pub fn image_manifest(node: &Node, repo: &str, config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let c = push_blob(node, repo, config);
    let ls: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let d = push_blob(node, repo, l);
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": ls,
    }))
    .unwrap()
}

pub fn put_manifest(node: &Node, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
    node.as_admin(client().put(node.url(&format!("/v2/{repo}/manifests/{reference}")))).header("Content-Type", media_type).body(body.to_vec()).send().unwrap()
}

/// Asserts an OCI error response: status, then the error body's first code.
pub fn assert_oci_error(resp: Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    let body = resp.text().unwrap();
    assert_eq!(got, status, "status for body {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert_eq!(v["errors"][0]["code"], code, "body {body}");
    assert!(v["errors"][0]["message"].is_string(), "body {body}");
}

/// Runs a command and returns its stdout, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? scripts/install-test-deps.sh installs it)"));
    if !out.status.success() {
        panic!("{cmd:?} failed with {}:\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tool(name: &str) -> PathBuf {
    let gobin = std::env::var("GOBIN").map(PathBuf::from).unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join("go/bin"));
    let candidate = gobin.join(name);
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from(name)
    }
}

/// A throwaway Kubo repository, used offline (no daemon): Kubo's own CLI as an independent
/// IPFS implementation.
pub struct Kubo {
    repo: tempfile::TempDir,
}

impl Kubo {
    pub fn new() -> Kubo {
        let repo = tempfile::tempdir().unwrap();
        let k = Kubo { repo };
        run(k.cmd().args(["init", "--empty-repo", "--profile", "test"]));
        k
    }

    /// Its repository (`IPFS_PATH`); a running daemon writes its API address to `api` there.
    pub fn path(&self) -> &Path {
        self.repo.path()
    }

    /// Kubo's CLI against `node`'s RPC (`--api`), which must succeed: its output, trimmed.
    pub fn against(&self, node: &Node, args: &[&str]) -> String {
        run(self.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port())]).args(args)).trim().to_string()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(tool("ipfs"));
        c.env("IPFS_PATH", self.repo.path());
        c
    }
}

/// The image CID `node` gives `repo:reference` (its `Ipfs-Image-Cid`).
pub fn image_cid(node: &Node, repo: &str, reference: &str) -> String {
    let r = client().head(node.url(&format!("/v2/{repo}/manifests/{reference}"))).header("Accept", OCI_MANIFEST).send().unwrap();
    assert_eq!(r.status(), 200, "{repo}:{reference}");
    r.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string()
}

/// The node's swarm address on loopback TCP, with its peer ID (from the RPC's `id`).
pub fn loopback_addr(node: &Node) -> String {
    let id: serde_json::Value = client().post(format!("http://{}/api/v0/id", node.rpc)).send().unwrap().json().unwrap();
    id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.contains("/tcp/") && a.starts_with("/ip4/127.")).unwrap().to_string()
}

/// `af registry visibility REPO public` on `node`'s data directory.
pub fn make_public(node: &Node, repo: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", repo, "public"]).arg("--data-dir").arg(&node.data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Imports `root`'s DAG from `kubo`'s repository into `node` (Kubo's `dag export`, the node's
/// `dag/import`, pinned: public).
pub fn import_from_kubo(kubo: &Kubo, node: &Node, root: &str) {
    let out = kubo.cmd().args(["dag", "export", root]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(out.stdout).file_name("d.car"));
    let url = format!("http://127.0.0.1:{}/api/v0/dag/import?pin-roots=true", node.rpc.port());
    let answer = client().post(url).multipart(form).send().unwrap().text().unwrap();
    assert!(answer.contains("\"PinErrorMsg\":\"\""), "{answer}");
}

/// The peak of a process's anonymous memory (heap and stacks), sampled every 5 ms while watched.
/// Not its peak RSS (VmHWM): that counts pages of mapped files too, and the SQLite stores are read
/// through a memory map, whose pages are the page cache's and grow with what is read.
pub struct MemoryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
    baseline: u64,
}

/// The value of the sample `series` (a metric name with its labels, as the exposition text spells
/// them) in Prometheus text `page`.
pub fn metric_sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
}

/// A `/proc/<pid>/status` field in KiB, if the process is still there: `VmRSS` (all resident
/// memory), `RssAnon` (the heap and stacks: what a leak grows), `RssFile` (mapped files: blob
/// windows, the SQLite stores' memory map).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `RssAnon` of process `pid` in KiB, if it is still there.
pub fn anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon")
}

impl MemoryWatch {
    pub fn start(pid: u32) -> Self {
        let baseline = anon_kib(pid).unwrap_or(0);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = baseline;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match anon_kib(pid) {
                    Some(kib) => peak = peak.max(kib),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        MemoryWatch { stop, sampler: Some(sampler), baseline }
    }

    /// The highest anonymous memory seen, in KiB.
    pub fn peak_kib(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.take().unwrap().join().unwrap()
    }

    /// How far above its level when watching started the peak went, in KiB.
    pub fn growth_kib(self) -> u64 {
        let baseline = self.baseline;
        self.peak_kib().saturating_sub(baseline)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
