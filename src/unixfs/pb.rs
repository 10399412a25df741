//! The two protobuf messages of UnixFS nodes (dag-pb `PBNode` and UnixFS `Data`), by hand.
//!
//! dag-pb's canonical form puts `Links` (field 2) before `Data` (field 1), which general protobuf
//! encoders (prost writes fields in tag order) do not produce, and the bytes must match Kubo's
//! exactly for the CIDs to match; these two fixed messages are a few lines each.

pub(crate) use crate::varint::encode as varint;

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

/// UnixFS `Data` of a plain directory: Type = Directory and nothing else, as Kubo writes it.
pub const UNIXFS_DIRECTORY_DATA: [u8; 2] = [0x08, 0x01];

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

#[derive(Debug, thiserror::Error)]
#[error("malformed dag-pb node: {0}")]
pub struct DecodeError(&'static str);

/// A decoded dag-pb link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedLink {
    pub cid: cid::Cid,
    pub name: String,
    pub tsize: u64,
}

/// A decoded dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedNode {
    pub links: Vec<DecodedLink>,
    pub data: Vec<u8>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = crate::varint::decode(self.0).map_err(|_| DecodeError("varint too long"))?.ok_or(DecodeError("truncated varint"))?;
        self.0 = &self.0[n..];
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError("length too large"))?;
        if len > self.0.len() {
            return Err(DecodeError("truncated field"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    /// The next (field number, wire type), or None at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, k & 7)))
    }

    fn skip(&mut self, wire: u64) -> Result<(), DecodeError> {
        match wire {
            0 => self.varint().map(drop),
            2 => self.bytes().map(drop),
            _ => Err(DecodeError("unsupported wire type")),
        }
    }
}

/// Decodes a dag-pb node (links and data); unknown fields are refused by dag-pb's rules only in
/// so far as their wire type is unreadable.
pub fn decode_node(bytes: &[u8]) -> Result<DecodedNode, DecodeError> {
    let mut r = Reader(bytes);
    let mut node = DecodedNode { links: Vec::new(), data: Vec::new() };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 2) => node.data = r.bytes()?.to_vec(),
            (2, 2) => {
                let mut l = Reader(r.bytes()?);
                let (mut cid, mut name, mut tsize) = (None, String::new(), 0);
                while let Some((field, wire)) = l.key()? {
                    match (field, wire) {
                        (1, 2) => cid = Some(cid::Cid::try_from(l.bytes()?).map_err(|_| DecodeError("bad link CID"))?),
                        (2, 2) => name = String::from_utf8(l.bytes()?.to_vec()).map_err(|_| DecodeError("link name not UTF-8"))?,
                        (3, 0) => tsize = l.varint()?,
                        (_, w) => l.skip(w)?,
                    }
                }
                node.links.push(DecodedLink { cid: cid.ok_or(DecodeError("link without a CID"))?, name, tsize });
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(node)
}

/// UnixFS `Data` type field (1: Directory, 2: File, 5: HAMTShard, ...) of a decoded node's data.
pub fn unixfs_type(data: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader(data);
    while let Some((field, wire)) = r.key()? {
        if (field, wire) == (1, 0) {
            return r.varint();
        }
        r.skip(wire)?;
    }
    Err(DecodeError("UnixFS data without a type"))
}

/// The fields of a UnixFS `Data` message this node reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixfsData<'a> {
    pub kind: u64,
    pub content: &'a [u8],
    pub filesize: Option<u64>,
    /// Content bytes under each child link, in order (files).
    pub blocksizes: Vec<u64>,
    /// HAMT shards: the hash function and the fanout.
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
}

pub fn unixfs_data(data: &[u8]) -> Result<UnixfsData<'_>, DecodeError> {
    let mut r = Reader(data);
    let (mut kind, mut content, mut filesize, mut blocksizes) = (None, &[][..], None, Vec::new());
    let (mut hash_type, mut fanout) = (None, None);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 0) => kind = Some(r.varint()?),
            (2, 2) => content = r.bytes()?,
            (3, 0) => filesize = Some(r.varint()?),
            (4, 0) => blocksizes.push(r.varint()?),
            (4, 2) => {
                // Packed repeated field, as some writers encode it.
                let mut packed = Reader(r.bytes()?);
                while !packed.0.is_empty() {
                    blocksizes.push(packed.varint()?);
                }
            }
            (5, 0) => hash_type = Some(r.varint()?),
            (6, 0) => fanout = Some(r.varint()?),
            (_, w) => r.skip(w)?,
        }
    }
    let kind = kind.ok_or(DecodeError("UnixFS data without a type"))?;
    Ok(UnixfsData { kind, content, filesize, blocksizes, hash_type, fanout })
}

/// The bytes a UnixFS file node carries itself (its `Data.Data`; empty for interior nodes with
/// raw leaves). Refuses anything but a File or Raw node.
pub fn file_data(data: &[u8]) -> Result<&[u8], DecodeError> {
    let d = unixfs_data(data)?;
    match d.kind {
        0 | 2 => Ok(d.content),
        _ => Err(DecodeError("not a UnixFS file")),
    }
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

    #[test]
    fn decodes_what_it_encodes() {
        let target = crate::unixfs::cid_v1(crate::unixfs::RAW, &[7; 32]);
        let cid = target.to_bytes();
        let node = dag_pb_node(&[Link { cid: &cid, name: "a", tsize: 300 }], &UNIXFS_DIRECTORY_DATA);
        let decoded = decode_node(&node).unwrap();
        assert_eq!(decoded.links, [DecodedLink { cid: target, name: "a".into(), tsize: 300 }]);
        assert_eq!(unixfs_type(&decoded.data).unwrap(), 1);
        assert!(decode_node(&node[..node.len() - 1]).is_err());
    }
}
