//! Every walk and every buffer bounded (issue 18): DAGs that repeat a subtree or lie about their
//! sizes, hostile names and paths, unpaged referrers. Each DAG is built here, imported through the
//! RPC's `dag/import`, and read anonymously through the gateway and the RPC while the node's peak
//! memory and CPU time are watched.

mod common;
use common::dags::*;
use common::*;
use std::io::Read;
use std::time::{Duration, Instant};

fn import(node: &Node, car: Vec<u8>) {
    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(car).file_name("x.car"));
    let r = client().post(node.rpc_url("dag/import")).multipart(form).send().unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("\"PinErrorMsg\":\"\""), "{text}");
}

/// The node's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(node: &Node) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.pid())).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Starts reading `url`, reads `n` bytes, then hangs up; the time to the first byte.
fn read_then_leave(url: &str, n: usize) -> Duration {
    let start = Instant::now();
    let mut r = client().get(url).send().unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf[..1]).unwrap();
    let first = start.elapsed();
    let _ = r.read_exact(&mut buf[1..]);
    drop(r);
    first
}

/// After the client left, the node goes quiet: under half a core over a second.
fn settles(node: &Node) {
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(node);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(node) - before;
    assert!(used < 50, "the node kept working after its client left: {used} ticks in a second");
}

#[test]
fn files_that_repeat_a_subtree_stream_in_bounded_memory_and_stop_with_the_client() {
    let node = Node::start();
    let leaf = vec![b'x'];
    let leaf_cid = cid_of(0x55, &leaf);
    // K links to A, A with K links to one 1-byte leaf: K² bytes from a few hundred KB.
    const K: usize = 4000;
    let a = repeating_file(leaf_cid, 1, K);
    let a_cid = cid_of(0x70, &a);
    let root = repeating_file(a_cid, K as u64, K);
    let root_cid = cid_of(0x70, &root);
    import(&node, car(&root_cid, &[(root_cid, root), (a_cid, a), (leaf_cid, leaf.clone())]));
    // 40 levels, each linking twice to the next: 2^40 bytes described.
    let mut below = leaf_cid;
    let mut size = 1u64;
    let mut blocks = vec![(leaf_cid, leaf)];
    for _ in 0..40 {
        let node_bytes = repeating_file(below, size, 2);
        below = cid_of(0x70, &node_bytes);
        size *= 2;
        blocks.push((below, node_bytes));
    }
    let deep = below;
    blocks.reverse();
    import(&node, car(&deep, &blocks));
    let watch = node.watch_memory();

    for url in [
        node.gateway_url(&format!("/ipfs/{root_cid}")),
        node.gateway_url(&format!("/ipfs/{deep}")),
        node.gateway_url(&format!("/ipfs/{deep}?format=car&car-dups=y")),
        node.rpc_url(&format!("cat?arg={deep}")),
    ] {
        let first = if url.contains("/api/v0/") {
            let start = Instant::now();
            let mut r = client().post(&url).send().unwrap();
            let mut b = [0u8; 1000];
            r.read_exact(&mut b).unwrap();
            drop(r);
            start.elapsed()
        } else {
            read_then_leave(&url, 100_000)
        };
        assert!(first < Duration::from_secs(2), "{url}: first byte after {first:?}");
        settles(&node);
    }
    let r = client().head(node.gateway_url(&format!("/ipfs/{root_cid}"))).send().unwrap();
    assert_eq!(r.headers()["Content-Length"], (K * K).to_string());
    let grown = watch.growth_kib();
    assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");

    // Read to the end, the walk stops at its budget with the response cut short, not hanging.
    let start = Instant::now();
    let all = client().get(node.gateway_url(&format!("/ipfs/{deep}"))).send().unwrap().bytes();
    assert!(all.is_err(), "a body of 2^40 bytes cannot complete");
    assert!(start.elapsed() < Duration::from_secs(90), "{:?}", start.elapsed());
    assert!(node.log_text().contains("most one may"), "the budget stopped it");
}

#[test]
fn sizes_that_lie_are_refused() {
    let node = Node::start();
    let leaf = b"ten bytes!".to_vec();
    let leaf_cid = cid_of(0x55, &leaf);
    // A root claiming 2^60 bytes over a 10-byte leaf.
    let liar = dag_pb(&[("", leaf_cid)], &file_data(Some(1 << 60), &[10]));
    let liar_cid = cid_of(0x70, &liar);
    import(&node, car(&liar_cid, &[(liar_cid, liar), (leaf_cid, leaf.clone())]));
    let r = client().get(node.gateway_url(&format!("/ipfs/{liar_cid}"))).send().unwrap();
    assert_eq!(r.status(), 502);
    let r = client().get(node.gateway_url(&format!("/ipfs/{liar_cid}"))).header("Range", "bytes=100-200").send().unwrap();
    assert_eq!(r.status(), 502);
    // Blocksizes that add up past 2^64.
    let wrap = dag_pb(&[("", leaf_cid), ("", leaf_cid)], &file_data(None, &[u64::MAX - 4, 15]));
    let wrap_cid = cid_of(0x70, &wrap);
    import(&node, car(&wrap_cid, &[(wrap_cid, wrap), (leaf_cid, leaf.clone())]));
    assert_eq!(client().get(node.gateway_url(&format!("/ipfs/{wrap_cid}"))).send().unwrap().status(), 502);
    // A parent that says its child is larger than the child is: the stream stops there.
    let short = dag_pb(&[("", leaf_cid), ("", leaf_cid)], &file_data(Some(25), &[10, 15]));
    let short_cid = cid_of(0x70, &short);
    import(&node, car(&short_cid, &[(short_cid, short), (leaf_cid, leaf)]));
    let r = client().get(node.gateway_url(&format!("/ipfs/{short_cid}"))).send().unwrap();
    assert_eq!(r.status(), 502, "found while sniffing its first bytes");
    // Past the first 512 bytes, after the headers went out: the response breaks off.
    let big_leaf = vec![7u8; 1000];
    let big_cid = cid_of(0x55, &big_leaf);
    let late = dag_pb(&[("", big_cid), ("", big_cid)], &file_data(Some(2500), &[1000, 1500]));
    let late_cid = cid_of(0x70, &late);
    import(&node, car(&late_cid, &[(late_cid, late), (big_cid, big_leaf)]));
    let r = client().get(node.gateway_url(&format!("/ipfs/{late_cid}"))).send().and_then(|r| r.bytes());
    assert!(r.is_err(), "the response breaks off instead of padding or wrapping");
    assert!(client().get(node.gateway_url("/v2/")).send().is_ok(), "the node still answers");
}

#[test]
fn hostile_names_and_long_paths_are_answered_cleanly() {
    let node = Node::start();
    let leaf = b"hello".to_vec();
    let leaf_cid = cid_of(0x55, &leaf);
    let dir = dag_pb(&[("a\rb", leaf_cid), ("n\0l", leaf_cid)], DIRECTORY_DATA);
    let dir_cid = cid_of(0x70, &dir);
    import(&node, car(&dir_cid, &[(dir_cid, dir), (leaf_cid, leaf)]));
    for name in ["a%0Db", "n%00l"] {
        let r = client().get(node.gateway_url(&format!("/ipfs/{dir_cid}/{name}"))).send().unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.headers()["X-Ipfs-Path"], format!("/ipfs/{dir_cid}/{name}"));
        assert_eq!(r.text().unwrap(), "hello");
    }
    let long = vec!["a"; 3500].join("/");
    let r = client().get(node.gateway_url(&format!("/ipfs/{dir_cid}/{long}"))).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("X-Ipfs-Roots").is_none());
}

#[test]
fn referrers_come_in_pages_bounded_in_bytes() {
    let node = Node::start();
    let subject = image_manifest(&node, "team/app", b"{}", &[b"layer"]);
    let r = put_manifest(&node, "team/app", "v1", OCI_MANIFEST, &subject);
    assert_eq!(r.status(), 201);
    let subject_digest = sha256(&subject);
    let config = push_blob(&node, "team/app", b"{}");
    let big = "x".repeat(1536 * 1024);
    let mut pushed = std::collections::BTreeSet::new();
    for i in 0..400 {
        let annotations = if i % 100 == 7 { serde_json::json!({"big": big, "i": i.to_string()}) } else { serde_json::json!({"i": i.to_string()}) };
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-test",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject.len()},
            "annotations": annotations,
        }))
        .unwrap();
        let d = sha256(&m);
        assert_eq!(put_manifest(&node, "team/app", &d, OCI_MANIFEST, &m).status(), 201);
        pushed.insert(d);
    }
    let mut next = Some(format!("/v2/team/app/referrers/{subject_digest}"));
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = client().get(node.url(&path)).send().unwrap();
        assert_eq!(r.status(), 200);
        next = r.headers().get("Link").map(|l| {
            let l = l.to_str().unwrap();
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_string()
        });
        let body = r.bytes().unwrap();
        assert!(body.len() < 3 << 20, "a page of {} bytes", body.len());
        let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for m in index["manifests"].as_array().unwrap() {
            assert!(seen.insert(m["digest"].as_str().unwrap().to_string()), "listed twice");
        }
        pages += 1;
        assert!(pages < 100);
    }
    assert_eq!(seen, pushed, "every referrer, once");
    assert!(pages >= 4, "{pages} pages");
    // The filter applies before paging.
    let r = client().get(node.url(&format!("/v2/team/app/referrers/{subject_digest}?artifactType=application/x-none"))).send().unwrap();
    assert!(r.headers().get("Link").is_none());
    assert_eq!(r.json::<serde_json::Value>().unwrap()["manifests"].as_array().unwrap().len(), 0);
}

fn rpc_post(node: &Node, call: &str, parts: Vec<(String, Vec<u8>)>) -> reqwest::blocking::Response {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (name, data) in parts {
        form = form.part("file", reqwest::blocking::multipart::Part::bytes(data).file_name(name));
    }
    client().post(node.rpc_url(call)).multipart(form).send().unwrap()
}

#[test]
fn rpc_writes_hold_one_block_or_one_bounded_file_at_a_time() {
    let node = Node::start();
    let watch = node.watch_memory();
    // 200 parts of 2 MiB: each stored when it ends.
    let parts: Vec<(String, Vec<u8>)> = (0..200u32).map(|i| (format!("b{i}"), vec![i as u8; 2 << 20])).collect();
    let r = rpc_post(&node, "block/put", parts);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap().lines().count(), 200);
    // A CAR of 60 blocks of 2 MiB, streamed in.
    let blocks: Vec<(cid::Cid, Vec<u8>)> = (0..60u32)
        .map(|i| {
            let data = vec![(i + 7) as u8; 2 << 20];
            (cid_of(0x55, &data), data)
        })
        .collect();
    let r = rpc_post(&node, "dag/import?pin-roots=false", vec![("c.car".into(), car(&blocks[0].0, &blocks))]);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let grown = watch.growth_kib();
    assert!(grown < 96 * 1024, "peak memory grew by {grown} KiB for 520 MiB written");
    // A block over 2 MiB is refused, whichever way it comes.
    let huge = vec![1u8; (2 << 20) + 1];
    let huge_cid = cid_of(0x55, &huge);
    let r = rpc_post(&node, "dag/import", vec![("h.car".into(), car(&huge_cid, &[(huge_cid, huge.clone())]))]);
    assert_ne!(r.status(), 200);
    assert!(r.text().unwrap().contains("limited to"));
    assert_eq!(rpc_post(&node, "block/put", vec![("h".into(), huge)]).status(), 400);
    assert_eq!(node.rpc_post(&format!("block/stat?arg={huge_cid}")).status(), 400, "not stored");
    // One-byte chunks: the blocks count against the limit, and the request is refused early.
    let watch = node.watch_memory();
    let r = rpc_post(&node, "add?cid-version=1&chunker=size-1", vec![("f".into(), vec![5u8; 5 << 20])]);
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("256 bytes per block"));
    let grown = watch.growth_kib();
    assert!(grown < 400 * 1024, "peak memory grew by {grown} KiB");
    // only-hash keeps nothing: any size, any chunker.
    let r = rpc_post(&node, "add?cid-version=1&chunker=size-64&only-hash=true", vec![("f".into(), vec![5u8; 8 << 20])]);
    assert_eq!(r.status(), 200);
}

/// `af registry import` of `car`: (success, standard error).
fn af_import(node: &Node, car: &[u8]) -> (bool, String) {
    let file = node.data_dir.parent().unwrap().join("in.car");
    std::fs::write(&file, car).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_af"))
        .args(["registry", "import"])
        .arg(&file)
        .args(["--repo", "team/imported", "--data-dir"])
        .arg(&node.data_dir)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// A layout directory whose `index.json` is the file at `index` (its blocks in `blocks`).
fn layout_car(index: cid::Cid, mut blocks: Vec<(cid::Cid, Vec<u8>)>) -> Vec<u8> {
    let oci = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    let oci_cid = cid_of(0x55, &oci);
    let empty = dag_pb(&[], DIRECTORY_DATA);
    let empty_cid = cid_of(0x70, &empty);
    let blobs = dag_pb(&[("sha256", empty_cid)], DIRECTORY_DATA);
    let blobs_cid = cid_of(0x70, &blobs);
    let root = dag_pb(&[("blobs", blobs_cid), ("index.json", index), ("oci-layout", oci_cid)], DIRECTORY_DATA);
    let root_cid = cid_of(0x70, &root);
    blocks.push((oci_cid, oci));
    blocks.push((blobs_cid, blobs));
    blocks.push((empty_cid, empty));
    blocks.insert(0, (root_cid, root));
    car(&root_cid, &blocks)
}

#[test]
fn imports_walk_without_recursion_and_leave_no_staging_behind() {
    let mut node = Node::start();
    let staging = node.data_dir.join("staging");
    // A 100,000-deep chain: each node one byte of index.json, the last a raw leaf.
    let json = format!("{{\"manifests\":[]}}{}", " ".repeat(100_000 - 16));
    let bytes = json.as_bytes();
    let mut below = cid_of(0x55, &bytes[bytes.len() - 1..]);
    let mut blocks = vec![(below, bytes[bytes.len() - 1..].to_vec())];
    for i in (0..bytes.len() - 1).rev() {
        let n = dag_pb(&[("", below)], &file_data_with(&bytes[i..i + 1], Some((bytes.len() - i) as u64), &[(bytes.len() - i - 1) as u64]));
        below = cid_of(0x70, &n);
        blocks.push((below, n));
    }
    blocks.reverse();
    let (ok, err) = af_import(&node, &layout_car(below, blocks));
    assert!(ok, "a deep index.json is read through (it names no image): {err}");
    // index.json as 40 levels each linking twice to the next (sizes stated, as a valid file's
    // are: 2^41 bytes): refused, not walked for ever. Without the sizes: refused as malformed.
    for sized in [true, false] {
        let leaf = b"{}".to_vec();
        let mut below = cid_of(0x55, &leaf);
        let mut blocks = vec![(below, leaf)];
        for level in 0..40u32 {
            let part = 2u64 << level;
            let data = if sized { file_data(Some(2 * part), &[part, part]) } else { file_data(None, &[]) };
            let n = dag_pb(&[("", below), ("", below)], &data);
            below = cid_of(0x70, &n);
            blocks.push((below, n));
        }
        blocks.reverse();
        let start = Instant::now();
        let (ok, err) = af_import(&node, &layout_car(below, blocks));
        let why = if sized { "repeats itself" } else { "2 links but 0 blocksizes" };
        assert!(!ok && err.contains(why), "{err}");
        assert!(start.elapsed() < Duration::from_secs(60));
    }
    let left: Vec<_> = std::fs::read_dir(&staging).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "staging files left: {left:?}");
    // An import killed half-way leaves its staging file; the next start removes it.
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("import-0000"), b"half a CAR").unwrap();
    node.restart();
    assert!(!staging.join("import-0000").exists());
}

#[test]
fn a_gc_racing_imports_keeps_every_pinned_block_and_verify_reports_missing_ones() {
    let node = Node::start_with(&["--gc-interval", "0s"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (stop, data_dir) = (stop.clone(), node.data_dir.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "gc", "--grace", "0s", "--data-dir"]).arg(&data_dir).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                runs += 1;
            }
            runs
        })
    };
    // Imports of 40 blocks of 2 MiB: seconds pass between the first block stored and the pin,
    // long enough for a GC with no grace to find old blocks no pin names yet.
    let importers: Vec<_> = (0..2u32)
        .map(|t| {
            let rpc = node.rpc;
            std::thread::spawn(move || {
                let mut roots = Vec::new();
                for i in 0..3u32 {
                    let leaves: Vec<(cid::Cid, Vec<u8>)> = (0..40u32)
                        .map(|k| {
                            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(t << 16 | i << 8 | k);
                            let data: Vec<u8> = (0..2u32 << 20)
                                .map(|_| {
                                    x ^= x << 13;
                                    x ^= x >> 7;
                                    x ^= x << 17;
                                    x as u8
                                })
                                .collect();
                            (cid_of(0x55, &data), data)
                        })
                        .collect();
                    let links: Vec<(&str, cid::Cid)> = leaves.iter().map(|(c, _)| ("", *c)).collect();
                    let root = dag_pb(&links, &file_data(Some(80 << 20), &vec![2 << 20; 40]));
                    let cid = cid_of(0x70, &root);
                    let mut blocks = vec![(cid, root)];
                    blocks.extend(leaves);
                    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(car(&cid, &blocks)).file_name("x.car"));
                    let r = client().post(format!("http://{rpc}/api/v0/dag/import")).multipart(form).send().unwrap();
                    let text = r.text().unwrap();
                    assert!(text.contains("\"PinErrorMsg\":\"\""), "{text}");
                    roots.push(cid);
                }
                roots
            })
        })
        .collect();
    let roots: Vec<cid::Cid> = importers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = gc.join().unwrap();
    assert!(runs >= 2, "{runs} GCs ran alongside");
    let verify = |node: &Node| std::process::Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "verify", "--data-dir"]).arg(&node.data_dir).output().unwrap();
    for cid in &roots {
        let r = node.rpc_post(&format!("dag/export?arg={cid}"));
        assert_eq!(r.status(), 200);
        assert!(r.bytes().map(|b| b.len() > 80 << 20).unwrap_or(false), "a block of pinned {cid} was collected");
    }
    assert!(verify(&node).status.success());
    // A pinned block removed behind the node's back: verify says so.
    let gone = roots[0].hash().to_bytes();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM blocks WHERE multihash = ?', (bytes.fromhex(sys.argv[2]),)); c.commit()"])
        .arg(node.data_dir.join("blocks.sqlite"))
        .arg(hex::encode(&gone))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = verify(&node);
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("block {} of its DAG is missing", roots[0])), "{text}");
}

/// Peak anonymous memory of `af <args> --data-dir <node's>` in KiB (see [`MemoryWatch`]), and whether it succeeded.
fn af_peak_kib(node: &Node, args: &[&str]) -> (u64, bool) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_af"))
        .args(args)
        .arg("--data-dir")
        .arg(&node.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watch = MemoryWatch::start(child.id());
    let status = child.wait().unwrap();
    (watch.peak_kib(), status.success())
}

#[test]
fn gc_and_verify_page_through_the_block_index() {
    let node = Node::start_with(&["--gc-interval", "0s"]);
    // 60,000 directory nodes of 2 KiB each, none reachable from a pin: 120 MB of blocks.
    let leaf = b"x".to_vec();
    let leaf_cid = cid_of(0x55, &leaf);
    let name = "n".repeat(2000);
    let mut blocks = vec![(leaf_cid, leaf)];
    for i in 0..60_000u32 {
        let node_bytes = dag_pb(&[(&format!("{name}{i}"), leaf_cid)], DIRECTORY_DATA);
        blocks.push((cid_of(0x70, &node_bytes), node_bytes));
    }
    let r = rpc_post(&node, "dag/import?pin-roots=false", vec![("c.car".into(), car(&blocks[1].0, &blocks))]);
    assert_eq!(r.status(), 200);
    let (gc_peak, ok) = af_peak_kib(&node, &["registry", "gc"]);
    assert!(ok);
    assert!(gc_peak < 64 * 1024, "a GC peaked at {gc_peak} KiB over 120 MB of blocks");
    let (verify_peak, ok) = af_peak_kib(&node, &["registry", "verify"]);
    assert!(ok);
    assert!(verify_peak < 64 * 1024, "verify peaked at {verify_peak} KiB over 120 MB of blocks");
    // Young, so kept; a GC with no grace removes them, in pages.
    let (_, ok) = af_peak_kib(&node, &["registry", "gc", "--grace", "0s"]);
    assert!(ok);
    let r = client().post(format!("http://{}/api/v0/block/stat?arg={}", node.rpc, blocks[1].0)).send().unwrap();
    assert_eq!(r.status(), 400, "unreachable and old: swept");
}
