//! Real registry clients against a real node: skopeo, podman, regctl, crane, oras (Python) and
//! containerd's ctr. Images are built without a daemon by umoci. Every tool is installed by
//! scripts/install-test-deps.sh; a missing tool fails the test rather than skipping it.

mod common;
use common::images::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A containerd daemon of the test's own, stopped when dropped.
struct Containerd {
    child: std::process::Child,
    sock: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        let root = dir.join("containerd");
        let sock = root.join("containerd.sock");
        std::fs::create_dir_all(&root).unwrap();
        let config = root.join("config.toml");
        let text = format!("version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n", root.display(), sock.display());
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = Command::new("containerd").arg("--config").arg(&config).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start containerd");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Containerd { child, sock }
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.sock).args(["--namespace", "aftest"]);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn skopeo_round_trips_an_oci_layout_and_a_docker_archive() {
    let Setup { node: _node, tmp, layout, host } = setup("skopeo/oci:t");
    let back = tmp.path().join("back");
    run(skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{host}/skopeo/oci:t")).arg(format!("oci:{}:t", back.display())));
    assert_same_blobs(&layout, &back, "t");
    let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{host}/skopeo/oci:t")));
    assert_eq!(sha256(raw.as_bytes()), layout_manifest_digest(&layout, "t"));

    // docker-archive: pushed (skopeo converts it to a Docker schema 2 image) and pulled back.
    let archive = tmp.path().join("a.tar");
    run(skopeo().args(["copy"]).arg(format!("oci:{}:t", layout.display())).arg(format!("docker-archive:{}:skopeo/archive:t", archive.display())));
    run(skopeo().args(["copy", "--dest-tls-verify=false"]).arg(format!("docker-archive:{}", archive.display())).arg(format!("docker://{host}/skopeo/archive:t")));
    let pulled = tmp.path().join("b.tar");
    run(skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{host}/skopeo/archive:t")).arg(format!("docker-archive:{}:skopeo/archive:t", pulled.display())));
    assert!(std::fs::read(&archive).unwrap() == std::fs::read(&pulled).unwrap(), "docker-archive differs after the round trip");
    let tags = run(skopeo().args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{host}/skopeo/archive")));
    assert!(tags.contains("\"t\""), "{tags}");
}

#[test]
fn podman_pulls_pushes_and_pushes_a_manifest_list() {
    let Setup { node, tmp, layout: _, host } = setup("podman/src:t");
    let podman = || {
        let mut c = Command::new("podman");
        c.args(["--storage-driver", "vfs", "--root"]).arg(tmp.path().join("root")).arg("--runroot").arg(tmp.path().join("runroot"));
        c
    };
    run(podman().args(["pull", "--tls-verify=false", &format!("{host}/podman/src:t")]));
    run(podman().args(["push", "--tls-verify=false", &format!("{host}/podman/src:t"), &format!("{host}/podman/pushed:t")]));
    let digest = run(skopeo().args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"]).arg(format!("docker://{host}/podman/pushed:t")));
    assert!(digest.trim().starts_with("sha256:"), "{digest}");

    let list = format!("{host}/podman/list:multi");
    run(podman().args(["manifest", "create", &list]));
    run(podman().args(["manifest", "add", "--tls-verify=false", &list, &format!("docker://{host}/podman/src:t")]));
    run(podman().args(["manifest", "push", "--all", "--tls-verify=false", &list, &format!("docker://{list}")]));
    let r = client()
        .get(node.url("/v2/podman/list/manifests/multi"))
        .header("Accept", format!("{OCI_INDEX}, application/vnd.docker.distribution.manifest.list.v2+json"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["Content-Type"].to_str().unwrap().to_string();
    assert!(ct == OCI_INDEX || ct == "application/vnd.docker.distribution.manifest.list.v2+json", "{ct}");
    let index: serde_json::Value = r.json().unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn regctl_and_crane_copy_and_referrers() {
    let Setup { node: _node, tmp, layout, host } = setup("tools/src:t");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let regctl = || {
        let mut c = Command::new(tool("regctl"));
        c.env("HOME", &home);
        c
    };
    run(regctl().args(["registry", "set", "--tls", "disabled", &host]));
    run(regctl().args(["image", "copy", &format!("{host}/tools/src:t"), &format!("{host}/tools/regctl:t")]));
    let want = layout_manifest_digest(&layout, "t");
    assert_eq!(run(regctl().args(["image", "digest", &format!("{host}/tools/regctl:t")])).trim(), want);

    // An artifact with a subject, then the referrers API through regctl.
    std::fs::write(tmp.path().join("sbom.json"), "{\"sbom\":true}\n").unwrap();
    run(regctl()
        .args(["artifact", "put", "--subject", &format!("{host}/tools/regctl:t")])
        .args(["--artifact-type", "application/vnd.example.sbom.v1+json", "--file-media-type", "application/json", "--file"])
        .arg(tmp.path().join("sbom.json"))
        .arg(format!("{host}/tools/regctl")));
    let listed = run(regctl().args(["artifact", "list", &format!("{host}/tools/regctl:t"), "--format", "{{json .}}"]));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let descriptors = v["descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), 1, "{listed}");
    assert_eq!(descriptors[0]["artifactType"], "application/vnd.example.sbom.v1+json");
    let filtered = run(regctl().args(["artifact", "list", &format!("{host}/tools/regctl:t"), "--filter-artifact-type", "application/other", "--format", "{{json .}}"]));
    let v: serde_json::Value = serde_json::from_str(&filtered).unwrap();
    assert!(v["descriptors"].as_array().is_none_or(|d| d.is_empty()), "{filtered}");

    let crane = || {
        let mut c = Command::new(tool("crane"));
        c.env("HOME", &home);
        c
    };
    run(crane().args(["copy", "--insecure", &format!("{host}/tools/src:t"), &format!("{host}/tools/crane:t")]));
    assert_eq!(run(crane().args(["digest", "--insecure", &format!("{host}/tools/crane:t")])).trim(), want);
    let tags = run(crane().args(["ls", "--insecure", &format!("{host}/tools/crane")]));
    assert_eq!(tags.trim(), "t");
}

#[test]
fn oras_python_pushes_and_pulls_an_artifact() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
import filecmp, os, sys
import oras.client
host, work = sys.argv[1], sys.argv[2]
os.chdir(work)
with open("artifact.bin", "wb") as f:
    f.write(os.urandom(300000))
c = oras.client.OrasClient(hostname=host, insecure=True)
r = c.push(target=f"{host}/oras/artifact:v1", files=["artifact.bin"])
assert r.status_code == 201, r.status_code
os.makedirs("pulled")
files = c.pull(target=f"{host}/oras/artifact:v1", outdir="pulled")
assert len(files) == 1 and filecmp.cmp("artifact.bin", files[0], shallow=False), files
print("ok")
"#;
    let out = run(Command::new("python3").arg("-c").arg(script).arg(node.host()).arg(tmp.path()).env("HOME", tmp.path()));
    assert_eq!(out.trim(), "ok");
}

#[test]
fn containerd_ctr_pulls_and_pushes() {
    let Setup { node: _node, tmp, layout, host } = setup("ctr/src:t");
    let target = Node::start();
    let containerd = Containerd::start(tmp.path());
    let ctr = || containerd.ctr();
    let src = format!("{host}/ctr/src:t");
    run(ctr().args(["image", "pull", "--plain-http", &src]));
    let dst = format!("{}/ctr/pushed:t", target.host());
    run(ctr().args(["image", "tag", &src, &dst]));
    run(ctr().args(["image", "push", "--plain-http", &dst]));
    let want = layout_manifest_digest(&layout, "t");
    let r = client().head(target.url("/v2/ctr/pushed/manifests/t")).header("Accept", OCI_MANIFEST).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["Docker-Content-Digest"].to_str().unwrap(), want);
    // Every layer crossed to the second node byte for byte.
    let back = tmp.path().join("back");
    run(skopeo().args(["copy", "--src-tls-verify=false"]).arg(format!("docker://{dst}")).arg(format!("oci:{}:t", back.display())));
    assert_same_blobs(&layout, &back, "t");
}

/// With authentication on (the default): every client logs in the way CI pipelines do, with a
/// user's password or an access token, through the Docker token flow.
#[test]
fn clients_log_in_to_an_authenticated_node() {
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let host = node.host();
    let tmp = tempfile::tempdir().unwrap();
    let af = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_af"))
            .args(args)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    af(&["registry", "user", "add", "ci"], "ci-password\n");
    let token = af(&["registry", "token", "create", "--user", "ci", "--scope", "write"], "");
    let layout = build_image(tmp.path());
    let creds = "ci:ci-password";

    // skopeo: --creds for the push, then login (an auth file) for the pull.
    let without = skopeo().args(["inspect", "--tls-verify=false"]).arg(format!("docker://{host}/ci/app:t")).output().unwrap();
    assert!(!without.status.success());
    run(skopeo().args(["copy", "--dest-tls-verify=false", "--dest-creds", creds]).arg(format!("oci:{}:t", layout.display())).arg(format!("docker://{host}/ci/app:t")));
    let authfile = tmp.path().join("auth.json");
    run(skopeo().args(["login", "--tls-verify=false", "-u", "ci", "--password-stdin", "--authfile"]).arg(&authfile).arg(&host).stdin(
        std::fs::File::open({
            let p = tmp.path().join("pw");
            std::fs::write(&p, &token).unwrap();
            p
        })
        .unwrap(),
    ));
    let back = tmp.path().join("back");
    run(skopeo().args(["copy", "--src-tls-verify=false", "--authfile"]).arg(&authfile).arg(format!("docker://{host}/ci/app:t")).arg(format!("oci:{}:t", back.display())));
    assert_same_blobs(&layout, &back, "t");

    // podman login, pull, push.
    let podman = || {
        let mut c = Command::new("podman");
        c.args(["--storage-driver", "vfs", "--root"]).arg(tmp.path().join("root")).arg("--runroot").arg(tmp.path().join("runroot"));
        c.env("REGISTRY_AUTH_FILE", tmp.path().join("podman-auth.json"));
        c
    };
    run(podman().args(["login", "--tls-verify=false", "-u", "ci", "-p", &token, &host]));
    run(podman().args(["pull", "--tls-verify=false", &format!("{host}/ci/app:t")]));
    run(podman().args(["push", "--tls-verify=false", &format!("{host}/ci/app:t"), &format!("{host}/ci/podman:t")]));

    // crane and regctl log in, then copy and read.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let with_home = |name: &str| {
        let mut c = Command::new(tool(name));
        c.env("HOME", &home).env("DOCKER_CONFIG", home.join(".docker"));
        c
    };
    run(with_home("crane").args(["auth", "login", "--insecure", &host, "-u", "ci", "-p", "ci-password"]));
    run(with_home("crane").args(["copy", "--insecure", &format!("{host}/ci/app:t"), &format!("{host}/ci/crane:t")]));
    run(with_home("regctl").args(["registry", "set", "--tls", "disabled", &host]));
    run(with_home("regctl").args(["registry", "login", &host, "-u", "ci", "-p", &token]));
    let want = layout_manifest_digest(&layout, "t");
    assert_eq!(run(with_home("regctl").args(["image", "digest", &format!("{host}/ci/crane:t")])).trim(), want);

    // oras (Python) with a username and token.
    let script = r#"
import os, sys
import oras.client
host, work, token = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir(work)
with open("artifact.bin", "wb") as f:
    f.write(os.urandom(100000))
c = oras.client.OrasClient(hostname=host, insecure=True)
c.login(username="ci", password=token, hostname=host, tls_verify=False)
r = c.push(target=f"{host}/ci/artifact:v1", files=["artifact.bin"])
assert r.status_code == 201, r.status_code
os.makedirs("pulled")
files = c.pull(target=f"{host}/ci/artifact:v1", outdir="pulled")
assert open(files[0], "rb").read() == open("artifact.bin", "rb").read()
print("ok")
"#;
    let out = run(Command::new("python3").arg("-c").arg(script).arg(&host).arg(tmp.path()).arg(&token).env("HOME", &home));
    assert_eq!(out.trim(), "ok");

    // containerd's ctr with --user.
    let containerd = Containerd::start(tmp.path());
    let ctr = || containerd.ctr();
    let pulled = ctr().args(["image", "pull", "--plain-http", "--user", creds, &format!("{host}/ci/app:t")]).output().unwrap();
    let anonymous = ctr().args(["image", "pull", "--plain-http", &format!("{host}/ci/podman:t")]).output().unwrap();
    drop(containerd);
    assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
    assert!(!anonymous.status.success(), "a private image was pulled without credentials");
}

/// Runs `cmd` with `stdin` as its input: its output, whatever its status.
fn output_with_stdin(mut cmd: Command, stdin: &str) -> std::process::Output {
    let mut child = cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The `af registry` client commands against a node with authentication on: login (kept where
/// Docker keeps it: skopeo reads it back), list and info (checked against what the registry
/// says), tag, delete, logout, and the one-line errors for a bad reference, a wrong password,
/// an unknown tag and a missing login.
#[test]
fn af_client_commands_work_against_an_authenticated_node() {
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let host = node.host();
    let tmp = tempfile::tempdir().unwrap();
    let docker_config = tmp.path().join("docker");
    let af = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_af"));
        cmd.args(args)
            .env("DOCKER_CONFIG", &docker_config)
            .env("HOME", tmp.path())
            .env("XDG_CONFIG_HOME", tmp.path().join("xdg"))
            .env("AF_DATA_DIR", &node.data_dir)
            .env_remove("AF_REGISTRY");
        output_with_stdin(cmd, stdin)
    };
    let text = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).to_string();
    let fails_with = |out: std::process::Output, needle: &str| {
        assert!(!out.status.success(), "should have failed: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("af: ") && err.contains(needle), "{err:?} does not say {needle:?}");
    };
    assert!(af(&["registry", "user", "add", "ci"], "ci-password\n").status.success());
    let layout = build_image(tmp.path());
    run(skopeo().args(["copy", "--dest-tls-verify=false", "--dest-creds", "ci:ci-password"]).arg(format!("oci:{}:t", layout.display())).arg(format!("docker://{host}/ci/app:t")));
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", "admin:admin-password-1"])
        .arg(format!("oci:{}:t", layout.display()))
        .arg(format!("docker://{host}/admin/secret:t")));

    fails_with(af(&["registry", "login", &host, "-u", "ci", "--password-stdin"], "wrong\n"), "refused");
    let out = af(&["registry", "login", &host, "-u", "ci", "--password-stdin"], "ci-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = Command::new("skopeo").args(["login", "--get-login", "--authfile"]).arg(docker_config.join("config.json")).arg(&host).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "ci", "{}", String::from_utf8_lossy(&got.stderr));

    // What the registry itself says of the image.
    let manifest = client().get(node.url("/v2/ci/app/manifests/t")).basic_auth("ci", Some("ci-password")).header("Accept", OCI_MANIFEST).send().unwrap();
    let image_cid = manifest.headers()["Ipfs-Image-Cid"].to_str().unwrap().to_string();
    let digest = manifest.headers()["Docker-Content-Digest"].to_str().unwrap().to_string();
    let manifest_bytes = manifest.bytes().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let size = doc["config"]["size"].as_u64().unwrap() + doc["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum::<u64>();

    let out = af(&["registry", "list", "--json", "--registry", &host], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "ci reads only its own repository: {rows:?}");
    assert_eq!((rows[0]["repository"].as_str(), rows[0]["tag"].as_str()), (Some("ci/app"), Some("t")));
    assert_eq!(rows[0]["imageCid"], image_cid.as_str());
    assert_eq!(rows[0]["digest"], digest.as_str());
    assert_eq!(rows[0]["size"].as_u64(), Some(size));
    assert!(rows[0]["created"].as_str().is_some(), "{rows:?}");
    let table = text(&af(&["registry", "list", "ci", "--registry", &host], ""));
    assert!(table.lines().next().unwrap().starts_with("REPOSITORY") && table.contains(&image_cid), "{table}");
    // The registry as `login` takes it, positional, alone or with the namespace.
    for given in [host.clone(), format!("{host}/ci")] {
        let table = text(&af(&["registry", "list", &given], ""));
        assert!(table.contains(&image_cid), "list {given}: {table}");
    }

    let out = af(&["registry", "info", &format!("{host}/ci/app:t"), "--json", "--gateway-url", "http://127.0.0.1:8080"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(info["digest"], digest.as_str());
    assert_eq!(info["imageCid"], image_cid.as_str());
    assert_eq!(info["gatewayUrl"], format!("http://127.0.0.1:8080/ipfs/{image_cid}/"));
    assert_eq!(info["size"].as_u64(), Some(size));
    let layers = info["layers"].as_array().unwrap();
    assert_eq!(layers.len(), doc["layers"].as_array().unwrap().len());
    for layer in layers {
        let head = client().head(node.url(&format!("/v2/ci/app/blobs/{}", layer["digest"].as_str().unwrap()))).basic_auth("ci", Some("ci-password")).send().unwrap();
        assert_eq!(layer["cid"], head.headers()["Ipfs-Cid"].to_str().unwrap());
    }
    let raw = af(&["registry", "info", &format!("{host}/ci/app:t"), "--raw"], "");
    assert_eq!(raw.stdout, manifest_bytes.to_vec(), "--raw gives the manifest byte for byte");

    // Short references resolve against --registry (or AF_REGISTRY).
    assert!(af(&["registry", "tag", "ci/app:t", "ci/app:v2", "--registry", &host], "").status.success());
    assert!(af(&["registry", "tag", "ci/app:t", "ci/copy:t", "--registry", &host], "").status.success());
    let copied = client().get(node.url("/v2/ci/copy/manifests/t")).basic_auth("ci", Some("ci-password")).header("Accept", OCI_MANIFEST).send().unwrap();
    assert_eq!(copied.headers()["Docker-Content-Digest"].to_str().unwrap(), digest);
    run(skopeo().args(["inspect", "--tls-verify=false", "--creds", "ci:ci-password"]).arg(format!("docker://{host}/ci/copy:t")));
    assert!(af(&["registry", "delete", "ci/app:v2", "--registry", &host], "").status.success());
    let tags: serde_json::Value = client().get(node.url("/v2/ci/app/tags/list")).basic_auth("ci", Some("ci-password")).send().unwrap().json().unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["t"]));

    // push --from and pull --to an OCI layout: skopeo reads back what af pushed, and what af
    // pulled is the pushed image byte for byte.
    let out = af(&["registry", "push", "ci/pushed:t", "--from", &format!("oci:{}:t", layout.display()), "--registry", &host], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text(&out).starts_with(&format!("Pushed {host}/ci/pushed:t: sha256:")), "{}", text(&out));
    let back = tmp.path().join("back");
    run(skopeo().args(["copy", "--src-tls-verify=false", "--src-creds", "ci:ci-password"]).arg(format!("docker://{host}/ci/pushed:t")).arg(format!("oci:{}:t", back.display())));
    assert_same_blobs(&layout, &back, "t");
    let again = af(&["registry", "push", "ci/pushed:t", "--from", &format!("oci:{}:t", layout.display()), "--registry", &host], "");
    assert!(again.status.success() && !String::from_utf8_lossy(&again.stderr).contains(" done"), "every blob is already there: {}", String::from_utf8_lossy(&again.stderr));
    let pulled = tmp.path().join("pulled");
    let out = af(&["registry", "pull", &format!("{host}/ci/app:t"), "--to", &format!("oci:{}", pulled.display())], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_blobs(&layout, &pulled, "t");
    run(skopeo().arg("inspect").arg(format!("oci:{}:t", pulled.display())));
    // docker-archive: pulled (layers decompressed, checked against the config's diff IDs),
    // read by skopeo, pushed back, pulled again: the same config and layer tars, byte for byte.
    let archive = tmp.path().join("app.tar");
    let out = af(&["registry", "pull", &format!("{host}/ci/app:t"), "--to", &format!("docker-archive:{}", archive.display())], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inspected: serde_json::Value = serde_json::from_str(&run(skopeo().arg("inspect").arg(format!("docker-archive:{}", archive.display())))).unwrap();
    let config_digest = doc["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(config_digest.trim_start_matches("sha256:"))).unwrap()).unwrap();
    assert_eq!(inspected["Layers"], config["rootfs"]["diff_ids"], "the archive's layers are the image's diff IDs");
    let out = af(&["registry", "push", "ci/from-archive:t", "--from", &format!("docker-archive:{}", archive.display()), "--registry", &host], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run(skopeo().args(["inspect", "--tls-verify=false", "--creds", "ci:ci-password"]).arg(format!("docker://{host}/ci/from-archive:t")));
    let again = tmp.path().join("again.tar");
    let out = af(&["registry", "pull", &format!("{host}/ci/from-archive:t"), "--to", &format!("docker-archive:{}", again.display())], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unpack = |file: &Path, into: &str| {
        let dir = tmp.path().join(into);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("tar").arg("-xf").arg(file).arg("-C").arg(&dir));
        dir
    };
    let (first, second) = (unpack(&archive, "unpacked1"), unpack(&again, "unpacked2"));
    let mut names: Vec<String> = std::fs::read_dir(&first).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n != "manifest.json").collect();
    names.sort();
    assert_eq!(names.len(), 1 + doc["layers"].as_array().unwrap().len(), "{names:?}");
    for name in &names {
        assert_eq!(std::fs::read(first.join(name)).unwrap(), std::fs::read(second.join(name)).unwrap(), "{name} changed in the round trip");
    }
    fails_with(af(&["registry", "push", "ci/x:t", "--from", "oci:/nonexistent", "--registry", &host], ""), "/nonexistent");
    fails_with(af(&["registry", "pull", "ci/app:t", "--to", "docker-daemon:app:t", "--registry", &host], ""), "give oci:DIR");

    fails_with(af(&["registry", "info", "Bad/Name:t", "--registry", &host], ""), "is not an image reference");
    fails_with(af(&["registry", "info", "ci/app:nope", "--registry", &host], ""), "see af registry list");
    fails_with(af(&["registry", "info", "ci/app:t"], ""), "--registry");
    assert!(af(&["registry", "logout", &host], "").status.success());
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(docker_config.join("config.json")).unwrap()).unwrap();
    assert!(config["auths"].get(&host).is_none(), "{config}");
    fails_with(af(&["registry", "info", "ci/app:t", "--registry", &host], ""), "run af registry login");
}

/// A Docker config that names a credential helper (`credsStore`): `af registry login` stores
/// through it (nothing secret in config.json), later commands get the login from it, logout
/// erases it.
#[test]
fn af_logins_go_through_a_credential_helper_when_docker_config_names_one() {
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let host = node.host();
    let tmp = tempfile::tempdir().unwrap();
    let (bin, store, docker_config) = (tmp.path().join("bin"), tmp.path().join("store"), tmp.path().join("docker"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&docker_config).unwrap();
    // A helper of the test's own, speaking the credential-helper protocol, keeping one file per
    // server.
    let helper = bin.join("docker-credential-testhelper");
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
set -e
store={store}
case "$1" in
  store) input=$(cat); server=$(printf '%s' "$input" | jq -r .ServerURL); printf '%s' "$input" > "$store/$(printf '%s' "$server" | tr ':/' '__')" ;;
  get) server=$(cat); f="$store/$(printf '%s' "$server" | tr ':/' '__')"; if [ -f "$f" ]; then jq -c '{{Username, Secret}}' "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) server=$(cat); f="$store/$(printf '%s' "$server" | tr ':/' '__')"; if [ -f "$f" ]; then rm "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#,
            store = store.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(docker_config.join("config.json"), r#"{"credsStore": "testhelper"}"#).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let af = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_af"));
        cmd.args(args).env("DOCKER_CONFIG", &docker_config).env("PATH", &path);
        output_with_stdin(cmd, stdin)
    };
    let out = af(&["registry", "login", &host, "-u", "admin", "--password-stdin"], "admin-password-1\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = std::fs::read_to_string(docker_config.join("config.json")).unwrap();
    assert!(!config.contains("admin-password-1") && !config.contains("\"auth\""), "the secret went to the helper, not the file: {config}");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 1, "the helper stored one login");
    let listed = af(&["registry", "list", "--json", "--registry", &host], "");
    assert!(listed.status.success(), "the login came back from the helper: {}", String::from_utf8_lossy(&listed.stderr));
    assert!(af(&["registry", "logout", &host], "").status.success());
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0, "logout erased it from the helper");
}

/// podman's Docker-compatible API service on a socket of the test's own, with its own storage;
/// stopped when dropped.
struct PodmanService {
    child: std::process::Child,
    root: PathBuf,
    sock: PathBuf,
}

impl PodmanService {
    fn start(dir: &Path) -> PodmanService {
        let root = dir.join("podman");
        let sock = root.join("podman.sock");
        std::fs::create_dir_all(&root).unwrap();
        let log = std::fs::File::create(root.join("service.log")).unwrap();
        let mut command = Command::new("podman");
        command.args(["--storage-driver", "vfs", "--root"]).arg(root.join("root")).arg("--runroot").arg(root.join("run"));
        let child = command
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start podman system service (is podman installed?)");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(sock.exists(), "podman system service made no socket");
        PodmanService { child, root, sock }
    }

    /// A podman, buildah (`tool`) on the service's storage.
    fn tool(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(["--storage-driver", "vfs", "--root"]).arg(self.root.join("root")).arg("--runroot").arg(self.root.join("run"));
        c
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// `podman image inspect`: the image's Id and its layers' diff IDs.
    fn image(&self, name: &str) -> (String, Vec<String>) {
        let v: serde_json::Value = serde_json::from_str(&run(self.tool("podman").args(["image", "inspect", name]))).unwrap();
        let layers = v[0]["RootFS"]["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
        (format!("sha256:{}", v[0]["Id"].as_str().unwrap().trim_start_matches("sha256:")), layers)
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `af registry push` from, and `pull` into, the local engine through the Docker Engine API,
/// with podman's compatible service as the engine: the image the registry gets is the engine's
/// (config digest = image ID, layers = diff IDs), a second push sends nothing, a layer the
/// registry holds in another repository the engine's image came from is mounted, `--all-tags`
/// pushes every tag, a pulled image loads with the same ID and layers, and a 96 MiB layer
/// streams through a client far smaller than it.
#[test]
fn af_pushes_from_and_pulls_into_the_engine_through_its_api() {
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let host = node.host();
    let tmp = tempfile::tempdir().unwrap();
    let engine = PodmanService::start(tmp.path());
    let docker_config = tmp.path().join("docker");
    let af = |args: &[&str], docker_host: &str| {
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "maxrss_kib=%M", env!("CARGO_BIN_EXE_af")])
            .args(args)
            .args(["--registry", &host])
            .env("DOCKER_CONFIG", &docker_config)
            .env("DOCKER_HOST", docker_host)
            .env("AF_DATA_DIR", &node.data_dir);
        output_with_stdin(cmd, "")
    };
    let texts = |out: &std::process::Output| (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    let ok = |out: std::process::Output| {
        let (o, e) = texts(&out);
        assert!(out.status.success(), "stdout: {o}\nstderr: {e}");
        (o, e)
    };
    assert!(output_with_stdin(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_af"));
            c.args(["registry", "user", "add", "ci"]).env("AF_DATA_DIR", &node.data_dir);
            c
        },
        "ci-password\n"
    )
    .status
    .success());
    let login = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_af"));
        c.args(["registry", "login", &host, "-u", "ci", "--password-stdin"]).env("DOCKER_CONFIG", &docker_config);
        output_with_stdin(c, "ci-password\n")
    };
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));

    // Two images in the engine's storage: v1 with one small layer, v2 adding a 96 MiB one.
    let big = tmp.path().join("big.bin");
    let mut bytes = vec![0u8; 96 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&big, &bytes).unwrap();
    drop(bytes);
    std::fs::write(tmp.path().join("small.txt"), "hello from the engine\n").unwrap();
    let working = run(engine.tool("buildah").args(["from", "scratch"])).trim().to_string();
    run(engine.tool("buildah").args(["copy", &working]).arg(tmp.path().join("small.txt")).arg("/small.txt"));
    run(engine.tool("buildah").args(["config", "--cmd", "/small.txt", &working]));
    run(engine.tool("buildah").args(["commit", "-q", &working, "ci/app:v1"]));
    let working = run(engine.tool("buildah").args(["from", "ci/app:v1"])).trim().to_string();
    run(engine.tool("buildah").args(["copy", &working]).arg(&big).arg("/big.bin"));
    run(engine.tool("buildah").args(["commit", "-q", &working, "ci/app:v2"]));
    let (v1_id, v1_layers) = engine.image("ci/app:v1");
    let (v2_id, v2_layers) = engine.image("ci/app:v2");
    assert_eq!((v1_layers.len(), v2_layers.len()), (1, 2));

    let registry_manifest = |reference: &str| -> serde_json::Value {
        serde_json::from_str(&run(skopeo().args(["inspect", "--raw", "--tls-verify=false", "--creds", "ci:ci-password"]).arg(format!("docker://{host}/{reference}")))).unwrap()
    };
    let is_engines = |manifest: &serde_json::Value, id: &str, layers: &[String]| {
        assert_eq!(manifest["config"]["digest"], id, "the config is the engine's, byte for byte");
        let digests: Vec<&str> = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
        assert_eq!(digests, layers, "the layers are the engine's, byte for byte");
    };

    let docker_host = engine.docker_host();
    let (out, err) = ok(af(&["registry", "push", "ci/app:v2"], &docker_host));
    assert!(out.starts_with(&format!("Pushed {host}/ci/app:v2: sha256:")), "{out}");
    is_engines(&registry_manifest("ci/app:v2"), &v2_id, &v2_layers);
    let rss: u64 = err.lines().find_map(|l| l.strip_prefix("maxrss_kib=")).unwrap().parse().unwrap();
    eprintln!("af registry push of a 96 MiB layer from the engine: peak RSS {rss} KiB");
    assert!(rss < 48 << 10, "pushing a 96 MiB layer took {rss} KiB: it was held in memory");

    let (_, err) = ok(af(&["registry", "push", "ci/app:v2"], &docker_host));
    assert!(!err.contains(" done") && err.matches("already there").count() == 3, "a second push sends nothing: {err}");

    let (out, err) = ok(af(&["registry", "push", "--all-tags", "ci/app"], &docker_host));
    assert_eq!(out.lines().filter(|l| l.starts_with("Pushed ")).count(), 2, "{out}");
    assert!(out.contains(&format!("Pushed {host}/ci/app:v1")) && out.contains(&format!("Pushed {host}/ci/app:v2")), "{out}");
    assert!(err.matches(" done").count() == 1 && err.matches("already there").count() == 4, "only v1's config was new (its layer is v2's first): {err}");
    is_engines(&registry_manifest("ci/app:v1"), &v1_id, &v1_layers);
    // A full reference finds the engine's image built without the registry's name too.
    let (_, err) = ok(af(&["registry", "push", &format!("{host}/ci/app:v1")], &docker_host));
    assert!(!err.contains(" done"), "{err}");

    // The engine pulls v2 from the registry (so it knows the image came from ci/app there) and
    // tags it for another repository: pushing that mounts every blob instead of sending it.
    run(engine.tool("podman").args(["pull", "--tls-verify=false", "--creds", "ci:ci-password", &format!("{host}/ci/app:v2")]));
    run(engine.tool("podman").args(["tag", &format!("{host}/ci/app:v2"), &format!("{host}/ci/mounted:v2")]));
    let (out, err) = ok(af(&["registry", "push", &format!("{host}/ci/mounted:v2")], &docker_host));
    assert!(!err.contains(" done") && err.matches("already there").count() == 3, "mounted, not sent: {err}");
    assert!(out.contains("0 B moved"), "{out}");
    is_engines(&registry_manifest("ci/mounted:v2"), &v2_id, &v2_layers);

    // Pulled into the engine: the same image ID and layers, under the registry's name.
    run(engine.tool("podman").args(["rmi", "-f", &format!("{host}/ci/app:v2"), &format!("{host}/ci/mounted:v2"), "ci/app:v2"]));
    let (out, err) = ok(af(&["registry", "pull", "ci/app:v2"], &docker_host));
    assert!(out.contains(&format!("Loaded image: {host}/ci/app:v2")) || out.contains(&format!("Loaded image(s): {host}/ci/app:v2")), "{out}");
    assert_eq!(engine.image(&format!("{host}/ci/app:v2")), (v2_id.clone(), v2_layers.clone()));
    let rss: u64 = err.lines().find_map(|l| l.strip_prefix("maxrss_kib=")).unwrap().parse().unwrap();
    eprintln!("af registry pull of a 96 MiB layer into the engine: peak RSS {rss} KiB");
    assert!(rss < 48 << 10, "pulling a 96 MiB layer into the engine took {rss} KiB");

    // One-line errors that say what to do.
    let fails_with = |out: std::process::Output, needle: &str| {
        let (o, e) = texts(&out);
        assert!(!out.status.success(), "should have failed: {o}");
        let e: Vec<&str> = e.lines().filter(|l| !l.starts_with("maxrss_kib=") && !l.starts_with("Command exited")).collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("af: ") && e[0].contains(needle), "{:?} does not say {needle:?}", e[0]);
    };
    fails_with(af(&["registry", "push", "ci/none:v1"], &docker_host), "no image \"ci/none:v1\" in the local engine");
    let gone = format!("unix://{}", tmp.path().join("no.sock").display());
    fails_with(af(&["registry", "push", "ci/app:v1"], &gone), "cannot reach the engine");
    fails_with(af(&["registry", "pull", "ci/app:v1"], &gone), "cannot reach the engine");
    fails_with(af(&["registry", "push", "--all-tags", "ci/app:v1"], &docker_host), "without a tag");
}
