//! What the gateway serves beyond UnixFS files and CARs (DAG-CBOR and DAG-JSON blocks and paths
//! through them, `?format=tar`, every multihash Kubo accepts, direct pins, CORS), with Kubo's
//! CLI making the content and reading it back, and that none of it opens a way to private
//! content.

mod common;
use common::*;
use std::process::Command;

fn local(kubo: &Kubo, args: &[&str]) -> String {
    run(kubo.cmd().args(args)).trim().to_string()
}

fn get(url: &str, accept: Option<&str>) -> reqwest::blocking::Response {
    let mut rb = client().get(url);
    if let Some(a) = accept {
        rb = rb.header("Accept", a);
    }
    rb.send().unwrap()
}

/// `car` (CARv1) without the section of block `drop`.
fn car_without(car: &[u8], drop: &str) -> Vec<u8> {
    fn varint(b: &[u8]) -> (usize, usize) {
        let (mut v, mut shift, mut i) = (0usize, 0, 0);
        loop {
            v |= ((b[i] & 0x7f) as usize) << shift;
            i += 1;
            if b[i - 1] & 0x80 == 0 {
                return (v, i);
            }
            shift += 7;
        }
    }
    let drop: cid::Cid = drop.parse().unwrap();
    let (len, n) = varint(car);
    let mut out = car[..n + len].to_vec();
    let mut at = n + len;
    while at < car.len() {
        let (len, n) = varint(&car[at..]);
        let section = &car[at..at + n + len];
        let cid = cid::Cid::read_bytes(&section[n..]).unwrap();
        if cid != drop {
            out.extend_from_slice(section);
        }
        at += n + len;
    }
    out
}

fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn dag_cbor_and_dag_json_blocks_and_paths_through_them() {
    let node = Node::start_with(&["--gc-grace", "0s"]);
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hello.txt"), "hello from a file\n").unwrap();
    let file = local(&kubo, &["add", "-Q", "--cid-version=1", tmp.path().join("hello.txt").to_str().unwrap()]);
    // Kubo encodes the DAG-CBOR and DAG-JSON blocks; their CIDs are Kubo's.
    let doc = format!(r#"{{"name":"demo","nested":{{"file":{{"/":"{file}"}}}},"list":[1,{{"/":"{file}"}}]}}"#);
    let put = |codec: &str| {
        let path = tmp.path().join(format!("{codec}.json"));
        std::fs::write(&path, &doc).unwrap();
        local(&kubo, &["dag", "put", "--store-codec", codec, "--input-codec", "dag-json", path.to_str().unwrap()])
    };
    let (cbor, json) = (put("dag-cbor"), put("dag-json"));
    import_from_kubo(&kubo, &node, &cbor);
    import_from_kubo(&kubo, &node, &json);
    let gw = |p: &str| node.gateway_url(p);

    for (root, media, ext, disposition) in [(&cbor, "application/vnd.ipld.dag-cbor", "cbor", "attachment"), (&json, "application/vnd.ipld.dag-json", "json", "inline")] {
        // As it is, with the codec's type, byte for byte what Kubo stored.
        let r = get(&gw(&format!("/ipfs/{root}")), None);
        assert_eq!(r.status(), 200, "{root}");
        assert_eq!(header(&r, "Content-Type"), media);
        assert!(header(&r, "Content-Disposition").starts_with(&format!("{disposition}; filename=\"{root}.{ext}\"")), "{}", header(&r, "Content-Disposition"));
        assert_eq!(r.bytes().unwrap().to_vec(), run_bytes(kubo.cmd().args(["block", "get", root])));
        // Through links, several segments at once; 501 inside the block; 404 for nothing.
        for path in ["nested/file", "list/1"] {
            let r = get(&gw(&format!("/ipfs/{root}/{path}")), None);
            assert_eq!(r.status(), 200, "{root}/{path}");
            assert_eq!(header(&r, "X-Ipfs-Roots"), format!("{root},{file}"));
            assert_eq!(r.text().unwrap(), "hello from a file\n");
        }
        assert_eq!(get(&gw(&format!("/ipfs/{root}/name")), None).status(), 501);
        assert_eq!(get(&gw(&format!("/ipfs/{root}/nope")), None).status(), 404);
        // A page for a browser, linking the file.
        let r = get(&gw(&format!("/ipfs/{root}/")), Some("text/html"));
        assert_eq!(r.status(), 200);
        assert!(header(&r, "Etag").contains("DagIndex-"));
        let page = r.text().unwrap();
        assert!(page.contains(&format!("href=\"/ipfs/{file}/\"")) && page.contains("demo"), "{page}");
        // The whole DAG in a CAR follows the links.
        let car = get(&gw(&format!("/ipfs/{root}?format=car")), None).bytes().unwrap();
        let imported = Kubo::new();
        let car_path = tmp.path().join("got.car");
        std::fs::write(&car_path, &car).unwrap();
        local(&imported, &["dag", "import", "--pin-roots=false", car_path.to_str().unwrap()]);
        assert_eq!(local(&imported, &["cat", &format!("/ipfs/{root}/nested/file")]), "hello from a file");
    }
    // Never converted (IPIP-524): 406 across families, JSON for UnixFS files only as the file.
    assert_eq!(get(&gw(&format!("/ipfs/{cbor}?format=dag-json")), None).status(), 406);
    assert_eq!(get(&gw(&format!("/ipfs/{json}")), Some("application/vnd.ipld.dag-cbor")).status(), 406);
    assert_eq!(get(&gw(&format!("/ipfs/{file}?format=dag-json")), None).status(), 406);
    let r = get(&gw(&format!("/ipfs/{json}?format=json")), None);
    assert_eq!(header(&r, "Content-Type"), "application/json");
    // A range of a block.
    let r = client().get(gw(&format!("/ipfs/{cbor}"))).header("Range", "bytes=0-3").send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().len(), 4);

    // A GC keeps what a pinned DAG-CBOR block links to (it walks DAG-CBOR links too).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let gc = client().post(node.rpc_url("repo/gc")).send().unwrap();
    assert_eq!(gc.status(), 200);
    gc.text().unwrap();
    assert_eq!(get(&gw(&format!("/ipfs/{cbor}/nested/file")), None).status(), 200);
}

#[test]
fn every_multihash_kubo_accepts_and_direct_pins() {
    let node = Node::start_with(&["--gc-grace", "0s"]);
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("b.bin");
    std::fs::write(&data, b"a block hashed many ways").unwrap();
    let d = data.to_str().unwrap();
    for mh in ["sha2-256", "sha2-512", "sha3-256", "sha3-512", "keccak-256", "blake2b-256", "blake2b-512", "blake2s-256", "blake3"] {
        for codec in ["raw", "dag-cbor"] {
            let args = ["block", "put", "--mhtype", mh, "--cid-codec", codec, d];
            let ours = kubo.against(&node, &args);
            assert_eq!(ours, local(&kubo, &args), "{mh} {codec}");
            // Kubo's CLI reads it back through our RPC, verified on its way.
            assert_eq!(run_bytes(kubo.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port()), "block", "get", &ours])), b"a block hashed many ways");
        }
    }
    let bad = client().post(node.rpc_url("block/put?mhtype=md5")).multipart(reqwest::blocking::multipart::Form::new().text("file", "x")).send().unwrap();
    assert_eq!(bad.status(), 400);

    // A CAR that lacks one block of its file: the recursive pin fails, a direct pin stands, and
    // ranges of the blocks that are here are served.
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, xorshift_bytes(7, 3 * 1024)).unwrap();
    let root = local(&kubo, &["add", "-Q", "--chunker=size-1024", "--raw-leaves", "--cid-version=1", big.to_str().unwrap()]);
    let leaves: Vec<String> = local(&kubo, &["refs", &root]).lines().map(str::to_string).collect();
    assert_eq!(leaves.len(), 3);
    let car = car_without(&run_bytes(kubo.cmd().args(["dag", "export", &root])), &leaves[1]);
    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(car).file_name("d.car"));
    let out = client().post(node.rpc_url("dag/import?pin-roots=true")).multipart(form).send().unwrap().text().unwrap();
    assert!(out.contains("is not on this node"), "{out}");
    assert_eq!(client().get(node.gateway_url(&format!("/ipfs/{root}"))).header("Range", "bytes=0-9").send().unwrap().status(), 404, "not pinned: not public");
    let pinned = client().post(node.rpc_url(&format!("pin/add?arg={root}&recursive=false"))).send().unwrap();
    assert_eq!(pinned.status(), 200, "{}", pinned.text().unwrap());
    let ls: serde_json::Value = client().post(node.rpc_url(&format!("pin/ls?arg={root}"))).send().unwrap().json().unwrap();
    assert_eq!(ls["Keys"][&root]["Type"], "direct", "{ls}");
    let r = client().get(node.gateway_url(&format!("/ipfs/{root}"))).header("Range", "bytes=2100-2109").send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().to_vec(), xorshift_bytes(7, 3 * 1024)[2100..2110].to_vec());
    let car = client().get(node.gateway_url(&format!("/ipfs/{root}?format=car&dag-scope=entity&entity-bytes=0:99"))).send().unwrap();
    assert_eq!(car.status(), 200);
    // A GC keeps the direct pin's root and takes the leaves it does not promise (once a second
    // older than the grace of 0 s: ages are counted in seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let removed = client().post(node.rpc_url("repo/gc")).send().unwrap().text().unwrap();
    // Kubo's lines, one per block removed, streamed as the sweep goes.
    assert!(removed.lines().any(|l| l == format!("{{\"Key\":{{\"/\":\"{}\"}}}}", leaves[0])), "{removed}");
    assert!(!removed.contains(&format!("\"{root}\"")), "{removed}");
    let has = |cid: &str| client().post(node.rpc_url(&format!("block/stat?arg={cid}&offline=true"))).send().unwrap().status() == 200;
    assert!(has(&root));
    assert!(!has(&leaves[0]));
}

#[test]
fn tar_of_directories_and_nothing_private_through_new_formats() {
    let node = Node::start();
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("index.txt"), "top\n").unwrap();
    std::fs::write(dir.join("sub/deeper/data.bin"), xorshift_bytes(3, 700_000)).unwrap();
    std::fs::write(dir.join("sub/ünïcode name.txt"), "utf8\n").unwrap();
    std::os::unix::fs::symlink("../index.txt", dir.join("sub/link")).unwrap();
    let root = local(&kubo, &["add", "-r", "-Q", "--cid-version=1", "--chunker=size-65536", dir.to_str().unwrap()]);
    import_from_kubo(&kubo, &node, &root);

    let r = get(&node.gateway_url(&format!("/ipfs/{root}?format=tar")), None);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "Content-Type"), "application/x-tar");
    assert_eq!(header(&r, "Etag"), format!("W/\"{root}.x-tar\""));
    let tarball = tmp.path().join("t.tar");
    std::fs::write(&tarball, r.bytes().unwrap()).unwrap();
    // GNU tar, an independent reader, extracts what Kubo added.
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new("tar").arg("-xf").arg(&tarball).arg("-C").arg(&out));
    let got = out.join(&root);
    assert_eq!(std::fs::read(got.join("sub/deeper/data.bin")).unwrap(), xorshift_bytes(3, 700_000));
    assert_eq!(std::fs::read_to_string(got.join("sub/ünïcode name.txt")).unwrap(), "utf8\n");
    assert_eq!(std::fs::read_link(got.join("sub/link")).unwrap().to_str().unwrap(), "../index.txt");
    let accept = get(&node.gateway_url(&format!("/ipfs/{root}/sub")), Some("application/x-tar"));
    assert_eq!(accept.status(), 200);

    // CORS on every answer, OPTIONS too.
    let r = client().request(reqwest::Method::OPTIONS, node.gateway_url(&format!("/ipfs/{root}/"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "Access-Control-Allow-Origin"), "*");
    assert!(header(&r, "Access-Control-Allow-Methods").contains("GET"));
    assert!(header(&get(&node.gateway_url("/ipfs/bafkqaaa/nothing"), None), "Access-Control-Expose-Headers").contains("X-Ipfs-Path"));

    // A private image: absent through every new path, as through the old ones.
    let layer = xorshift_bytes(9, 300_000);
    let m = image_manifest(&node, "team/secret", b"{}", &[&layer]);
    assert_eq!(put_manifest(&node, "team/secret", "v1", OCI_MANIFEST, &m).status(), 201);
    let image = image_cid(&node, "team/secret", "v1");
    let blob = header(&client().head(node.url(&format!("/v2/team/secret/blobs/{}", sha256(&layer)))).send().unwrap(), "Ipfs-Cid");
    let paths = [
        format!("/ipfs/{image}?format=tar"),
        format!("/ipfs/{image}/index.json?format=json"),
        format!("/ipfs/{image}/blobs?format=tar"),
        format!("/ipfs/{blob}?format=tar"),
        format!("/ipfs/{blob}?format=cbor"),
        format!("/ipfs/{image}/oci-layout"),
    ];
    for p in &paths {
        assert_eq!(get(&node.gateway_url(p), None).status(), 404, "{p}");
        assert_eq!(get(&node.gateway_url(p), Some("text/html")).status(), 404, "{p}");
    }
    // A DAG-CBOR block of our own linking the private image makes none of it public.
    let doc = tmp.path().join("link.json");
    std::fs::write(&doc, format!(r#"{{"image":{{"/":"{image}"}}}}"#)).unwrap();
    let linking = kubo.against(&node, &["block", "put", "--cid-codec", "dag-json", "--pin", doc.to_str().unwrap()]);
    let r = get(&node.gateway_url(&format!("/ipfs/{linking}/image/oci-layout")), None);
    assert_eq!(r.status(), 404);
    let r = get(&node.gateway_url(&format!("/ipfs/{linking}?format=tar")), None);
    assert!(r.status().is_client_error(), "{}", r.status());
    make_public(&node, "team/secret");
    let r = get(&node.gateway_url(&format!("/ipfs/{image}?format=tar")), None);
    assert_eq!(r.status(), 200);
    let tarball = tmp.path().join("image.tar");
    std::fs::write(&tarball, r.bytes().unwrap()).unwrap();
    let listing = run(Command::new("tar").arg("-tf").arg(&tarball));
    assert!(listing.contains(&format!("{image}/blobs/sha256/{}", sha256(&layer).trim_start_matches("sha256:"))), "{listing}");
}
