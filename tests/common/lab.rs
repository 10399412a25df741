//! A lab of real links: network namespaces on a bridge, each joined by a `veth` pair whose two
//! directions are shaped with `tbf`, for tests and benchmarks of several nodes over links slower
//! than loopback. Shared by `tests/` and `benches/`.
//!
//! Every address lives inside namespaces the lab creates (the bridge too sits in a namespace of
//! its own, so the host's network is never touched): 10.77.0.0/24, member `i` at 10.77.0.(i+1).
//! Kubo's Bitswap ignores peers in 198.18.0.0/15, so that range is not used. Everything is
//! removed when the lab is dropped, and by a watchdog process when the test dies any other way
//! (Ctrl-C, a kill, a panic that aborts): it outlives the test by at most a second.
//! Root is required; [`Lab::available`] says why not when it is missing. Nodes are driven with
//! `curl` inside their namespaces (standard library and `serde_json` only here).
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// The lab's members and the namespace holding their bridge.
pub struct Lab {
    prefix: String,
    hub: String,
    pub members: Vec<Member>,
    watchdog: Option<std::process::Child>,
}

/// One namespace on the bridge.
pub struct Member {
    /// The namespace's name (`ip netns exec <ns> ...`).
    pub ns: String,
    pub ip: String,
    /// The bridge's end of its veth pair (in the hub namespace).
    port: String,
}

/// Runs `ip` with `args`; its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Shapes what leaves `dev` (in namespace `ns`) to `mbit` megabits a second; `None` takes the
/// shaping off.
fn shape(ns: &str, dev: &str, mbit: Option<u32>) -> Result<(), String> {
    let _ = Command::new("ip").args(["netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"]).stderr(Stdio::null()).status();
    let Some(mbit) = mbit else { return Ok(()) };
    let rate = format!("{mbit}mbit");
    // A burst of 256 kbit per 100 Mbit/s: one TCP stream then gets 12.0 MB/s of 100 Mbit/s.
    let burst = format!("{}kbit", (256 * mbit / 100).max(32));
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "latency", "50ms"])
        .output()
        .map_err(|e| format!("tc: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("tc on {dev} in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lab {
    /// Why a lab cannot be built here, if it cannot (not root, no `ip` or `tc`).
    pub fn available() -> Result<(), String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("the lab of network namespaces needs root".into());
        }
        for tool in ["ip", "tc"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("the lab needs `{tool}` (Debian package iproute2)"));
            }
        }
        Ok(())
    }

    /// `n` namespaces on one bridge, every link unshaped (see [`Lab::shape`]).
    pub fn new(n: usize) -> Result<Lab, String> {
        Self::available()?;
        assert!(n < 250, "one /24 holds the lab");
        let prefix = format!("afl{}x{}", std::process::id(), LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let hub = format!("{prefix}hub");
        let mut lab = Lab { prefix: prefix.clone(), hub: hub.clone(), members: Vec::new(), watchdog: None };
        ip(&["netns", "add", &hub])?;
        lab.watchdog = Some(lab.spawn_watchdog(n)?);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        // A host with `br_netfilter` loaded (podman's networks load it) runs every bridged frame
        // through iptables and conntrack: a cost of the host, not of the links the lab stands
        // for (on the 8-node fleet, 5-7% of all CPU). The setting is per namespace: the hub's
        // alone is turned off; without the module there is nothing to turn off.
        for table in ["iptables", "ip6tables", "arptables"] {
            let key = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
            let _ = Command::new("ip").args(["netns", "exec", &hub, "sh", "-c", &format!("[ ! -e {key} ] || echo 0 > {key}")]).status();
        }
        for i in 0..n {
            let ns = format!("{prefix}n{i}");
            let port = format!("p{i}");
            let addr = format!("10.77.0.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            lab.members.push(Member { ns, ip: addr, port });
        }
        Ok(lab)
    }

    /// A process that removes the lab once this one is gone, however it ends: it ignores the
    /// signals a Ctrl-C or a hang-up sends the whole process group.
    fn spawn_watchdog(&self, n: usize) -> Result<std::process::Child, String> {
        let namespaces: Vec<String> = (0..n).map(|i| format!("{}n{i}", self.prefix)).chain([self.hub.clone()]).collect();
        let script = format!(
            "trap '' INT TERM HUP; while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; for ns in {list}; do \
             for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p; done; ip netns del $ns 2>/dev/null; done",
            pid = std::process::id(),
            list = namespaces.join(" ")
        );
        Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("sh: {e}"))
    }

    /// Shapes member `i`'s link: `up` what it sends, `down` what it receives, in Mbit/s (`None`:
    /// unshaped).
    pub fn shape(&self, i: usize, up: Option<u32>, down: Option<u32>) -> Result<(), String> {
        let m = &self.members[i];
        shape(&m.ns, "eth0", up)?;
        shape(&self.hub, &m.port, down)
    }

    /// Shapes every member's link both ways to `mbit`.
    pub fn shape_all(&self, mbit: u32) -> Result<(), String> {
        (0..self.members.len()).try_for_each(|i| self.shape(i, Some(mbit), Some(mbit)))
    }

    /// `program` to run inside member `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.members[i].ns, program]);
        c
    }
}

fn kill_in(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Lab {
    fn drop(&mut self) {
        for m in &self.members {
            kill_in(&m.ns);
            let _ = ip(&["netns", "del", &m.ns]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A node inside a lab member's namespace, `af registry serve` or Kubo's daemon: its listeners
/// on the namespace's own loopback (the same ports in every member), its swarm on the member's
/// address. Both answer the same RPC.
pub struct LabNode {
    pub member: usize,
    pub ns: String,
    pub ip: String,
    pub data_dir: std::path::PathBuf,
    pub log: std::path::PathBuf,
    pub peer_id: String,
    program: std::path::PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

/// Ports every lab node uses on its namespace's loopback.
pub const LAB_API: u16 = 5000;
pub const LAB_RPC: u16 = 5001;
pub const LAB_GATEWAY: u16 = 8080;
pub const LAB_SWARM: u16 = 4001;

impl Lab {
    fn node(&self, i: usize, program: &std::path::Path, dir: &std::path::Path) -> Result<LabNode, String> {
        let m = &self.members[i];
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(LabNode {
            member: i,
            ns: m.ns.clone(),
            ip: m.ip.clone(),
            data_dir: dir.join("data"),
            log: dir.join("node.log"),
            peer_id: String::new(),
            program: program.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            child: None,
        })
    }

    /// Starts `bin registry serve` in member `i` with its data in `dir` (made if missing) and
    /// `extra` flags; waits until its RPC answers.
    pub fn start_af(&self, i: usize, bin: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> Result<LabNode, String> {
        let mut node = self.node(i, bin, dir)?;
        node.args = node.af_args(extra);
        node.env = vec![("AF_LOG".into(), std::env::var("AF_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()))];
        node.spawn()?;
        Ok(node)
    }

    /// Starts Kubo's daemon (`ipfs`, a repository made in `dir`) in member `i`, with no routing
    /// (it fetches from the peers it is connected to) and the lab's ports.
    pub fn start_kubo(&self, i: usize, ipfs: &std::path::Path, dir: &std::path::Path) -> Result<LabNode, String> {
        let mut node = self.node(i, ipfs, dir)?;
        node.env = vec![("IPFS_PATH".into(), node.data_dir.display().to_string()), ("IPFS_TELEMETRY".into(), "off".into())];
        let ipfs = |args: &[&str]| -> Result<(), String> {
            let out = Command::new(&node.program).args(args).envs(node.env.iter().map(|(k, v)| (k, v))).output().map_err(|e| format!("ipfs: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("ipfs {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
            }
        };
        ipfs(&["init", "--empty-repo", "--profile", "test"])?;
        let swarm = format!("[\"/ip4/{}/tcp/{LAB_SWARM}\"]", node.ip);
        for (key, value) in [
            ("Addresses.Swarm", swarm.as_str()),
            ("Addresses.API", &format!("\"/ip4/127.0.0.1/tcp/{LAB_RPC}\"")),
            ("Addresses.Gateway", &format!("\"/ip4/127.0.0.1/tcp/{LAB_GATEWAY}\"")),
            ("Routing.Type", "\"none\""),
            ("Bootstrap", "[]"),
        ] {
            ipfs(&["config", "--json", key, value])?;
        }
        node.args = vec!["daemon".into()];
        node.spawn()?;
        Ok(node)
    }
}

impl LabNode {
    fn af_args(&self, extra: &[&str]) -> Vec<String> {
        let local = |port: u16| format!("127.0.0.1:{port}");
        let mut args: Vec<String> = ["registry", "serve", "--auth", "none", "--data-dir"].map(String::from).to_vec();
        args.push(self.data_dir.display().to_string());
        for (flag, value) in [
            ("--api", local(LAB_API)),
            ("--gateway", local(LAB_GATEWAY)),
            ("--rpc", local(LAB_RPC)),
            ("--metrics", local(9090)),
            ("--swarm", format!("/ip4/{}/tcp/{LAB_SWARM}", self.ip)),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {} in {}: {e}", self.program.display(), self.ns))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(id) = self.rpc("id") {
                let v: serde_json::Value = serde_json::from_str(&id).map_err(|e| format!("id: {e}: {id}"))?;
                self.peer_id = v["ID"].as_str().unwrap_or_default().to_string();
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("the node in {} exited with {status}: {}", self.ns, self.log_text()));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("the node in {} did not answer: {}", self.ns, self.log_text()));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The node's process (`ip netns exec` runs it in its own place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Its anonymous memory now (heap and stacks, not the page cache of mapped files), in KiB.
    pub fn anon_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("RssAnon:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Its peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Stops the node (SIGKILL) and starts it again with `extra` flags on the same data.
    pub fn restart_with(&mut self, extra: &[&str]) -> Result<(), String> {
        self.kill();
        self.args = self.af_args(extra);
        self.spawn()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The node's swarm address with its peer ID.
    pub fn swarm_addr(&self) -> String {
        format!("/ip4/{}/tcp/{LAB_SWARM}/p2p/{}", self.ip, self.peer_id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `curl` inside the node's namespace with `args`: its output, or why it failed.
    pub fn curl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip").args(["netns", "exec", &self.ns, "curl", "-sS", "--fail-with-body"]).args(args).output().map_err(|e| format!("curl: {e}"))?;
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(body)
        } else {
            Err(format!("{}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim(), body))
        }
    }

    /// POSTs RPC command `call` (with its query string).
    pub fn rpc(&self, call: &str) -> Result<String, String> {
        self.curl(&["-X", "POST", &format!("http://127.0.0.1:{LAB_RPC}/api/v0/{call}")])
    }

    /// RPC `add` of the file at `path`: its root CID.
    pub fn add_file(&self, path: &std::path::Path) -> Result<String, String> {
        let url = format!("http://127.0.0.1:{LAB_RPC}/api/v0/add?pin=true&cid-version=1&raw-leaves=true");
        let out = self.curl(&["-X", "POST", "-F", &format!("file=@{}", path.display()), &url])?;
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default()).map_err(|e| format!("add: {e}: {out}"))?;
        v["Hash"].as_str().map(str::to_string).ok_or(format!("add: no hash: {out}"))
    }

    /// Pushes the file at `path` as a blob of repository `repo` through the OCI API (streamed
    /// from disk); answers its digest.
    pub fn push_blob(&self, repo: &str, path: &std::path::Path) -> Result<String, String> {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(path).map_err(|e| e.to_string())?, &mut hasher).map_err(|e| e.to_string())?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        let url = format!("http://127.0.0.1:{LAB_API}/v2/{repo}/blobs/uploads?digest={digest}");
        self.curl(&["-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", &path.display().to_string(), &url])?;
        Ok(digest)
    }

    /// GETs blob `digest` of `repo` from the node's OCI API into file `out`.
    pub fn get_blob(&self, repo: &str, digest: &str, out: &std::path::Path) -> Result<(), String> {
        self.curl(&["-o", &out.display().to_string(), &format!("http://127.0.0.1:{LAB_API}/v2/{repo}/blobs/{digest}")]).map(drop)
    }

    /// Pushes the file at `path` as a layer of repository `repo` through the OCI API (streamed
    /// from disk), makes the repository public with `af registry visibility` (`af`: the binary),
    /// and answers the layer's root CID.
    pub fn push_public_layer(&self, af: &std::path::Path, repo: &str, path: &std::path::Path) -> Result<String, String> {
        let digest = self.push_blob(repo, path)?;
        let api = |tail: &str| format!("http://127.0.0.1:{LAB_API}/v2/{repo}/blobs/{tail}");
        let out = Command::new(af).args(["registry", "visibility", repo, "public", "--data-dir"]).arg(&self.data_dir).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("visibility: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let head = self.curl(&["-I", &api(&digest)])?;
        let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("ipfs-cid:")).ok_or(format!("no Ipfs-Cid: {head}"))?;
        Ok(line.split_once(':').map(|(_, v)| v.trim().to_string()).unwrap_or_default())
    }

    /// A number from RPC `bitswap/stat`.
    pub fn bitswap_stat(&self, field: &str) -> u64 {
        self.rpc("bitswap/stat").ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()).and_then(|v| v[field].as_u64()).unwrap_or(0)
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connects every pair of `nodes` (RPC `swarm/connect`).
pub fn mesh(nodes: &[&LabNode]) -> Result<(), String> {
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            a.rpc(&format!("swarm/connect?arg={}", b.swarm_addr()))?;
        }
    }
    Ok(())
}

/// A database of its own on the test PostgreSQL server (`AF_TEST_POSTGRES_URL`, started by
/// `scripts/postgres.sh`) for nodes of the lab to share: they reach it through the server's Unix
/// socket (`AF_TEST_PG_DIR`), which no network namespace hides, so the lab needs no address
/// outside itself. Dropped with the value.
pub struct SharedDb {
    admin: String,
    name: String,
    /// The URL the lab's nodes connect with.
    pub url: String,
}

impl SharedDb {
    pub fn new() -> Result<SharedDb, String> {
        let admin = std::env::var("AF_TEST_POSTGRES_URL").map_err(|_| "AF_TEST_POSTGRES_URL is not set (scripts/postgres.sh)".to_string())?;
        let port = admin.rsplit_once(':').and_then(|(_, tail)| tail.split('/').next()).and_then(|p| p.parse::<u16>().ok()).ok_or(format!("no port in {admin}"))?;
        let socket_dir = std::env::var("AF_TEST_PG_DIR").unwrap_or_else(|_| "/tmp/af-test-pg".into());
        if !std::path::Path::new(&format!("{socket_dir}/.s.PGSQL.{port}")).exists() {
            return Err(format!("no PostgreSQL socket in {socket_dir} for port {port} (scripts/postgres.sh makes one; AF_TEST_PG_DIR says where)"));
        }
        let name = format!("af_lab_{}", uuid::Uuid::new_v4().simple());
        let out = Command::new("psql").arg(&admin).args(["-qc", &format!("CREATE DATABASE {name}")]).output().map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let url = format!("postgresql:///{name}?host={socket_dir}&port={port}&user=postgres");
        Ok(SharedDb { admin, name, url })
    }
}

impl Drop for SharedDb {
    fn drop(&mut self) {
        let _ = Command::new("psql").arg(&self.admin).args(["-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)]).output();
    }
}
