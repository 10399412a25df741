//! The client trusts nothing it reads (issue 33): hostile OCI layouts made by the test, and
//! hostile registries played by the test, which record every request they get.

mod common;
use common::fake_registry::{full, Fake, Request};
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A registry that takes any push: no blob is there, uploads start at `/upload`, everything
/// else is accepted.
fn accepting() -> common::fake_registry::Handler {
    full(|r: &Request| match (r.method.as_str(), r.path.as_str()) {
        ("HEAD", p) if p.contains("/blobs/") => (404, vec![], vec![]),
        ("POST", p) if p.contains("/blobs/uploads/") => (202, vec![("Location".into(), "/upload".into())], vec![]),
        ("PUT", p) if p.contains("/manifests/") => (201, vec![], vec![]),
        ("PUT", _) => (201, vec![], vec![]),
        _ => (200, vec![("Content-Type".into(), "application/json".into())], b"{}".to_vec()),
    })
}

fn af(home: &Path, args: &[&str], stdin: &str) -> (bool, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_af"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let memory = MemoryWatch::start(child.id());
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60), "{args:?} took {:?}", started.elapsed());
    assert!(out.status.code().is_some(), "{args:?} died of a signal: {out:?}");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), memory.peak_kib())
}

/// Writes `bytes` as a blob of the layout at `dir`; its digest and size.
fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = sha256(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:")), bytes).unwrap();
    (digest, bytes.len())
}

fn manifest_json(config: &(String, usize), layers: &[(String, usize)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn index_json(dir: &Path, entries: &[serde_json::Value]) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap()).unwrap();
}

/// Item 1: a blob that is a symlink out of the layout (to a key file) is never read nor sent.
#[test]
fn a_symlinked_blob_is_never_sent() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("layout");
    let secret = b"-----BEGIN KEY----- the user's private key, 98 bytes or so, that must never leave -----END KEY-----";
    std::fs::write(home.path().join("id_key"), secret).unwrap();
    let config = blob(&dir, b"{}");
    let layer = blob(&dir, secret);
    let layer_file = dir.join("blobs/sha256").join(layer.0.trim_start_matches("sha256:"));
    std::fs::remove_file(&layer_file).unwrap();
    std::os::unix::fs::symlink(home.path().join("id_key"), &layer_file).unwrap();
    let manifest = blob(&dir, &manifest_json(&config, std::slice::from_ref(&layer)));
    index_json(&dir, &[serde_json::json!({"mediaType": OCI_MANIFEST, "digest": manifest.0, "size": manifest.1, "annotations": {"org.opencontainers.image.ref.name": "t"}})]);
    let fake = Fake::start(accepting());
    let (ok, stderr, _) = af(home.path(), &["registry", "push", &format!("{}/x/y:t", fake.addr), "--from", &format!("oci:{}:t", dir.display())], "");
    assert!(!ok);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    let sent: Vec<u8> = fake.requests().into_iter().flat_map(|r| r.body).collect();
    assert!(!sent.windows(16).any(|w| w == &secret[..16]), "the key file's bytes reached the registry");
}

/// Item 1 too: a blob whose bytes do not match its digest is not sent (checked before a byte
/// goes, not after the registry refuses it).
#[test]
fn a_blob_is_checked_before_it_is_sent() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("layout");
    let config = blob(&dir, b"{}");
    let layer = blob(&dir, b"the layer's bytes as the manifest knows them");
    let mut other = b"other bytes".to_vec();
    other.resize(layer.1, b'!');
    std::fs::write(dir.join("blobs/sha256").join(layer.0.trim_start_matches("sha256:")), other).unwrap();
    let manifest = blob(&dir, &manifest_json(&config, std::slice::from_ref(&layer)));
    index_json(&dir, &[serde_json::json!({"mediaType": OCI_MANIFEST, "digest": manifest.0, "size": manifest.1})]);
    let fake = Fake::start(accepting());
    let (ok, stderr, _) = af(home.path(), &["registry", "push", &format!("{}/x/y:t", fake.addr), "--from", &format!("oci:{}", dir.display())], "");
    assert!(!ok);
    assert!(stderr.contains("not sent"), "{stderr}");
    assert!(!fake.requests().iter().any(|r| r.body.windows(11).any(|w| w == b"other bytes")), "the wrong bytes were sent");
}

/// Items 5, 6 and 7: `index.json` linked to /dev/zero, indexes nested 6,000 deep, and one
/// manifest named a thousand times: each push ends with one line, bounded memory, no crash,
/// and each manifest goes once.
#[test]
fn hostile_layouts_are_bounded() {
    let home = tempfile::tempdir().unwrap();
    let fake = Fake::start(accepting());
    let push = |dir: &Path| af(home.path(), &["registry", "push", &format!("{}/x/y:t", fake.addr), "--from", &format!("oci:{}", dir.display())], "");

    let zero = home.path().join("zero");
    std::fs::create_dir_all(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero.join("index.json")).unwrap();
    let (ok, stderr, peak) = push(&zero);
    assert!(!ok && peak < 96 << 10, "{stderr} ({} MiB)", peak >> 10);

    let deep = home.path().join("deep");
    let config = blob(&deep, b"{}");
    let mut top = blob(&deep, &manifest_json(&config, &[]));
    let mut media = OCI_MANIFEST;
    for _ in 0..6000 {
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": media, "digest": top.0, "size": top.1}]});
        top = blob(&deep, &serde_json::to_vec(&index).unwrap());
        media = "application/vnd.oci.image.index.v1+json";
    }
    index_json(&deep, &[serde_json::json!({"mediaType": media, "digest": top.0, "size": top.1})]);
    let (ok, stderr, _) = push(&deep);
    assert!(!ok && stderr.contains("deep"), "{stderr}");

    let repeated = home.path().join("repeated");
    let config = blob(&repeated, b"{}");
    let one = blob(&repeated, &manifest_json(&config, &[]));
    let children: Vec<_> = (0..1000).map(|_| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": one.0, "size": one.1})).collect();
    let index =
        blob(&repeated, &serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children})).unwrap());
    index_json(&repeated, &[serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index.0, "size": index.1})]);
    let before = fake.requests().len();
    let (ok, stderr, _) = push(&repeated);
    assert!(ok, "{stderr}");
    let puts = fake.requests()[before..].iter().filter(|r| r.method == "PUT" && r.path.contains("/manifests/")).count();
    assert_eq!(puts, 2, "the index and its one manifest, once each");
}

/// Items 3 and 12: the stored password goes to its registry only. A manifest GET redirected to
/// another host that then challenges gets no credential, nor does an upload `Location` on
/// another host.
#[test]
fn credentials_go_only_to_their_registry() {
    let home = tempfile::tempdir().unwrap();
    let other = Fake::start(full(|r: &Request| {
        if r.path.starts_with("/token") {
            return (200, vec![], br#"{"token":"t"}"#.to_vec());
        }
        (401, vec![("WWW-Authenticate".into(), "Basic realm=\"elsewhere\"".into())], b"{}".to_vec())
    }));
    let elsewhere = format!("http://{}", other.addr);
    let registry = Fake::start(full(move |r: &Request| {
        if r.header("authorization") != Some("Basic dXNlcjpzZWNyZXQtcGFzc3dvcmQ=") {
            return (401, vec![("WWW-Authenticate".into(), "Basic realm=\"registry\"".into())], b"{}".to_vec());
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", p) if p.contains("/manifests/") => (307, vec![("Location".into(), format!("{elsewhere}/moved"))], vec![]),
            ("HEAD", p) if p.contains("/blobs/") => (404, vec![], vec![]),
            ("POST", _) => (202, vec![("Location".into(), format!("{elsewhere}/upload"))], vec![]),
            _ => (200, vec![], b"{}".to_vec()),
        }
    }));
    let (ok, stderr, _) = af(home.path(), &["registry", "login", &registry.addr, "-u", "user", "--password-stdin"], "secret-password\n");
    assert!(ok, "{stderr}");
    let (ok, _, _) = af(home.path(), &["registry", "pull", &format!("{}/x/y:t", registry.addr), "--to", &format!("oci:{}", home.path().join("pulled").display())], "");
    assert!(!ok);
    let dir = home.path().join("layout");
    let config = blob(&dir, b"{}");
    let manifest = blob(&dir, &manifest_json(&config, &[]));
    index_json(&dir, &[serde_json::json!({"mediaType": OCI_MANIFEST, "digest": manifest.0, "size": manifest.1})]);
    let (ok, pushed, _) = af(home.path(), &["registry", "push", &format!("{}/x/y:t", registry.addr), "--from", &format!("oci:{}", dir.display())], "");
    assert!(!ok && pushed.contains("unauthorized"), "the upload elsewhere is refused for want of a credential: {pushed}");
    let got = other.requests();
    assert!(got.iter().any(|r| r.path == "/moved") && got.iter().any(|r| r.path.starts_with("/upload")), "{got:?}");
    assert!(got.iter().all(|r| r.header("authorization").is_none()), "a credential went elsewhere: {got:?}");
}

/// Item 9: logins at once keep every entry.
#[test]
fn logins_at_once_keep_every_entry() {
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<Fake> = (0..40).map(|_| Fake::start(full(|_: &Request| (200, vec![], b"{}".to_vec())))).collect();
    let threads: Vec<_> = fakes
        .iter()
        .map(|f| {
            let (home, addr) = (home.path().to_path_buf(), f.addr.clone());
            std::thread::spawn(move || af(&home, &["registry", "login", &addr, "-u", "u", "--password-stdin"], "password1\n").0)
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(home.path().join(".docker/config.json")).unwrap()).unwrap();
    let kept = config["auths"].as_object().unwrap().len();
    assert_eq!(kept, 40, "{config}");
}

/// A registry serving one image, `x/y:t`: `blobs` by digest, the manifest over them.
fn serving(config: Vec<u8>, layers: Vec<(Vec<u8>, &'static str)>) -> Fake {
    serving_lies(config, layers, None)
}

/// [`serving`], the blob of digest `lie.0` answered with `lie.1` instead.
fn serving_lies(config: Vec<u8>, layers: Vec<(Vec<u8>, &'static str)>, lie: Option<(String, Vec<u8>)>) -> Fake {
    let mut blobs: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
    let config_digest = sha256(&config);
    let mut descriptors = Vec::new();
    for (bytes, media) in &layers {
        let digest = sha256(bytes);
        descriptors.push(serde_json::json!({"mediaType": media, "digest": digest, "size": bytes.len()}));
        blobs.insert(digest, bytes.clone());
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    blobs.insert(config_digest, config);
    if let Some((digest, bytes)) = lie {
        blobs.insert(digest, bytes);
    }
    let blobs = Arc::new(blobs);
    Fake::start(full(move |r: &Request| {
        if r.path.contains("/manifests/") {
            return (200, vec![("Content-Type".into(), OCI_MANIFEST.into()), ("Docker-Content-Digest".into(), sha256(&manifest))], manifest.clone());
        }
        match r.path.rsplit('/').next().and_then(|d| blobs.get(d)) {
            Some(bytes) if r.method == "GET" => (200, vec![], bytes.clone()),
            Some(_) => (200, vec![], vec![]),
            None => (404, vec![], b"{}".to_vec()),
        }
    }))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Items 8 and 10: pulling into a docker archive, a gzip bomb (200 MiB of zeros in 200 KB) is
/// refused with a clear error and nothing of it stays on disk; a 48 MiB image config is refused
/// without being read whole.
#[test]
fn docker_archive_pulls_are_bounded() {
    let home = tempfile::tempdir().unwrap();
    let bomb = gzip(&vec![0u8; 200 << 20]);
    let fake = serving(br#"{"rootfs":{"diff_ids":[]}}"#.to_vec(), vec![(bomb, "application/vnd.oci.image.layer.v1.tar+gzip")]);
    let out = home.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, stderr, _) = af(home.path(), &["registry", "pull", &format!("{}/x/y:t", fake.addr), "--to", &format!("docker-archive:{}", out.join("image.tar").display())], "");
    assert!(!ok && stderr.contains("gzip bomb"), "{stderr}");
    let left: u64 = walk_sizes(&out);
    assert!(left < 1 << 20, "{left} bytes left behind");

    let mut config = br#"{"rootfs":{"diff_ids":[]},"history":["#.to_vec();
    while config.len() < 48 << 20 {
        config.extend_from_slice(br#"{"created_by":"padding padding padding padding padding"},"#);
    }
    config.extend_from_slice(br#"{}]}"#);
    let fake = serving(config, vec![]);
    let (ok, stderr, peak) = af(home.path(), &["registry", "pull", &format!("{}/x/y:t", fake.addr), "--to", &format!("docker-archive:{}", out.join("big.tar").display())], "");
    assert!(!ok && stderr.contains("over"), "{stderr}");
    assert!(peak < 128 << 10, "the client reached {} MiB", peak >> 10);
}

/// Bytes of every file under `dir`.
fn walk_sizes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().flatten().map(|e| if e.path().is_dir() { walk_sizes(&e.path()) } else { e.metadata().unwrap().len() }).sum()
}

/// Item 11: a pull into a layout that fails while other blobs are still coming leaves no
/// `.part-` file behind.
#[test]
fn a_failed_pull_leaves_no_part_files() {
    let home = tempfile::tempdir().unwrap();
    let big: Vec<(Vec<u8>, &'static str)> = (0..3u64).map(|i| (xorshift_bytes(i, 32 << 20), "application/vnd.oci.image.layer.v1.tar")).collect();
    let mut layers = vec![(b"the layer that lies".to_vec(), "application/vnd.oci.image.layer.v1.tar")];
    layers.extend(big);
    // The first layer's bytes are swapped for others as they are served: a digest mismatch.
    let lying = serving_lies(b"{}".to_vec(), layers, Some((sha256(b"the layer that lies"), b"other bytes, 19 lon".to_vec())));
    let layout = home.path().join("layout");
    let (ok, stderr, _) = af(home.path(), &["registry", "pull", &format!("{}/x/y:t", lying.addr), "--to", &format!("oci:{}:t", layout.display())], "");
    assert!(!ok, "{stderr}");
    let parts: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".part-")).collect())
        .unwrap_or_default();
    assert!(parts.is_empty(), "left behind: {parts:?}");
}
