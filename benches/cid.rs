//! `cargo bench --bench cid`: `af cid` on a 1 GiB file (`AF_BENCH_SIZE_MIB`) against
//! `openssl dgst -sha256` (the speed of hashing alone) and Kubo's `ipfs add --only-hash` with the
//! same profile, in the same run, the file in the page cache for all three. Medians of 3.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn time(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn gobin() -> PathBuf {
    std::env::var("GOBIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join("go/bin"))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size_mib: u64 = std::env::var("AF_BENCH_SIZE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cid");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data.bin");
    let ok = Command::new("sh").arg("-c").arg(format!("head -c {} /dev/urandom > {}", size_mib << 20, file.display())).status().unwrap().success();
    assert!(ok);
    let af = env!("CARGO_BIN_EXE_af");
    let ipfs_repo = dir.join("ipfs");
    let ipfs = gobin().join("ipfs");
    let kubo = ipfs.exists();
    if kubo {
        let ok = Command::new(&ipfs).args(["init", "--empty-repo", "--profile", "test"]).env("IPFS_PATH", &ipfs_repo).output().unwrap().status.success();
        assert!(ok, "ipfs init");
    }
    let mb = (size_mib << 20) as f64 / 1e6;
    println!("file {size_mib} MiB, in the page cache; medians of 3 runs");
    for (profile, chunk, links) in [("unixfs-v1-2025", 1_048_576, 1024), ("kubo-v1", 262_144, 174)] {
        let mut af_t = Vec::new();
        let mut ssl_t = Vec::new();
        let mut kubo_t = Vec::new();
        for _ in 0..3 {
            af_t.push(time(Command::new(af).args(["cid", "--profile", profile]).arg(&file)));
            ssl_t.push(time(Command::new("openssl").args(["dgst", "-sha256"]).arg(&file)));
            if kubo {
                let cfg = Command::new(&ipfs).args(["config", "--json", "Import.UnixFSFileMaxLinks", &links.to_string()]).env("IPFS_PATH", &ipfs_repo).status().unwrap();
                assert!(cfg.success());
                kubo_t.push(time(
                    Command::new(&ipfs)
                        .args(["add", "--only-hash", "-Q", "--cid-version=1", "--raw-leaves", &format!("--chunker=size-{chunk}")])
                        .arg(&file)
                        .env("IPFS_PATH", &ipfs_repo),
                ));
            }
        }
        let (a, s) = (median(af_t), median(ssl_t));
        println!("{profile}: af cid {:.0} MB/s, openssl dgst -sha256 {:.0} MB/s: af/openssl {:.2} (target >= 0.9)", mb / a, mb / s, s / a);
        if kubo {
            let k = median(kubo_t);
            println!("{profile}: ipfs add --only-hash {:.0} MB/s: af/Kubo {:.2}", mb / k, k / a);
        } else {
            println!("{profile}: Kubo not installed (scripts/install-test-deps.sh builds it)");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
