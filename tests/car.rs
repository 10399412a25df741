//! Image CIDs and CAR export/import, checked by independent implementations: the JavaScript CAR
//! reader `@ipld/car` verifies the export; Kubo imports it, exports the same DAG byte for byte,
//! unpacks it with `ipfs get` and re-adds the unpacked directory to the same image CID; skopeo
//! copies the unpacked OCI layout; a second node imports the CAR and serves the image to skopeo.

mod common;
use common::images::*;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "af failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `@ipld/car`'s view of a CAR: roots, block CIDs in file order, duplicates.
fn js_car(car: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/car-verify.mjs");
    serde_json::from_str(&run(Command::new("node").arg(script).arg(car))).unwrap()
}

#[test]
fn an_image_travels_as_a_car_through_kubo_skopeo_and_a_second_node() {
    let Setup { node, tmp, layout, host: _ } = setup("img/x:t");
    let cid = image_cid(&node, "img/x", "t");
    let digest = layout_manifest_digest(&layout, "t");
    let untagged = image_cid(&node, "img/x", &digest);
    assert_ne!(cid, untagged, "the tag is part of the layout, so of the CID");

    let car = tmp.path().join("x.car");
    ok(node.af(&["registry", "export", "img/x:t", "-o", car.to_str().unwrap()]));
    let js = js_car(&car);
    assert_eq!(js["roots"], serde_json::json!([cid]));
    assert_eq!(js["duplicates"], 0);
    assert_eq!(js["cids"][0], cid.as_str(), "the root comes first");

    // Kubo: the same DAG exported by Kubo is the same file (every block once, depth-first);
    // unpacked and added again, the directory has the same CID.
    let kubo = Kubo::new();
    run(kubo.cmd().args(["dag", "import"]).arg(&car));
    let kubo_car = kubo.cmd().args(["dag", "export", &cid]).output().unwrap();
    assert!(kubo_car.status.success());
    assert!(kubo_car.stdout == std::fs::read(&car).unwrap(), "Kubo's export of the image DAG differs from ours");
    let unpacked = tmp.path().join("unpacked");
    run(kubo.cmd().args(["get", "-o"]).arg(&unpacked).arg(&cid));
    let readded = run(kubo.cmd().args(["add", "-r", "-Q", "--only-hash", "--cid-version=1", "--raw-leaves", "--chunker=size-1048576"]).arg(&unpacked));
    assert_eq!(readded.trim(), cid);

    // The unpacked directory is an OCI layout that skopeo reads by tag.
    let copied = tmp.path().join("copied");
    run(skopeo().arg("copy").arg(format!("oci:{}:t", unpacked.display())).arg(format!("oci:{}:t", copied.display())));
    assert_same_blobs(&layout, &copied, "t");

    // A second node, seeded offline from the CAR while it runs, serves the same image.
    let other = Node::start();
    let report = ok(other.af(&["registry", "import", car.to_str().unwrap()]));
    assert!(report.contains("3 blobs (3 new)"), "{report}");
    assert!(report.contains(&format!("img/x:t image CID {cid}")), "{report}");
    assert_eq!(image_cid(&other, "img/x", "t"), cid);
    let pulled = tmp.path().join("pulled");
    run(skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{}/img/x:t", other.host())).arg(format!("oci:{}:t", pulled.display())));
    assert_same_blobs(&layout, &pulled, "t");

    // Into another repository of the same node: blobs are linked, not stored again.
    let report = ok(other.af(&["registry", "import", car.to_str().unwrap(), "--repo", "copy/y"]));
    assert!(report.contains("3 blobs (0 new)"), "{report}");
    assert_eq!(client().get(other.url("/v2/copy/y/tags/list")).send().unwrap().status(), 200);
}

#[test]
fn a_tampered_or_truncated_car_imports_nothing() {
    let Setup { node, tmp, layout: _, host: _ } = setup("img/x:t");
    let car = tmp.path().join("x.car");
    ok(node.af(&["registry", "export", "img/x:t", "-o", car.to_str().unwrap()]));
    let bytes = std::fs::read(&car).unwrap();
    let cids: Vec<String> = js_car(&car)["cids"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let target = Node::start();

    // One bit flipped in the middle of the big layer: both readers name the same block.
    let mut tampered = bytes.clone();
    tampered[bytes.len() / 2] ^= 1;
    let tampered_car = tmp.path().join("tampered.car");
    std::fs::write(&tampered_car, &tampered).unwrap();
    let js = Command::new("node").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/car-verify.mjs")).arg(&tampered_car).output().unwrap();
    assert!(!js.status.success());
    let js_named = String::from_utf8_lossy(&js.stderr).split(':').next().unwrap().trim().to_string();
    assert!(cids.contains(&js_named), "{js_named}");
    let out = target.af(&["registry", "import", tampered_car.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(&format!("block {js_named}: its bytes do not match its hash")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Cut in the middle of a block: that block is named.
    let truncated_car = tmp.path().join("truncated.car");
    std::fs::write(&truncated_car, &bytes[..bytes.len() / 2]).unwrap();
    let out = target.af(&["registry", "import", truncated_car.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let named = err.split("block ").nth(1).and_then(|s| s.split(':').next()).unwrap_or_default();
    assert!(cids.iter().any(|c| c == named) && err.contains("truncated"), "{err}");

    // A CAR of something else than an image: Kubo's DAG of a plain file.
    let kubo = Kubo::new();
    let file = tmp.path().join("plain.bin");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let file_cid = run(kubo.cmd().args(["add", "-Q", "--cid-version=1"]).arg(&file));
    let plain = kubo.cmd().args(["dag", "export", file_cid.trim()]).output().unwrap();
    let plain_car = tmp.path().join("plain.car");
    std::fs::write(&plain_car, plain.stdout).unwrap();
    let out = target.af(&["registry", "import", plain_car.to_str().unwrap(), "--repo", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"), "{}", String::from_utf8_lossy(&out.stderr));

    // Nothing of any of them reached the node: no repository, no blob file, no staging left.
    let catalog: serde_json::Value = client().get(target.url("/v2/_catalog")).send().unwrap().json().unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!([]));
    let files = |dir: &str| walk(&target.data_dir.join(dir));
    assert_eq!(files("blobs"), 0);
    assert_eq!(files("staging"), 0);

    // An image the node does not have is a one-line error.
    let out = node.af(&["registry", "export", "img/x:nope"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "af: img/x:nope is not in this registry");
}

/// Regular files under `dir` (0 if it does not exist).
fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
}

#[test]
fn an_index_and_its_children_form_one_image() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}");
        let layer = format!("layer for {arch}").repeat(1000);
        let m = image_manifest(&node, "multi", config.as_bytes(), &[layer.as_bytes()]);
        let digest = sha256(&m);
        assert_eq!(put_manifest(&node, "multi", &digest, OCI_MANIFEST, &m).status(), 201);
        children.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"}
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children
    }))
    .unwrap();
    assert_eq!(put_manifest(&node, "multi", "v1", OCI_INDEX, &index).status(), 201);
    let r = client().head(node.url("/v2/multi/manifests/v1")).header("Accept", OCI_INDEX).send().unwrap();
    let cid = r.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string();

    let car = tmp.path().join("multi.car");
    ok(node.af(&["registry", "export", "multi:v1", "-o", car.to_str().unwrap()]));
    let kubo = Kubo::new();
    run(kubo.cmd().args(["dag", "import"]).arg(&car));
    let unpacked = tmp.path().join("unpacked");
    run(kubo.cmd().args(["get", "-o"]).arg(&unpacked).arg(&cid));
    // Index, two manifests, two configs, two layers.
    assert_eq!(walk(&unpacked.join("blobs/sha256")), 7);
    let copied = tmp.path().join("copied");
    run(skopeo().args(["copy", "--all"]).arg(format!("oci:{}:v1", unpacked.display())).arg(format!("oci:{}:v1", copied.display())));
    assert_eq!(walk(&copied.join("blobs/sha256")), 7);

    let other = Node::start();
    ok(other.af(&["registry", "import", car.to_str().unwrap()]));
    let r = client().get(other.url("/v2/multi/manifests/v1")).header("Accept", OCI_INDEX).send().unwrap();
    assert_eq!(r.headers()["Ipfs-Image-Cid"].to_str().unwrap(), cid);
    assert_eq!(r.bytes().unwrap().to_vec(), index);
}

/// An index of 2,450 children: its layout's `blobs/sha256` has more entries than fit Kubo's
/// threshold, so it is a HAMT exactly as Kubo (unixfs-v1-2025) would shard it: Kubo re-adding
/// the unpacked layout gives the same image CID; the gateway resolves paths through the shards;
/// `af registry import` reads it back into another node.
#[test]
fn a_large_index_shards_its_blobs_directory_as_kubo_does() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = push_blob(&node, "wide", b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
    let layer = push_blob(&node, "wide", b"one shared layer");
    let mut children = Vec::new();
    for i in 0..2450 {
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 38},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 16}],
            "annotations": {"n": i.to_string()},
        }))
        .unwrap();
        let digest = sha256(&m);
        assert_eq!(put_manifest(&node, "wide", &digest, OCI_MANIFEST, &m).status(), 201);
        children.push(serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": m.len()}));
    }
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})).unwrap();
    let index_digest = sha256(&index);
    assert_eq!(put_manifest(&node, "wide", "v1", OCI_INDEX, &index).status(), 201);
    let r = client().head(node.url("/v2/wide/manifests/v1")).header("Accept", OCI_INDEX).send().unwrap();
    let cid = r.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string();

    // Through the gateway's shards: a child by its path, and the listing.
    let public = node.af(&["registry", "visibility", "wide", "public"]);
    assert!(public.status.success());
    let child = children[1234]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let r = client().get(node.gateway_url(&format!("/ipfs/{cid}/blobs/sha256/{child}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().unwrap())[7..], child);
    let listing = client().get(node.gateway_url(&format!("/ipfs/{cid}/blobs/sha256/"))).send().unwrap().text().unwrap();
    assert!(listing.contains(&child) && listing.contains(&index_digest[7..]));
    // A trustless CAR of that path verifies in @ipld/car, shards included.
    let path_car = tmp.path().join("path.car");
    let bytes = client().get(node.gateway_url(&format!("/ipfs/{cid}/blobs/sha256/{child}?format=car"))).send().unwrap().bytes().unwrap();
    std::fs::write(&path_car, &bytes).unwrap();
    assert!(js_car(&path_car)["cids"].as_array().unwrap().len() >= 5, "root, blobs, the shards on the way, the target");

    // Kubo imports the export, unpacks it, and re-adding the layout with the same profile gives
    // the same image CID: the shards are Kubo's own.
    let car = tmp.path().join("wide.car");
    ok(node.af(&["registry", "export", "wide:v1", "-o", car.to_str().unwrap()]));
    let kubo = Kubo::new();
    run(kubo.cmd().args(["config", "profile", "apply", "unixfs-v1-2025"]));
    run(kubo.cmd().args(["dag", "import"]).arg(&car));
    let unpacked = tmp.path().join("unpacked");
    run(kubo.cmd().args(["get", "-o"]).arg(&unpacked).arg(&cid));
    assert_eq!(walk(&unpacked.join("blobs/sha256")), 2453);
    let readded = run(kubo.cmd().args(["add", "-r", "-Q", "--only-hash"]).arg(&unpacked));
    assert_eq!(readded.trim(), cid);

    let other = Node::start();
    ok(other.af(&["registry", "import", car.to_str().unwrap()]));
    let r = client().get(other.url("/v2/wide/manifests/v1")).header("Accept", OCI_INDEX).send().unwrap();
    assert_eq!(r.headers()["Ipfs-Image-Cid"].to_str().unwrap(), cid);
}
