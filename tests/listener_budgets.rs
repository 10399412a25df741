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
        let added: serde_json::Value = client().post(format!("http://{}/api/v0/add?cid-version=1", node.rpc)).multipart(form).send().unwrap().json().unwrap();
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
/// one, and is not cached; ten tags of 4 MiB manifests are parsed once, not on every request.
#[test]
fn the_home_page_is_bounded_and_names_its_own_host() {
    let node = Node::start();
    let config = b"{\"created\":\"2026-01-01T00:00:00Z\"}".to_vec();
    let config_digest = push_blob(&node, "pub/big", &config);
    for i in 0..10 {
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [],
            "annotations": {"padding": "x".repeat((4 << 20) - 600), "n": i.to_string()},
        });
        let r = put_manifest(&node, "pub/big", &format!("t{i}"), OCI_MANIFEST, manifest.to_string().as_bytes());
        assert_eq!(r.status(), 201);
    }
    make_public(&node, "pub/big");
    let r = client().get(node.url("/")).header("X-Forwarded-Host", "evil.example").send().unwrap();
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-cache"));
    let page = r.text().unwrap();
    assert!(page.contains(&format!("docker pull {}/pub/big", node.host())), "{page}");
    assert!(!page.contains("evil.example"));
    let before = cpu_seconds(node.pid());
    for _ in 0..10 {
        assert!(client().get(node.url("/")).send().unwrap().status().is_success());
    }
    let spent = cpu_seconds(node.pid()) - before;
    eprintln!("ten more pages with ten 4 MiB manifests: {spent:.2} CPU-s");
    assert!(spent < 3.0, "ten pages cost {spent:.2} CPU seconds: manifests parsed on every request");
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
    let added: serde_json::Value = client().post(format!("http://{}/api/v0/add?cid-version=1", node.rpc)).multipart(form).send().unwrap().json().unwrap();
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
