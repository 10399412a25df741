//! The API behaviours the conformance suite does not cover, bad input, and restarts; against a
//! real node process.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;

fn start_session(node: &Node, repo: &str) -> String {
    let r = client().post(node.url(&format!("/v2/{repo}/blobs/uploads/"))).send().unwrap();
    assert_eq!(r.status(), 202);
    assert!(!header(&r, "Docker-Upload-UUID").is_empty());
    header(&r, "Location")
}

/// Sends raw bytes on a fresh connection and returns the response head and body as text.
fn raw_request(node: &Node, request: &[u8]) -> String {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(request).unwrap();
    s.shutdown(std::net::Shutdown::Write).ok();
    let mut out = String::new();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn containerd_style_single_streamed_put() {
    let node = Node::start();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&data);
    let loc = start_session(&node, "ctr/app");
    // A body of unknown length (chunked transfer encoding), all in the final PUT.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(data.clone()));
    let r = client().put(node.url(&format!("{loc}?digest={d}"))).body(body).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "Location"), format!("/v2/ctr/app/blobs/{d}"));
    assert_eq!(header(&r, "Docker-Content-Digest"), d);
    let got = client().get(node.url(&format!("/v2/ctr/app/blobs/{d}"))).send().unwrap();
    assert_eq!(got.bytes().unwrap().as_ref(), &data[..]);
}

#[test]
fn docker_style_patch_then_empty_put_and_range_format() {
    let node = Node::start();
    let data = vec![7u8; 100_000];
    let d = sha256(&data);
    let loc = start_session(&node, "docker/app");
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(data.clone()));
    let r = client().patch(node.url(&loc)).body(body).send().unwrap();
    assert_eq!(r.status(), 202);
    // The spec's Range form: no unit, inclusive end.
    assert_eq!(header(&r, "Range"), "0-99999");
    let loc = header(&r, "Location");
    let st = client().get(node.url(&loc)).send().unwrap();
    assert_eq!(st.status(), 204);
    assert_eq!(header(&st, "Range"), "0-99999");
    let r = client().put(node.url(&format!("{loc}?digest={d}"))).header("Content-Length", "0").send().unwrap();
    assert_eq!(r.status(), 201);
    let head = client().head(node.url(&format!("/v2/docker/app/blobs/{d}"))).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "Content-Length"), "100000");
}

#[test]
fn head_reports_content_length_without_a_body() {
    let node = Node::start();
    let d = push_blob(&node, "h/a", b"twelve bytes");
    let r = client().head(node.url(&format!("/v2/h/a/blobs/{d}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "Content-Length"), "12");
    assert_eq!(header(&r, "Docker-Content-Digest"), d);
    assert!(r.bytes().unwrap().is_empty());
    let m = image_manifest(&node, "h/a", b"{}", &[b"layer"]);
    assert_eq!(put_manifest(&node, "h/a", "v1", OCI_MANIFEST, &m).status(), 201);
    let r = client().head(node.url("/v2/h/a/manifests/v1")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "Content-Length"), m.len().to_string());
    assert_eq!(header(&r, "Content-Type"), OCI_MANIFEST);
    assert_eq!(header(&r, "Docker-Content-Digest"), sha256(&m));
    assert_eq!(header(&r, "Docker-Distribution-API-Version"), "registry/2.0");
}

#[test]
fn blob_ranges() {
    let node = Node::start();
    let data: Vec<u8> = (0..100u8).collect();
    let d = push_blob(&node, "r/a", &data);
    let url = node.url(&format!("/v2/r/a/blobs/{d}"));
    let get = |range: &str| client().get(&url).header("Range", range).send().unwrap();
    let r = get("bytes=10-19");
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "Content-Range"), "bytes 10-19/100");
    assert_eq!(header(&r, "Content-Length"), "10");
    assert_eq!(r.bytes().unwrap().as_ref(), &data[10..20]);
    let r = get("bytes=-5");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[95..]);
    let r = get("bytes=90-");
    assert_eq!(header(&r, "Content-Range"), "bytes 90-99/100");
    let r = get("bytes=100-200");
    assert_eq!(header(&r, "Content-Range"), "bytes */100");
    assert_oci_error(r, 416, "RANGE_INVALID");
    assert_oci_error(get("bytes=5-1"), 416, "RANGE_INVALID");
    assert_oci_error(get("lines=1-2"), 416, "RANGE_INVALID");
}

#[test]
fn repushed_tag_moves_to_the_new_manifest() {
    let node = Node::start();
    let a = image_manifest(&node, "t/a", b"{\"a\":1}", &[b"one"]);
    let b = image_manifest(&node, "t/a", b"{\"b\":2}", &[b"two"]);
    assert_eq!(put_manifest(&node, "t/a", "latest", OCI_MANIFEST, &a).status(), 201);
    assert_eq!(put_manifest(&node, "t/a", "latest", OCI_MANIFEST, &b).status(), 201);
    let r = client().get(node.url("/v2/t/a/manifests/latest")).send().unwrap();
    assert_eq!(header(&r, "Docker-Content-Digest"), sha256(&b));
    assert_eq!(r.bytes().unwrap().as_ref(), &b[..]);
    // The old manifest is still there by digest, byte for byte.
    let r = client().get(node.url(&format!("/v2/t/a/manifests/{}", sha256(&a)))).send().unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), &a[..]);
    let tags: serde_json::Value = client().get(node.url("/v2/t/a/tags/list")).send().unwrap().json().unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
}

#[test]
fn accept_negotiation() {
    let node = Node::start();
    let m = image_manifest(&node, "n/a", b"{}", &[b"x"]);
    assert_eq!(put_manifest(&node, "n/a", "img", OCI_MANIFEST, &m).status(), 201);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(&m), "size": m.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    }))
    .unwrap();
    assert_eq!(put_manifest(&node, "n/a", "multi", OCI_INDEX, &index).status(), 201);
    let get = |accept: Option<&str>| {
        let mut r = client().get(node.url("/v2/n/a/manifests/multi"));
        if let Some(a) = accept {
            r = r.header("Accept", a);
        }
        r.send().unwrap()
    };
    for ok in [None, Some("*/*"), Some(OCI_INDEX), Some(&format!("{DOCKER_MANIFEST}, {OCI_INDEX};q=0.5")[..])] {
        let r = get(ok);
        assert_eq!(r.status(), 200, "Accept {ok:?}");
        assert_eq!(header(&r, "Content-Type"), OCI_INDEX);
    }
    assert_oci_error(get(Some(DOCKER_MANIFEST)), 404, "MANIFEST_UNKNOWN");
    // A Docker schema 2 manifest keeps its own media type.
    let docker = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": push_blob(&node, "n/a", b"{\"d\":1}"), "size": 7},
        "layers": []
    }))
    .unwrap();
    assert_eq!(put_manifest(&node, "n/a", "docker", DOCKER_MANIFEST, &docker).status(), 201);
    let r = client().get(node.url("/v2/n/a/manifests/docker")).header("Accept", DOCKER_MANIFEST).send().unwrap();
    assert_eq!(header(&r, "Content-Type"), DOCKER_MANIFEST);
}

#[test]
fn bad_blob_uploads_store_nothing() {
    let node = Node::start();
    let wrong = sha256(b"something else");
    // Wrong digest, monolithic.
    let r = client().post(node.url(&format!("/v2/b/a/blobs/uploads/?digest={wrong}"))).body("payload").send().unwrap();
    assert_oci_error(r, 400, "DIGEST_INVALID");
    assert_oci_error(client().get(node.url(&format!("/v2/b/a/blobs/{}", sha256(b"payload")))).send().unwrap(), 404, "BLOB_UNKNOWN");
    // Wrong digest after PATCH: the session is discarded.
    let loc = start_session(&node, "b/a");
    client().patch(node.url(&loc)).body("payload").send().unwrap();
    let r = client().put(node.url(&format!("{loc}?digest={wrong}"))).send().unwrap();
    assert_oci_error(r, 400, "DIGEST_INVALID");
    assert_oci_error(client().get(node.url(&loc)).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    // Malformed and unsupported digests.
    for bad in ["sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "nodigest"] {
        let r = client().post(node.url(&format!("/v2/b/a/blobs/uploads/?digest={bad}"))).body("x").send().unwrap();
        assert_oci_error(r, 400, "DIGEST_INVALID");
        assert_oci_error(client().get(node.url(&format!("/v2/b/a/blobs/{bad}"))).send().unwrap(), 400, "DIGEST_INVALID");
    }
    // PUT without a digest.
    let loc = start_session(&node, "b/a");
    assert_oci_error(client().put(node.url(&loc)).send().unwrap(), 400, "DIGEST_INVALID");
    // Out-of-order and repeated chunks: 416, and the session is intact.
    client().patch(node.url(&loc)).header("Content-Range", "0-3").body("abcd").send().unwrap();
    let r = client().patch(node.url(&loc)).header("Content-Range", "0-3").body("abcd").send().unwrap();
    assert_eq!(header(&r, "Range"), "0-3");
    assert_oci_error(r, 416, "BLOB_UPLOAD_INVALID");
    let r = client().patch(node.url(&loc)).header("Content-Range", "10-13").body("abcd").send().unwrap();
    assert_oci_error(r, 416, "BLOB_UPLOAD_INVALID");
    assert_oci_error(client().patch(node.url(&loc)).header("Content-Range", "junk").body("x").send().unwrap(), 416, "RANGE_INVALID");
    let r = client().patch(node.url(&loc)).header("Content-Range", "4-7").body("efgh").send().unwrap();
    assert_eq!(r.status(), 202);
    let r = client().put(node.url(&format!("{loc}?digest={}", sha256(b"abcdefgh")))).send().unwrap();
    assert_eq!(r.status(), 201);
}

#[test]
fn truncated_upload_is_not_published() {
    let node = Node::start();
    let loc = start_session(&node, "trunc/a");
    let full = vec![b'z'; 1000];
    // Announce 1000 bytes, send 400, hang up.
    let mut req = format!("PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n", node.host()).into_bytes();
    req.extend_from_slice(&full[..400]);
    raw_request(&node, &req);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // What arrived is kept and reported, so the client may resume; nothing is visible as a blob.
    let st = client().get(node.url(&loc)).send().unwrap();
    assert_eq!(st.status(), 204);
    let range = header(&st, "Range");
    let have: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    assert!(have <= 400, "range {range}");
    assert_oci_error(client().get(node.url(&format!("/v2/trunc/a/blobs/{}", sha256(&full)))).send().unwrap(), 404, "BLOB_UNKNOWN");
    // Finishing with the digest of the whole while only part arrived fails cleanly.
    let r = client().put(node.url(&format!("{loc}?digest={}", sha256(&full)))).send().unwrap();
    assert_oci_error(r, 400, "DIGEST_INVALID");
    assert_oci_error(client().get(node.url(&format!("/v2/trunc/a/blobs/{}", sha256(&full)))).send().unwrap(), 404, "BLOB_UNKNOWN");
}

#[test]
fn bad_manifests_are_refused() {
    let node = Node::start();
    let good = image_manifest(&node, "m/a", b"{}", &[b"l"]);
    assert_oci_error(put_manifest(&node, "m/a", "x", OCI_MANIFEST, b"{not json"), 400, "MANIFEST_INVALID");
    assert_oci_error(put_manifest(&node, "m/a", "x", OCI_MANIFEST, b"[1,2]"), 400, "MANIFEST_INVALID");
    let schema1 = br#"{"schemaVersion":1,"name":"m/a","tag":"x","fsLayers":[]}"#;
    assert_oci_error(put_manifest(&node, "m/a", "x", "application/vnd.docker.distribution.manifest.v1+prettyjws", schema1), 400, "MANIFEST_INVALID");
    assert_oci_error(put_manifest(&node, "m/a", "x", "text/plain", br#"{"schemaVersion":2}"#), 400, "MANIFEST_INVALID");
    // Content-Type contradicting mediaType.
    assert_oci_error(put_manifest(&node, "m/a", "x", OCI_INDEX, &good), 400, "MANIFEST_INVALID");
    // Digest reference that does not match the body.
    assert_oci_error(put_manifest(&node, "m/a", &sha256(b"other"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    // A layer that was never pushed.
    let missing = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": push_blob(&node, "m/a", b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(b"never pushed"), "size": 12}]
    }))
    .unwrap();
    assert_oci_error(put_manifest(&node, "m/a", "x", OCI_MANIFEST, &missing), 400, "MANIFEST_BLOB_UNKNOWN");
    // Over 4 MiB, with and without a Content-Length.
    let mut big = good.clone();
    big.truncate(big.len() - 1);
    big.extend(std::iter::repeat_n(b' ', 4 * 1024 * 1024));
    big.push(b'}');
    assert_oci_error(put_manifest(&node, "m/a", "x", OCI_MANIFEST, &big), 413, "SIZE_INVALID");
    let streamed = reqwest::blocking::Body::new(std::io::Cursor::new(big));
    let r = client().put(node.url("/v2/m/a/manifests/x")).header("Content-Type", OCI_MANIFEST).body(streamed).send().unwrap();
    assert_oci_error(r, 413, "SIZE_INVALID");
    // Bad tags.
    assert_oci_error(put_manifest(&node, "m/a", "-bad", OCI_MANIFEST, &good), 400, "MANIFEST_INVALID");
    let r = client().put(node.url(&format!("/v2/m/a/manifests/{}?tag=ok&tag=.bad", sha256(&good)))).header("Content-Type", OCI_MANIFEST).body(good.clone()).send().unwrap();
    assert_oci_error(r, 400, "MANIFEST_INVALID");
    // None of it was stored; the good manifest still goes in.
    let tags: serde_json::Value = client().get(node.url("/v2/m/a/tags/list")).send().unwrap().json().unwrap();
    assert_eq!(tags["tags"], serde_json::json!([]));
    assert_oci_error(client().get(node.url("/v2/m/a/manifests/x")).send().unwrap(), 404, "MANIFEST_UNKNOWN");
    assert_eq!(put_manifest(&node, "m/a", "x", OCI_MANIFEST, &good).status(), 201);
}

#[test]
fn invalid_names_and_path_tricks() {
    let node = Node::start();
    for path in ["/v2/UPPER/tags/list", "/v2/a//b/tags/list", "/v2/-a/manifests/x", "/v2/a%2fb/tags/list"] {
        let r = client().get(node.url(path)).send().unwrap();
        assert_oci_error(r, 400, "NAME_INVALID");
    }
    // Paths sent as-is, bypassing client normalisation.
    for path in ["/v2/a/../b/tags/list", "/v2/a/./b/tags/list", "/v2/%2e%2e/tags/list", "/v2/../../etc/passwd/blobs/uploads/", "/v2/a/b/../../c/manifests/x"] {
        let out = raw_request(&node, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(out.contains("NAME_INVALID"), "{path}: {out}");
    }
    let digest = sha256(b"x");
    let r = client().get(node.url(&format!("/v2/a/blobs/sha256:..%2f..%2f{}", &digest[13..]))).send().unwrap();
    assert_oci_error(r, 400, "DIGEST_INVALID");
    assert_oci_error(client().get(node.url("/v2/a/unknown/x")).send().unwrap(), 404, "NOT_FOUND");
    let r = client().get(node.url("/elsewhere")).send().unwrap();
    assert_eq!(header(&r, "Docker-Distribution-API-Version"), "registry/2.0");
    assert_oci_error(r, 404, "NOT_FOUND");
    assert_oci_error(client().post(node.url("/v2/a/manifests/x")).send().unwrap(), 405, "UNSUPPORTED");
    assert!(client().get(node.url("/v2/")).send().unwrap().status().is_success());
}

#[test]
fn unknown_sessions() {
    let node = Node::start();
    let id = "/v2/s/a/blobs/uploads/0b7a7c38-5a0b-4f57-9a3c-2c1f5e0b1a11";
    assert_oci_error(client().get(node.url(id)).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(client().patch(node.url(id)).body("x").send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(client().put(node.url(&format!("{id}?digest={}", sha256(b"x")))).body("x").send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(client().delete(node.url(id)).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(client().get(node.url("/v2/s/a/blobs/uploads/not-a-uuid")).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    // A session belongs to its repository.
    let loc = start_session(&node, "s/a");
    let other = loc.replace("/v2/s/a/", "/v2/s/b/");
    assert_oci_error(client().get(node.url(&other)).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    // Cancel, then the session is gone.
    assert_eq!(client().delete(node.url(&loc)).send().unwrap().status(), 204);
    assert_oci_error(client().get(node.url(&loc)).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn upload_sessions_survive_a_restart() {
    let mut node = Node::start();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let loc = start_session(&node, "resume/app");
    let r = client().patch(node.url(&loc)).header("Content-Range", "0-999999").body(data[..1_000_000].to_vec()).send().unwrap();
    assert_eq!(r.status(), 202);
    node.restart();
    let st = client().get(node.url(&loc)).send().unwrap();
    assert_eq!(st.status(), 204);
    assert_eq!(header(&st, "Range"), "0-999999");
    let r = client().patch(node.url(&loc)).header("Content-Range", "1000000-1999999").body(data[1_000_000..].to_vec()).send().unwrap();
    assert_eq!(r.status(), 202);
    let d = sha256(&data);
    assert_eq!(client().put(node.url(&format!("{loc}?digest={d}"))).send().unwrap().status(), 201);
    let got = client().get(node.url(&format!("/v2/resume/app/blobs/{d}"))).send().unwrap().bytes().unwrap();
    assert!(got.as_ref() == &data[..]);
}

#[test]
fn mounts_and_blob_links() {
    let node = Node::start();
    let d = push_blob(&node, "src/a", b"shared layer");
    let r = client().post(node.url(&format!("/v2/dst/b/blobs/uploads/?mount={d}&from=src/a"))).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "Location"), format!("/v2/dst/b/blobs/{d}"));
    // From a repository without it: fall back to an upload session.
    let r = client().post(node.url(&format!("/v2/dst/c/blobs/uploads/?mount={d}&from=empty/repo"))).send().unwrap();
    assert_eq!(r.status(), 202);
    assert!(header(&r, "Location").starts_with("/v2/dst/c/blobs/uploads/"));
    // Without `from`: mounted when the node holds it.
    let r = client().post(node.url(&format!("/v2/dst/d/blobs/uploads/?mount={d}"))).send().unwrap();
    assert_eq!(r.status(), 201);
    let r = client().post(node.url(&format!("/v2/dst/d/blobs/uploads/?mount={}", sha256(b"absent")))).send().unwrap();
    assert_eq!(r.status(), 202);
    // Delete unlinks from one repository only; the bytes are stored once.
    assert_eq!(client().delete(node.url(&format!("/v2/src/a/blobs/{d}"))).send().unwrap().status(), 202);
    assert_oci_error(client().get(node.url(&format!("/v2/src/a/blobs/{d}"))).send().unwrap(), 404, "BLOB_UNKNOWN");
    assert_eq!(client().get(node.url(&format!("/v2/dst/b/blobs/{d}"))).send().unwrap().bytes().unwrap().as_ref(), b"shared layer");
    push_blob(&node, "again/e", b"shared layer");
    let files: Vec<_> = walk(&node.data_dir.join("blobs")).into_iter().filter(|p| p.ends_with(&d[7..])).collect();
    assert_eq!(files.len(), 1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn sha512_blobs_and_pagination() {
    let node = Node::start();
    use sha2::Digest as _;
    let data = b"sha512 content";
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)));
    let loc = start_session(&node, "p/a");
    client().patch(node.url(&loc)).body(data.to_vec()).send().unwrap();
    assert_eq!(client().put(node.url(&format!("{loc}?digest={d512}"))).send().unwrap().status(), 201);
    let r = client().get(node.url(&format!("/v2/p/a/blobs/{d512}"))).send().unwrap();
    assert_eq!(header(&r, "Docker-Content-Digest"), d512);
    assert_eq!(r.bytes().unwrap().as_ref(), data);

    let m = image_manifest(&node, "p/a", b"{}", &[]);
    for t in ["c", "a", "B", "b", "d"] {
        assert_eq!(put_manifest(&node, "p/a", t, OCI_MANIFEST, &m).status(), 201);
    }
    let r = client().get(node.url("/v2/p/a/tags/list?n=2")).send().unwrap();
    assert_eq!(header(&r, "Link"), "</v2/p/a/tags/list?n=2&last=a>; rel=\"next\"");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["tags"], serde_json::json!(["B", "a"]));
    let r = client().get(node.url("/v2/p/a/tags/list?n=2&last=b")).send().unwrap();
    assert_eq!(header(&r, "Link"), "");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c", "d"]));
    assert_oci_error(client().get(node.url("/v2/p/a/tags/list?n=-1")).send().unwrap(), 400, "PAGINATION_NUMBER_INVALID");
    push_blob(&node, "p/b", b"1");
    push_blob(&node, "o/z", b"1");
    let r = client().get(node.url("/v2/_catalog?n=1&last=o/z")).send().unwrap();
    assert!(header(&r, "Link").contains("last=p%2Fa"), "{}", header(&r, "Link"));
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["p/a"]));
}

fn af_cid(data: &[u8], profile: &str) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), data).unwrap();
    run(std::process::Command::new(env!("CARGO_BIN_EXE_af")).args(["cid", "--profile", profile]).arg(f.path())).trim().to_string()
}

#[test]
fn blobs_carry_the_root_cid_of_their_dag() {
    let mut node = Node::start();
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let d = sha256(&data);
    // Chunks that do not line up with UnixFS chunks, and a restart in the middle: the DAG is
    // rebuilt from the upload file and carried on.
    let loc = start_session(&node, "dag/a");
    let cut = [0usize, 700_000, 1_500_001, data.len()];
    for w in cut.windows(2).take(2) {
        let r = client().patch(node.url(&loc)).header("Content-Range", format!("{}-{}", w[0], w[1] - 1)).body(data[w[0]..w[1]].to_vec()).send().unwrap();
        assert_eq!(r.status(), 202);
    }
    node.restart();
    let r = client().put(node.url(&format!("{loc}?digest={d}"))).body(data[cut[2]..].to_vec()).send().unwrap();
    assert_eq!(r.status(), 201);
    let head = client().head(node.url(&format!("/v2/dag/a/blobs/{d}"))).send().unwrap();
    assert_eq!(header(&head, "Ipfs-Cid"), af_cid(&data, "unixfs-v1-2025"));
    // A mount shares the blob and its CID.
    client().post(node.url(&format!("/v2/dag/b/blobs/uploads/?mount={d}&from=dag/a"))).send().unwrap();
    let head = client().head(node.url(&format!("/v2/dag/b/blobs/{d}"))).send().unwrap();
    assert_eq!(header(&head, "Ipfs-Cid"), af_cid(&data, "unixfs-v1-2025"));

    let kubo_profile = Node::start_with(&["--cid-profile", "kubo-v1"]);
    let d = push_blob(&kubo_profile, "dag/k", &data);
    let head = client().get(kubo_profile.url(&format!("/v2/dag/k/blobs/{d}"))).send().unwrap();
    assert_eq!(header(&head, "Ipfs-Cid"), af_cid(&data, "kubo-v1"));
    let small = push_blob(&kubo_profile, "dag/k", b"hello world");
    let head = client().head(kubo_profile.url(&format!("/v2/dag/k/blobs/{small}"))).send().unwrap();
    assert_eq!(header(&head, "Ipfs-Cid"), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
}

#[test]
fn idle_uploads_expire() {
    let node = Node::start_with(&["--upload-expiry", "2s"]);
    let idle = start_session(&node, "exp/a");
    let busy = start_session(&node, "exp/a");
    let mut offset = 0;
    for _ in 0..8 {
        let r = client().patch(node.url(&busy)).header("Content-Range", format!("{offset}-{}", offset + 9)).body(vec![1u8; 10]).send().unwrap();
        assert_eq!(r.status(), 202);
        offset += 10;
        std::thread::sleep(std::time::Duration::from_millis(600));
    }
    assert_oci_error(client().get(node.url(&idle)).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    let st = client().get(node.url(&busy)).send().unwrap();
    assert_eq!(st.status(), 204);
    assert_eq!(header(&st, "Range"), "0-79");
    let files: Vec<_> = std::fs::read_dir(node.data_dir.join("uploads")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(node.log_text().contains("expired an idle upload"));
}
