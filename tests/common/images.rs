//! Test images: built without a daemon by umoci, moved by skopeo, compared blob by blob.

use super::*;

/// Builds an OCI layout `<dir>/oci` holding image `t`: a 5 MiB incompressible file and a script.
pub fn build_image(dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    std::fs::write(dir.join("hello.sh"), "#!/bin/sh\necho hello\n").unwrap();
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci").args(["insert", "--image", &image]).arg(dir.join("big.bin")).arg("/big.bin"));
    run(Command::new("umoci").args(["insert", "--image", &image]).arg(dir.join("hello.sh")).arg("/hello.sh"));
    run(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/hello.sh"]));
    layout
}

pub fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy"]);
    c
}

/// skopeo copies image `t` of an OCI layout to `target` (`host/repo:tag`).
pub fn push_layout(layout: &Path, target: &str) {
    run(skopeo().args(["copy", "--dest-tls-verify=false"]).arg(format!("oci:{}:t", layout.display())).arg(format!("docker://{target}")));
}

/// A node holding the test image under `repo_tag`, built in `tmp` as the OCI layout `layout`.
pub struct Setup {
    pub node: Node,
    pub tmp: tempfile::TempDir,
    pub layout: PathBuf,
    pub host: String,
}

pub fn setup(repo_tag: &str) -> Setup {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_image(tmp.path());
    let host = node.host();
    push_layout(&layout, &format!("{host}/{repo_tag}"));
    Setup { node, tmp, layout, host }
}

/// The manifest digest the layout's index gives for `tag`.
pub fn layout_manifest_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .expect("tag in index.json")
}

/// Every blob reachable from `tag` in `pulled` is byte-identical to the original layout's.
pub fn assert_same_blobs(original: &Path, pulled: &Path, tag: &str) {
    let digest = layout_manifest_digest(pulled, tag);
    assert_eq!(digest, layout_manifest_digest(original, tag), "manifest digest changed in the round trip");
    let blob = |root: &Path, d: &str| std::fs::read(root.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest_bytes = blob(pulled, &digest);
    assert_eq!(manifest_bytes, blob(original, &digest));
    let m: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    digests.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for d in digests {
        let got = blob(pulled, &d);
        assert_eq!(sha256(&got), d);
        assert_eq!(got, blob(original, &d));
    }
}
