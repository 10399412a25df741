//! Nodes with their metadata on a real PostgreSQL server: real clients against one, and a
//! database outage under load (503 with the error body while it lasts, never a 500 or a crash,
//! and recovery on its own when the database returns).

mod common;
use common::images::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A throwaway database on the shared test server (`AF_TEST_POSTGRES_URL`).
fn database() -> (String, impl Drop) {
    struct Drop_(String, String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = Command::new("psql").arg(&self.0).args(["-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.1)]).output();
        }
    }
    let admin = std::env::var("AF_TEST_POSTGRES_URL").expect("AF_TEST_POSTGRES_URL (scripts/postgres.sh)");
    let name = format!("af_test_{}", uuid::Uuid::new_v4().simple());
    run(Command::new("psql").arg(&admin).args(["-qc", &format!("CREATE DATABASE {name}")]));
    (format!("{}/{name}", admin.rsplit_once('/').unwrap().0), Drop_(admin, name))
}

#[test]
fn clients_against_a_node_on_postgres() {
    let (url, _db) = database();
    let node = Node::start_with(&["--database-url", &url]);
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_image(tmp.path());
    let host = node.host();
    push_layout(&layout, &format!("{host}/pg/app:t"));
    let back = tmp.path().join("back");
    run(skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{host}/pg/app:t")).arg(format!("oci:{}:t", back.display())));
    assert_same_blobs(&layout, &back, "t");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    run(Command::new(tool("crane")).env("HOME", &home).args(["copy", "--insecure", &format!("{host}/pg/app:t"), &format!("{host}/pg/copy:t")]));
    let tags: serde_json::Value = client().get(node.url("/v2/pg/copy/tags/list")).send().unwrap().json().unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["t"]));
    // The metadata is in PostgreSQL, not in the data directory.
    assert!(!node.data_dir.join("metadata.sqlite").exists());
}

/// A PostgreSQL server of this test's own, to stop and start.
struct OwnServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn as_postgres(cmd: &Path) -> Command {
    // PostgreSQL refuses to run as root.
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

impl OwnServer {
    fn new() -> OwnServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL (install-test-deps.sh)").flatten().map(|e| e.path().join("bin")).max().unwrap();
        let dir = PathBuf::from(format!("/tmp/af-test-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(&dir));
        }
        run(as_postgres(&bin.join("initdb")).arg("-D").arg(&dir).args(["-U", "postgres", "--auth=trust"]));
        let s = OwnServer { dir, port: free_addr().port(), bin };
        s.start();
        s
    }

    fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        run(as_postgres(&self.bin.join("pg_ctl")).arg("-D").arg(&self.dir).arg("-l").arg(self.dir.join("log")).args(["-w", "-o", &opts, "start"]));
    }

    /// Stops the server as a crash would: every backend killed at once, no checkpoint
    /// (`immediate`; recovery replays the WAL at the next start).
    fn kill(&self) {
        run(as_postgres(&self.bin.join("pg_ctl")).arg("-D").arg(&self.dir).args(["-m", "immediate", "-w", "stop"]));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl")).arg("-D").arg(&self.dir).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_database_outage_is_503_and_the_node_recovers() {
    let pg = OwnServer::new();
    let node = Node::start_with(&["--database-url", &pg.url()]);
    let m = image_manifest(&node, "up/app", b"{}", &[b"a layer"]);
    assert_eq!(put_manifest(&node, "up/app", "t", OCI_MANIFEST, &m).status(), 201);

    // Load throughout: every answer is a success or a 503 with the error body.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), node.url("/v2/up/app/manifests/t"));
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let (mut ok, mut unavailable) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http.get(&url).header("Accept", OCI_MANIFEST).send().expect("the node answers");
                match r.status().as_u16() {
                    200 => ok += 1,
                    503 => {
                        let v: serde_json::Value = r.json().unwrap();
                        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE");
                        unavailable += 1;
                    }
                    other => panic!("status {other} during the outage: {}", r.text().unwrap_or_default()),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, unavailable)
        })
    };
    // A chunked push under way when the database dies: its first chunk acknowledged.
    let layer = xorshift_bytes(11, 2 << 20);
    let r = client().post(node.url("/v2/up/app/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), 202);
    let session = r.headers()["Location"].to_str().unwrap().to_string();
    let r = client().patch(node.url(&session)).header("Content-Range", format!("0-{}", (1 << 20) - 1)).body(layer[..1 << 20].to_vec()).send().unwrap();
    assert_eq!(r.status(), 202);
    let session = r.headers()["Location"].to_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    pg.kill();
    std::thread::sleep(Duration::from_secs(2));
    // The push's next chunk is refused while the database is away (the client retries it).
    let r = client().patch(node.url(&session)).header("Content-Range", format!("{}-{}", 1 << 20, (2 << 20) - 1)).body(layer[1 << 20..].to_vec()).send().unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().unwrap_or_default());
    // Writes too: refused cleanly, nothing half-written.
    let r = client().post(node.url("/v2/up/app/blobs/uploads/?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000")).body("x").send().unwrap();
    assert_eq!(r.status(), 503);
    assert_oci_error(put_manifest(&node, "up/app", "t2", OCI_MANIFEST, &m), 503, "UNAVAILABLE");
    pg.start();
    let back = Instant::now();
    loop {
        let r = client().get(node.url("/v2/up/app/manifests/t")).header("Accept", OCI_MANIFEST).send().unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(30), "the node did not recover: {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, unavailable) = load.join().expect("no 500s and no failed connections under the outage");
    assert!(ok > 0 && unavailable > 0, "ok {ok}, unavailable {unavailable}");
    // The data from before is whole, and writes work again: the interrupted push resumes where
    // its acknowledged chunk ended and its blob is whole.
    assert_eq!(put_manifest(&node, "up/app", "t2", OCI_MANIFEST, &m).status(), 201);
    let status = client().get(node.url(&session)).send().unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["Range"], format!("0-{}", (1 << 20) - 1).as_str(), "the refused chunk left nothing behind");
    let r = client().patch(node.url(&session)).header("Content-Range", format!("{}-{}", 1 << 20, (2 << 20) - 1)).body(layer[1 << 20..].to_vec()).send().unwrap();
    assert_eq!(r.status(), 202);
    let session = r.headers()["Location"].to_str().unwrap().to_string();
    let sep = if session.contains('?') { '&' } else { '?' };
    let digest = sha256(&layer);
    assert_eq!(client().put(node.url(&format!("{session}{sep}digest={digest}"))).send().unwrap().status(), 201);
    let pulled = client().get(node.url(&format!("/v2/up/app/blobs/{digest}"))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&pulled), digest);
    let mut node = node;
    assert!(node.is_running());
}

/// Three nodes on one database: an image pushed to A (a private repository) is pulled through B
/// and C, which fetch the layers they lack from A over the swarm (nodes sharing the database
/// trust each other) and keep them; a node started `--offline` sends the client to a holder
/// (307) instead. Once A is gone, a pull of what only A held fails clearly (503), never with
/// wrong bytes.
#[test]
fn three_nodes_one_registry() {
    let (url, _db) = database();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start_with(&["--database-url", &url])).collect();
    let offline = Node::start_with(&["--database-url", &url, "--offline"]);
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_image(tmp.path());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    push_layout(&layout, &format!("{}/multi/app:t", a.host()));
    for (i, n) in [b, c].iter().enumerate() {
        let back = tmp.path().join(format!("back{i}"));
        let out = skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{}/multi/app:t", n.host())).arg(format!("oci:{}:t", back.display())).output().unwrap();
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), n.log_text());
        assert_same_blobs(&layout, &back, "t");
        assert!(n.logs_within("pulled a blob from peers", 30), "{}", n.log_text());
    }
    let digest = layout_manifest_digest(&layout, "t");
    let m: serde_json::Value = client().get(b.url(&format!("/v2/multi/app/manifests/{digest}"))).header("Accept", OCI_MANIFEST).send().unwrap().json().unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let no_redirects = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // B keeps what it fetched: served from its own file now, and B is a holder.
    let r = no_redirects.get(b.url(&format!("/v2/multi/app/blobs/{layer}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().unwrap()), layer);
    let r = no_redirects.get(offline.url(&format!("/v2/multi/app/blobs/{layer}"))).send().unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["Location"].to_str().unwrap().to_string();
    assert!([a, b, c].iter().any(|n| location == n.url(&format!("/v2/multi/app/blobs/{layer}"))), "{location}");

    // A blob whose recorded root names other bytes (a DAG that is not the digest's): the pull
    // from peers is cut short at the end and nothing is kept.
    let (x, y) = (xorshift_bytes(81, 3 << 20), xorshift_bytes(82, 3 << 20));
    let (x_digest, y_digest) = (push_blob(a, "multi/app", &x), push_blob(a, "multi/app", &y));
    let y_root = client().head(a.url(&format!("/v2/multi/app/blobs/{y_digest}"))).send().unwrap().headers()["Ipfs-Cid"].to_str().unwrap().to_string();
    run(Command::new("psql").arg(&url).args(["-qc", &format!("UPDATE blobs SET root_cid = '{y_root}' WHERE digest = '{x_digest}'")]));
    // Twice: the first fetch kept nothing, so the second fetches (and fails) again.
    for _ in 0..2 {
        let r = client().get(c.url(&format!("/v2/multi/app/blobs/{x_digest}"))).send().unwrap();
        // A 503 if the verdict came before the first bytes went out; otherwise a 200 cut short
        // (its last bytes wait for the digest).
        if r.status() != 200 {
            assert_eq!(r.status(), 503);
            continue;
        }
        let got = r.bytes();
        assert!(got.is_err(), "a blob whose bytes are not its digest's was served whole: {}\n{}", got.map(|b| sha256(&b)).unwrap_or_default(), c.log_text());
    }
    assert!(c.log_text().contains("content digest is"), "{}", c.log_text());

    // A layer only A holds; then A goes away.
    let only_a = xorshift_bytes(77, 300_000);
    let only_a_digest = push_blob(a, "multi/app", &only_a);
    let mut nodes = nodes;
    nodes[0].kill9();
    let b = &nodes[1];
    let r = no_redirects.get(b.url(&format!("/v2/multi/app/blobs/{only_a_digest}"))).send().unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().unwrap_or_default());
    assert!(r.text().unwrap().contains("UNAVAILABLE"));
    assert_eq!(client().get(b.url(&format!("/v2/multi/app/manifests/{digest}"))).header("Accept", OCI_MANIFEST).send().unwrap().status(), 200);
}

/// Two node processes on one database, many clients at once: the same blob, manifest and tag
/// pushed through both, tags fought over, deletes racing pushes, two uploads to one session.
/// Afterwards every invariant holds in the database itself.
#[test]
fn two_nodes_under_concurrent_clients_keep_every_invariant() {
    let (url, _db) = database();
    let nodes = [Node::start_with(&["--database-url", &url]), Node::start_with(&["--database-url", &url])];
    let shared = b"the same layer, pushed through both nodes".to_vec();
    let config = b"{}".to_vec();
    let manifest_for = |extra: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&shared), "size": shared.len()}],
            "annotations": {"n": extra},
        }))
        .unwrap()
    };
    let bases: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (bases, shared, config) = (&bases, &shared, &config);
            let manifest_for = &manifest_for;
            scope.spawn(move || {
                let http = client();
                for i in 0..15 {
                    let base = &bases[(t + i) % 2];
                    for blob in [shared, config] {
                        let r = http.post(format!("{base}/v2/race/app/blobs/uploads/?digest={}", sha256(blob))).body(blob.clone()).send().unwrap();
                        assert_eq!(r.status(), 201);
                    }
                    // Everyone pushes the same manifest under the same tag, then its own.
                    for body in [manifest_for("same"), manifest_for(&format!("{t}-{i}"))] {
                        let r = http.put(format!("{base}/v2/race/app/manifests/latest")).header("Content-Type", OCI_MANIFEST).body(body).send().unwrap();
                        assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
                    }
                    // Deletes race the pushes of others.
                    if i % 4 == 3 {
                        let d = sha256(&manifest_for(&format!("{t}-{}", i - 1)));
                        let s = http.delete(format!("{base}/v2/race/app/manifests/{d}")).send().unwrap().status().as_u16();
                        assert!(s == 202 || s == 404, "delete: {s}");
                        let s = http.delete(format!("{base}/v2/race/app/manifests/latest")).send().unwrap().status().as_u16();
                        assert!(s == 202 || s == 404, "tag delete: {s}");
                    }
                }
            });
        }
        // Two uploads into one session, at once, through both nodes.
        scope.spawn(|| {
            let http = client();
            for _ in 0..10 {
                let r = http.post(format!("{}/v2/race/session/blobs/uploads/", bases[0])).send().unwrap();
                let location = r.headers()["Location"].to_str().unwrap().to_string();
                let chunk = vec![7u8; 100_000];
                let statuses: Vec<u16> = std::thread::scope(|s| {
                    let hs: Vec<_> = [0, 0, 1]
                        .iter()
                        .map(|&n| {
                            let (url, chunk, http) = (format!("{}{location}", bases[n]), chunk.clone(), &http);
                            s.spawn(move || http.patch(&url).header("Content-Range", "0-99999").body(chunk).send().unwrap().status().as_u16())
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                });
                // One chunk lands; the other on the same node is out of order; the other node does
                // not hold the session's data.
                assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
                assert!(statuses.iter().all(|s| [202, 404, 416].contains(s)), "{statuses:?}");
                let done = http.put(format!("{}{location}?digest={}", bases[0], sha256(&chunk))).send().unwrap();
                assert_eq!(done.status(), 201);
            }
        });
    });
    // The invariants, read from the database.
    let admin = url.clone();
    let q = |sql: &str| run(Command::new("psql").arg(&admin).args(["-tAc", sql])).trim().to_string();
    assert_eq!(q("SELECT count(*) FROM tags t LEFT JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest WHERE m.digest IS NULL"), "0");
    assert_eq!(q("SELECT count(*) FROM manifest_references r LEFT JOIN repository_blobs b ON b.repository_id = r.repository_id AND b.digest = r.child_digest WHERE r.kind = 'blob' AND b.digest IS NULL"), "0");
    assert_eq!(q("SELECT count(*) FROM blobs"), "3");
    assert_eq!(q("SELECT count(*) FROM (SELECT digest FROM blobs GROUP BY digest HAVING count(*) > 1) d"), "0");
    assert_eq!(q("SELECT count(*) FROM repositories WHERE name = 'race/app'"), "1");
    // Every blob the metadata knows is served (by the node that holds it, or through a redirect).
    for n in &nodes {
        for blob in [&shared, &config] {
            let r = client().get(n.url(&format!("/v2/race/app/blobs/{}", sha256(blob)))).send().unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.bytes().unwrap().as_ref() == blob.as_slice());
        }
    }
}
