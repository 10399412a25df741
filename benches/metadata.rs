//! `cargo bench --bench metadata`: the same node on SQLite and on PostgreSQL (`AF_TEST_POSTGRES_URL`,
//! as scripts/postgres.sh starts it; a throwaway database), in the same run: manifest GETs by tag
//! (one hot tag, and 51 tags in rotation) and tag-list GETs with 64 connections (wrk), three rounds
//! alternating which store goes first. Prints the medians of requests/s and p99, and
//! PostgreSQL/SQLite.

mod common;

use common::*;
use std::process::Command;

/// A node, and its API's base URL.
struct Node {
    _proc: Proc,
    base: String,
}

fn start(dir: &std::path::Path, database: Option<&str>) -> Node {
    let mut serve = Serve::new(dir);
    if let Some(url) = database {
        serve = serve.set("--database-url", url);
    }
    let node = serve.spawn();
    Node { _proc: node.proc, base: format!("http://{}", node.api) }
}

fn seed(base: &str) {
    let c = reqwest::blocking::Client::new();
    let config = b"{}".to_vec();
    let d = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config)));
    assert_eq!(c.post(format!("{base}/v2/bench/app/blobs/uploads/?digest={d}")).body(config).send().unwrap().status(), 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": 2}, "layers": []
    });
    for tag in (0..50).map(|i| format!("v{i}")).chain(["latest".to_string()]) {
        let r = c
            .put(format!("{base}/v2/bench/app/manifests/{tag}"))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let admin = std::env::var("AF_TEST_POSTGRES_URL").expect("AF_TEST_POSTGRES_URL (scripts/postgres.sh prints it)");
    let db = format!("af_bench_{}", std::process::id());
    run_psql(&admin, &format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-metadata");
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite = start(&dir.join("sqlite"), None);
    let postgres = start(&dir.join("postgres"), Some(&url));
    seed(&sqlite.base);
    seed(&postgres.base);
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    // Every request names one of the 51 tags in turn, so batches carry distinct keys.
    let rotation = dir.join("rotation.lua");
    std::fs::write(
        &rotation,
        "local i = 0\nrequest = function()\n  i = i + 1\n  local n = i % 51\n  local tag = n == 0 and 'latest' or ('v' .. (n - 1))\n  return wrk.format('GET', '/v2/bench/app/manifests/' .. tag)\nend\n",
    )
    .unwrap();
    let scenarios = [
        ("manifest GET by tag (one tag)", "/v2/bench/app/manifests/latest", vec![accept], None),
        ("manifest GET by tag (51 tags)", "/v2/bench/app/manifests/latest", vec![accept], Some(rotation.as_path())),
        ("tag list", "/v2/bench/app/tags/list", vec![], None),
    ];
    println!("64 connections, 10 s per run (wrk, one thread), 3 rounds, medians; same machine as both servers and PostgreSQL");
    for (what, path, headers, script) in scenarios {
        let (mut s_rps, mut s_p99, mut p_rps, mut p_p99) = (vec![], vec![], vec![], vec![]);
        for round in 0..3 {
            let run = |base: &str, who: &str, rps: &mut Vec<f64>, p99: &mut Vec<f64>| {
                let (r, p) = wrk_script_load(&format!("{base}{path}"), &headers, script, who);
                rps.push(r);
                p99.push(p);
            };
            if round % 2 == 0 {
                run(&sqlite.base, "af on SQLite", &mut s_rps, &mut s_p99);
                run(&postgres.base, "af on PostgreSQL", &mut p_rps, &mut p_p99);
            } else {
                run(&postgres.base, "af on PostgreSQL", &mut p_rps, &mut p_p99);
                run(&sqlite.base, "af on SQLite", &mut s_rps, &mut s_p99);
            }
        }
        let (s, p) = (median(&mut s_rps), median(&mut p_rps));
        println!(
            "{what}: SQLite {s:.0}/s (p99 {:.2} ms), PostgreSQL {p:.0}/s (p99 {:.2} ms): PostgreSQL/SQLite {:.2} (target >= 0.8)",
            median(&mut s_p99),
            median(&mut p_p99),
            p / s
        );
    }
    drop((sqlite, postgres));
    run_psql(&admin, &format!("DROP DATABASE {db} WITH (FORCE)"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_psql(url: &str, sql: &str) {
    assert!(Command::new("psql").arg(url).args(["-qc", sql]).status().unwrap().success(), "psql {sql}");
}
