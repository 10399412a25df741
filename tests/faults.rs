//! Faults: damaged database files, a data disk that fills up during uploads, kill -9 at random
//! points of pushes, GCs, CAR imports and token issuance.

mod common;
use common::dags::*;
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

/// A size-limited tmpfs of this test's own, unmounted when dropped (needs root, as CI has).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "mounting a {mib} MiB tmpfs (this test needs root): {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn free(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(self.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Pushes `data` in 4 MiB chunks; the status of the first refused request, or of the final PUT.
fn chunked_push(node: &Node, repo: &str, data: &[u8]) -> (u16, String) {
    let c = client();
    let r = c.post(node.url(&format!("/v2/{repo}/blobs/uploads/"))).send().unwrap();
    if r.status() != 202 {
        return (r.status().as_u16(), r.text().unwrap());
    }
    let mut loc = r.headers()["Location"].to_str().unwrap().to_string();
    for (i, chunk) in data.chunks(4 << 20).enumerate() {
        let start = i * (4 << 20);
        let r = c.patch(node.url(&loc)).header("Content-Range", format!("{start}-{}", start + chunk.len() - 1)).body(chunk.to_vec()).send().unwrap();
        if r.status() != 202 {
            return (r.status().as_u16(), r.text().unwrap());
        }
        loc = r.headers()["Location"].to_str().unwrap().to_string();
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.put(node.url(&format!("{loc}{sep}digest={}", sha256(data)))).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn a_full_disk_fails_uploads_clearly_keeps_reads_and_recovers() {
    let disk = SmallDisk::new(96);
    let mut node = Node::start_in(Some(disk.path().join("data")), &[], &[]);
    let layer = xorshift_bytes(5, 4 << 20);
    let m = image_manifest(&node, "kept/app", b"{}", &[&layer]);
    assert_eq!(put_manifest(&node, "kept/app", "v1", OCI_MANIFEST, &m).status(), 201);

    // Leave about 12 MiB free, then push 40 MiB.
    let filler = disk.path().join("filler");
    let keep = 12u64 << 20;
    let fill = disk.free().saturating_sub(keep);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let big = xorshift_bytes(6, 40 << 20);
    let (status, body) = chunked_push(&node, "new/app", &big);
    assert_eq!(status, 507, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("storage is full"), "{body}");
    // Monolithic too.
    let r = client().post(node.url(&format!("/v2/new/app/blobs/uploads/?digest={}", sha256(&big)))).body(big.clone()).send().unwrap();
    assert_eq!(r.status(), 507);
    // Nothing of it is visible; reads of what was there go on.
    assert_eq!(client().head(node.url(&format!("/v2/new/app/blobs/{}", sha256(&big)))).send().unwrap().status(), 404);
    let r = client().get(node.url("/v2/kept/app/manifests/v1")).header("Accept", OCI_MANIFEST).send().unwrap();
    assert_eq!(r.status(), 200);
    let pulled = client().get(node.url(&format!("/v2/kept/app/blobs/{}", sha256(&layer)))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&pulled), sha256(&layer));
    // What the refused writes had written went with them: the open chunked session holds its
    // acknowledged chunks exactly (it may be resumed), the monolithic upload nothing.
    let sessions: Vec<u64> = std::fs::read_dir(node.data_dir.join("uploads")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(sessions[0] % (4 << 20) == 0 && sessions[0] > 0, "{sessions:?}");
    assert!(disk.free() + sessions[0] + (1 << 20) >= keep, "{} bytes free of the {keep} left", disk.free());

    // Space returns: the same push succeeds, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = chunked_push(&node, "new/app", &big);
    assert_eq!(status, 201, "{body}");
    let m2 = image_manifest(&node, "new/app", b"{\"n\":2}", &[&big]);
    assert_eq!(put_manifest(&node, "new/app", "v1", OCI_MANIFEST, &m2).status(), 201);
    let pulled = client().get(node.url(&format!("/v2/new/app/blobs/{}", sha256(&big)))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&pulled), sha256(&big));
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "verify", "--data-dir"]).arg(&node.data_dir).output().unwrap();
    assert!(out.status.success(), "verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    node.kill9();
}

const ADMIN_PASSWORD: &str = "admin-password-1";

/// What the node acknowledged: it must all be there after any crash.
#[derive(Default)]
struct Acknowledged {
    /// (repository, tag, manifest digest, layer digest, layer seed)
    images: Vec<(String, String, String, String)>,
    /// Roots of CARs whose import answered with the pin made.
    imports: Vec<String>,
    refresh_tokens: Vec<String>,
    /// Tags whose deletion was asked for (done or not: either is right).
    deleted: std::collections::HashSet<(String, String)>,
}

/// `rb` as the administrator of the nodes these tests start with `AF_ADMIN_PASSWORD`.
fn admin(rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
    rb.basic_auth("admin", Some(ADMIN_PASSWORD))
}

/// One worker's loop until the node dies: pushes, deletes, GCs, imports or token requests.
fn work(kind: usize, round: usize, node_url: String, rpc: String, ack: std::sync::Arc<std::sync::Mutex<Acknowledged>>) {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for n in 0.. {
        let alive = match kind {
            0 | 1 => {
                // Push an image: config, layer, manifest; acknowledged at the manifest's 201.
                let repo = format!("crash/app{kind}");
                let layer = xorshift_bytes(((round * 1000 + n) * 2 + kind) as u64, 300 * 1024 + n * 7);
                let config = format!("{{\"round\":{round},\"n\":{n}}}").into_bytes();
                let mut ok = true;
                for blob in [&layer, &config] {
                    let r = admin(c.post(format!("{node_url}/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)))).body(blob.to_vec()).send();
                    ok &= r.is_ok_and(|r| r.status() == 201);
                }
                if !ok {
                    false
                } else {
                    let manifest = serde_json::to_vec(&serde_json::json!({
                        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
                    }))
                    .unwrap();
                    let tag = format!("r{round}-{n}");
                    match admin(c.put(format!("{node_url}/v2/{repo}/manifests/{tag}"))).header("Content-Type", OCI_MANIFEST).body(manifest.clone()).send() {
                        Ok(r) if r.status() == 201 => {
                            ack.lock().unwrap().images.push((repo, tag, sha256(&manifest), sha256(&layer)));
                            true
                        }
                        _ => false,
                    }
                }
            }
            2 => {
                // Delete an acknowledged tag now and then, and collect garbage (grace 0 s).
                let victim = ack.lock().unwrap().images.iter().rev().find(|(r, ..)| r == "crash/app1").cloned();
                if let Some((repo, tag, ..)) = victim.filter(|_| n % 3 == 0) {
                    // Marked before it is sent: a delete done whose answer the crash swallowed
                    // leaves the image rightly gone.
                    ack.lock().unwrap().deleted.insert((repo.clone(), tag.clone()));
                    let _ = admin(c.delete(format!("{node_url}/v2/{repo}/manifests/{tag}"))).send();
                }
                c.post(format!("{rpc}/api/v0/repo/gc")).send().and_then(|r| r.text()).is_ok()
            }
            3 => {
                // Import a CAR through the RPC; acknowledged when it answers with the pin made.
                let data = xorshift_bytes((round * 1000 + n) as u64 + 77, 200 * 1024);
                let leaf = cid_of(0x55, &data);
                let root_node = dag_pb(&[("f", leaf)], DIRECTORY_DATA);
                let root = cid_of(0x70, &root_node);
                let car = car(&root, &[(root, root_node), (leaf, data)]);
                let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(car).file_name("x.car"));
                match c.post(format!("{rpc}/api/v0/dag/import?pin-roots=true")).multipart(form).send().and_then(|r| r.text()) {
                    Ok(text) if text.contains("\"PinErrorMsg\":\"\"") => {
                        ack.lock().unwrap().imports.push(root.to_string());
                        true
                    }
                    _ => false,
                }
            }
            _ => {
                // Issue refresh tokens (stored) and JWTs.
                let form = [
                    ("grant_type", "password"),
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("access_type", "offline"),
                    ("service", "af-registry"),
                    ("client_id", "crash"),
                ];
                match c.post(format!("{node_url}/token")).form(&form).send() {
                    Ok(r) if r.status() == 200 => {
                        let t: serde_json::Value = r.json().unwrap_or_default();
                        if let Some(refresh) = t["refresh_token"].as_str() {
                            ack.lock().unwrap().refresh_tokens.push(refresh.to_string());
                        }
                        true
                    }
                    _ => false,
                }
            }
        };
        if !alive {
            // Refused or cut off: the node is gone (or going); stop at the next failure.
            if c.get(format!("{node_url}/v2/")).send().is_err() {
                return;
            }
        }
    }
}

#[test]
fn kill_9_at_random_points_of_pushes_gcs_imports_and_token_issuance_loses_nothing_acknowledged() {
    let mut node = Node::start_with_env(&["--auth", "token", "--gc-grace", "0s"], &[("AF_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let ack = std::sync::Arc::new(std::sync::Mutex::new(Acknowledged::default()));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        let workers: Vec<_> = (0..5)
            .map(|kind| {
                let (url, rpc, ack) = (node.url(""), format!("http://{}", node.rpc), ack.clone());
                std::thread::spawn(move || work(kind, round, url, rpc, ack))
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1200));
        node.kill9();
        for w in workers {
            w.join().unwrap();
        }
        // Nothing half-written: the stopped node's data directory verifies clean.
        let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "verify", "--data-dir"]).arg(&node.data_dir).output().unwrap();
        assert!(out.status.success(), "round {round}: verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let started = Instant::now();
        node.start_again();
        let restart = started.elapsed();
        // Everything acknowledged is there.
        let a = ack.lock().unwrap();
        for (repo, tag, manifest, layer) in &a.images {
            if a.deleted.contains(&(repo.clone(), tag.clone())) {
                continue;
            }
            let r = admin(client().get(node.url(&format!("/v2/{repo}/manifests/{tag}")))).header("Accept", OCI_MANIFEST).send().unwrap();
            assert_eq!(r.status(), 200, "round {round}: {repo}:{tag} lost");
            assert_eq!(sha256(&r.bytes().unwrap()), *manifest);
            let blob = admin(client().get(node.url(&format!("/v2/{repo}/blobs/{layer}")))).send().unwrap().bytes().unwrap();
            assert_eq!(sha256(&blob), *layer, "round {round}: {repo}:{tag}'s layer");
        }
        for root in &a.imports {
            let r = node.rpc_post(&format!("dag/export?arg={root}"));
            assert_eq!(r.status(), 200, "round {round}: import {root} lost");
            let mut reader = af_registry::car::SectionReader::default();
            assert_eq!(reader.push(&r.bytes().unwrap()).unwrap().len(), 2, "round {round}: import {root} incomplete");
        }
        for refresh in a.refresh_tokens.iter().rev().take(5) {
            let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("service", "af-registry"), ("client_id", "crash")];
            let r = client().post(node.url("/token")).form(&form).send().unwrap();
            assert_eq!(r.status(), 200, "round {round}: a refresh token issued before the crash");
        }
        eprintln!(
            "round {round}: {} images, {} deleted, {} imports, {} refresh tokens acknowledged so far; restarted in {restart:?}",
            a.images.len(),
            a.deleted.len(),
            a.imports.len(),
            a.refresh_tokens.len()
        );
    }
    let a = ack.lock().unwrap();
    assert!(a.images.len() > 20 && a.imports.len() > 10 && a.refresh_tokens.len() > 20 && !a.deleted.is_empty(), "too little was acknowledged to show anything");
}

/// The node's wall clock, moved by libfaketime (Debian's `faketime`) through a file it reads at
/// every call; the monotonic clock (timers, timeouts) is left alone, as when NTP steps the clock.
struct FakeClock {
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

impl FakeClock {
    fn new() -> FakeClock {
        assert!(Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} is missing: install Debian's faketime (scripts/install-test-deps.sh does)");
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock { file: dir.path().join("offset"), _dir: dir };
        clock.set("+0");
        clock
    }
    fn set(&self, offset: &str) {
        std::fs::write(&self.file, offset).unwrap();
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
    }
}

#[test]
fn the_clock_jumping_forward_and_back_expires_what_is_due_and_nothing_else() {
    let clock = FakeClock::new();
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).chain([("AF_ADMIN_PASSWORD", ADMIN_PASSWORD)]).collect();
    let node = Node::start_in(None, &["--auth", "token", "--gc-grace", "30m", "--upload-expiry", "8s"], &env);
    let c = client();
    let jwt = || -> String {
        let r = admin(c.get(node.url("/token?service=af-registry&scope=repository:t/app:pull,push"))).send().unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().unwrap()["token"].as_str().unwrap().to_string()
    };
    let pull = |token: &str| c.get(node.url("/v2/t/app/manifests/v1")).bearer_auth(token).header("Accept", OCI_MANIFEST).send().unwrap().status().as_u16();

    // A tagged image, an unreferenced blob (garbage once older than the grace) and an open
    // upload session.
    let layer = xorshift_bytes(9, 1 << 20);
    let config = b"{}".to_vec();
    for blob in [&layer, &config] {
        assert_eq!(admin(c.post(node.url(&format!("/v2/t/app/blobs/uploads/?digest={}", sha256(blob))))).body(blob.to_vec()).send().unwrap().status(), 201);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    assert_eq!(admin(c.put(node.url("/v2/t/app/manifests/v1"))).header("Content-Type", OCI_MANIFEST).body(manifest).send().unwrap().status(), 201);
    let garbage = b"pushed, never referenced".to_vec();
    assert_eq!(admin(c.post(node.url(&format!("/v2/t/app/blobs/uploads/?digest={}", sha256(&garbage))))).body(garbage.clone()).send().unwrap().status(), 201);
    let r = admin(c.post(node.url("/v2/t/app/blobs/uploads/"))).send().unwrap();
    assert_eq!(r.status(), 202);
    let session = r.headers()["Location"].to_str().unwrap().to_string();
    let token = jwt();
    assert_eq!(pull(&token), 200);
    let gc = || {
        let r = c.post(node.rpc_url("repo/gc")).send().unwrap();
        let status = r.status();
        let body = r.text().unwrap();
        assert!(status == 200 && !body.contains("\"Error\""), "{status} {body}");
    };
    let has = |blob: &[u8]| admin(c.head(node.url(&format!("/v2/t/app/blobs/{}", sha256(blob))))).send().unwrap().status() == 200;

    // Back two hours: everything was made "in the future". Nothing expires, nothing is collected,
    // tokens still work, new ones are issued.
    clock.set("-2h");
    std::thread::sleep(Duration::from_secs(3));
    gc();
    assert!(has(&garbage), "content from the future is young, not garbage");
    assert_eq!(pull(&token), 200, "a token issued before the clock went back");
    assert_eq!(pull(&jwt()), 200);
    let r = admin(c.patch(node.url(&session))).header("Content-Range", "0-3").body("abcd").send().unwrap();
    assert_eq!(r.status(), 202, "the session lives on: its idle time is negative");
    let session = r.headers()["Location"].to_str().unwrap().to_string();

    // Forward to two hours ahead of the real time: the JWT has expired (401 with a challenge, no
    // error), the session has been idle for hours and goes at the next sweep, the unreferenced
    // blob is past the grace and goes at the next GC; the tagged image stays.
    clock.set("+2h");
    let r = c.get(node.url("/v2/t/app/manifests/v1")).bearer_auth(&token).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("WWW-Authenticate"));
    assert_eq!(pull(&jwt()), 200, "a token issued now works");
    std::thread::sleep(Duration::from_secs(3));
    let r = admin(c.patch(node.url(&session))).header("Content-Range", "4-7").body("efgh").send().unwrap();
    assert_eq!(r.status(), 404, "an expired session: {}", r.text().unwrap_or_default());
    gc();
    assert!(!has(&garbage), "unreferenced and past the grace");
    assert!(has(&layer) && has(&config), "a tagged image's blobs are never garbage");
    assert_eq!(pull(&jwt()), 200);

    // Back to the real time: all still consistent.
    clock.set("+0");
    gc();
    assert!(has(&layer));
    let blob = admin(c.get(node.url(&format!("/v2/t/app/blobs/{}", sha256(&layer))))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&blob), sha256(&layer));
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
}
