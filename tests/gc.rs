//! `af registry gc` and the node's scheduled GC against running nodes: what is kept (tags, pins,
//! index children, referrers, young content), what goes (untagged manifests, unreferenced blobs
//! and their blocks), and pushes racing GCs under concurrency losing nothing.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn gc(node: &Node, grace: &str) -> String {
    let out = node.af(&["registry", "gc", "--grace", grace]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status(node: &Node, path: &str) -> u16 {
    client().get(node.url(path)).header("Accept", format!("{OCI_MANIFEST}, {OCI_INDEX}")).send().unwrap().status().as_u16()
}

fn blob_file_exists(node: &Node, digest: &str) -> bool {
    let hex = &digest[7..];
    node.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex).exists()
}

fn manifest_of(config: &str, layers: &[&str], subject: Option<(&str, usize)>) -> Vec<u8> {
    let layer = |d: &&str| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1});
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": layers.iter().map(layer).collect::<Vec<_>>(),
    });
    if let Some((digest, size)) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size});
    }
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn gc_keeps_what_is_referenced_and_sweeps_the_rest() {
    let node = Node::start_with(&["--gc-interval", "0s"]);
    let blob = |repo: &str, name: &str| push_blob(&node, repo, format!("blob {name}").as_bytes());
    let put = |repo: &str, reference: &str, mt: &str, body: &[u8]| {
        assert_eq!(put_manifest(&node, repo, reference, mt, body).status(), 201);
        sha256(body)
    };
    let (c_t, l1, l2) = (blob("a", "cT"), blob("a", "L1"), blob("a", "L2"));
    let tagged = manifest_of(&c_t, &[&l1, &l2], None);
    let t = put("a", "t", OCI_MANIFEST, &tagged);
    // Untagged, sharing L1: it goes, with its own blobs.
    let (c_u, l3) = (blob("a", "cU"), blob("a", "L3"));
    let u = put("a", &sha256(&manifest_of(&c_u, &[&l1, &l3], None)), OCI_MANIFEST, &manifest_of(&c_u, &[&l1, &l3], None));
    // Untagged but pinned.
    let (c_p, l4) = (blob("a", "cP"), blob("a", "L4"));
    let pinned = manifest_of(&c_p, &[&l4], None);
    let p = put("a", &sha256(&pinned), OCI_MANIFEST, &pinned);
    let out = node.af(&["registry", "pin", "add", &format!("a@{p}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A tagged index keeps its untagged child.
    let (c_c, l5) = (blob("a", "cC"), blob("a", "L5"));
    let child = manifest_of(&c_c, &[&l5], None);
    let c = put("a", &sha256(&child), OCI_MANIFEST, &child);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": c, "size": child.len()}]
    }))
    .unwrap();
    let i = put("a", "multi", OCI_INDEX, &index);
    // An untagged referrer of the tagged image follows its subject.
    let l6 = blob("a", "L6");
    let referrer = manifest_of(&c_t, &[&l6], Some((&t, tagged.len())));
    let r = put("a", &sha256(&referrer), OCI_MANIFEST, &referrer);
    // Never referenced; and X referenced in b but also pushed, unreferenced, to a.
    let o = blob("a", "O");
    let x = blob("b", "X");
    let in_b = manifest_of(&x, &[], None);
    put("b", "t", OCI_MANIFEST, &in_b);
    assert_eq!(blob("a", "X"), x);
    let u_image = client().head(node.url(&format!("/v2/a/manifests/{u}"))).header("Accept", OCI_MANIFEST).send().unwrap().headers()["Ipfs-Image-Cid"]
        .to_str()
        .unwrap()
        .parse::<cid::Cid>()
        .unwrap();

    // Young content is kept whatever references it.
    assert_eq!(gc(&node, "1h"), "gc: removed 0 manifests, 0 blob links, 0 blobs (0 bytes), 0 orphan files, 0 blocks (0 bytes)");
    std::thread::sleep(Duration::from_millis(1100));
    let report = gc(&node, "0s");
    assert!(report.starts_with("gc: removed 1 manifests, 4 blob links, 3 blobs (20 bytes), 0 orphan files, "), "{report}");
    assert!(!report.ends_with(" 0 blocks (0 bytes)"), "the untagged image's blocks go too: {report}");

    assert_eq!(status(&node, &format!("/v2/a/manifests/{u}")), 404);
    for gone in [&c_u, &l3, &o] {
        assert_eq!(status(&node, &format!("/v2/a/blobs/{gone}")), 404);
        assert!(!blob_file_exists(&node, gone));
    }
    // Moved aside under the lock, unlinked before the GC answered.
    assert_eq!(std::fs::read_dir(node.data_dir.join("trash")).unwrap().count(), 0);
    assert_eq!(status(&node, &format!("/v2/a/blobs/{x}")), 404);
    assert_eq!(status(&node, &format!("/v2/b/blobs/{x}")), 200);
    for kept in [&t, &p, &c, &i, &r] {
        assert_eq!(status(&node, &format!("/v2/a/manifests/{kept}")), 200, "{kept}");
    }
    for kept in [&c_t, &l1, &l2, &c_p, &l4, &c_c, &l5, &l6] {
        assert_eq!(status(&node, &format!("/v2/a/blobs/{kept}")), 200, "{kept}");
    }
    let index_db = rusqlite::Connection::open(node.data_dir.join("blocks.sqlite")).unwrap();
    let u_blocks: i64 = index_db.query_row("SELECT count(*) FROM blocks WHERE multihash = ?1", [u_image.hash().to_bytes()], |r| r.get(0)).unwrap();
    assert_eq!(u_blocks, 0);
    // Every kept image still has its whole DAG: each exports.
    let tmp = tempfile::tempdir().unwrap();
    for image in ["a:t".to_string(), "a:multi".to_string(), format!("a@{p}"), format!("a@{r}")] {
        let car = tmp.path().join("x.car");
        let out = node.af(&["registry", "export", &image, "-o", car.to_str().unwrap()]);
        assert!(out.status.success(), "{image}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Idempotent; and unpinning lets the pinned manifest go.
    assert!(gc(&node, "0s").starts_with("gc: removed 0 manifests, 0 blob links, 0 blobs"));
    let pins = String::from_utf8(node.af(&["registry", "pin", "ls"]).stdout).unwrap();
    assert_eq!(pins.trim(), format!("a@{p}"));
    assert!(node.af(&["registry", "pin", "rm", &format!("a@{p}")]).status.success());
    let report = gc(&node, "0s");
    assert!(report.starts_with("gc: removed 1 manifests, 2 blob links, 2 blobs"), "{report}");
    assert_eq!(status(&node, &format!("/v2/a/manifests/{p}")), 404);
    let out = node.af(&["registry", "pin", "add", "a:nope"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "af: a:nope is not in this registry");
}

/// Workers push images whose layers partly already exist (HEAD, then upload only if absent) and
/// retag them, so older manifests and blobs keep becoming garbage, while the node's scheduled GC
/// and `af registry gc` run back to back with a 2 s grace period. Every manifest push must
/// succeed and every tagged image must stay whole.
#[test]
fn pushes_racing_gcs_lose_nothing() {
    let node = Node::start_with(&["--gc-grace", "2s", "--gc-interval", "300ms"]);
    let pool: Vec<Vec<u8>> = (0..48).map(|i| format!("shared layer {i}").repeat(5000).into_bytes()).collect();
    for layer in &pool {
        push_blob(&node, "race", layer);
    }
    let stop = Instant::now() + Duration::from_secs(8);
    let gc_runs = std::thread::spawn({
        let data_dir = node.data_dir.clone();
        move || {
            let mut removed_blobs = 0u64;
            let mut runs = 0;
            while Instant::now() < stop {
                let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "gc", "--grace", "2s", "--data-dir"]).arg(&data_dir).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let blobs = text.split(", ").nth(2).and_then(|s| s.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
                removed_blobs += blobs.unwrap_or_else(|| panic!("unexpected gc output {text}"));
                runs += 1;
            }
            (runs, removed_blobs)
        }
    });
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let pool = pool.clone();
            let url = node.url("");
            std::thread::spawn(move || {
                let http = client();
                let mut repushed = 0;
                let mut n = 0u64;
                while Instant::now() < stop {
                    n += 1;
                    let picks = [&pool[(w * 13 + n as usize * 5) % pool.len()], &pool[(n as usize * 7 + w) % pool.len()]];
                    let mut layers = Vec::new();
                    for layer in picks {
                        let d = sha256(layer);
                        if http.head(format!("{url}/v2/race/blobs/{d}")).send().unwrap().status() != 200 {
                            let r = http.post(format!("{url}/v2/race/blobs/uploads/?digest={d}")).body(layer.to_vec()).send().unwrap();
                            assert_eq!(r.status(), 201);
                            repushed += 1;
                        }
                        layers.push(d);
                    }
                    let fresh = format!("worker {w} image {n}").into_bytes();
                    let config = sha256(&fresh);
                    let r = http.post(format!("{url}/v2/race/blobs/uploads/?digest={config}")).body(fresh).send().unwrap();
                    assert_eq!(r.status(), 201);
                    // Time between seeing the layers and referencing them, in which a GC may run.
                    std::thread::sleep(Duration::from_millis(n % 5 * 60));
                    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
                    let manifest = manifest_of(&config, &refs, None);
                    let r = http.put(format!("{url}/v2/race/manifests/w{w}")).header("Content-Type", OCI_MANIFEST).body(manifest).send().unwrap();
                    assert_eq!(r.status(), 201, "worker {w} push {n}: {}", r.text().unwrap_or_default());
                    for d in layers.iter().chain([&config]) {
                        let r = http.get(format!("{url}/v2/race/blobs/{d}")).send().unwrap();
                        assert_eq!(r.status(), 200, "worker {w} push {n}: {d}");
                        assert_eq!(&sha256(&r.bytes().unwrap()), d);
                    }
                }
                (n, repushed)
            })
        })
        .collect();
    let mut pushes = 0;
    for w in workers {
        let (n, _) = w.join().expect("worker");
        pushes += n;
    }
    let (runs, removed) = gc_runs.join().expect("gc loop");
    eprintln!("{pushes} image pushes against {runs} gc commands, which removed {removed} blobs");
    assert!(removed > 0, "the GCs collected nothing: the test raced nothing");
    assert!(node.log_text().contains("scheduled gc"), "the node's own GC did not run");

    // Settled: only the four tagged images remain, whole. (Ages count in whole seconds.)
    std::thread::sleep(Duration::from_millis(3100));
    gc(&node, "2s");
    for w in 0..4 {
        let m: serde_json::Value = client().get(node.url(&format!("/v2/race/manifests/w{w}"))).header("Accept", OCI_MANIFEST).send().unwrap().json().unwrap();
        for d in m["layers"].as_array().unwrap().iter().map(|l| &l["digest"]).chain([&m["config"]["digest"]]) {
            assert_eq!(status(&node, &format!("/v2/race/blobs/{}", d.as_str().unwrap())), 200);
        }
    }
    let left = rusqlite::Connection::open(node.data_dir.join("metadata.sqlite")).unwrap().query_row("SELECT count(*) FROM manifests", [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(left, 4);
}

/// The race in slow motion: a client sees a layer (HEAD), the only manifest referencing it is
/// untagged and old, a GC runs, then the client pushes a manifest referencing the layer. The
/// HEAD refreshed the layer's age, so the GC spared it and the push succeeds.
#[test]
fn a_blob_a_client_just_saw_survives_a_gc() {
    let node = Node::start_with(&["--gc-grace", "2s", "--gc-interval", "0s"]);
    let layer = push_blob(&node, "seen", b"a layer about to be reused");
    let config = push_blob(&node, "seen", b"config 1");
    assert_eq!(put_manifest(&node, "seen", "t", OCI_MANIFEST, &manifest_of(&config, &[&layer], None)).status(), 201);
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(client().head(node.url(&format!("/v2/seen/blobs/{layer}"))).send().unwrap().status(), 200);
    let other = push_blob(&node, "seen", b"config 2");
    assert_eq!(put_manifest(&node, "seen", "t", OCI_MANIFEST, &manifest_of(&other, &[], None)).status(), 201);
    let report = gc(&node, "2s");
    assert!(report.starts_with("gc: removed 1 manifests, 1 blob links, 1 blobs"), "only the old config goes: {report}");
    let config3 = push_blob(&node, "seen", b"config 3");
    assert_eq!(put_manifest(&node, "seen", "t2", OCI_MANIFEST, &manifest_of(&config3, &[&layer], None)).status(), 201);
    assert_eq!(status(&node, &format!("/v2/seen/blobs/{layer}")), 200);
}

/// Two layers that share a leaf (the same first MiB): the index holds the leaf once, as a range
/// of the first layer's file, and notes the second layer as another owner. Collecting the first
/// layer must not take the leaf from the second one's DAG: the second image still exports whole,
/// its layer is served whole by CID and `verify` finds nothing missing.
#[test]
fn a_leaf_two_layers_share_outlives_the_first_layer() {
    let node = Node::start_with(&["--gc-interval", "0s"]);
    make_public(&node, "keep");
    let shared = xorshift_bytes(11, 1 << 20);
    let layer = |seed: u64| [shared.clone(), xorshift_bytes(seed, 300_000)].concat();
    let (gone, kept) = (layer(12), layer(13));
    push_blob(&node, "drop", &gone);
    let config = push_blob(&node, "keep", b"{}");
    let kept_digest = push_blob(&node, "keep", &kept);
    assert_eq!(put_manifest(&node, "keep", "t", OCI_MANIFEST, &manifest_of(&config, &[&kept_digest], None)).status(), 201);
    std::thread::sleep(Duration::from_millis(1100));
    let report = gc(&node, "0s");
    assert!(report.starts_with("gc: removed 0 manifests, 1 blob links, 1 blobs ("), "{report}");

    let tmp = tempfile::tempdir().unwrap();
    let car = tmp.path().join("keep.car");
    let out = node.af(&["registry", "export", "keep:t", "-o", car.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = client().head(node.url(&format!("/v2/keep/blobs/{kept_digest}"))).send().unwrap().headers()["Ipfs-Cid"].to_str().unwrap().to_string();
    let r = client().get(node.gateway_url(&format!("/ipfs/{root}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().unwrap()), kept_digest);
    let out = node.af(&["registry", "verify"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // With the second layer gone too, nothing of the leaf is left behind.
    assert_eq!(put_manifest(&node, "keep", "t", OCI_MANIFEST, &manifest_of(&config, &[], None)).status(), 201);
    std::thread::sleep(Duration::from_millis(1100));
    gc(&node, "0s");
    let index_db = rusqlite::Connection::open(node.data_dir.join("blocks.sqlite")).unwrap();
    let leaf = cid_bytes_of_raw(&shared);
    for table in ["blocks", "block_owners"] {
        let n: i64 = index_db.query_row(&format!("SELECT count(*) FROM {table} WHERE multihash = ?1"), [&leaf], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

/// The multihash (sha2-256) of a raw leaf holding `data`.
fn cid_bytes_of_raw(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut mh = vec![0x12, 0x20];
    mh.extend_from_slice(&sha2::Sha256::digest(data));
    mh
}

/// One image pushed by a worker of the scale race: a config and a layer of its own, tagged.
fn push_image(http: &reqwest::blocking::Client, url: &str, repo: &str, tag: &str, seed: u64) -> Result<(String, Vec<String>), String> {
    let config = format!("{{\"image\":\"{tag}\"}}").into_bytes();
    let layer = xorshift_bytes(seed, 40_000 + (seed % 7) as usize * 10_000);
    let mut digests = Vec::new();
    for blob in [&config, &layer] {
        let d = sha256(blob);
        let r = http.post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}")).body(blob.clone()).send().map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("blob {d}: {} {}", r.status(), r.text().unwrap_or_default()));
        }
        digests.push(d);
    }
    let manifest = manifest_of(&digests[0], &[&digests[1]], None);
    let r = http.put(format!("{url}/v2/{repo}/manifests/{tag}")).header("Content-Type", OCI_MANIFEST).body(manifest.clone()).send().map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("manifest {tag}: {} {}", r.status(), r.text().unwrap_or_default()));
    }
    Ok((sha256(&manifest), digests))
}

/// Pulls `repo:tag` and checks the manifest and every blob against their digests.
fn pull_image(http: &reqwest::blocking::Client, url: &str, repo: &str, tag: &str, manifest: &str, blobs: &[String]) -> Result<(), String> {
    let r = http.get(format!("{url}/v2/{repo}/manifests/{tag}")).header("Accept", OCI_MANIFEST).send().map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("manifest {repo}:{tag}: {}", r.status()));
    }
    if sha256(&r.bytes().map_err(|e| e.to_string())?) != manifest {
        return Err(format!("manifest {repo}:{tag}: wrong bytes"));
    }
    for d in blobs {
        let r = http.get(format!("{url}/v2/{repo}/blobs/{d}")).send().map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("blob {d} of {repo}:{tag}: {}", r.status()));
        }
        if &sha256(&r.bytes().map_err(|e| e.to_string())?) != d {
            return Err(format!("blob {d} of {repo}:{tag}: wrong bytes"));
        }
    }
    Ok(())
}

/// The race at scale: a node holding a million blocks, nearly all of them a day old and
/// reached by nothing, is collected by its own scheduled GC while 32 clients push images and 32
/// pull them. The GC marks without a lock and sweeps in batches, so nobody waits for it for
/// long: not one request fails, the GC removes the million, and every image acknowledged
/// before, during or after it is pulled back whole.
#[test]
fn thirty_two_pushers_and_thirty_two_pullers_lose_nothing_while_a_million_blocks_are_collected() {
    const GARBAGE: i64 = 1_000_000;
    let mut node = Node::start_with(&["--gc-grace", "60s", "--gc-interval", "4s", "--max-connections-per-ip", "1024", "--max-uploads", "1024"]);
    let url = node.url("");
    let http = client();
    let mut images: Vec<(String, String, Vec<String>)> = Vec::new();
    for i in 0..16u64 {
        let tag = format!("base{i}");
        let (m, blobs) = push_image(&http, &url, "scale/base", &tag, 1_000 + i).unwrap();
        images.push((tag, m, blobs));
    }
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "the node did not stop");
    // A million inline blocks recorded a day ago for nothing: garbage a GC must sweep.
    let filled = Instant::now();
    let mut conn = rusqlite::Connection::open(node.data_dir.join("blocks.sqlite")).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO blocks (multihash, codec, length, data, created_at) VALUES (?1, 85, ?2, ?3, unixepoch() - 86400)").unwrap();
        // Distinct multihashes that hash nothing: the index takes them as recorded, and a GC
        // reads no garbage block's bytes.
        let mut rng = Rng(0x5eed);
        for i in 0..GARBAGE {
            let data = i.to_le_bytes();
            let mut mh = vec![0x12, 0x20];
            (0..4).for_each(|_| mh.extend(rng.next().to_le_bytes()));
            insert.execute(rusqlite::params![mh, data.len() as i64, data]).unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);
    eprintln!("{GARBAGE} blocks added in {:?}", filled.elapsed());
    node.start_again();
    let images = std::sync::Arc::new(std::sync::Mutex::new(images));
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushers: Vec<_> = (0..32u64)
        .map(|w| {
            let (url, images, errors, done) = (url.clone(), images.clone(), errors.clone(), done.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut n = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let tag = format!("w{w}-{n}");
                    match push_image(&http, &url, "scale/pushed", &tag, w * 1_000_000 + n) {
                        Ok((m, blobs)) => images.lock().unwrap().push((tag, m, blobs)),
                        Err(e) => errors.lock().unwrap().push(format!("push: {e}")),
                    }
                }
            })
        })
        .collect();
    let pullers: Vec<_> = (0..32u64)
        .map(|p| {
            let (url, images, errors, done) = (url.clone(), images.clone(), errors.clone(), done.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut rng = Rng(p + 7);
                let mut pulls = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (tag, m, blobs) = {
                        let all = images.lock().unwrap();
                        all[rng.below(all.len() as u64) as usize].clone()
                    };
                    let repo = if tag.starts_with("base") { "scale/base" } else { "scale/pushed" };
                    if let Err(e) = pull_image(&http, &url, repo, &tag, &m, &blobs) {
                        errors.lock().unwrap().push(format!("pull: {e}"));
                    }
                    pulls += 1;
                }
                pulls
            })
        })
        .collect();
    // The node's scheduled GC (every 4 s) sweeps the million while the clients run; then the
    // clients go on through one more GC.
    let deadline = Instant::now() + Duration::from_secs(if std::env::var("AF_TEST_QUICK").is_ok() { 60 } else { 300 });
    let swept = loop {
        let log = node.log_text();
        let found = log.lines().filter(|l| l.contains("scheduled gc") && l.contains("removed")).find_map(|l| {
            let blocks = l.split("orphan files, ").nth(1)?.split(' ').next()?.parse::<i64>().ok()?;
            (blocks >= GARBAGE).then_some(blocks)
        });
        if let Some(blocks) = found {
            break blocks;
        }
        if Instant::now() > deadline {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!("no GC swept the million blocks in 300 s; the log's end:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let runs = node.log_text().matches("scheduled gc").count();
    while node.log_text().matches("scheduled gc").count() < runs + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    pushers.into_iter().for_each(|t| t.join().unwrap());
    let pulls: u64 = pullers.into_iter().map(|t| t.join().unwrap()).sum();
    let errors = errors.lock().unwrap().clone();
    let images = images.lock().unwrap().clone();
    let took = node.log_text().lines().find(|l| l.contains("gc finished") && l.contains(&format!("blocks={swept}"))).map(|l| l.split("phases_ms=").nth(1).unwrap_or(l).to_string());
    eprintln!("the GC removed {swept} blocks ({took:?}); {} images pushed, {pulls} pulls, {} errors", images.len() - 16, errors.len());
    assert!(errors.is_empty(), "{} requests failed during the GC, e.g. {:#?}", errors.len(), &errors[..errors.len().min(10)]);
    assert!(images.len() > 16 + 32, "the pushers pushed almost nothing: the test raced nothing");
    for (tag, m, blobs) in images.iter() {
        let repo = if tag.starts_with("base") { "scale/base" } else { "scale/pushed" };
        pull_image(&http, &url, repo, tag, m, blobs).unwrap_or_else(|e| panic!("after the GC: {e}"));
    }
    let out = node.af(&["registry", "verify"]);
    assert!(out.status.success(), "verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
