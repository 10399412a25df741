//! A Kubo daemon of a test's own (Kubo 0.42, built by scripts/install-test-deps.sh).

use super::*;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A Kubo daemon on loopback with no routing: it fetches only from peers it is connected to.
pub struct KuboDaemon {
    pub kubo: Kubo,
    child: Child,
}

impl Drop for KuboDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KuboDaemon {
    pub fn start() -> KuboDaemon {
        Self::start_with(&[("Routing.Type", "\"none\"")], &[])
    }

    /// A daemon with these `config --json` settings and environment.
    pub fn start_with(config: &[(&str, &str)], env: &[(&str, &str)]) -> KuboDaemon {
        let kubo = Kubo::new();
        for (key, value) in config {
            run(kubo.cmd().args(["config", "--json", key, value]));
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = kubo.cmd().args(["daemon"]).env("IPFS_TELEMETRY", "off").envs(env.iter().copied()).stdout(log.reopen().unwrap()).stderr(Stdio::null()).spawn().unwrap();
        let daemon = KuboDaemon { kubo, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(log.path()).unwrap_or_default().contains("Daemon is ready") {
            assert!(Instant::now() < deadline, "Kubo's daemon did not start: {}", std::fs::read_to_string(log.path()).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    pub fn ipfs(&self, args: &[&str]) -> std::process::Output {
        self.kubo.cmd().args(args).env("IPFS_TELEMETRY", "off").output().unwrap()
    }
}
