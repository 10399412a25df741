//! `cargo bench --bench metrics`: what serving `/metrics` costs a node under load. A node serves
//! manifest GETs to 64 connections (wrk, 10 s) while a scraper reads `/metrics` once a second,
//! as Prometheus would; the node's CPU time is read from /proc before and after. Then 200
//! scrapes back to back on the node at rest give the CPU of one scrape, compared with the
//! node's CPU per second under load. Target: one scrape a second costs under 2% of it.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The process's CPU time so far (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), counted from its closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-metrics");
    let _ = std::fs::remove_dir_all(&dir);
    let af = Serve::new(&dir).spawn();
    let (node, base, metrics) = (af.proc, format!("http://{}", af.api), af.metrics);
    // One small image: a config blob and a manifest naming it.
    let config = b"{}";
    let config_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(config)));
    let config_file = dir.join("config.json");
    std::fs::write(&config_file, config).unwrap();
    push_blob(&base, "bench/app", &config_file, &config_digest);
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2}, "layers": []}).to_string();
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &manifest,
        &format!("{base}/v2/bench/app/manifests/t"),
    ]);
    let url = format!("{base}/v2/bench/app/manifests/t");
    let scrape_url = format!("http://{metrics}/metrics");
    let scrape = || assert!(!curl(&["-sf", &scrape_url]).is_empty());

    // Load with a scrape a second, as Prometheus would.
    let pid = node.0.id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (stop, scrape_url) = (stop.clone(), scrape_url.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(!curl(&["-sf", &scrape_url]).is_empty());
                n += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            n
        })
    };
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    let (rps, p99) = wrk_load(&url, &["Accept: application/vnd.oci.image.manifest.v1+json"], "af");
    let (cpu1, t1) = (cpu_seconds(pid), Instant::now());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    let cpu_per_second = (cpu1 - cpu0) / (t1 - t0).as_secs_f64();

    // The CPU of one scrape: 200 in a row on the node otherwise idle (a node at rest spends
    // next to nothing), the metadata totals read each time as under load.
    std::thread::sleep(Duration::from_secs(1));
    let rounds = 200;
    let before = cpu_seconds(pid);
    for _ in 0..rounds {
        scrape();
    }
    let per_scrape = (cpu_seconds(pid) - before) / rounds as f64;
    let bytes = curl(&["-s", &scrape_url]).len();
    println!("manifest GETs, 64 connections: {rps:.0}/s, p99 {p99:.1} ms, node CPU {cpu_per_second:.2} cores, with {scrapes} scrapes of /metrics meanwhile ({bytes} bytes each)");
    println!("one scrape: {:.2} ms of CPU; at one scrape a second, {:.3}% of the node's CPU under that load (target < 2%)", per_scrape * 1e3, per_scrape / cpu_per_second * 100.0);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
