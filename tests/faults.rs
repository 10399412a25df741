//! Faults: damaged database files, a data disk that fills up during uploads, kill -9 at random
//! points of pushes, GCs, CAR imports and token issuance.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `af registry serve` on `data_dir` expecting it to refuse: its exit status and what it
/// printed.
fn start_refused(data_dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_af"))
        .args(["registry", "serve", "--auth", "none", "--api", &free_addr().to_string(), "--gateway", &free_addr().to_string(), "--rpc", &free_addr().to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .env("AF_SWARM", "/ip4/127.0.0.1/tcp/0")
        .env("AF_METRICS", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started on a damaged database");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    assert!(Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success());
}

fn stop(node: &mut Node) {
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()), "the node did not stop cleanly");
}

#[test]
fn damaged_databases_refuse_to_start_naming_the_file_and_what_to_do() {
    let mut node = Node::start();
    let layer = xorshift_bytes(3, 3 << 20);
    let m = image_manifest(&node, "a/b", b"{}", &[&layer]);
    // Enough tags that the metadata spans many pages.
    for i in 0..300 {
        assert_eq!(put_manifest(&node, "a/b", &format!("tag-{i:04}-{}", "x".repeat(60)), OCI_MANIFEST, &m).status(), 201);
    }
    stop(&mut node);
    let pristine = node.data_dir.with_file_name("pristine");
    copy_dir(&node.data_dir, &pristine);
    let meta = node.data_dir.join("metadata.sqlite");
    let blocks = node.data_dir.join("blocks.sqlite");
    assert!(std::fs::metadata(&meta).unwrap().len() > 64 * 1024, "metadata spans pages");

    let damage = |what: &str, f: &dyn Fn()| {
        copy_dir(&pristine, &node.data_dir);
        f();
        let said = start_refused(&node.data_dir);
        eprintln!("{what}: {said}");
        said
    };
    // Its header overwritten.
    let said = damage("header", &|| {
        let mut bytes = std::fs::read(&meta).unwrap();
        bytes[..100].copy_from_slice(&[0x5a; 100]);
        std::fs::write(&meta, bytes).unwrap();
    });
    assert!(said.contains("metadata.sqlite is damaged") && said.contains("backup"), "{said}");
    // Truncated, as by a copy cut short.
    let said = damage("truncated", &|| {
        let f = std::fs::OpenOptions::new().write(true).open(&blocks).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
    });
    assert!(said.contains("blocks.sqlite is damaged") && said.contains("truncated"), "{said}");
    // A page in the middle scrambled (a bad sector).
    let said = damage("page", &|| {
        let mut bytes = std::fs::read(&meta).unwrap();
        let page = 4096;
        let middle = (bytes.len() / page / 2) * page;
        for (i, b) in bytes[middle..middle + page].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        std::fs::write(&meta, bytes).unwrap();
    });
    assert!(said.contains("metadata.sqlite is damaged"), "{said}");

    // The undamaged copy starts and serves everything it held.
    copy_dir(&pristine, &node.data_dir);
    node.start_again();
    let r = client().get(node.url("/v2/a/b/tags/list")).send().unwrap();
    let tags: serde_json::Value = r.json().unwrap();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 300);
    let blob = client().get(node.url(&format!("/v2/a/b/blobs/{}", sha256(&layer)))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&blob), sha256(&layer));
}
