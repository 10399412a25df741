//! One `ipfs-cluster-service` peer of a test's or a benchmark's own (IPFS Cluster, built from the
//! vendored source by scripts/install-test-deps.sh), configured for a loopback address and
//! short intervals. Shared by tests/cluster.rs and benches/cluster.rs (through `#[path]`), so it
//! needs nothing from either's harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// One `ipfs-cluster-service` peer in front of one node's RPC, stopped when dropped.
pub struct ClusterPeer {
    child: Option<Child>,
    /// The network namespace it runs in (a lab's member), if any.
    ns: Option<String>,
    pub dir: PathBuf,
    pub id: String,
    /// The REST API, as ipfs-cluster-ctl's `--host` takes it, and as a URL.
    pub api: String,
    pub url: String,
    /// Its cluster swarm address, with its peer ID.
    pub addr: String,
}

pub const SECRET: &str = "5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5ec0c1a5";

impl ClusterPeer {
    /// Configures a peer on `ip` for the node whose RPC is (or will be) on 127.0.0.1:`rpc`.
    pub fn init(root: &Path, name: &str, ip: &str, rpc: u16) -> ClusterPeer {
        Self::init_in(root, name, ip, rpc, SECRET)
    }

    /// [`Self::init`] in the cluster of `secret` (64 hex digits).
    pub fn init_in(root: &Path, name: &str, ip: &str, rpc: u16, secret: &str) -> ClusterPeer {
        // Free on the peer's own address: one free on 127.0.0.1 could be held on `ip` by another
        // test's peer (a REST API once failed "address already in use" so).
        let port = || std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        Self::configure(root, name, None, ip, rpc, secret, (port(), port(), port(), port()))
    }

    /// A peer in network namespace `ns` (a lab's member, whose address is `ip`) for the node
    /// whose RPC is on that namespace's 127.0.0.1:`rpc`: its ports are the usual ones (9096
    /// swarm, 9094 REST API, 9095 proxy, 9097 pinning service), the namespace being its own.
    pub fn init_in_namespace(root: &Path, name: &str, ns: &str, ip: &str, rpc: u16) -> ClusterPeer {
        Self::configure(root, name, Some(ns), ip, rpc, SECRET, (9096, 9094, 9095, 9097))
    }

    /// `program`, run in this peer's namespace if it has one.
    fn command(&self, program: &str) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn configure(root: &Path, name: &str, ns: Option<&str>, ip: &str, rpc: u16, secret: &str, (swarm, api, proxy, pinsvc): (u16, u16, u16, u16)) -> ClusterPeer {
        let dir = root.join(name);
        let out = Command::new("ipfs-cluster-service")
            .arg("-c")
            .arg(&dir)
            .args(["init", "--consensus", "crdt"])
            .output()
            .expect("ipfs-cluster-service (scripts/install-test-deps.sh builds it)");
        assert!(out.status.success(), "ipfs-cluster-service init: {}", String::from_utf8_lossy(&out.stderr));
        let identity: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("identity.json")).unwrap()).unwrap();
        let id = identity["id"].as_str().unwrap().to_string();
        let path = dir.join("service.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let rpc = format!("/ip4/127.0.0.1/tcp/{rpc}");
        c["cluster"]["peername"] = name.into();
        c["cluster"]["secret"] = secret.into();
        c["cluster"]["listen_multiaddress"] = serde_json::json!([format!("/ip4/{ip}/tcp/{swarm}")]);
        c["cluster"]["disable_repinning"] = false.into();
        c["cluster"]["monitor_ping_interval"] = "1s".into();
        c["cluster"]["peer_watch_interval"] = "1s".into();
        c["cluster"]["state_sync_interval"] = "5s".into();
        c["cluster"]["pin_recover_interval"] = "5s".into();
        c["cluster"]["mdns_interval"] = "0s".into();
        // A pinset update a peer missed (its pubsub mesh not formed yet) comes again within
        // seconds, not the default minute: once, a peer never saw a pin in 120 s.
        c["consensus"]["crdt"]["rebroadcast_interval"] = "5s".into();
        c["monitor"]["pubsubmon"]["check_interval"] = "1s".into();
        for informer in ["disk", "pinqueue", "tags"] {
            c["informer"][informer]["metric_ttl"] = "3s".into();
        }
        c["api"]["restapi"]["http_listen_multiaddress"] = format!("/ip4/{ip}/tcp/{api}").into();
        c["api"]["ipfsproxy"]["listen_multiaddress"] = format!("/ip4/{ip}/tcp/{proxy}").into();
        c["api"]["ipfsproxy"]["node_multiaddress"] = rpc.clone().into();
        c["api"]["pinsvcapi"]["http_listen_multiaddress"] = format!("/ip4/{ip}/tcp/{pinsvc}").into();
        c["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = rpc.into();
        c["ipfs_connector"]["ipfshttp"]["connect_swarms_delay"] = "1s".into();
        c["ipfs_connector"]["ipfshttp"]["pin_timeout"] = "30s".into();
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        ClusterPeer {
            child: None,
            ns: ns.map(str::to_string),
            dir,
            id: id.clone(),
            api: format!("/ip4/{ip}/tcp/{api}"),
            url: format!("http://{ip}:{api}"),
            addr: format!("/ip4/{ip}/tcp/{swarm}/p2p/{id}"),
        }
    }

    /// Starts it knowing the `others`' addresses.
    pub fn start(&mut self, others: &[String]) {
        let path = self.dir.join("service.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        c["cluster"]["peer_addresses"] = serde_json::json!(others);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        let log = std::fs::File::create(self.dir.join("service.log")).unwrap();
        let child = self
            .command("ipfs-cluster-service")
            .arg("-c")
            .arg(&self.dir)
            .arg("daemon")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ipfs-cluster-service (scripts/install-test-deps.sh builds it)");
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    pub fn ctl(&self) -> Command {
        let mut c = self.command("ipfs-cluster-ctl");
        c.args(["--host", &self.api, "--enc", "json"]);
        c
    }

    /// The cluster's status of `cid`: each cluster peer's ID with its status (`pinned`, ...).
    pub fn status(&self, cid: &str) -> Vec<(String, String)> {
        let out = self.ctl().args(["status", cid]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peer_map"].as_object().map(|m| m.iter().map(|(p, s)| (p.clone(), s["status"].as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default()
    }
}

impl Drop for ClusterPeer {
    fn drop(&mut self) {
        self.stop();
    }
}
