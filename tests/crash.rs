//! Crash safety: kill -9 the node while 20 clients upload, restart it, and check that every
//! acknowledged blob is intact, nothing half-written is visible, and interrupted sessions either
//! resume to a correct blob or are cleanly unknown.

mod common;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 20;
const BLOB: usize = 3 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

#[derive(Clone, Debug, Default)]
struct Upload {
    data_seed: u64,
    location: Option<String>,
    acknowledged: usize,
    /// The final PUT was sent (its answer may have been lost in the crash).
    finishing: bool,
    created: bool,
}

fn blob_data(seed: u64) -> Vec<u8> {
    xorshift_bytes(seed, BLOB)
}

fn upload_until_failure(base: String, repo: String, client_no: usize, log: Arc<Mutex<Vec<Upload>>>, done: Arc<AtomicUsize>) {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    for n in 0.. {
        let seed = (client_no as u64) << 32 | n;
        let idx = {
            let mut l = log.lock().unwrap();
            l.push(Upload { data_seed: seed, ..Default::default() });
            l.len() - 1
        };
        let data = blob_data(seed);
        let Ok(r) = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send() else { return };
        if r.status() != 202 {
            return;
        }
        let mut loc = r.headers()["Location"].to_str().unwrap().to_string();
        log.lock().unwrap()[idx].location = Some(loc.clone());
        for start in (0..BLOB).step_by(CHUNK) {
            let end = (start + CHUNK).min(BLOB);
            let r = c.patch(format!("{base}{loc}")).header("Content-Range", format!("{}-{}", start, end - 1)).body(data[start..end].to_vec()).send();
            match r {
                Ok(r) if r.status() == 202 => {
                    loc = r.headers()["Location"].to_str().unwrap().to_string();
                    log.lock().unwrap()[idx].acknowledged = end;
                }
                _ => return,
            }
        }
        log.lock().unwrap()[idx].finishing = true;
        let r = c.put(format!("{base}{loc}?digest={}", sha256(&data))).send();
        match r {
            Ok(r) if r.status() == 201 => {
                log.lock().unwrap()[idx].created = true;
                done.fetch_add(1, Ordering::SeqCst);
            }
            _ => return,
        }
    }
}

#[test]
fn kill_9_during_concurrent_uploads() {
    let mut node = Node::start();
    let base = format!("http://{}", node.addr);
    let log = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (base, log, done) = (base.clone(), log.clone(), done.clone());
            std::thread::spawn(move || upload_until_failure(base, format!("crash/c{i}"), i, log, done))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < 25 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let uploads = log.lock().unwrap().clone();
    let created = uploads.iter().filter(|u| u.created).count();
    let interrupted: Vec<&Upload> = uploads.iter().filter(|u| !u.created && u.location.is_some()).collect();
    assert!(created >= 25, "only {created} uploads completed before the kill");
    assert!(!interrupted.is_empty(), "the kill interrupted no upload");

    node.restart();
    let c = client();
    let repo_of = |u: &Upload| format!("crash/c{}", u.data_seed >> 32);
    // Every acknowledged blob is intact.
    for u in uploads.iter().filter(|u| u.created) {
        let data = blob_data(u.data_seed);
        let r = c.get(node.url(&format!("/v2/{}/blobs/{}", repo_of(u), sha256(&data)))).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(sha256(&r.bytes().unwrap()), sha256(&data));
    }
    // Interrupted uploads: never a partial blob; the session resumes or is cleanly unknown.
    let mut resumed = 0;
    let mut live_sessions = HashSet::new();
    for u in &interrupted {
        let data = blob_data(u.data_seed);
        let digest = sha256(&data);
        let blob_url = node.url(&format!("/v2/{}/blobs/{digest}", repo_of(u)));
        let visible = c.head(&blob_url).send().unwrap().status() == 200;
        if visible {
            // The final PUT committed but its response was lost: the blob must be whole.
            assert_eq!(sha256(&c.get(&blob_url).send().unwrap().bytes().unwrap()), digest);
        }
        let loc = u.location.clone().unwrap();
        let st = c.get(node.url(&loc)).send().unwrap();
        if st.status() == 404 {
            // Cleanly unknown only because it completed: the final PUT was under way and the node
            // finished the commit at restart (or before the crash).
            assert!(visible && u.finishing, "session {loc} vanished but its blob is not visible");
            continue;
        }
        assert_eq!(st.status(), 204);
        live_sessions.insert(loc.rsplit('/').next().unwrap().to_string());
        let range = st.headers()["Range"].to_str().unwrap();
        let mut offset = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
        let patch = |offset: usize| c.patch(node.url(&loc)).header("Content-Range", format!("{}-{}", offset, BLOB - 1)).body(data[offset..].to_vec()).send().unwrap();
        assert!(offset <= BLOB);
        if offset < BLOB {
            let mut r = patch(offset);
            if offset == 1 && r.status() == 416 {
                // "0-0" is what both an empty and a one-byte session report.
                offset = 0;
                r = patch(0);
            }
            assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        }
        assert!(offset >= u.acknowledged, "acknowledged {} bytes but the session holds {offset}", u.acknowledged);
        let r = c.put(node.url(&format!("{loc}?digest={digest}"))).send().unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(sha256(&c.get(&blob_url).send().unwrap().bytes().unwrap()), digest);
        resumed += 1;
    }
    // No upload data is left over but open sessions: after resuming, only those whose POST the
    // crash cut off before its answer (the row is written before the file, so the session
    // lives; its client never learned it, and it expires after --upload-expiry).
    let leftovers: Vec<String> = std::fs::read_dir(node.data_dir.join("uploads")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    let repos: HashSet<String> = log.lock().unwrap().iter().map(repo_of).collect();
    for id in &leftovers {
        let open = repos.iter().any(|repo| c.get(node.url(&format!("/v2/{repo}/blobs/uploads/{id}"))).send().unwrap().status() == 204);
        assert!(open && !live_sessions.contains(id), "upload file {id} left behind without a session of its own");
    }
    assert!(leftovers.len() <= CLIENTS, "{} upload files left behind", leftovers.len());
    eprintln!("{created} acknowledged uploads intact, {} interrupted, {resumed} resumed", interrupted.len());
}

/// A request body of `data` that arrives at about 40 MiB/s.
struct Slow {
    data: Arc<Vec<u8>>,
    at: usize,
}

impl std::io::Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.at).min(64 << 10);
        if self.at % (1 << 20) + n > 1 << 20 || self.at % (1 << 20) == 0 {
            std::thread::sleep(Duration::from_millis(25));
        }
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// SIGTERM during a 200 MiB upload: the node stops accepting connections, gives the upload its
/// `--shutdown-timeout`, cuts it off and exits 0; after a restart the upload resumes from what
/// was received, and the blob comes out whole.
#[test]
fn sigterm_mid_upload_exits_in_time_and_the_upload_resumes() {
    let mut node = Node::start_with(&["--shutdown-timeout", "2s"]);
    let data = Arc::new(xorshift_bytes(17, 200 << 20));
    let digest = sha256(&data);
    let r = client().post(node.url("/v2/team/big/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["Location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') { node.url(&location) } else { location };
    let patch = {
        let (url, body) = (location.clone(), Slow { data: data.clone(), at: 0 });
        std::thread::spawn(move || {
            let body = reqwest::blocking::Body::new(body);
            client().patch(url).header("Content-Type", "application/octet-stream").body(body).send().map(|r| r.status())
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    node.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert!(client().get(node.url("/v2/")).send().is_err(), "a stopping node still took a new connection");
    let status = node.wait_exit(Duration::from_secs(10)).expect("the node did not exit");
    let took = stopping.elapsed();
    assert!(status.success(), "{status}: {}", node.log_text());
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "exited after {took:?}, the timeout is 2 s");
    let cut = patch.join().unwrap();
    assert!(!cut.as_ref().is_ok_and(|s| s.is_success()), "the upload should have been cut off: {cut:?}");
    let log = node.log_text();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");

    node.start_again();
    let r = client().get(&location).send().unwrap();
    assert_eq!(r.status(), 204, "the session survived the stop");
    let range = r.headers()["Range"].to_str().unwrap().to_string();
    let received: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert!(received > 0 && received < data.len(), "{range}");
    let r = client()
        .patch(&location)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{received}-{}", data.len() - 1))
        .body(data[received..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let location = r.headers()["Location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') { node.url(&location) } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = client().put(format!("{location}{sep}digest={digest}")).send().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let got = client().get(node.url(&format!("/v2/team/big/blobs/{digest}"))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&got), digest);
}

/// `--log-format json`: every line one JSON object, each request logged once with its status and
/// duration, never its query string or credentials; no colour codes in a file; one start-up line
/// per listener (API, gateway, RPC, metrics) naming the version and the peer ID, none of the web
/// framework's own.
#[test]
fn logs_are_json_lines_with_one_line_per_request_and_no_secrets() {
    // AF_LOG unset: the node's default filter.
    let mut node = Node::start_with_env(&[], &[("AF_LOG_FORMAT", "json"), ("AF_LOG", "")]);
    let r = client().get(node.url("/v2/team/app/manifests/latest?token=hunter2")).basic_auth("someone", Some("s3cret-password")).send().unwrap();
    assert_eq!(r.status(), 404);
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(10)).expect("exit").success());
    let log = node.log_text();
    assert!(!log.contains('\x1b'), "colour codes in a log file");
    assert!(!log.contains("hunter2") && !log.contains("s3cret") && !log.contains("c29tZW9uZT"), "{log}");
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let requests: Vec<_> = lines.iter().filter(|l| l["fields"]["message"] == "request" && l["fields"]["path"] == "/v2/team/app/manifests/latest").collect();
    assert_eq!(requests.len(), 1, "{log}");
    assert_eq!(requests[0]["fields"]["status"], 404);
    assert!(requests[0]["fields"]["ms"].as_f64().is_some());
    let listening: Vec<_> = lines.iter().filter(|l| l["fields"]["message"].as_str().is_some_and(|m| m.ends_with("listening")) && l["target"] == "af_registry::node").collect();
    assert_eq!(listening.len(), 4, "one line per listener: API, gateway, RPC, metrics: {log}");
    for l in listening {
        assert_eq!(l["fields"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(l["fields"]["peer_id"].as_str().is_some_and(|p| p.starts_with("12D3KooW")), "{l}");
    }
    assert!(!lines.iter().any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("actix"))), "{log}");
}

/// A SIGTERM sent the moment the API port takes connections stops the node cleanly (exit 0, the
/// stop recorded for the next start), never by the signal's default action: a container runtime
/// may stop a node as soon as it is up.
#[test]
fn sigterm_as_soon_as_the_port_opens_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let api = free_addr();
        let log = dir.path().join(format!("node-{round}.log"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_af"))
            .args(["registry", "serve", "--auth", "none", "--api", &api.to_string()])
            .args(["--gateway", &free_addr().to_string(), "--rpc", &free_addr().to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .env("AF_SWARM", "/ip4/127.0.0.1/tcp/0")
            .env("AF_METRICS", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(api).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "round {round}: the node did not listen");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "round {round}: {status}: {text}");
        assert!(dir.path().join("data/clean-stop").exists(), "round {round}: the stop was not recorded: {text}");
    }
}
