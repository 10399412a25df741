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
            let r = c
                .patch(format!("{base}{loc}"))
                .header("Content-Range", format!("{}-{}", start, end - 1))
                .body(data[start..end].to_vec())
                .send();
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
        let patch = |offset: usize| {
            c.patch(node.url(&loc)).header("Content-Range", format!("{}-{}", offset, BLOB - 1)).body(data[offset..].to_vec()).send().unwrap()
        };
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
    // No upload data is left over except the sessions still open (none, after resuming).
    let leftovers: Vec<_> = std::fs::read_dir(node.data_dir.join("uploads")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.is_empty(), "upload files left behind: {leftovers:?}");
    eprintln!("{created} acknowledged uploads intact, {} interrupted, {resumed} resumed", interrupted.len());
}
