//! The container image as an operator runs it on Akash: built from the Dockerfile, unchanged, by
//! scripts/build-image.sh (podman), then run with its ports published, a volume at /data and
//! `AF_ADMIN_PASSWORD` set; driven from outside by podman (login, push, pull), the node's own
//! client through podman's Docker-compatible API, skopeo, the gateway and Kubo over the swarm;
//! stopped as Akash stops it (SIGTERM, through tini) and started again on the same volume.
//! Needs root and podman, as CI has; `AF_TEST_NO_CONTAINER=1` skips it elsewhere.
//! `AF_TEST_IMAGE` names an image already built (scripts/test.sh builds it once).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "container test password";
/// What an Akash provider waits between SIGTERM and SIGKILL.
const AKASH_GRACE: Duration = Duration::from_secs(30);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The image under test: `AF_TEST_IMAGE`, or the one scripts/build-image.sh builds now.
fn image() -> String {
    if let Ok(image) = std::env::var("AF_TEST_IMAGE") {
        return image;
    }
    let image = format!("af-registry:{}", env!("CARGO_PKG_VERSION"));
    run(Command::new(root().join("scripts/build-image.sh")).arg(&image));
    image
}

/// Podman with this machine's settings (runc, no default rlimits; INTEROP), and everything the
/// test makes: the container, its volume, a Docker-compatible API socket, removed on drop.
struct Podman {
    dir: tempfile::TempDir,
    name: String,
    service: Option<Child>,
    /// Names the test gave images, taken off on drop (an image with another name keeps it).
    names: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("containers.conf"), "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n").unwrap();
        Podman { dir, name: format!("af-container-test-{}", std::process::id()), service: None, names: Default::default() }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        c
    }

    fn podman(&self, args: &[&str]) -> String {
        run(self.cmd().args(args))
    }

    /// Takes `image` off on drop.
    fn named(&self, image: &str) {
        self.names.borrow_mut().push(image.to_string());
    }

    fn authfile(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// `podman exec` in the container.
    fn exec(&self, args: &[&str]) -> String {
        run(self.cmd().args(["exec", &self.name]).args(args))
    }

    fn logs(&self) -> String {
        let out = self.cmd().args(["logs", &self.name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Waits until the image's HEALTHCHECK passes in the container.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.cmd().args(["healthcheck", "run", &self.name]).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success() {
            assert!(Instant::now() < deadline, "the HEALTHCHECK did not pass within 90 s; the container's log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `podman system service`: the Docker-compatible engine API `af registry push` exports from.
    fn engine(&mut self) -> String {
        let socket = self.dir.path().join("podman.sock");
        let child = self.cmd().args(["system", "service", "--time=0"]).arg(format!("unix://{}", socket.display())).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.service = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "podman system service made no socket");
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("unix://{}", socket.display())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
        let _ = self.cmd().args(["rm", "-f", "-t", "0", &self.name]).output();
        for image in self.names.borrow().iter() {
            let _ = self.cmd().args(["rmi", image]).output();
        }
        let _ = self.cmd().args(["volume", "rm", "-f", &self.name]).output();
    }
}

fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

#[test]
fn the_image_runs_as_akash_runs_it() {
    if std::env::var("AF_TEST_NO_CONTAINER").is_ok_and(|v| v == "1") {
        eprintln!("skipped: AF_TEST_NO_CONTAINER=1");
        return;
    }
    let image = image();
    let mut podman = Podman::new();
    let engine = podman.engine();
    let (api, gateway, swarm) = (free_addr().port(), free_addr().port(), free_addr().port());
    let registry = format!("127.0.0.1:{api}");

    // What the image says of itself is what the Akash SDL deploys: ports, volume, user.
    let config: serde_json::Value = serde_json::from_str(&podman.podman(&["image", "inspect", &image])).unwrap();
    let config = &config[0]["Config"];
    let exposed: Vec<&str> = config["ExposedPorts"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(exposed.len(), 4, "{exposed:?}");
    for port in ["5000/tcp", "8080/tcp", "4001/tcp", "4001/udp"] {
        assert!(exposed.contains(&port), "the image does not expose {port}: {exposed:?}");
    }
    assert!(config["Volumes"].as_object().unwrap().contains_key("/data"));
    assert_eq!(config["User"], "af", "the node runs unprivileged");
    let sdl = std::fs::read_to_string(root().join("akash/deploy.yaml")).unwrap();
    let sdl_image = sdl.lines().find_map(|l| l.trim().strip_prefix("image: ")).expect("the SDL names an image");
    assert!(sdl_image.ends_with(&format!("/{image}")), "the SDL deploys {sdl_image}, not the image built ({image})");

    // Run it as Akash does: ports published, persistent storage at /data, the admin password.
    podman.podman(&["volume", "create", &podman.name]);
    let publish = [format!("127.0.0.1:{api}:5000"), format!("127.0.0.1:{gateway}:8080"), format!("127.0.0.1:{swarm}:4001"), format!("127.0.0.1:{swarm}:4001/udp")];
    let mut run_args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), podman.name.clone()];
    for p in &publish {
        run_args.extend(["-p".into(), p.clone()]);
    }
    run_args.extend(["-v".into(), format!("{}:/data", podman.name), "-e".into(), format!("AF_ADMIN_PASSWORD={PASSWORD}"), image.clone()]);
    podman.podman(&run_args.iter().map(String::as_str).collect::<Vec<_>>());
    podman.wait_healthy();

    // docker login, then push and pull a small image through the running container.
    let work = tempfile::tempdir().unwrap();
    let content = xorshift_bytes(std::process::id() as u64, 300_000);
    std::fs::write(work.path().join("payload"), &content).unwrap();
    std::fs::write(work.path().join("Containerfile"), "FROM scratch\nCOPY payload /payload\n").unwrap();
    let local = format!("localhost/af-container-test-small:{}", std::process::id());
    podman.named(&local);
    podman.podman(&["build", "--quiet", "-t", &local, work.path().to_str().unwrap()]);
    let authfile = podman.authfile();
    let auth = ["--authfile", authfile.to_str().unwrap(), "--tls-verify=false"];
    podman.podman(&[&["login"][..], &auth, &["-u", "admin", "-p", PASSWORD, &registry]].concat());
    let remote = format!("{registry}/admin/small:1");
    podman.named(&remote);
    podman.podman(&[&["push", "--quiet"][..], &auth, &[&local, &remote]].concat());
    let built_id = podman.podman(&["image", "inspect", "--format", "{{.Id}}", &local]).trim().to_string();
    podman.podman(&["rmi", &local]);
    let pulled_back = |what: &str| {
        let _ = podman.cmd().args(["rmi", "-f", &remote]).output();
        podman.podman(&[&["pull", "--quiet"][..], &auth, &[&remote]].concat());
        let id = podman.podman(&["image", "inspect", "--format", "{{.Id}}", &remote]).trim().to_string();
        assert_eq!(id, built_id, "{what}: the image pulled back is not the one pushed");
        let holder = podman.podman(&["create", &remote, "/payload"]).trim().to_string();
        let out = work.path().join("payload.back");
        podman.podman(&["cp", &format!("{holder}:/payload"), out.to_str().unwrap()]);
        podman.podman(&["rm", &holder]);
        assert!(std::fs::read(&out).unwrap() == content, "{what}: the file in the image pulled back differs");
    };
    pulled_back("after the push");

    // The node's own client pushes the image of the node itself from the engine (podman's
    // Docker-compatible API); skopeo pulls it back, byte for byte what the engine holds.
    let tagged = format!("{registry}/admin/af-registry:{}", env!("CARGO_PKG_VERSION"));
    podman.podman(&["tag", &image, &tagged]);
    podman.named(&tagged);
    let docker_config = work.path().join("docker");
    let af = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_af"));
        c.args(args).env("DOCKER_HOST", &engine).env("DOCKER_CONFIG", &docker_config).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.unwrap_or("").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "af {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    af(&["registry", "login", &registry, "-u", "admin", "--password-stdin"], Some(PASSWORD));
    af(&["registry", "push", "--quiet", &tagged], None);
    let layout = work.path().join("layout");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--src-creds", &format!("admin:{PASSWORD}")])
        .arg(format!("docker://{tagged}"))
        .arg(format!("oci:{}:t", layout.display())));
    let engine_view: serde_json::Value = serde_json::from_str(&podman.podman(&["image", "inspect", &image])).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(config_digest.trim_start_matches("sha256:"), engine_view[0]["Id"].as_str().unwrap(), "the config pulled back is the engine's");
    let layers: Vec<String> = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    let diff_ids: Vec<String> = engine_view[0]["RootFS"]["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    assert_eq!(layers, diff_ids, "the layers pulled back are the engine's, uncompressed as pushed");
    for digest in layers.iter().chain([config_digest.to_string()].iter()) {
        assert_eq!(&sha256_file(&blob(digest)), digest, "skopeo's copy of {digest}");
    }

    // The small image's layer, made public, from the container's gateway by its CID.
    podman.exec(&["af", "registry", "visibility", "admin/small", "public"]);
    let manifest = client().get(format!("http://{registry}/v2/admin/small/manifests/1")).header("Accept", OCI_MANIFEST).header("Accept", DOCKER_MANIFEST).send().unwrap();
    assert_eq!(manifest.status(), 200, "a public image pulls anonymously");
    let manifest: serde_json::Value = manifest.json().unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let head = client().head(format!("http://{registry}/v2/admin/small/blobs/{layer}")).send().unwrap();
    let cid = header(&head, "Ipfs-Cid");
    assert!(cid.starts_with("baf"), "the layer has no CID: {:?}", head.headers());
    let from_gateway = |what: &str| {
        let r = client().get(format!("http://127.0.0.1:{gateway}/ipfs/{cid}")).send().unwrap();
        assert_eq!(r.status(), 200, "{what}: the gateway");
        assert_eq!(sha256(&r.bytes().unwrap()), layer, "{what}: the gateway's bytes are not the layer");
    };
    from_gateway("while running");

    // The swarm port answers libp2p: Kubo, outside, connects over TCP and QUIC and fetches the layer.
    // Its peer ID, from the start-up lines of its log (as an operator reads it in Akash's logs).
    let logs = podman.logs();
    let peer = logs.split_whitespace().find_map(|w| w.strip_prefix("peer_id=")).unwrap_or_else(|| panic!("no peer_id in the log:\n{logs}")).to_string();
    let peer = peer.as_str();
    let kubo = kubo_daemon::KuboDaemon::start();
    for addr in [format!("/ip4/127.0.0.1/tcp/{swarm}/p2p/{peer}"), format!("/ip4/127.0.0.1/udp/{swarm}/quic-v1/p2p/{peer}")] {
        let _ = kubo.ipfs(&["swarm", "disconnect", &format!("/p2p/{peer}")]);
        let out = kubo.ipfs(&["swarm", "connect", &addr]);
        assert!(out.status.success(), "Kubo could not connect to {addr}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = kubo.ipfs(&["cat", "--timeout", "60s", &cid]);
    assert!(out.status.success(), "Kubo could not fetch {cid} over the swarm: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256(&out.stdout), layer, "Kubo's copy of the layer");

    // Akash stops a container with SIGTERM (tini passes it on) and kills it after its grace.
    let stopping = Instant::now();
    podman.podman(&["stop", "-t", &AKASH_GRACE.as_secs().to_string(), &podman.name]);
    let took = stopping.elapsed();
    let exit = podman.podman(&["inspect", "--format", "{{.State.ExitCode}}", &podman.name]);
    assert_eq!(exit.trim(), "0", "the node's exit code on SIGTERM; its log:\n{}", podman.logs());
    assert!(took < AKASH_GRACE - Duration::from_secs(5), "stopping took {took:?}, near the Akash grace of {AKASH_GRACE:?}");
    assert!(podman.logs().contains("stopped"), "the node did not say it stopped gracefully:\n{}", podman.logs());

    // Started again on the same volume, it serves what was pushed.
    podman.podman(&["start", &podman.name]);
    podman.wait_healthy();
    pulled_back("after a restart on the same volume");
    from_gateway("after a restart");
    eprintln!("container: {image} stopped in {took:?} with exit 0, and served the same images after a restart");
}
