//! The HTTP listeners against a stranger (issue 29, items 9 to 19): nothing a client sends
//! becomes a metric series, a cache poisoning, an open redirect, the operator's figures, a slot
//! another name needed, or unbounded parsing.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn series(metrics_port: u16, name: &str) -> Vec<String> {
    let page = client().get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().unwrap().text().unwrap();
    page.lines().filter(|l| l.starts_with(name)).map(String::from).collect()
}

/// Item 9: made-up methods are one label value, `other`, not a series each.
#[test]
fn made_up_methods_make_no_new_series() {
    let metrics_port = free_addr().port();
    let node = Node::start_with(&["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    let before = series(metrics_port, "af_http_requests_total").len();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        let _ = client().request(method.clone(), node.url("/v2/")).send();
        let _ = client().request(method, node.gateway_url("/ipfs/bafkqaaa")).send();
    }
    let after = series(metrics_port, "af_http_requests_total");
    assert!(after.len() <= before + 8, "{} series after 600 made-up methods (from {before})", after.len());
    assert!(after.iter().any(|l| l.contains("method=\"other\"")), "{after:?}");
}

/// Items 11 and 14: on a subdomain gateway's bare domain, a stranger's `X-Forwarded-Host`
/// picks nothing (a CDN would cache the page it chose); it counts from `--trusted-proxy`. And
/// `/ipns/<not a name>` there is refused, not redirected where a URL parser reads an address.
#[test]
fn the_gateway_believes_forwarded_hosts_from_its_proxy_only() {
    let run = |extra: &[&str]| {
        let mut args = vec!["--gateway-domain", "example.com"];
        args.extend_from_slice(extra);
        let node = Node::start_with(&args);
        let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(b"the attacker's page".to_vec()).file_name("p.html"));
        let added: serde_json::Value = client().post(node.rpc_url("add?cid-version=1")).multipart(form).send().unwrap().json().unwrap();
        let cid = added["Hash"].as_str().unwrap().to_string();
        let r = client().get(node.gateway_url("/")).header("Host", "example.com").header("X-Forwarded-Host", format!("{cid}.ipfs.example.com")).send().unwrap();
        (node, r.status().as_u16(), r.text().unwrap())
    };
    let (node, status, body) = run(&[]);
    assert_ne!(status, 200, "a stranger's forwarded host chose the page: {body}");
    assert!(!body.contains("the attacker's page"));
    let (_proxied, status, body) = run(&["--trusted-proxy", "127.0.0.1"]);
    assert_eq!((status, body.as_str()), (200, "the attacker's page"), "a trusted proxy's forwarded host counts");

    let no_redirects = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(node.gateway_url("/ipns/2130706433%5C")).header("Host", "example.com").send().unwrap();
    assert_eq!(r.status(), 400, "{:?}", r.headers().get("location"));
    assert!(r.headers().get("location").is_none());
    let key = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8";
    let r = no_redirects.get(node.gateway_url(&format!("/ipns/{key}"))).header("Host", "example.com").send().unwrap();
    assert_eq!(r.status(), 301, "a real name still moves to its subdomain");
}

/// Item 15: bound beyond loopback, the RPC's figures of the node (size, peers, what went to
/// whom) are the operator's: anonymous callers are refused.
#[test]
fn the_rpc_beyond_loopback_keeps_the_operators_figures() {
    let port = free_addr().port();
    let bind = format!("0.0.0.0:{port}");
    let _node = Node::start_with_env(&["--rpc", &bind, "--auth", "token"], &[("AF_ADMIN_PASSWORD", "correct-horse-battery")]);
    for call in ["repo/stat", "swarm/peers", "bitswap/stat", "bitswap/ledger?arg=12D3KooWLGjJ7wfdgLJGmALFXRxKrbdvu18DWrvACr3vUk4QKZv5"] {
        let r = client().post(format!("http://127.0.0.1:{port}/api/v0/{call}")).send().unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 403), "{call} answered a stranger: {}", r.status());
        let r = client().post(format!("http://127.0.0.1:{port}/api/v0/{call}")).basic_auth("admin", Some("correct-horse-battery")).send().unwrap();
        assert!(r.status().is_success(), "{call} refused the operator: {}", r.status());
    }
    let r = client().post(format!("http://127.0.0.1:{port}/api/v0/version")).send().unwrap();
    assert_eq!(r.status(), 200, "what any Kubo tells anyone stays open");
}

/// CPU seconds process `pid` has used (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Items 18 and 19: the home page names the host it was asked on, never a stranger's forwarded
/// one, and is not cached; ten tags of 4 MiB manifests (25,000 layers each) are parsed once,
/// not on every request: a page after the first costs well under half what the first did.
#[test]
fn the_home_page_is_bounded_and_names_its_own_host() {
    let node = Node::start();
    let config = b"{\"created\":\"2026-01-01T00:00:00Z\"}".to_vec();
    let config_digest = push_blob(&node, "pub/big", &config);
    let layer = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": config_digest, "size": config.len()});
    for i in 0..10 {
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": vec![layer.clone(); 25_000],
            "annotations": {"n": i.to_string()},
        });
        let body = manifest.to_string();
        assert!(body.len() < 4 << 20, "{}", body.len());
        let r = put_manifest(&node, "pub/big", &format!("t{i}"), OCI_MANIFEST, body.as_bytes());
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        // Read once, so the database's pages are warm before the pages are timed.
        assert_eq!(client().get(node.url(&format!("/v2/pub/big/manifests/t{i}"))).header("Accept", OCI_MANIFEST).send().unwrap().status(), 200);
    }
    make_public(&node, "pub/big");
    let page = |forwarded: Option<&str>| {
        let mut rb = client().get(node.url("/"));
        if let Some(f) = forwarded {
            rb = rb.header("X-Forwarded-Host", f);
        }
        let before = cpu_seconds(node.pid());
        let r = rb.send().unwrap();
        assert!(r.status().is_success());
        let cache = r.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string());
        let text = r.text().unwrap();
        (cpu_seconds(node.pid()) - before, cache, text)
    };
    let (first, cache, text) = page(Some("evil.example"));
    assert_eq!(cache.as_deref(), Some("no-cache"));
    assert!(text.contains(&format!("docker pull {}/pub/big", node.host())), "{text}");
    assert!(!text.contains("evil.example"));
    let later: f64 = (0..5).map(|_| page(None).0).sum::<f64>() / 5.0;
    eprintln!("the home page: first {first:.3} CPU-s, later {later:.3} CPU-s each");
    assert!(later < first / 2.0, "every page parses the manifests again: first {first:.3} s, later {later:.3} s");
}

/// A DNS server of the test's own on UDP: answers `_dnslink.good.test` with `link`, and never
/// answers anything else (a silent domain).
fn silent_dns(link: String) -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            if n < 12 {
                continue;
            }
            // The question's name, label by label.
            let (mut i, mut labels) = (12, Vec::new());
            while i < n && query[i] != 0 {
                let len = query[i] as usize;
                labels.push(String::from_utf8_lossy(&query[i + 1..(i + 1 + len).min(n)]).to_lowercase());
                i += 1 + len;
            }
            let question_end = i + 5;
            if labels.join(".") != "_dnslink.good.test" || question_end > n {
                continue;
            }
            let txt = format!("dnslink={link}");
            let mut answer = Vec::new();
            answer.extend_from_slice(&query[..2]);
            answer.extend_from_slice(&[0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0]);
            answer.extend_from_slice(&query[12..question_end]);
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0x0e, 0x10]);
            answer.extend_from_slice(&((txt.len() + 1) as u16).to_be_bytes());
            answer.push(txt.len() as u8);
            answer.extend_from_slice(txt.as_bytes());
            let _ = socket.send_to(&answer, from);
        }
    });
    addr
}

/// Item 10: lookups of silent domains (one name many times, and many names) never make a name
/// already known answer 503: answers are asked for before any lookup slot, one lookup runs a
/// name, and a client holds a few slots.
#[test]
fn silent_domains_cannot_take_a_known_names_answers() {
    // What `add` makes of it: one raw block.
    let cid = af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &<sha2::Sha256 as sha2::Digest>::digest(b"a good site").into());
    let dns = silent_dns(format!("/ipfs/{cid}"));
    let node = Node::start_with(&["--dns-resolver", &dns.to_string()]);
    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(b"a good site".to_vec()).file_name("index.txt"));
    let added: serde_json::Value = client().post(node.rpc_url("add?cid-version=1")).multipart(form).send().unwrap().json().unwrap();
    assert_eq!(added["Hash"], cid.to_string());
    let good = || client().get(node.gateway_url("/ipns/good.test")).send().unwrap();
    let r = good();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "a good site");
    let flood = |name: String| {
        let url = node.gateway_url(&format!("/ipns/{name}"));
        std::thread::spawn(move || {
            let quick = reqwest::blocking::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
            for _ in 0..6 {
                let _ = quick.get(&url).send();
            }
        })
    };
    let mut threads: Vec<_> = (0..64).map(|_| flood("silent.test".into())).collect();
    threads.extend((0..64).map(|i| flood(format!("silent-{i}.test"))));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..30 {
        if good().status() != 200 {
            refused += 1;
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(refused, 0, "a known name was refused {refused} of 30 times while silent names were looked up");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The entries of a tar archive a gateway sent, as far as it goes (an archive cut off by the
/// gateway's refusal ends early).
fn tar_entries(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    let Ok(entries) = archive.entries() else { return out };
    for entry in entries {
        let Ok(entry) = entry else { break };
        let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        let link = entry.link_name().ok().flatten().map(|l| l.display().to_string());
        out.push((path, link));
    }
    out
}

/// Item 13: `?format=tar` never archives a symlink pointing out of the archive (an absolute
/// target), nor an entry beneath a symlink whose name differs only by case (a case-insensitive
/// file system would write through it). The directories are Kubo's (`ipfs add -r`).
#[test]
fn tar_archives_hold_no_way_out() {
    let node = Node::start();
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let add = |dir: &std::path::Path| {
        let out = kubo.cmd().args(["add", "-r", "-Q", "--cid-version=1", "--raw-leaves"]).arg(dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        import_from_kubo(&kubo, &node, &root);
        root
    };
    let absolute = tmp.path().join("absolute");
    std::fs::create_dir_all(&absolute).unwrap();
    std::fs::write(absolute.join("readme.txt"), "hello").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", absolute.join("passwd")).unwrap();
    let cased = tmp.path().join("cased");
    std::fs::create_dir_all(cased.join("a")).unwrap();
    std::fs::create_dir_all(cased.join("inner")).unwrap();
    std::fs::write(cased.join("a/file.txt"), "written through A").unwrap();
    std::os::unix::fs::symlink("inner", cased.join("A")).unwrap();
    for (dir, what) in [(&absolute, "a symlink to /etc/passwd"), (&cased, "a/file.txt beneath the symlink A")] {
        let root = add(dir);
        let r = client().get(node.gateway_url(&format!("/ipfs/{root}?format=tar"))).send().unwrap();
        let bytes = r.bytes().unwrap_or_default();
        let entries = tar_entries(&bytes);
        assert!(!entries.iter().any(|(_, link)| link.as_deref().is_some_and(|l| l.starts_with('/'))), "{what}: {entries:?}");
        assert!(!entries.iter().any(|(path, _)| path.ends_with("a/file.txt")), "{what}: {entries:?}");
    }
}

/// Issue 33, item 2: on an RPC bound beyond loopback, a token means what its scope says. An
/// administrator's token for `repository:pub/app:pull` reads public content only and writes
/// nothing; one asked for `registry:operator:*` is the operator.
#[test]
fn an_rpc_token_carries_only_its_scope() {
    let port = free_addr().port();
    let password = "correct-horse-battery";
    let node = Node::start_with_env(&["--rpc", &format!("0.0.0.0:{port}"), "--auth", "token"], &[("AF_ADMIN_PASSWORD", password)]);
    let private =
        node.as_admin(client().post(node.url(&format!("/v2/team/secret/blobs/uploads/?digest={}", sha256(b"a private layer"))))).body(b"a private layer".to_vec()).send().unwrap();
    assert_eq!(private.status(), 201);
    let cid = af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &<sha2::Sha256 as sha2::Digest>::digest(b"a private layer").into());
    let token = |scope: &str| -> String {
        let r = client().get(node.url(&format!("/token?service=af-registry&scope={scope}"))).basic_auth("admin", Some(password)).send().unwrap();
        let v: serde_json::Value = r.json().unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let rpc = |call: &str, bearer: &str| client().post(format!("http://127.0.0.1:{port}/api/v0/{call}")).bearer_auth(bearer).send().unwrap();
    let pull = token("repository:pub/app:pull");
    assert!(!rpc(&format!("block/get?arg={cid}"), &pull).status().is_success(), "a pull token read a private block");
    assert_eq!(rpc(&format!("pin/add?arg={cid}"), &pull).status(), 403, "a pull token pinned");
    assert_eq!(rpc("repo/stat", &pull).status(), 403);
    let operator = token("registry:operator:*");
    let r = rpc(&format!("block/get?arg={cid}"), &operator);
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.bytes().unwrap().as_ref(), b"a private layer");
    assert!(rpc("repo/stat", &operator).status().is_success());
}
