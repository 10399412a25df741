//! `af registry verify` against a running node: a byte flipped in a blob file and an inline block
//! altered in the block index are reported, quarantined or dropped, and never served afterwards;
//! pushing the blob again repairs it.

mod common;
use common::*;
use std::process::Command;

fn verify(node: &Node) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_af")).args(["registry", "verify", "--data-dir"]).arg(&node.data_dir).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn verify_quarantines_corrupt_blobs_and_blocks() {
    let node = Node::start();
    let a: Vec<u8> = (0..3 * 1024 * 1024 + 17u32).map(|i| (i.wrapping_mul(40503) >> 5) as u8).collect();
    let b = b"an intact layer".to_vec();
    let m = image_manifest(&node, "v/a", b"{}", &[&a, &b]);
    assert_eq!(put_manifest(&node, "v/a", "t", OCI_MANIFEST, &m).status(), 201);
    let (da, db) = (sha256(&a), sha256(&b));
    let index = rusqlite::Connection::open(node.data_dir.join("blocks.sqlite")).unwrap();
    // A's interior node, plus the image layout's directories, files and manifest.
    let inline: i64 = index.query_row("SELECT count(*) FROM blocks WHERE data IS NOT NULL", [], |r| r.get(0)).unwrap();
    assert!(inline > 1);
    let (code, out) = verify(&node);
    assert_eq!((code, out.trim()), (0, format!("verified 3 blobs ({} bytes) and {inline} blocks: 0 corrupt", a.len() + b.len() + 2).as_str()));

    // One byte of blob A flips on disk.
    let path = node.data_dir.join("blobs/sha256").join(&da[7..9]).join(&da[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2_000_000] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    // And the inline interior node of A's DAG is altered in the block index.
    let root: cid::Cid = client().head(node.url(&format!("/v2/v/a/blobs/{da}"))).send().unwrap().headers()["Ipfs-Cid"].to_str().unwrap().parse().unwrap();
    let altered = index.execute("UPDATE blocks SET data = CAST(X'00' || data AS BLOB) WHERE multihash = ?1", [root.hash().to_bytes()]).unwrap();
    assert_eq!(altered, 1);
    drop(index);

    let (code, out) = verify(&node);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("corrupt: blob {da}: its file hashes to sha256:")), "{out}");
    assert!(out.contains("corrupt: block with multihash 1220"), "{out}");
    assert!(out.trim_end().ends_with("2 corrupt"), "{out}");
    assert!(!path.exists());
    assert!(node.data_dir.join("quarantine").join(format!("sha256-{}", &da[7..])).exists());

    // Never served again: not by GET, not by HEAD, not by a mount.
    assert_oci_error(client().get(node.url(&format!("/v2/v/a/blobs/{da}"))).send().unwrap(), 404, "BLOB_UNKNOWN");
    assert_eq!(client().head(node.url(&format!("/v2/v/a/blobs/{da}"))).send().unwrap().status(), 404);
    let r = client().post(node.url(&format!("/v2/v/other/blobs/uploads/?mount={da}&from=v/a"))).send().unwrap();
    assert_eq!(r.status(), 202);
    // The rest is untouched.
    assert_eq!(client().get(node.url(&format!("/v2/v/a/blobs/{db}"))).send().unwrap().bytes().unwrap().as_ref(), &b[..]);
    assert_eq!(verify(&node).0, 0);

    // Pushing it again repairs it.
    push_blob(&node, "v/a", &a);
    let r = client().get(node.url(&format!("/v2/v/a/blobs/{da}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers()["Ipfs-Cid"].is_empty());
    assert_eq!(sha256(&r.bytes().unwrap()), da);
    let (code, out) = verify(&node);
    assert_eq!(code, 0, "{out}");
}

/// A page of the metadata scrambled where no write went (a bad sector): a start after a clean
/// stop reads only the header, the length and the schema of a large file and a start after a
/// crash only the pages the crash could have touched, so `verify` is what reads every page, and
/// it names the file and what to do.
#[test]
fn verify_reads_every_page_of_the_databases() {
    let mut node = Node::start();
    for i in 0..1000 {
        push_blob(&node, "pages/p", format!("blob {i} {}", "y".repeat(3000)).as_bytes());
    }
    node.terminate();
    assert!(node.wait_exit(std::time::Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert_eq!(verify(&node).0, 0, "clean to begin with");
    let path = node.data_dir.join("metadata.sqlite");
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let middle = (bytes.len() / page / 2) * page;
    for (i, b) in bytes[middle..middle + page].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&path, bytes).unwrap();
    let (code, out) = verify(&node);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("metadata.sqlite:"), "{out}");
    assert!(out.contains("from a backup"), "{out}");
}
