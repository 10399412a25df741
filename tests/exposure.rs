//! What may leave the node through the gateway and an RPC bound beyond loopback: every block a
//! response contains or a path passes through is judged on its own, so an identity CID (whose
//! bytes the caller wrote) or a pinned node linking to private content reveals nothing; public
//! images still serve whole, including blocks they share with private ones.

mod common;
use common::*;

/// A dag-pb directory with one link `name` → `target`, as an identity CID (its bytes inline).
fn identity_directory(name: &str, target: &cid::Cid) -> cid::Cid {
    let entry = af_registry::unixfs::DirEntry { name: name.to_string(), cid: *target, tsize: 1 };
    let (_, node) = af_registry::unixfs::directory(vec![entry]);
    let mh = cid::multihash::Multihash::<64>::wrap(0x00, &node).unwrap();
    cid::Cid::new_v1(0x70, mh)
}

fn layer(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8).collect()
}

/// An image pushed to `repo:tag` (a config and one 3 MiB layer): its image CID and layer CID.
fn push_image(node: &Node, repo: &str, seed: u32) -> (cid::Cid, cid::Cid) {
    let data = layer(seed, 3 << 20);
    let manifest = image_manifest(node, repo, format!("{{\"seed\":{seed}}}").as_bytes(), &[&data]);
    let r = put_manifest(node, repo, "v1", OCI_MANIFEST, &manifest);
    assert_eq!(r.status(), 201);
    let image: cid::Cid = r.headers()["Ipfs-Image-Cid"].to_str().unwrap().parse().unwrap();
    let head = node.as_admin(client().head(node.url(&format!("/v2/{repo}/blobs/{}", sha256(&data))))).send().unwrap();
    let layer: cid::Cid = head.headers()["Ipfs-Cid"].to_str().unwrap().parse().unwrap();
    (image, layer)
}

#[test]
fn nothing_private_leaves_through_identity_cids_paths_or_pins() {
    let port = free_addr().port();
    let node = Node::start_with_env(&["--auth", "token", "--rpc", &format!("0.0.0.0:{port}")], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let rpc = |call: &str| client().post(format!("http://127.0.0.1:{port}/api/v0/{call}")).send().unwrap();
    // Private first, so blocks both images share were first recorded for the private one.
    let (secret_image, secret_layer) = push_image(&node, "admin/secret", 1);
    let (public_image, public_layer) = push_image(&node, "team/open", 2);
    common::accounts::af(&node, &["registry", "visibility", "team/open", "public"], None);
    let get = |path: &str| client().get(node.gateway_url(path)).send().unwrap();

    // The private roots themselves: absent.
    for c in [secret_image, secret_layer] {
        assert_eq!(get(&format!("/ipfs/{c}")).status(), 404);
        assert_eq!(get(&format!("/ipfs/{c}?format=car")).status(), 404);
    }
    // Wrapped in an identity CID: still absent, whatever the path, format or listener.
    let wrap_layer = identity_directory("x", &secret_layer);
    let wrap_image = identity_directory("x", &secret_image);
    assert_eq!(get(&format!("/ipfs/{wrap_layer}/x")).status(), 404);
    assert_eq!(get(&format!("/ipfs/{wrap_layer}/x?format=raw")).status(), 404);
    assert_eq!(get(&format!("/ipfs/{wrap_image}/x/index.json")).status(), 404);
    assert_eq!(get(&format!("/ipfs/{wrap_image}/x/")).status(), 404);
    let car = get(&format!("/ipfs/{wrap_image}/x?format=car"));
    assert_eq!(car.status(), 404);
    // A CAR of the wrapper itself holds the wrapper and stops where the private DAG begins.
    for wrapper in [wrap_image, wrap_layer] {
        // The stream breaks off where a block may not follow (as at a missing one).
        let r = client().get(node.gateway_url(&format!("/ipfs/{wrapper}?format=car"))).send();
        let body = r.and_then(|r| r.bytes()).map(|b| b.to_vec()).unwrap_or_default();
        assert!(body.len() < 1000, "{} bytes", body.len());
        assert!(!body.windows(10).any(|w| w == b"index.json"));
    }
    for call in ["cat", "ls", "block/get", "block/stat", "dag/export"] {
        for target in [format!("{wrap_layer}/x"), format!("{wrap_image}/x"), format!("{wrap_image}/x/index.json"), secret_layer.to_string()] {
            let r = rpc(&format!("{call}?arg={target}"));
            let status = r.status();
            let body = r.bytes().unwrap();
            assert!(status == 400 && body.len() < 1000, "{call} {target}: {status} with {} bytes", body.len());
        }
    }
    // The identity wrapper alone is fine: its bytes are the caller's own.
    assert_eq!(get(&format!("/ipfs/{wrap_layer}?format=raw")).status(), 200);

    // A pinned node (added through the loopback RPC by the operator) linking to private content:
    // the node is public while pinned, what it links to is not.
    let wrapper_bytes = wrap_layer.hash().digest().to_vec();
    let form = reqwest::blocking::multipart::Form::new().part("file", reqwest::blocking::multipart::Part::bytes(wrapper_bytes).file_name("node"));
    // The operator: an administrator's credentials.
    let operator = |call: &str| node.as_admin(client().post(format!("http://127.0.0.1:{port}/api/v0/{call}")));
    let put: serde_json::Value = operator("block/put?cid-codec=dag-pb&pin=true").multipart(form).send().unwrap().json().unwrap_or_default();
    let pinned = put["Key"].as_str().expect("block/put answers the key").to_string();
    assert_eq!(get(&format!("/ipfs/{pinned}/")).status(), 200, "the pinned node itself is public");
    assert_eq!(get(&format!("/ipfs/{pinned}/x")).status(), 404);
    assert_eq!(rpc(&format!("cat?arg={pinned}/x")).status(), 400);
    let r = operator(&format!("cat?arg={pinned}/x")).send().unwrap();
    assert_eq!(r.bytes().unwrap().len(), 3 << 20, "the operator reads everything");

    // Pinning a private image through the RPC does not make it public, and pin/ls beyond
    // loopback lists only what the caller may read.
    let r = operator(&format!("pin/add?arg={secret_image}")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let r = operator(&format!("pin/add?arg={public_image}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&format!("/ipfs/{secret_image}")).status(), 404);
    let listed = rpc("pin/ls").text().unwrap();
    assert!(!listed.contains(&secret_image.to_string()), "{listed}");
    assert!(listed.contains(&public_image.to_string()), "{listed}");
    let all = operator("pin/ls").send().unwrap().text().unwrap();
    assert!(all.contains(&secret_image.to_string()), "the operator sees every pin");

    // The public image serves whole, blocks shared with the private one included.
    let car = get(&format!("/ipfs/{public_image}?format=car"));
    assert_eq!(car.status(), 200);
    let car = car.bytes().unwrap();
    let mut reader = af_registry::car::SectionReader::default();
    let blocks = reader.push(&car).expect("a valid CAR");
    reader.finish().expect("a complete CAR");
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    assert_eq!(get(&format!("/ipfs/{public_image}/oci-layout")).status(), 200);
    assert_eq!(get(&format!("/ipfs/{public_layer}")).bytes().unwrap().len(), 3 << 20);
    let via_identity = identity_directory("y", &public_layer);
    assert_eq!(get(&format!("/ipfs/{via_identity}/y")).bytes().unwrap().len(), 3 << 20);
}

/// A repository flipped public → private by the CLI (another process) while 16 clients read its
/// blocks through the gateway: no request that starts after the flip returned gets a byte, and
/// flipping it back serves it again at once. The node caches public/private answers across
/// requests, so this is what shows the cache forgets in time.
#[test]
fn a_flip_to_private_under_load_takes_effect_before_it_returns() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let node = Node::start_with_env(&["--auth", "token"], &[("AF_ADMIN_PASSWORD", "admin-password-1")]);
    let (image, layer) = push_image(&node, "team/flip", 3);
    common::accounts::af(&node, &["registry", "visibility", "team/flip", "public"], None);
    let targets = [format!("/ipfs/{layer}?format=raw"), format!("/ipfs/{image}?format=raw"), format!("/ipfs/{image}/index.json")];
    for t in &targets {
        assert_eq!(client().get(node.gateway_url(t)).send().unwrap().status(), 200, "{t}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    // (started, status) of every request.
    let seen: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let (stop, seen) = (stop.clone(), seen.clone());
            let url = node.gateway_url(&targets[i % targets.len()]);
            std::thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let status = c.get(&url).send().map(|r| r.status().as_u16()).unwrap_or(0);
                    seen.lock().unwrap().push((started, status));
                }
            })
        })
        .collect();
    // (when the CLI was started, when it returned): a change takes effect between the two.
    let flip = |to: &str| {
        std::thread::sleep(Duration::from_millis(700));
        let started = Instant::now();
        common::accounts::af(&node, &["registry", "visibility", "team/flip", to], None);
        (started, Instant::now())
    };
    let (private_asked, private_at) = flip("private");
    let (public_asked, public_at) = flip("public");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    let seen = seen.lock().unwrap();
    // Requests that started well before the first change was asked for; that started after it
    // returned and before the second was asked for; that started after the second returned.
    let before: Vec<u16> = seen.iter().filter(|(t, _)| *t < private_asked - Duration::from_millis(300)).map(|(_, s)| *s).collect();
    let private: Vec<u16> = seen.iter().filter(|(t, _)| *t > private_at && *t < public_asked).map(|(_, s)| *s).collect();
    let after: Vec<u16> = seen.iter().filter(|(t, _)| *t > public_at).map(|(_, s)| *s).collect();
    assert!(before.len() > 50 && private.len() > 50 && after.len() > 50, "{} {} {}", before.len(), private.len(), after.len());
    let histogram = |v: &[u16]| {
        v.iter().fold(std::collections::BTreeMap::<u16, usize>::new(), |mut m, s| {
            *m.entry(*s).or_default() += 1;
            m
        })
    };
    assert!(before.iter().all(|s| *s == 200), "served while public (status: count; 0 = no answer): {:?}", histogram(&before));
    assert!(private.iter().all(|s| *s == 404), "after the flip to private returned: {:?}", histogram(&private));
    assert!(after.iter().all(|s| *s == 200), "after the flip back to public returned: {:?}", histogram(&after));
}
