//! Names on the gateway: IPNS records published by the node (verified by Kubo's `name inspect`)
//! and resolved at /ipns/<key>; DNSLink names from a real DNS server (dnsmasq); the subdomain
//! gateway; and that no name, host or subdomain leads to private content.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};

/// A client that does not follow redirects (they are what is checked).
fn no_redirects() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn get_host(node: &Node, host: &str, path: &str) -> reqwest::blocking::Response {
    no_redirects().get(node.gateway_url(path)).header("Host", host).send().unwrap()
}

fn put_record(node: &Node, name: &str, record: Vec<u8>) -> reqwest::blocking::Response {
    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(record).file_name("r"));
    client().post(node.rpc_url(&format!("routing/put?arg=/ipns/{name}"))).multipart(form).send().unwrap()
}

/// A private image's CID on `node`.
fn private_image(node: &Node) -> String {
    let m = image_manifest(node, "team/secret", b"{}", &[&xorshift_bytes(5, 50_000)]);
    assert_eq!(put_manifest(node, "team/secret", "v1", OCI_MANIFEST, &m).status(), 201);
    image_cid(node, "team/secret", "v1")
}

#[test]
fn published_names_resolve_and_kubo_verifies_their_records() {
    let node = Node::start();
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.txt"), tmp.path().join("b.txt"));
    std::fs::write(&a, "first\n").unwrap();
    std::fs::write(&b, "second\n").unwrap();
    // Added through our RPC by Kubo's CLI: pinned, so public.
    let first = kubo.against(&node, &["add", "-Q", "--cid-version=1", a.to_str().unwrap()]);
    let second = kubo.against(&node, &["add", "-Q", "--cid-version=1", b.to_str().unwrap()]);

    let published = kubo.against(&node, &["name", "publish", "--ttl=90s", &format!("/ipfs/{first}")]);
    let name = published.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_string();
    assert!(name.starts_with("k51"), "{published}");
    assert_eq!(kubo.against(&node, &["name", "resolve", &format!("/ipns/{name}")]), format!("/ipfs/{first}"));
    let r = client().get(node.gateway_url(&format!("/ipns/{name}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "X-Ipfs-Path"), format!("/ipns/{name}"));
    assert_eq!(header(&r, "Cache-Control"), "public, max-age=90");
    assert_eq!(r.text().unwrap(), "first\n");

    // The record as the gateway gives it: Kubo checks its signatures and says where it points.
    let r = client().get(node.gateway_url(&format!("/ipns/{name}?format=ipns-record"))).send().unwrap();
    assert_eq!(header(&r, "Content-Type"), "application/vnd.ipfs.ipns-record");
    let first_record = r.bytes().unwrap().to_vec();
    let record_file = tmp.path().join("record");
    std::fs::write(&record_file, &first_record).unwrap();
    let inspected = run(kubo.cmd().args(["name", "inspect", "--verify", &name]).stdin(std::fs::File::open(&record_file).unwrap()));
    assert!(inspected.contains(&format!("/ipfs/{first}")) && inspected.contains("Valid: true"), "{inspected}");

    // The peer ID spelling of the name is sent to the canonical one.
    let node_id: serde_json::Value = client().post(node.rpc_url("id")).send().unwrap().json().unwrap();
    let r = no_redirects().get(node.gateway_url(&format!("/ipns/{}/x?y=1", node_id["ID"].as_str().unwrap()))).send().unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(header(&r, "Location"), format!("/ipns/{name}/x?y=1"));

    // A new value supersedes the old; the old record cannot come back, a tampered one is refused.
    // Its TTL, the publisher's word (here 50 years), is kept an hour at most by caches.
    kubo.against(&node, &["name", "publish", "--ttl=438000h", &format!("/ipfs/{second}")]);
    let r = client().get(node.gateway_url(&format!("/ipns/{name}"))).send().unwrap();
    assert_eq!(header(&r, "Cache-Control"), "public, max-age=3600");
    assert_eq!(r.text().unwrap(), "second\n");
    let r = client().get(node.gateway_url(&format!("/ipns/{name}?format=ipns-record"))).send().unwrap();
    assert_eq!(header(&r, "Cache-Control"), "public, max-age=3600");
    let stale = put_record(&node, &name, first_record.clone());
    assert_eq!(stale.status(), 400);
    assert!(stale.text().unwrap().contains("older"));
    let mut tampered = first_record.clone();
    let at = tampered.windows(first.len()).position(|w| w == first.as_bytes()).unwrap();
    tampered[at + 10] ^= 1;
    let bad = put_record(&node, &name, tampered);
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("invalid IPNS record"));
    // A name nothing is known of.
    let other = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    let unknown = client().get(node.gateway_url(&format!("/ipns/{other}"))).send().unwrap();
    assert_eq!(unknown.status(), 502, "after the redirect to its canonical name");

    // A name pointing at a private image opens nothing: the content stays 404.
    let image = private_image(&node);
    kubo.against(&node, &["name", "publish", &format!("/ipfs/{image}")]);
    for path in [format!("/ipns/{name}/"), format!("/ipns/{name}/index.json"), format!("/ipns/{name}?format=car"), format!("/ipns/{name}?format=tar")] {
        assert_eq!(client().get(node.gateway_url(&path)).send().unwrap().status(), 404, "{path}");
    }
}

/// dnsmasq on a free port, answering the given TXT records.
struct Dns {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dns {
    fn start(txt: &[(&str, String)]) -> Dns {
        let mut tried = Vec::new();
        for _ in 0..5 {
            let addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            match Self::start_on(addr, txt) {
                Ok(dns) => return dns,
                Err(e) => tried.push(e),
            }
        }
        panic!("dnsmasq did not start: {tried:?}");
    }

    fn start_on(addr: std::net::SocketAddr, txt: &[(&str, String)]) -> Result<Dns, String> {
        let mut cmd = Command::new("dnsmasq");
        // Authoritative for .test: an unknown name there is NXDOMAIN, not refused.
        cmd.args(["--keep-in-foreground", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/"])
            .arg(format!("--port={}", addr.port()))
            .args(txt.iter().map(|(name, value)| format!("--txt-record={name},{value}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut dns = Dns { child: cmd.spawn().expect("dnsmasq (scripts/install-test-deps.sh installs it)"), addr };
        // Ready once it holds its port (on a busy machine that takes a while).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::UdpSocket::bind(addr).is_ok() {
            assert!(std::time::Instant::now() < deadline, "dnsmasq did not take {addr}");
            // It exits when the port's TCP side is taken (the free port was picked for UDP).
            if let Some(status) = dns.child.try_wait().unwrap() {
                return Err(format!("dnsmasq exited with {status} on {addr}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(dns)
    }
}

#[test]
fn dnslink_names_hosts_and_subdomains() {
    let kubo = Kubo::new();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    std::fs::create_dir_all(site.join("docs")).unwrap();
    std::fs::write(site.join("hello.txt"), "hello from DNSLink\n").unwrap();
    std::fs::write(site.join("docs/page.txt"), "a page\n").unwrap();
    let dir = local(&kubo, &["add", "-r", "-Q", "--cid-version=1", site.to_str().unwrap()]);
    let dns = Dns::start(&[("_dnslink.site.test", format!("dnslink=/ipfs/{dir}"))]);
    let node = Node::start_with(&["--dns-resolver", &dns.addr.to_string(), "--gateway-domain", "gw.test"]);
    import_from_kubo(&kubo, &node, &dir);

    // /ipns/<domain>, and the domain as the Host: its DNSLink is its site.
    let r = client().get(node.gateway_url("/ipns/site.test/hello.txt")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "hello from DNSLink\n");
    let r = get_host(&node, "site.test", "/docs/page.txt");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "X-Ipfs-Path"), "/ipns/site.test/docs/page.txt");
    assert_eq!(r.text().unwrap(), "a page\n");
    let listing = get_host(&node, "site.test", "/docs/").text().unwrap();
    assert!(listing.contains("href=\"/docs/page.txt\""), "{listing}");
    assert_eq!(client().get(node.gateway_url("/ipns/nothing.test/")).send().unwrap().status(), 404);

    // The subdomain gateway: each root its own origin; other spellings sent to the canonical one.
    let r = get_host(&node, &format!("{dir}.ipfs.gw.test"), "/hello.txt");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "hello from DNSLink\n");
    let r = get_host(&node, "gw.test", &format!("/ipfs/{dir}/hello.txt"));
    assert_eq!(r.status(), 301);
    assert_eq!(header(&r, "Location"), format!("http://{dir}.ipfs.gw.test/hello.txt"));
    let v0 = local(&kubo, &["add", "-Q", "--cid-version=0", site.join("hello.txt").to_str().unwrap()]);
    let v1 = local(&kubo, &["cid", "base32", &v0]);
    let r = get_host(&node, &format!("{}.ipfs.gw.test", v0.to_lowercase()), "/");
    assert_eq!(r.status(), 400, "a CIDv0 is case-sensitive: no DNS label can hold it");
    let r = get_host(&node, "gw.test", &format!("/ipfs/{v0}"));
    assert_eq!(header(&r, "Location"), format!("http://{v1}.ipfs.gw.test/"));
    let r = get_host(&node, "site-test.ipns.gw.test", "/hello.txt");
    assert_eq!(r.status(), 200, "an inlined DNSLink name");
    let published = kubo.against(&node, &["name", "publish", &format!("/ipfs/{dir}")]);
    let name = published.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_string();
    assert_eq!(get_host(&node, &format!("{name}.ipns.gw.test"), "/docs/page.txt").status(), 200);

    // Private content through names, hosts and subdomains: absent. (The DNS server starts
    // again on its port with one more name: the node keeps asking it.)
    let image = private_image(&node);
    let addr = dns.addr;
    drop(dns);
    let _dns = Dns::start_on(addr, &[("_dnslink.site.test", format!("dnslink=/ipfs/{dir}")), ("_dnslink.private.test", format!("dnslink=/ipfs/{image}"))])
        .expect("dnsmasq again on the port it held");
    assert_eq!(get_host(&node, "site.test", "/hello.txt").status(), 200, "the DNS server is back");
    for (host, path) in [
        ("private.test".to_string(), "/".to_string()),
        ("private.test".to_string(), "/index.json".to_string()),
        ("127.0.0.1".to_string(), "/ipns/private.test/oci-layout".to_string()),
        ("127.0.0.1".to_string(), format!("/ipfs/{image}/index.json")),
        (format!("{image}.ipfs.gw.test"), "/index.json".to_string()),
        ("private-test.ipns.gw.test".to_string(), "/index.json".to_string()),
    ] {
        assert_eq!(get_host(&node, &host, &format!("{path}?format=raw")).status(), 404, "{host}{path}");
        assert_eq!(get_host(&node, &host, &path).status(), 404, "{host}{path}");
    }
}

fn local(kubo: &Kubo, args: &[&str]) -> String {
    run(kubo.cmd().args(args)).trim().to_string()
}
