//! The two protobuf messages of a UnixFS file node, encoded by hand.
//!
//! dag-pb's canonical form puts `Links` (field 2) before `Data` (field 1), which general protobuf
//! encoders (prost writes fields in tag order) do not produce, and the bytes must match Kubo's
//! exactly for the CIDs to match; these two fixed messages are a few lines each.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// UnixFS `Data` for an interior file node: Type = File, filesize, blocksizes.
pub fn unixfs_file_data(filesize: u64, blocksizes: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 5 * blocksizes.len());
    key(&mut out, 1, 0);
    varint(&mut out, 2); // DataType.File
    key(&mut out, 3, 0);
    varint(&mut out, filesize);
    for b in blocksizes {
        key(&mut out, 4, 0);
        varint(&mut out, *b);
    }
    out
}

/// One link of a dag-pb node.
pub struct Link<'a> {
    pub cid: &'a [u8],
    pub name: &'a str,
    pub tsize: u64,
}

/// A dag-pb node: its links in order, then its data.
pub fn dag_pb_node(links: &[Link<'_>], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + links.len() * 48);
    let mut link = Vec::with_capacity(64);
    for l in links {
        link.clear();
        bytes_field(&mut link, 1, l.cid);
        bytes_field(&mut link, 2, l.name.as_bytes());
        key(&mut link, 3, 0);
        varint(&mut link, l.tsize);
        bytes_field(&mut out, 2, &link);
    }
    bytes_field(&mut out, 1, data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }

    #[test]
    fn node_layout_puts_links_first() {
        let node = dag_pb_node(&[Link { cid: &[1, 2], name: "", tsize: 5 }], &[8, 2]);
        assert_eq!(node, [0x12, 0x08, 0x0a, 0x02, 1, 2, 0x12, 0x00, 0x18, 0x05, 0x0a, 0x02, 8, 2]);
    }
}
