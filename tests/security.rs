//! Regressions of an attacker's findings (issue 11): credentials that outlived what minted them,
//! logins that could exhaust memory or lock others out, a world-readable data directory,
//! cross-site and DNS-rebinding requests to the loopback RPC, a realm moved by a forwarded
//! header, a panic in `add`, upload chunks kept when refused, unbounded upload sessions, and
//! attacker-written HTML served from the gateway's origin. (Identity CIDs and pins: `exposure.rs`.)

mod common;
use common::accounts::*;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

const ADMIN_PASSWORD: &str = "admin-password-1";

fn secure_node(extra: &[&str]) -> Node {
    let mut args = vec!["--auth", "token"];
    args.extend_from_slice(extra);
    Node::start_with_env(&args, &[("AF_ADMIN_PASSWORD", ADMIN_PASSWORD)])
}

fn token_get(node: &Node, user: &str, secret: &str, query: &str) -> reqwest::blocking::Response {
    client().get(node.url(&format!("/token?service=af-registry&{query}"))).basic_auth(user, Some(secret)).send().unwrap()
}

/// POST /token with the refresh grant: the status.
fn refresh(node: &Node, refresh_token: &str) -> u16 {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("service", "af-registry"), ("scope", "repository:alice/app:pull")];
    client().post(node.url("/token")).form(&form).send().unwrap().status().as_u16()
}

fn refresh_token_of(r: reqwest::blocking::Response) -> String {
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    v["refresh_token"].as_str().expect("a refresh token").to_string()
}

fn basic_status(node: &Node, user: &str, secret: &str) -> u16 {
    client().get(node.url("/v2/")).basic_auth(user, Some(secret)).send().unwrap().status().as_u16()
}

#[test]
fn refresh_tokens_live_no_longer_than_what_minted_them() {
    let node = secure_node(&[]);
    add_user(&node, "alice", "alice-password");
    // Minted with an access token: listed, and revoked with it.
    let pat = token(&node, "alice", &[]);
    let r1 = refresh_token_of(token_get(&node, "alice", &pat, "offline_token=true&scope=repository:alice/app:pull"));
    assert_eq!(refresh(&node, &r1), 200);
    let listed = af(&node, &["registry", "token", "list", "--user", "alice"], None);
    assert!(listed.contains(&format!("{} alice refresh", token_id(&r1))), "{listed}");
    af(&node, &["registry", "token", "revoke", token_id(&pat)], None);
    assert_eq!(refresh(&node, &r1), 401, "the refresh token died with its access token");
    // Minted with an expiring access token: expires with it.
    let short = token(&node, "alice", &["--expires", "2s"]);
    let r2 = refresh_token_of(token_get(&node, "alice", &short, "offline_token=true"));
    assert_eq!(refresh(&node, &r2), 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(refresh(&node, &r2), 401, "the refresh token expired with its access token");
    // Revocable on its own.
    let pat = token(&node, "alice", &[]);
    let r3 = refresh_token_of(token_get(&node, "alice", &pat, "offline_token=true"));
    af(&node, &["registry", "token", "revoke", token_id(&r3)], None);
    assert_eq!(refresh(&node, &r3), 401);
    // Minted with a password: ends when the password changes.
    let r4 = refresh_token_of(token_get(&node, "alice", "alice-password", "offline_token=true"));
    assert_eq!(refresh(&node, &r4), 200);
    af(&node, &["registry", "user", "passwd", "alice"], Some("alice-password-2\n"));
    assert_eq!(refresh(&node, &r4), 401, "a password change ends its refresh tokens");
}

#[test]
fn credential_changes_take_effect_at_once() {
    let node = secure_node(&[]);
    add_user(&node, "mallory", "mallory-password");
    assert_eq!(basic_status(&node, "mallory", "mallory-password"), 200);
    let jwt: serde_json::Value = token_get(&node, "mallory", "mallory-password", "scope=repository:mallory/x:pull").json().unwrap();
    let jwt = jwt["token"].as_str().unwrap().to_string();
    let bearer = || client().get(node.url("/v2/mallory/x/tags/list")).bearer_auth(&jwt).send().unwrap().status().as_u16();
    assert_ne!(bearer(), 401);
    // A new password: the old one (just used, so remembered) and the JWTs it minted end now.
    af(&node, &["registry", "user", "passwd", "mallory"], Some("mallory-password-2\n"));
    assert_eq!(basic_status(&node, "mallory", "mallory-password"), 401);
    assert_eq!(bearer(), 401);
    assert_eq!(basic_status(&node, "mallory", "mallory-password-2"), 200);
    // Removed and made again: the first mallory's credentials are not the second's.
    let jwt2: serde_json::Value = token_get(&node, "mallory", "mallory-password-2", "scope=repository:mallory/x:pull").json().unwrap();
    let jwt2 = jwt2["token"].as_str().unwrap().to_string();
    af(&node, &["registry", "user", "remove", "mallory"], None);
    add_user(&node, "mallory", "a-new-mallory");
    assert_eq!(basic_status(&node, "mallory", "mallory-password-2"), 401);
    assert_eq!(client().get(node.url("/v2/mallory/x/tags/list")).bearer_auth(&jwt2).send().unwrap().status(), 401);
    assert_eq!(basic_status(&node, "mallory", "a-new-mallory"), 200);
}

#[test]
fn failed_logins_neither_exhaust_memory_nor_lock_others_out() {
    let node = secure_node(&[]);
    add_user(&node, "bob", "bob-password");
    let bob_token = token(&node, "bob", &[]);
    assert_eq!(basic_status(&node, "bob", "bob-password"), 200);
    let watch = node.watch_memory();
    // 200 bad logins at once: each counted before its argon2 check, at most two checks at once.
    let url = node.url("/v2/");
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
                c.get(&url).basic_auth(format!("user{}", i % 7), Some("wrong")).send().map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 150, "most were refused before any hashing");
    let grown = watch.growth_kib();
    assert!(grown < 150 * 1024, "peak memory grew by {grown} KiB under 200 bad logins");

    // Five bad passwords for bill from one address: bill from another address, and bill's token
    // from any, still get in.
    add_user(&node, "bill", "bill-password");
    let bill_token = token(&node, "bill", &[]);
    let from = |ip: &str| reqwest::blocking::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    for _ in 0..5 {
        assert_eq!(from("127.0.0.3").get(&url).basic_auth("bill", Some("guess")).send().unwrap().status(), 401);
    }
    let r = from("127.0.0.3").get(&url).basic_auth("bill", Some("bill-password")).send().unwrap();
    assert_eq!(r.status(), 429, "the guessing address waits");
    assert!(r.headers().contains_key("Retry-After"));
    assert_eq!(from("127.0.0.4").get(&url).basic_auth("bill", Some("bill-password")).send().unwrap().status(), 200, "bill elsewhere does not");
    assert_eq!(from("127.0.0.3").get(&url).basic_auth("bill", Some(&bill_token)).send().unwrap().status(), 200, "tokens are never limited");
    assert_eq!(from("127.0.0.1").get(&url).basic_auth("bob", Some(&bob_token)).send().unwrap().status(), 200);
}

#[test]
fn weak_administrator_passwords_are_refused() {
    for password in ["", "abc"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_af"))
            .env("AF_SWARM", "/ip4/127.0.0.1/tcp/0")
            .args(["registry", "serve", "--metrics", "127.0.0.1:0", "--api", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("AF_ADMIN_PASSWORD", password)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{password:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("AF_ADMIN_PASSWORD") && err.contains("shorter than 8"), "{err}");
    }
}

#[test]
fn the_data_directory_is_the_node_users_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Made by someone else with open modes: repaired at start.
    std::fs::create_dir_all(data.join("blobs")).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("blobs/stray"), b"x").unwrap();
    std::fs::set_permissions(data.join("blobs/stray"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut node = Node::start();
    node.kill9();
    node.data_dir = data.clone();
    node.restart();
    push_blob(&node, "team/app", b"a private layer");
    let mut checked = 0;
    let mut pending = vec![data.clone()];
    while let Some(d) = pending.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                pending.push(e.path());
            } else {
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "metadata, blocks, identity and the blob were checked ({checked})");
}

#[test]
fn the_loopback_rpc_refuses_other_sites_and_other_host_names() {
    let node = Node::start();
    let port = node.rpc.port();
    let url = |call: &str| format!("http://127.0.0.1:{port}/api/v0/{call}");
    let form = || reqwest::blocking::multipart::Form::new().part("f", reqwest::blocking::multipart::Part::bytes(b"hello".to_vec()).file_name("f"));
    let added: serde_json::Value = serde_json::from_str(client().post(url("add?cid-version=1")).multipart(form()).send().unwrap().text().unwrap().lines().next().unwrap()).unwrap();
    let cid = added["Hash"].as_str().unwrap().to_string();
    // A website in the operator's browser: a simple cross-site POST.
    let r = client().post(url(&format!("pin/rm?arg={cid}"))).header("Origin", "https://evil.example").send().unwrap();
    assert_eq!(r.status(), 403);
    let r = client().post(url("add?cid-version=1")).header("Origin", "https://evil.example").multipart(form()).send().unwrap();
    assert_eq!(r.status(), 403);
    let r = client().post(url(&format!("pin/rm?arg={cid}"))).header("Referer", "https://evil.example/page").send().unwrap();
    assert_eq!(r.status(), 403);
    // DNS rebinding: evil.example resolving to 127.0.0.1.
    let r = client().post(url(&format!("cat?arg={cid}"))).header("Host", format!("evil.example:{port}")).send().unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["Type"], "error");
    // The RPC's own origins and names still work.
    let r = client().post(url(&format!("cat?arg={cid}"))).header("Origin", format!("http://127.0.0.1:{port}")).send().unwrap();
    assert_eq!(r.text().unwrap(), "hello");
    let r = client().post(format!("http://localhost:{port}/api/v0/cat?arg={cid}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(client().post(url(&format!("pin/ls?arg={cid}"))).send().unwrap().text().unwrap().contains(&cid), "nothing was unpinned");
}

#[test]
fn forwarded_headers_count_only_from_trusted_proxies() {
    let realm = |node: &Node| {
        let r = client().get(node.url("/v2/")).header("X-Forwarded-Host", "evil.example").header("X-Forwarded-Proto", "https").send().unwrap();
        r.headers()["WWW-Authenticate"].to_str().unwrap().to_string()
    };
    let node = secure_node(&[]);
    let challenge = realm(&node);
    assert!(!challenge.contains("evil.example") && challenge.contains(&format!("http://{}/token", node.addr)), "{challenge}");
    let proxied = secure_node(&["--trusted-proxy", "127.0.0.1"]);
    assert!(realm(&proxied).contains("https://evil.example/token"));
    let fixed = secure_node(&["--trusted-proxy", "127.0.0.1", "--public-url", "https://registry.example"]);
    assert!(realm(&fixed).contains("https://registry.example/token"), "--public-url wins");
}

#[test]
fn rpc_add_refuses_degenerate_layouts() {
    let node = Node::start();
    for links in ["0", "1", "x", "100000"] {
        let form = reqwest::blocking::multipart::Form::new().part("f", reqwest::blocking::multipart::Part::bytes(vec![7u8; 5000]).file_name("f"));
        let r = client().post(node.rpc_url(&format!("add?cid-version=1&raw-leaves=true&chunker=size-1000&max-file-links={links}"))).multipart(form).send().unwrap();
        assert_eq!(r.status(), 400, "max-file-links={links}");
        let e: serde_json::Value = r.json().unwrap();
        assert_eq!(e["Type"], "error");
        assert!(e["Message"].as_str().unwrap().contains("max-file-links"));
    }
    assert!(!node.log_text().contains("panicked"));
}

#[test]
fn a_refused_chunk_leaves_the_upload_as_it_was() {
    let node = Node::start();
    let r = client().post(node.url("/v2/team/app/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), 202);
    let location = node.url(r.headers()["Location"].to_str().unwrap());
    let patch =
        |range: &str, body: &[u8]| client().patch(&location).header("Content-Range", range).header("Content-Type", "application/octet-stream").body(body.to_vec()).send().unwrap();
    assert_eq!(patch("0-9", b"12345").status(), 400, "five bytes are not ten");
    let status = client().get(&location).send().unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["Range"], "0-0", "nothing of the refused chunk was kept");
    assert_oci_error(patch("0-18446744073709551615", b"x"), 416, "RANGE_INVALID");
    assert_eq!(patch("0-4", b"12345").status(), 202, "the retry is accepted");
    let d = sha256(b"12345");
    assert_eq!(client().put(format!("{location}?digest={d}")).send().unwrap().status(), 201);
}

#[test]
fn upload_sessions_are_capped_per_user() {
    let node = secure_node(&["--max-uploads", "3"]);
    add_user(&node, "carol", "carol-password");
    let open = |user: &str, password: &str, repo: &str| client().post(node.url(&format!("/v2/{repo}/blobs/uploads/"))).basic_auth(user, Some(password)).send().unwrap();
    for _ in 0..3 {
        assert_eq!(open("carol", "carol-password", "carol/app").status(), 202);
    }
    assert_oci_error(open("carol", "carol-password", "carol/app"), 429, "TOOMANYREQUESTS");
    assert_eq!(open("admin", ADMIN_PASSWORD, "admin/app").status(), 202, "another user has sessions of its own");
}

#[test]
fn identity_content_cannot_act_as_the_gateway() {
    let node = Node::start();
    let html = b"<script>alert(document.domain)</script>";
    let mh = cid::multihash::Multihash::<64>::wrap(0x00, html).unwrap();
    let page = cid::Cid::new_v1(0x55, mh);
    let r = client().get(node.gateway_url(&format!("/ipfs/{page}?filename=a.html"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["Content-Security-Policy"], "sandbox", "written by whoever wrote the URL: sandboxed");
    // A malformed dag-pb block inside an identity CID is the client's mistake.
    let mh = cid::multihash::Multihash::<64>::wrap(0x00, &[0xff, 0xff, 0xff]).unwrap();
    let bad = cid::Cid::new_v1(0x70, mh);
    assert_eq!(client().get(node.gateway_url(&format!("/ipfs/{bad}"))).send().unwrap().status(), 400);
}
