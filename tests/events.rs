//! Registry events: each is sent exactly when the state it names changed, and not for a request
//! that changed nothing (a blob pushed again, a manifest put again, a visibility set to what it
//! was) or failed.

use af_registry::blockstore::BlockIndex;
use af_registry::digest::{Algorithm, Digest};
use af_registry::events::Event;
use af_registry::metadata::sqlite::SqliteStore;
use af_registry::metadata::Reference;
use af_registry::registry::Registry;
use af_registry::storage::BlobStore;
use af_registry::unixfs::Profile;
use bytes::Bytes;
use tokio::sync::broadcast::error::TryRecvError;

fn body(data: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(data))])
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn registry(dir: &std::path::Path) -> Registry {
    let blobs = BlobStore::open(dir).unwrap();
    let meta = SqliteStore::open(&dir.join("metadata.sqlite")).unwrap();
    let blocks = BlockIndex::open(&dir.join("blocks.sqlite"), blobs.clone()).unwrap();
    Registry::open(meta, blobs, blocks, Profile::UnixfsV1_2025).await.unwrap()
}

#[tokio::test]
async fn events_are_sent_exactly_when_the_state_changed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let mut rx = reg.subscribe();

    // Blobs: published once; the same again, and a push whose digest is wrong, say nothing.
    let config = b"{}".to_vec();
    let layer = b"a layer".to_vec();
    let (cd, ld) = (Digest::of_bytes(Algorithm::Sha256, &config), Digest::of_bytes(Algorithm::Sha256, &layer));
    reg.put_blob("team/app", &cd, "t", body(&config)).await.unwrap();
    reg.put_blob("team/app", &ld, "t", body(&layer)).await.unwrap();
    let events = drain(&mut rx);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], Event::BlobPublished { repository, digest, root } if repository == "team/app" && digest == &cd && root.starts_with("bafk")));
    reg.put_blob("team/app", &ld, "t", body(&layer)).await.unwrap();
    assert!(reg.put_blob("team/app", &ld, "t", body(b"other bytes")).await.is_err());
    assert_eq!(drain(&mut rx), vec![]);

    // Manifests: stored, then tagged elsewhere; putting it again changes nothing.
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let md = Digest::of_bytes(Algorithm::Sha256, &manifest);
    let stored = reg.put_manifest("team/app", &Reference::Tag("v1".into()), None, Bytes::from(manifest.clone()), vec![]).await.unwrap();
    match drain(&mut rx).as_slice() {
        [Event::ImageStored { repository, digest, image, tags }] => {
            assert_eq!((repository.as_str(), digest), ("team/app", &md));
            assert!(image.is_some());
            assert_eq!(tags, &vec![("v1".to_string(), stored.image_cid.clone())]);
        }
        other => panic!("{other:?}"),
    }
    reg.put_manifest("team/app", &Reference::Tag("v1".into()), None, Bytes::from(manifest.clone()), vec![]).await.unwrap();
    reg.put_manifest("team/app", &Reference::Digest(md.clone()), None, Bytes::from(manifest.clone()), vec![]).await.unwrap();
    assert_eq!(drain(&mut rx), vec![]);
    reg.put_manifest("team/app", &Reference::Tag("latest".into()), None, Bytes::from(manifest.clone()), vec![]).await.unwrap();
    assert!(matches!(drain(&mut rx).as_slice(), [Event::ImageStored { tags, .. }] if tags.len() == 1 && tags[0].0 == "latest"));
    // A manifest whose layer is absent is refused: no event.
    let broken = String::from_utf8(manifest.clone()).unwrap().replace(&ld.to_string(), &Digest::of_bytes(Algorithm::Sha256, b"x").to_string());
    assert!(reg.put_manifest("team/app", &Reference::Tag("v2".into()), None, Bytes::from(broken), vec![]).await.is_err());
    assert_eq!(drain(&mut rx), vec![]);

    // Visibility: only a change is an event.
    reg.set_visibility("team/app", true).await.unwrap();
    reg.set_visibility("team/app", true).await.unwrap();
    reg.set_visibility("team/app", false).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        vec![Event::VisibilityChanged { repository: "team/app".into(), public: true }, Event::VisibilityChanged { repository: "team/app".into(), public: false },]
    );
    reg.set_visibility("other/new", false).await.unwrap();
    assert_eq!(drain(&mut rx), vec![], "a new private repository changes no visibility");

    // A GC that removes nothing says nothing; one that removes the untagged image says so.
    reg.gc(std::time::Duration::from_secs(3600)).await.unwrap();
    assert_eq!(drain(&mut rx), vec![]);
    // Deletes: a tag, then the manifest, each once; deleting again says nothing.
    assert!(reg.delete("team/app", &Reference::Tag("latest".into())).await.unwrap());
    assert!(!reg.delete("team/app", &Reference::Tag("latest".into())).await.unwrap());
    assert!(reg.delete("team/app", &Reference::Digest(md.clone())).await.unwrap());
    assert!(!reg.delete("team/app", &Reference::Digest(md.clone())).await.unwrap());
    assert_eq!(
        drain(&mut rx),
        vec![Event::Removed { repository: "team/app".into(), reference: "latest".into() }, Event::Removed { repository: "team/app".into(), reference: md.to_string() },]
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let report = reg.gc(std::time::Duration::ZERO).await.unwrap();
    assert!(report.blobs >= 2, "{report}");
    match drain(&mut rx).as_slice() {
        [Event::Swept { blobs, .. }] => assert!(blobs.contains(&ld) && blobs.contains(&cd)),
        other => panic!("{other:?}"),
    }
}

/// Mounts, unlinks and RPC pins: an event (and a new change generation) exactly when something
/// changed; reads leave the generation alone.
#[tokio::test]
async fn links_and_pins_are_events_and_generations() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let layer = b"a layer".to_vec();
    let ld = Digest::of_bytes(Algorithm::Sha256, &layer);
    reg.put_blob("a/one", &ld, "t", body(&layer)).await.unwrap();
    let mut rx = reg.subscribe();

    let g = reg.generation();
    assert!(reg.blob_info("a/one", &ld).await.unwrap().is_some());
    assert_eq!(reg.generation(), g, "a read changes nothing");
    assert_eq!(reg.mount("b/two", Some("a/one"), &ld).await.unwrap(), Some(layer.len() as u64));
    assert!(reg.generation() > g, "a mount can make a blob public");
    let g = reg.generation();
    assert_eq!(reg.mount("b/two", Some("a/nothing"), &Digest::of_bytes(Algorithm::Sha256, b"x")).await.unwrap(), None);
    assert_eq!(reg.generation(), g, "a mount of nothing changes nothing");
    assert!(reg.unlink_blob("b/two", &ld).await.unwrap());
    assert!(!reg.unlink_blob("b/two", &ld).await.unwrap());
    assert!(reg.generation() > g);
    assert_eq!(drain(&mut rx), vec![Event::Removed { repository: "b/two".into(), reference: ld.to_string() }]);

    let root = af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &<sha2::Sha256 as sha2::Digest>::digest(b"pinned").into());
    reg.store_blocks(vec![(root, b"pinned".to_vec())], af_registry::blockstore::Owner::Pin(root.to_string())).await.unwrap();
    reg.pin_block(&root).await.unwrap();
    reg.pin_block(&root).await.unwrap();
    assert!(reg.unpin_block(&root).await.unwrap());
    assert!(!reg.unpin_block(&root).await.unwrap());
    assert_eq!(drain(&mut rx), vec![Event::Pinned { root: root.to_string() }, Event::Unpinned { root: root.to_string() }]);
}
