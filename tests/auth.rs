//! Access control against a node with authentication on (the default): the full matrix of
//! callers × namespaces × visibility × operations with exact status and error codes, the Docker
//! token flow (challenges, GET and POST `/token`, refresh tokens, scope intersection), revocation
//! and expiry taking effect at once, rate limiting, the bootstrap token and secrets kept out of the
//! log.

mod common;
use base64::Engine;
use common::accounts::*;
use common::*;
use reqwest::blocking::RequestBuilder;
use std::process::{Command, Stdio};
use std::time::Duration;

const ADMIN_PASSWORD: &str = "admin-password-1";

/// Who makes a request.
#[derive(Clone)]
enum Who {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

fn send(rb: RequestBuilder, who: &Who) -> reqwest::blocking::Response {
    match who {
        Who::Anonymous => rb,
        Who::Basic(u, p) => rb.basic_auth(u, Some(p)),
        Who::Bearer(t) => rb.bearer_auth(t),
    }
    .send()
    .unwrap()
}

/// A node with: admin; users alice, bob, carol, dave, erin, frank; organisation acme with alice
/// as writer; an image in alice/private, alice/public (public), bob/private, bob/public (public)
/// and acme/app, each tagged `t` with a referrer.
struct World {
    node: Node,
    manifest: Vec<u8>,
    blob: String,
}

fn world() -> World {
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    for u in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        add_user(&node, u, &format!("{u}-password"));
    }
    af(&node, &["registry", "org", "add", "acme"], None);
    af(&node, &["registry", "org", "member", "acme", "alice", "--role", "write"], None);
    let admin = Who::Basic("admin".into(), ADMIN_PASSWORD.into());
    let config = b"{}".to_vec();
    let blob = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob, "size": 2},
        "layers": []
    }))
    .unwrap();
    for repo in ["alice/private", "alice/public", "bob/private", "bob/public", "acme/app"] {
        let r = send(client().post(node.url(&format!("/v2/{repo}/blobs/uploads/?digest={blob}"))).body(config.clone()), &admin);
        assert_eq!(r.status(), 201);
        let put = client().put(node.url(&format!("/v2/{repo}/manifests/t"))).header("Content-Type", OCI_MANIFEST).body(manifest.clone());
        assert_eq!(send(put, &admin).status(), 201);
    }
    af(&node, &["registry", "visibility", "alice/public", "public"], None);
    af(&node, &["registry", "visibility", "bob/public", "public"], None);
    World { node, manifest, blob }
}

thread_local! {
    /// The manifest a `PUT` of [`check`] sends: the world's, so only access decides the answer.
    static MANIFEST: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn check(node: &Node, who: &Who, method: &str, path: &str, status: u16, code: Option<&str>, label: &str) {
    let url = node.url(path);
    let rb = match method {
        "GET" => client().get(url).header("Accept", OCI_MANIFEST),
        "POST" => client().post(url),
        "DELETE" => client().delete(url),
        // A manifest, as a push's last request sends it.
        "PUT" => client().put(url).header("Content-Type", OCI_MANIFEST).body(MANIFEST.with(|m| m.borrow().clone())),
        _ => unreachable!(),
    };
    let r = send(rb, who);
    let got = r.status().as_u16();
    let challenge = r.headers().get("WWW-Authenticate").map(|v| v.to_str().unwrap().to_string());
    let body = r.text().unwrap();
    assert_eq!(got, status, "{label}: {method} {path}: {body}");
    if let Some(code) = code {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{label}: not JSON: {body}"));
        assert_eq!(v["errors"][0]["code"], code, "{label}: {method} {path}");
    }
    if status == 401 {
        let c = challenge.unwrap_or_else(|| panic!("{label}: 401 without a challenge"));
        assert!(c.starts_with(&format!("Bearer realm=\"http://{}/token\",service=\"af-registry\"", node.host())), "{c}");
    }
}

#[test]
fn the_access_matrix() {
    let World { node, blob, manifest } = world();
    MANIFEST.with(|m| *m.borrow_mut() = manifest);
    let unknown = sha256(b"never pushed");
    let expired = token(&node, "dave", &["--expires", "1s"]);
    let revoked = token(&node, "erin", &[]);
    af(&node, &["registry", "token", "revoke", token_id(&revoked)], None);
    let read = token(&node, "alice", &["--scope", "read"]);
    let write = token(&node, "alice", &["--scope", "write"]);
    std::thread::sleep(Duration::from_millis(2100));

    let anonymous = Who::Anonymous;
    let wrong = Who::Basic("carol".into(), "not-her-password".into());
    let expired = Who::Basic("dave".into(), expired);
    let revoked = Who::Basic("erin".into(), revoked);
    let alice = Who::Basic("alice".into(), "alice-password".into());
    let read = Who::Basic("alice".into(), read);
    let write = Who::Basic("alice".into(), write);
    let admin = Who::Basic("admin".into(), ADMIN_PASSWORD.into());

    let pull = |repo: &str| format!("/v2/{repo}/manifests/t");
    let push = |repo: &str| format!("/v2/{repo}/blobs/uploads/");
    let delete = |repo: &str| format!("/v2/{repo}/manifests/{unknown}");
    let tags = |repo: &str| format!("/v2/{repo}/tags/list");
    let referrers = |repo: &str| format!("/v2/{repo}/referrers/{blob}");
    const UNAUTH: Option<&str> = Some("UNAUTHORIZED");
    const DENIED: Option<&str> = Some("DENIED");

    // Anyone without valid credentials: public pulls only.
    check(&node, &anonymous, "GET", "/v2/", 401, UNAUTH, "anonymous");
    check(&node, &anonymous, "GET", &pull("alice/public"), 200, None, "anonymous");
    check(&node, &anonymous, "GET", &tags("bob/public"), 200, None, "anonymous");
    check(&node, &anonymous, "GET", &referrers("alice/public"), 200, None, "anonymous");
    check(&node, &anonymous, "GET", &pull("alice/private"), 401, UNAUTH, "anonymous");
    check(&node, &anonymous, "GET", &tags("alice/private"), 401, UNAUTH, "anonymous");
    check(&node, &anonymous, "POST", &push("alice/public"), 401, UNAUTH, "anonymous");
    check(&node, &anonymous, "DELETE", &delete("alice/public"), 401, UNAUTH, "anonymous");
    // A manifest PUT is a push, whatever blobs it names are already there (it once needed
    // only pull: anyone could tag into a public repository).
    let tag = |repo: &str| format!("/v2/{repo}/manifests/hijacked");
    check(&node, &anonymous, "PUT", &tag("alice/public"), 401, UNAUTH, "anonymous");
    check(&node, &anonymous, "GET", "/v2/_catalog", 401, UNAUTH, "anonymous");
    for (who, label) in [(&wrong, "wrong password"), (&expired, "expired token"), (&revoked, "revoked token")] {
        check(&node, who, "GET", "/v2/", 401, UNAUTH, label);
        check(&node, who, "GET", &pull("alice/public"), 401, UNAUTH, label);
        check(&node, who, "POST", &push(if label == "expired token" { "dave/x" } else { "erin/x" }), 401, UNAUTH, label);
    }

    // alice's password: admin of her namespace, writer in acme, a stranger in bob's.
    check(&node, &alice, "GET", "/v2/", 200, None, "alice");
    check(&node, &alice, "GET", &pull("alice/private"), 200, None, "alice");
    check(&node, &alice, "POST", &push("alice/private"), 202, None, "alice");
    check(&node, &alice, "DELETE", &delete("alice/private"), 404, Some("MANIFEST_UNKNOWN"), "alice");
    check(&node, &alice, "GET", &referrers("alice/private"), 200, None, "alice");
    check(&node, &alice, "GET", &pull("bob/private"), 403, DENIED, "alice");
    check(&node, &alice, "GET", &tags("bob/private"), 403, DENIED, "alice");
    check(&node, &alice, "POST", &push("bob/private"), 403, DENIED, "alice");
    check(&node, &alice, "GET", &pull("bob/public"), 200, None, "alice");
    check(&node, &alice, "POST", &push("bob/public"), 403, DENIED, "alice");
    check(&node, &alice, "DELETE", &delete("bob/public"), 403, DENIED, "alice");
    check(&node, &alice, "PUT", &tag("bob/public"), 403, DENIED, "alice");
    check(&node, &alice, "PUT", &tag("alice/public"), 201, None, "alice");
    check(&node, &alice, "GET", &pull("acme/app"), 200, None, "alice");
    check(&node, &alice, "POST", &push("acme/app"), 202, None, "alice");
    check(&node, &alice, "DELETE", &delete("acme/app"), 403, DENIED, "alice");
    check(&node, &alice, "POST", &push("newns/repo"), 403, DENIED, "alice");

    // alice's tokens are capped by their scope.
    check(&node, &read, "GET", &pull("alice/private"), 200, None, "read token");
    check(&node, &read, "POST", &push("alice/private"), 403, DENIED, "read token");
    check(&node, &read, "DELETE", &delete("alice/private"), 403, DENIED, "read token");
    check(&node, &read, "PUT", &tag("alice/private"), 403, DENIED, "read token");
    check(&node, &write, "POST", &push("alice/private"), 202, None, "write token");
    check(&node, &write, "DELETE", &delete("alice/private"), 403, DENIED, "write token");
    check(&node, &write, "POST", &push("acme/app"), 202, None, "write token");

    // An administrator may do anything.
    check(&node, &admin, "GET", &pull("bob/private"), 200, None, "admin");
    check(&node, &admin, "POST", &push("bob/private"), 202, None, "admin");
    check(&node, &admin, "DELETE", &delete("bob/private"), 404, Some("MANIFEST_UNKNOWN"), "admin");

    // The catalog lists what the caller may pull.
    let catalog = |who: &Who| -> Vec<String> {
        let v: serde_json::Value = send(client().get(node.url("/v2/_catalog")), who).json().unwrap();
        v["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(catalog(&alice), ["acme/app", "alice/private", "alice/public", "bob/public"]);
    assert_eq!(catalog(&Who::Basic("bob".into(), "bob-password".into())), ["alice/public", "bob/private", "bob/public"]);
    assert_eq!(catalog(&admin).len(), 5);

    // A mount never reveals a blob the caller cannot read: 202 (upload instead), not 201.
    let mount = |from: &str| format!("/v2/alice/mounted/blobs/uploads/?mount={blob}&from={from}");
    check(&node, &alice, "POST", &mount("bob/private"), 202, None, "alice mount from bob/private");
    check(&node, &alice, "POST", &format!("/v2/alice/mounted/blobs/uploads/?mount={blob}"), 202, None, "alice mount from anywhere");
    check(&node, &alice, "POST", &mount("bob/public"), 201, None, "alice mount from bob/public");
    check(&node, &alice, "POST", &mount("acme/app"), 201, None, "alice mount from acme/app");
}

fn jwt_payload(jwt: &str) -> serde_json::Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn get_token(node: &Node, who: &Who, scopes: &[&str], extra: &str) -> reqwest::blocking::Response {
    let q: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
    send(client().get(node.url(&format!("/token?service=af-registry{q}{extra}"))), who)
}

#[test]
fn the_docker_token_flow() {
    let World { node, manifest, .. } = world();
    let alice = Who::Basic("alice".into(), "alice-password".into());
    let challenge = |method: &str, path: &str| {
        let rb = match method {
            "GET" => client().get(node.url(path)),
            "DELETE" => client().delete(node.url(path)),
            _ => client().post(node.url(path)),
        };
        let r = rb.send().unwrap();
        assert_eq!(r.status(), 401);
        r.headers()["WWW-Authenticate"].to_str().unwrap().to_string()
    };
    let realm = format!("Bearer realm=\"http://{}/token\",service=\"af-registry\"", node.host());
    assert_eq!(challenge("GET", "/v2/"), realm);
    assert_eq!(challenge("GET", "/v2/alice/private/manifests/t"), format!("{realm},scope=\"repository:alice/private:pull,push\""));
    assert_eq!(challenge("POST", "/v2/alice/private/blobs/uploads/"), format!("{realm},scope=\"repository:alice/private:pull,push\""));
    assert_eq!(challenge("DELETE", "/v2/alice/private/manifests/t"), format!("{realm},scope=\"repository:alice/private:pull,push,delete\""));

    // GET /token: granted = requested ∩ permitted.
    let r = get_token(&node, &alice, &["repository:alice/private:pull,push", "repository:bob/private:pull", "repository:acme/app:pull"], "");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["Cache-Control"], "no-store");
    let t: serde_json::Value = r.json().unwrap();
    assert_eq!(t["token"], t["access_token"]);
    assert_eq!(t["expires_in"], 300);
    assert!(t["issued_at"].as_str().unwrap().ends_with('Z'));
    let jwt = t["token"].as_str().unwrap().to_string();
    let claims = jwt_payload(&jwt);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["access"],
        serde_json::json!([
            {"type": "repository", "name": "alice/private", "actions": ["pull", "push"]},
            {"type": "repository", "name": "acme/app", "actions": ["pull"]}
        ])
    );
    let bearer = Who::Bearer(jwt.clone());
    check(&node, &bearer, "GET", "/v2/alice/private/manifests/t", 200, None, "bearer");
    check(&node, &bearer, "POST", "/v2/alice/private/blobs/uploads/", 202, None, "bearer");
    check(&node, &bearer, "GET", "/v2/bob/private/manifests/t", 403, Some("DENIED"), "bearer");
    check(&node, &bearer, "GET", "/v2/bob/public/manifests/t", 200, None, "bearer, public");
    // Permitted to alice but not in this token: ask again with the scope.
    check(&node, &bearer, "POST", "/v2/acme/app/blobs/uploads/", 401, Some("UNAUTHORIZED"), "bearer, narrower scope");
    check(&node, &Who::Bearer(format!("{jwt}x")), "GET", "/v2/alice/private/manifests/t", 401, Some("UNAUTHORIZED"), "forged");

    // Anonymous tokens grant public pulls only.
    let t: serde_json::Value = get_token(&node, &Who::Anonymous, &["repository:alice/public:pull,push", "repository:alice/private:pull"], "").json().unwrap();
    assert_eq!(jwt_payload(t["token"].as_str().unwrap())["access"], serde_json::json!([{"type": "repository", "name": "alice/public", "actions": ["pull"]}]));
    let anon = Who::Bearer(t["token"].as_str().unwrap().to_string());
    check(&node, &anon, "GET", "/v2/alice/public/manifests/t", 200, None, "anonymous token");
    check(&node, &anon, "GET", "/v2/alice/private/manifests/t", 401, Some("UNAUTHORIZED"), "anonymous token");
    assert_eq!(get_token(&node, &Who::Basic("alice".into(), "nope".into()), &[], "").status(), 401);

    // Refresh tokens: offline_token=true, then the OAuth2 POST forms.
    let t: serde_json::Value = get_token(&node, &alice, &["repository:alice/private:pull"], "&offline_token=true&client_id=test").json().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let post = |form: &[(&str, &str)]| client().post(node.url("/token")).form(form).send().unwrap();
    let r = post(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", "af-registry"),
        ("scope", "repository:alice/private:pull,push"),
        ("client_id", "containerd"),
    ]);
    assert_eq!(r.status(), 200);
    let t: serde_json::Value = r.json().unwrap();
    assert_eq!(t["scope"], "repository:alice/private:pull,push");
    assert_eq!(t["refresh_token"], refresh.as_str());
    let from_refresh = Who::Bearer(t["access_token"].as_str().unwrap().to_string());
    let put = client().put(node.url("/v2/alice/private/manifests/refreshed")).header("Content-Type", OCI_MANIFEST).body(manifest.clone());
    assert_eq!(send(put, &from_refresh).status(), 201);
    let r = post(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-password"),
        ("service", "af-registry"),
        ("scope", "repository:acme/app:push repository:bob/private:pull"),
        ("access_type", "offline"),
    ]);
    assert_eq!(r.status(), 200);
    let t: serde_json::Value = r.json().unwrap();
    assert_eq!(t["scope"], "repository:acme/app:push");
    assert!(t["refresh_token"].as_str().unwrap().starts_with("af_"));
    assert_eq!(post(&[("grant_type", "password"), ("username", "alice"), ("password", "wrong")]).status(), 401);
    assert_eq!(post(&[("grant_type", "refresh_token"), ("refresh_token", "af_0123456789abcdef_not-a-real-secret-not-a-real-secret-xx")]).status(), 401);
    assert_eq!(post(&[("grant_type", "client_credentials")]).status(), 400);

    // Revocation takes effect at once, for the token and for JWTs minted from it.
    let pat = token(&node, "alice", &[]);
    let via_pat = Who::Basic("alice".into(), pat.clone());
    let t: serde_json::Value = get_token(&node, &via_pat, &["repository:alice/private:pull"], "").json().unwrap();
    let minted = Who::Bearer(t["token"].as_str().unwrap().to_string());
    check(&node, &via_pat, "GET", "/v2/alice/private/manifests/t", 200, None, "token");
    check(&node, &minted, "GET", "/v2/alice/private/manifests/t", 200, None, "minted");
    af(&node, &["registry", "token", "revoke", token_id(&pat)], None);
    check(&node, &via_pat, "GET", "/v2/alice/private/manifests/t", 401, Some("UNAUTHORIZED"), "revoked token");
    check(&node, &minted, "GET", "/v2/alice/private/manifests/t", 401, Some("UNAUTHORIZED"), "JWT of a revoked token");
    let listed = af(&node, &["registry", "token", "list", "--user", "alice"], None);
    assert!(listed.contains(&format!("{} alice access admin revoked", token_id(&pat))), "{listed}");
    // Removing a user ends its sessions too.
    let t: serde_json::Value = get_token(&node, &Who::Basic("bob".into(), "bob-password".into()), &["repository:bob/private:pull"], "").json().unwrap();
    af(&node, &["registry", "user", "remove", "bob"], None);
    check(&node, &Who::Bearer(t["token"].as_str().unwrap().to_string()), "GET", "/v2/bob/private/manifests/t", 401, Some("UNAUTHORIZED"), "removed user");

    // Failed logins are limited per user and address: the sixth attempt in a minute from the
    // guessing address is refused, even right.
    for _ in 0..5 {
        check(&node, &Who::Basic("frank".into(), "guess".into()), "GET", "/v2/", 401, Some("UNAUTHORIZED"), "guess");
    }
    let r = send(client().get(node.url("/v2/")), &Who::Basic("frank".into(), "frank-password".into()));
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["Retry-After"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    check(&node, &Who::Basic("carol".into(), "carol-password".into()), "GET", "/v2/", 200, None, "another user");

    // No secret in the log.
    let log = node.log_text();
    for secret in [ADMIN_PASSWORD, "alice-password", &pat, &refresh, &jwt] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn first_start_prints_a_bootstrap_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_af"))
            .env("AF_SWARM", "/ip4/127.0.0.1/tcp/0")
            .args(["registry", "serve", "--metrics", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--api", &addr.to_string(), "--data-dir"])
            .arg(dir.path())
            .env_remove("AF_ADMIN_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut node = start();
    let mut stdout = std::io::BufReader::new(node.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    let token = lines[1].clone();
    assert!(token.starts_with("af_"), "{lines:?}");
    let http = client();
    let url = format!("http://{addr}/v2/");
    for _ in 0..100 {
        if http.get(&url).send().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http.get(&url).basic_auth("admin", Some(&token)).send().unwrap().status(), 200);
    assert_eq!(http.get(&url).basic_auth("admin", Some("wrong")).send().unwrap().status(), 401);
    node.kill().unwrap();
    node.wait().unwrap();
    // A second start prints nothing: the administrator exists.
    let mut again = start();
    std::thread::sleep(Duration::from_millis(1500));
    again.kill().unwrap();
    let out = again.wait_with_output().unwrap();
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}
