//! The swarm against Kubo 0.42, an independent IPFS implementation: Kubo connects to our node,
//! sees the protocols it serves, and fetches a public layer over Bitswap with `ipfs cat` (its
//! bytes hash to the OCI digest); a private layer's CID never comes (Kubo times out).

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Kubo daemon on loopback with no routing: it fetches only from peers it is connected to.
struct KuboDaemon {
    kubo: Kubo,
    child: Child,
}

impl Drop for KuboDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KuboDaemon {
    fn start() -> KuboDaemon {
        let kubo = Kubo::new();
        run(kubo.cmd().args(["config", "--json", "Routing.Type", "\"none\""]));
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = kubo.cmd().args(["daemon"]).env("IPFS_TELEMETRY", "off").stdout(log.reopen().unwrap()).stderr(Stdio::null()).spawn().unwrap();
        let daemon = KuboDaemon { kubo, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(log.path()).unwrap_or_default().contains("Daemon is ready") {
            assert!(Instant::now() < deadline, "Kubo's daemon did not start: {}", std::fs::read_to_string(log.path()).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn ipfs(&self, args: &[&str]) -> std::process::Output {
        self.kubo.cmd().args(args).env("IPFS_TELEMETRY", "off").output().unwrap()
    }
}

fn rpc(node: &Node, call: &str) -> serde_json::Value {
    let r = client().post(format!("http://{}/api/v0/{call}", node.rpc)).send().unwrap();
    assert!(r.status().is_success(), "{call}: {}", r.status());
    r.json().unwrap()
}

/// Bytes that never repeat a chunk (xorshift), so every leaf is a block of its own.
fn layer(seed: u64, len: usize) -> Vec<u8> {
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

fn cid_of_blob(node: &Node, repo: &str, digest: &str) -> String {
    let head = client().head(node.url(&format!("/v2/{repo}/blobs/{digest}"))).send().unwrap();
    head.headers()["Ipfs-Cid"].to_str().unwrap().to_string()
}

#[test]
fn kubo_fetches_public_layers_over_bitswap_and_never_private_ones() {
    let node = Node::start();
    let public = layer(1, 3 << 20);
    let private = layer(2, 300_000);
    let public_digest = push_blob(&node, "team/open", &public);
    let private_digest = push_blob(&node, "team/closed", &private);
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/open", "public"]).arg("--data-dir").arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
    let public_cid = cid_of_blob(&node, "team/open", &public_digest);
    let private_cid = cid_of_blob(&node, "team/closed", &private_digest);

    let id = rpc(&node, "id");
    let me = id["ID"].as_str().unwrap().to_string();
    let addr = id["Addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).expect("a loopback TCP address").to_string();
    assert!(addr.ends_with(&format!("/p2p/{me}")), "{addr}");

    let kubo = KuboDaemon::start();
    let connect = kubo.ipfs(&["swarm", "connect", &addr]);
    assert!(connect.status.success(), "{}", String::from_utf8_lossy(&connect.stderr));

    // Kubo sees what we serve through Identify.
    let seen = kubo.ipfs(&["id", &me]);
    let seen: serde_json::Value = serde_json::from_slice(&seen.stdout).unwrap();
    let protocols: Vec<&str> = seen["Protocols"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    for p in ["/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/kad/1.0.0", "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"] {
        assert!(protocols.contains(&p), "{p} not in {protocols:?}");
    }
    assert!(seen["AgentVersion"].as_str().unwrap().starts_with("af-registry/"));

    // The public layer: every byte, hashing to the OCI digest.
    let cat = kubo.ipfs(&["cat", "--timeout=60s", &public_cid]);
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(sha256(&cat.stdout), public_digest);

    // The private layer: never sent; Kubo gives up.
    let started = Instant::now();
    let cat = kubo.ipfs(&["block", "get", "--timeout=8s", &private_cid]);
    assert!(!cat.status.success() && cat.stdout.is_empty(), "a private block left the node");
    assert!(started.elapsed() >= Duration::from_secs(7));

    // Our side of it.
    let peers = rpc(&node, "swarm/peers");
    let kubo_id: serde_json::Value = serde_json::from_slice(&kubo.ipfs(&["id"]).stdout).unwrap();
    let kubo_id = kubo_id["ID"].as_str().unwrap();
    assert!(peers["Peers"].as_array().unwrap().iter().any(|p| p["Peer"] == kubo_id), "{peers}");
    let stat = rpc(&node, "bitswap/stat");
    assert!(stat["BlocksSent"].as_u64().unwrap() >= 4, "{stat}");
    assert!(stat["DataSent"].as_u64().unwrap() >= public.len() as u64, "{stat}");
}
