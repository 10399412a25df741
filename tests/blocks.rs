//! The block index through the registry core: every block of a pushed blob's DAG is found, is
//! verified on every read, and a byte flipped on disk is an error, never data.

use af_registry::blockstore::BlockIndex;
use af_registry::digest::{Algorithm, Digest};
use af_registry::metadata::sqlite::SqliteStore;
use af_registry::registry::{Registry, RegistryError};
use af_registry::storage::BlobStore;
use af_registry::unixfs::{CollectingImporter, DagBlock, Profile};
use bytes::Bytes;

async fn registry(dir: &std::path::Path, profile: Profile) -> Registry {
    let blobs = BlobStore::open(dir).unwrap();
    let meta = SqliteStore::open(&dir.join("metadata.sqlite")).unwrap();
    let blocks = BlockIndex::open(&dir.join("blocks.sqlite"), blobs.clone()).unwrap();
    Registry::open(meta, blobs, blocks, profile).await.unwrap()
}

fn body(data: &[u8], piece: usize) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let chunks: Vec<Result<Bytes, std::io::Error>> = data.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures_util::stream::iter(chunks)
}

#[tokio::test]
async fn every_block_of_a_pushed_blob_is_served_verified() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), Profile::KuboV1).await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 249) as u8).collect();
    let digest = Digest::of_bytes(Algorithm::Sha256, &data);
    reg.put_blob("blocks/a", &digest, "test", body(&data, 65_536)).await.unwrap();

    let mut expected = CollectingImporter::new(Profile::KuboV1);
    expected.update(&data);
    let (root, dag) = expected.finish();
    let info = reg.blob_info("blocks/a", &digest).await.unwrap().unwrap();
    assert_eq!(info.root_cid, root.cid.to_string());
    assert_eq!(dag.iter().filter(|b| matches!(b, DagBlock::Leaf { .. })).count(), 4);
    for block in &dag {
        let (cid, want) = match block {
            DagBlock::Leaf { cid, offset, len } => (cid, Bytes::copy_from_slice(&data[*offset as usize..(*offset + *len) as usize])),
            DagBlock::Node { cid, bytes } => (cid, Bytes::from(bytes.clone())),
        };
        assert_eq!(reg.get_block(cid).await.unwrap(), Some(want), "{cid}");
    }
    let absent = af_registry::unixfs::cid_v1(af_registry::unixfs::RAW, &[7u8; 32]);
    assert_eq!(reg.get_block(&absent).await.unwrap(), None);

    // Flip one byte of the second leaf on disk: that leaf is refused, the others still served.
    let path = BlobStore::open(dir.path()).unwrap().blob_path(&digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[300_000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let DagBlock::Leaf { cid: second, .. } = &dag[1] else { panic!("leaves come first") };
    assert!(matches!(reg.get_block(second).await, Err(RegistryError::BlockCorrupt { .. })));
    let DagBlock::Leaf { cid: first, .. } = &dag[0] else { panic!("leaves come first") };
    assert!(reg.get_block(first).await.unwrap().is_some());
}
