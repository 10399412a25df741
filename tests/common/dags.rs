//! Hostile DAGs built by hand (dag-pb and UnixFS encoded here, independently of the node's own
//! encoder) and packed into CARs, for tests of what the node does with shapes it never makes.

use cid::Cid;
use sha2::{Digest as _, Sha256};

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

pub fn cid_of(codec: u64, bytes: &[u8]) -> Cid {
    Cid::new_v1(codec, cid::multihash::Multihash::<64>::wrap(0x12, &Sha256::digest(bytes)).unwrap())
}

/// A dag-pb node: (link name, target) pairs and UnixFS data.
pub fn dag_pb(links: &[(&str, Cid)], unixfs: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, cid) in links {
        let mut link = Vec::new();
        field_bytes(&mut link, 1, &cid.to_bytes());
        field_bytes(&mut link, 2, name.as_bytes());
        field_varint(&mut link, 3, 1);
        field_bytes(&mut out, 2, &link);
    }
    field_bytes(&mut out, 1, unixfs);
    out
}

/// UnixFS `Data` of a file: its (claimed) size and its children's (claimed) sizes.
pub fn file_data(filesize: Option<u64>, blocksizes: &[u64]) -> Vec<u8> {
    file_data_with(&[], filesize, blocksizes)
}

/// UnixFS `Data` of a file node that carries `content` of its own before its children's.
pub fn file_data_with(content: &[u8], filesize: Option<u64>, blocksizes: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    field_varint(&mut out, 1, 2);
    if !content.is_empty() {
        field_bytes(&mut out, 2, content);
    }
    if let Some(f) = filesize {
        field_varint(&mut out, 3, f);
    }
    for b in blocksizes {
        field_varint(&mut out, 4, *b);
    }
    out
}

pub const DIRECTORY_DATA: &[u8] = &[0x08, 0x01];

/// A file node whose `n` links all go to `child` of `child_size` bytes.
pub fn repeating_file(child: Cid, child_size: u64, n: usize) -> Vec<u8> {
    let links: Vec<(&str, Cid)> = (0..n).map(|_| ("", child)).collect();
    dag_pb(&links, &file_data(Some(child_size * n as u64), &vec![child_size; n]))
}

/// A CARv1 with `root` and `blocks` (CID, bytes).
pub fn car(root: &Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let root_bytes = root.to_bytes();
    let mut header = vec![0xa2, 0x65];
    header.extend_from_slice(b"roots");
    header.extend_from_slice(&[0x81, 0xd8, 0x2a, 0x58, root_bytes.len() as u8 + 1, 0x00]);
    header.extend_from_slice(&root_bytes);
    header.push(0x67);
    header.extend_from_slice(b"version");
    header.push(0x01);
    let mut out = Vec::new();
    varint(&mut out, header.len() as u64);
    out.extend_from_slice(&header);
    for (cid, data) in blocks {
        let c = cid.to_bytes();
        varint(&mut out, (c.len() + data.len()) as u64);
        out.extend_from_slice(&c);
        out.extend_from_slice(data);
    }
    out
}
