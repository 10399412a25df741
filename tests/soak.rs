//! The soak: 200 concurrent clients on loopback pushing, pulling, retagging, deleting and running
//! GCs against one node for AF_SOAK_MINUTES (default 10), reporting each minute the operations,
//! errors, p99 latency, the node's RSS and open file descriptors. Passes when no request failed
//! unexpectedly (the GC grace is 60 s, so garbage of the first minutes is collected while pushes
//! stay safe), anonymous memory and descriptors stayed flat after the first minutes, every acknowledged image
//! is still pullable and `af registry verify` is clean. Run by `scripts/soak.sh [MINUTES]`
//! (ignored by a plain `cargo test`: it takes minutes).

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 200;

#[derive(Default)]
struct Stats {
    /// Latencies (µs) of this minute, by operation.
    latencies: HashMap<&'static str, Vec<u64>>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Ledger {
    /// Images pushed and never deleted: (tag, manifest digest, layer digest).
    kept: Vec<(String, String, String)>,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The node's heap as its metrics tell it (`af_memory_bytes`), in MiB: SQLite's, every live
/// allocation's, what malloc holds.
fn heap(metrics: &str) -> String {
    let page = client().get(format!("http://{metrics}/metrics")).send().and_then(|r| r.text()).unwrap_or_default();
    let mib = |what: &str| metric_sample(&page, &format!("af_memory_bytes{{what=\"{what}\"}}")).map_or("?".into(), |b| format!("{:.0}", b / 1048576.0));
    format!("({}, {}, {})", mib("sqlite"), mib("malloc_in_use"), mib("malloc_held"))
}

fn p99(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn client_loop(id: usize, base: String, rpc: String, stop: Arc<AtomicBool>, stats: Arc<Mutex<Stats>>, ledger: Arc<Mutex<Ledger>>) {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let repo = format!("soak/app{}", id % 20);
    let mut rng = (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        n += 1;
        let started = Instant::now();
        let (op, outcome): (&'static str, Result<(), String>) = match rng % 100 {
            0..=29 => ("push", push(&c, &base, &repo, id, n, &ledger)),
            30..=79 => ("pull", pull(&c, &base, &ledger, rng)),
            80..=89 => ("retag", retag(&c, &base, &ledger, rng, id, n)),
            90..=98 => ("delete", push_and_delete(&c, &base, &repo, id, n)),
            _ if id == 0 => ("gc", gc(&c, &rpc)),
            _ => ("pull", pull(&c, &base, &ledger, rng)),
        };
        let mut s = stats.lock().unwrap();
        s.latencies.entry(op).or_default().push(started.elapsed().as_micros() as u64);
        if let Err(e) = outcome {
            s.errors.push(format!("{op}: {e}"));
        }
    }
}

/// A GC through the RPC, read to its end (its lines stream as it sweeps; a failure is the last).
fn gc(c: &reqwest::blocking::Client, rpc: &str) -> Result<(), String> {
    let r = c.post(format!("{rpc}/api/v0/repo/gc")).send().map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.text().map_err(|e| e.to_string())?;
    match status.as_u16() == 200 && !body.contains("\"Error\"") {
        true => Ok(()),
        false => Err(format!("{status} {body}")),
    }
}

fn ok(r: reqwest::blocking::Response, want: u16) -> Result<(), String> {
    if r.status().as_u16() == want {
        Ok(())
    } else {
        Err(format!("{} {}", r.status(), r.text().unwrap_or_default()))
    }
}

fn upload(c: &reqwest::blocking::Client, base: &str, repo: &str, data: &[u8]) -> Result<String, String> {
    let d = sha256(data);
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}")).body(data.to_vec()).send().map_err(|e| e.to_string())?;
    ok(r, 201)?;
    Ok(d)
}

fn put_image(c: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str, id: usize, n: u64) -> Result<(String, String), String> {
    let layer = xorshift_bytes((id as u64) << 32 | n, 64 * 1024 + ((n as usize * 7919) % (448 * 1024)));
    let config = format!("{{\"client\":{id},\"n\":{n}}}").into_bytes();
    let l = upload(c, base, repo, &layer)?;
    let cfg = upload(c, base, repo, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
    }))
    .unwrap();
    let r = c.put(format!("{base}/v2/{repo}/manifests/{tag}")).header("Content-Type", OCI_MANIFEST).body(manifest.clone()).send().map_err(|e| e.to_string())?;
    ok(r, 201)?;
    Ok((sha256(&manifest), l))
}

fn push(c: &reqwest::blocking::Client, base: &str, repo: &str, id: usize, n: u64, ledger: &Mutex<Ledger>) -> Result<(), String> {
    let tag = format!("c{id}-{n}");
    let (m, l) = put_image(c, base, repo, &tag, id, n)?;
    ledger.lock().unwrap().kept.push((format!("{repo}:{tag}"), m, l));
    Ok(())
}

/// One of the images pushed so far, picked by `rng`.
fn any_kept(ledger: &Mutex<Ledger>, rng: u64) -> Option<(String, String, String)> {
    let l = ledger.lock().unwrap();
    (!l.kept.is_empty()).then(|| l.kept[(rng >> 8) as usize % l.kept.len()].clone())
}

fn pull(c: &reqwest::blocking::Client, base: &str, ledger: &Mutex<Ledger>, rng: u64) -> Result<(), String> {
    let Some((image, manifest, layer)) = any_kept(ledger, rng) else { return Ok(()) };
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let r = c.get(format!("{base}/v2/{repo}/manifests/{tag}")).header("Accept", OCI_MANIFEST).send().map_err(|e| e.to_string())?;
    let body = r.bytes().map_err(|e| e.to_string())?;
    if sha256(&body) != manifest {
        return Err(format!("{image}: another manifest"));
    }
    let blob = c.get(format!("{base}/v2/{repo}/blobs/{layer}")).send().map_err(|e| e.to_string())?.bytes().map_err(|e| e.to_string())?;
    if sha256(&blob) != layer {
        return Err(format!("{image}: its layer differs"));
    }
    Ok(())
}

fn retag(c: &reqwest::blocking::Client, base: &str, ledger: &Mutex<Ledger>, rng: u64, id: usize, n: u64) -> Result<(), String> {
    let Some((image, manifest_digest, layer)) = any_kept(ledger, rng) else { return Ok(()) };
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let body = c.get(format!("{base}/v2/{repo}/manifests/{tag}")).header("Accept", OCI_MANIFEST).send().map_err(|e| e.to_string())?.bytes().map_err(|e| e.to_string())?;
    let new_tag = format!("re{id}-{n}");
    let r = c.put(format!("{base}/v2/{repo}/manifests/{new_tag}")).header("Content-Type", OCI_MANIFEST).body(body.to_vec()).send().map_err(|e| e.to_string())?;
    ok(r, 201)?;
    ledger.lock().unwrap().kept.push((format!("{repo}:{new_tag}"), manifest_digest, layer));
    Ok(())
}

/// Pushes an image under a tag of its own and deletes the tag: garbage for the GC.
fn push_and_delete(c: &reqwest::blocking::Client, base: &str, repo: &str, id: usize, n: u64) -> Result<(), String> {
    let tag = format!("tmp{id}-{n}");
    put_image(c, base, repo, &tag, id + 10_000, n)?;
    let r = c.delete(format!("{base}/v2/{repo}/manifests/{tag}")).send().map_err(|e| e.to_string())?;
    ok(r, 202)
}

#[test]
#[ignore = "minutes long: run by scripts/soak.sh"]
fn soak() {
    let minutes: u64 = std::env::var("AF_SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(10);
    let metrics = free_addr().to_string();
    let node = Node::start_with(&["--max-connections-per-ip", "1024", "--max-uploads", "1024", "--gc-grace", "60s", "--metrics", &metrics]);
    let pid = node.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (base, rpc, stop, stats, ledger) = (node.url(""), format!("http://{}", node.rpc), stop.clone(), stats.clone(), ledger.clone());
            std::thread::spawn(move || client_loop(id, base, rpc, stop, stats, ledger))
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    println!("minute  ops/s   p99 push  p99 pull p99 retag p99 delete  p99 gc   errors  RSS MiB (anon, file)  fds  images  heap MiB (sqlite, in use, held)");
    for minute in 1..=minutes {
        std::thread::sleep(Duration::from_secs(60));
        let mut s = std::mem::take(&mut *stats.lock().unwrap());
        let ops: usize = s.latencies.values().map(Vec::len).sum();
        let mut p = |op: &str| s.latencies.get_mut(op).map_or(0, |v| p99(v)) / 1000;
        let (push, pull, retag, delete, gc) = (p("push"), p("pull"), p("retag"), p("delete"), p("gc"));
        let (rss, anon, file, fds) =
            (status_kib(pid, "VmRSS").unwrap_or(0) / 1024, status_kib(pid, "RssAnon").unwrap_or(0) / 1024, status_kib(pid, "RssFile").unwrap_or(0) / 1024, open_fds(pid));
        println!(
            "{minute:>6} {:>6} {push:>7}ms {pull:>7}ms {retag:>7}ms {delete:>8}ms {gc:>6}ms {:>8} {rss:>8} ({anon}, {file}) {fds:>4} {:>7}  {}",
            ops / 60,
            s.errors.len(),
            ledger.lock().unwrap().kept.len(),
            heap(&metrics)
        );
        samples.push((anon, fds));
        errors.append(&mut s.errors);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(errors.is_empty(), "{} unexpected errors, e.g. {:#?}", errors.len(), &errors[..errors.len().min(10)]);
    // Flat after warm-up: the last minute against the second (the first fills caches and pools).
    if samples.len() >= 3 {
        // The node's own memory (heap and stacks): mapped files, the SQLite stores above all
        // (storage::SQLITE_MMAP), count in RSS too but are the page cache's, and grow with the
        // data held as the cache would.
        let (rss_warm, _) = samples[1];
        let (rss_end, fds_end) = *samples.last().unwrap();
        // Descriptors follow what is in flight at the moment of the sample (200 clients' sockets,
        // upload files): the bound is the first minutes' highest plus a margin.
        let fds_warm = samples[0].1.max(samples[1].1);
        assert!(rss_end <= rss_warm + rss_warm / 4 + 16, "anonymous memory grew from {rss_warm} MiB to {rss_end} MiB");
        assert!(fds_end <= fds_warm + 128, "open descriptors grew from {fds_warm} to {fds_end}");
    }
    let kept = ledger.lock().unwrap().kept.clone();
    let c = client();
    for (image, manifest, layer) in &kept {
        let (repo, tag) = image.rsplit_once(':').unwrap();
        let body = c.get(node.url(&format!("/v2/{repo}/manifests/{tag}"))).header("Accept", OCI_MANIFEST).send().unwrap().bytes().unwrap();
        assert_eq!(sha256(&body), *manifest, "{image}");
        let blob = c.get(node.url(&format!("/v2/{repo}/blobs/{layer}"))).send().unwrap().bytes().unwrap();
        assert_eq!(sha256(&blob), *layer, "{image}");
    }
    println!("{} acknowledged images pulled back whole", kept.len());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "verify", "--data-dir"]).arg(&node.data_dir).output().unwrap();
    assert!(out.status.success(), "verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("af registry verify: clean");
    // Where the GCs' time went (the node logs each one's phases).
    for line in node.log_text().lines().filter(|l| l.contains("gc finished")) {
        println!("{}", line.split_once("gc finished").map_or(line, |(_, rest)| rest).trim());
    }
}
