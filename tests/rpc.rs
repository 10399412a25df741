//! The Kubo-compatible RPC, driven by Kubo's own CLI (`ipfs --api ...`) and checked against
//! Kubo's local results for the same content; and its policy beyond loopback (public reads only,
//! writes with an administrator's credentials).

mod common;
use common::*;
use std::process::Command;

#[test]
fn kubos_cli_drives_the_rpc() {
    let node = Node::start();
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f.bin");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2246822519) >> 9) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();

    let local = |args: &[&str]| run(kubo.cmd().args(args)).trim().to_string();
    let id: serde_json::Value = serde_json::from_str(&kubo.against(&node, &["id"])).unwrap();
    assert!(id["ID"].as_str().unwrap().starts_with("12D3KooW"), "{id}");
    assert!(id["AgentVersion"].as_str().unwrap().starts_with("af-registry/"));
    let v: serde_json::Value = client().post(node.rpc_url("version")).send().unwrap().json().unwrap();
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));

    // add: the same CIDs as Kubo's own, with each option.
    for opts in [&["--cid-version=1"][..], &["--cid-version=1", "--chunker=size-1024"], &["--cid-version=1", "--raw-leaves", "--chunker=size-65536"]] {
        let mut args = vec!["add", "-Q", "--only-hash"];
        args.extend_from_slice(opts);
        args.push(f);
        assert_eq!(kubo.against(&node, &args).trim(), local(&args), "{opts:?}");
    }
    let cid = kubo.against(&node, &["add", "-Q", "--cid-version=1", f]).trim().to_string();
    let refused = kubo.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port()), "add", "-Q", f]).output().unwrap();
    assert!(!refused.status.success(), "CIDv0 adds are refused with a message");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cid-version=1"));

    // Reading it back.
    let cat = kubo.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port()), "cat", &cid]).output().unwrap();
    assert!(cat.stdout == data);
    assert!(kubo.against(&node, &["block", "stat", &cid]).contains(&format!("Key: {cid}")));
    let raw = kubo.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port()), "block", "get", &cid]).output().unwrap();
    assert_eq!(sha256(&raw.stdout)[7..], hex::encode(cid::Cid::try_from(cid.as_str()).unwrap().hash().digest()));
    let ls = kubo.against(&node, &["ls", &cid]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert!(kubo.against(&node, &["pin", "ls"]).contains(&format!("{cid} recursive")));

    // dag export equals Kubo's export of the same file, byte for byte.
    local(&["add", "-Q", "--cid-version=1", f]);
    let ours = kubo.cmd().args(["--api", &format!("/ip4/127.0.0.1/tcp/{}", node.rpc.port()), "dag", "export", &cid]).output().unwrap();
    let theirs = kubo.cmd().args(["dag", "export", &cid]).output().unwrap();
    assert!(ours.status.success() && ours.stdout == theirs.stdout);

    // Pins: rm, add back; dag import of a CAR Kubo made.
    assert!(kubo.against(&node, &["pin", "rm", &cid]).contains(&format!("unpinned {cid}")));
    assert!(!kubo.against(&node, &["pin", "ls"]).contains(&cid));
    assert!(kubo.against(&node, &["pin", "add", &cid]).contains(&format!("pinned {cid} recursively")));
    let other = tmp.path().join("g.txt");
    std::fs::write(&other, "imported through dag import\n").unwrap();
    let other_cid = local(&["add", "-Q", "--cid-version=1", other.to_str().unwrap()]);
    let car = tmp.path().join("g.car");
    std::fs::write(&car, kubo.cmd().args(["dag", "export", &other_cid]).output().unwrap().stdout).unwrap();
    let imported = kubo.against(&node, &["dag", "import", car.to_str().unwrap()]);
    assert!(imported.contains(&format!("Pinned root\t{other_cid}\tsuccess")), "{imported}");
    assert_eq!(kubo.against(&node, &["cat", &other_cid]), "imported through dag import");
    let block = tmp.path().join("b.bin");
    std::fs::write(&block, b"a raw block").unwrap();
    let put = kubo.against(&node, &["block", "put", block.to_str().unwrap()]);
    assert_eq!(put.trim(), local(&["block", "put", block.to_str().unwrap()]));
    // What the RPC added is served by the gateway (pinned content is public).
    assert!(client().get(node.gateway_url(&format!("/ipfs/{other_cid}"))).send().unwrap().text().unwrap() == "imported through dag import\n");

    // Monitoring: GET on read-only calls, Kubo's fields; writes need POST; errors in Kubo's shape.
    let stat: serde_json::Value = client().get(node.rpc_url("repo/stat")).send().unwrap().json().unwrap();
    for key in ["RepoSize", "StorageMax", "NumObjects", "RepoPath", "Version"] {
        assert!(!stat[key].is_null(), "{key} in {stat}");
    }
    assert!(stat["NumObjects"].as_u64().unwrap() >= 5);
    assert!(kubo.against(&node, &["repo", "stat"]).contains("NumObjects"));
    let r = client().get(node.rpc_url(&format!("pin/add?arg={cid}"))).send().unwrap();
    assert_eq!(r.status(), 405);
    let e: serde_json::Value = r.json().unwrap();
    assert_eq!(e["Type"], "error");
    let r = client().post(node.rpc_url("block/get?arg=bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")).send().unwrap();
    assert_eq!(r.status(), 400, "what the request named is not there: its fault, not the node's");
    assert!(r.text().unwrap().contains("not found"));
    assert_eq!(kubo.against(&node, &["swarm", "peers"]).trim(), "");
}

#[test]
fn beyond_loopback_reads_are_public_only_and_writes_need_an_admin() {
    // A port picked free may be taken by another test's node before this one binds it: pick again.
    let (node, port) = (0..5)
        .find_map(|_| {
            let port = free_addr().port();
            let rpc_bind = format!("0.0.0.0:{port}");
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Node::start_with_env(&["--auth", "token", "--rpc", &rpc_bind], &[("AF_ADMIN_PASSWORD", "admin-password-1")])))
                .ok()
                .map(|node| (node, port))
        })
        .expect("no free port for the RPC in five tries");
    let url = |call: &str| format!("http://127.0.0.1:{port}/api/v0/{call}");
    let admin = |rb: reqwest::blocking::RequestBuilder| rb.basic_auth("admin", Some("admin-password-1"));
    // A private layer, pushed by the administrator.
    let layer = b"a private layer".to_vec();
    let d = sha256(&layer);
    let r = admin(client().post(node.url(&format!("/v2/team/app/blobs/uploads/?digest={d}")))).body(layer.clone()).send().unwrap();
    assert_eq!(r.status(), 201);
    let layer_cid = admin(client().head(node.url(&format!("/v2/team/app/blobs/{d}")))).send().unwrap().headers()["Ipfs-Cid"].to_str().unwrap().to_string();
    let get = || client().post(url(&format!("block/get?arg={layer_cid}"))).send().unwrap();
    assert_eq!(get().status(), 400, "a private block is not found beyond loopback");
    assert_eq!(client().get(node.gateway_url(&format!("/ipfs/{layer_cid}"))).send().unwrap().status(), 404);
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "visibility", "team/app", "public", "--data-dir"]).arg(&node.data_dir).output().unwrap();
    assert!(out.status.success());
    let r = get();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().unwrap().as_ref() == layer.as_slice());

    // Writes: refused without credentials or with a non-admin's, accepted with the admin's.
    let form = || reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(b"written remotely".to_vec()).file_name("f"));
    let r = client().post(url("block/put")).multipart(form()).send().unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["Type"], "error");
    let r = admin(client().post(url("block/put"))).multipart(form()).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let r = client().post(url(&format!("pin/add?arg={layer_cid}"))).send().unwrap();
    assert_eq!(r.status(), 403);
}
