//! Reading UnixFS out of the block store for the gateway: blocks (with the ones that carry their
//! own content), path resolution, the leaves behind a byte range of a file, and the blocks of a
//! CAR response in depth-first order.

use crate::registry::{Registry, RegistryError};
use crate::unixfs::{self, DecodedLink};
use bytes::Bytes;
use cid::Cid;

/// The empty UnixFS directory, which monitoring fetches from every gateway.
const EMPTY_DIRECTORY: [u8; 4] = [0x0a, 0x02, 0x08, 0x01];
const IDENTITY: u64 = 0x00;

#[derive(Debug, thiserror::Error)]
pub enum DagError {
    #[error("block {0} is not on this node")]
    Missing(Cid),
    #[error("{0}")]
    NotFound(String),
    #[error("block {cid}: {detail}")]
    Malformed { cid: Cid, detail: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

pub type Result<T> = std::result::Result<T, DagError>;

/// A block that needs no store: identity CIDs and the empty directory.
pub fn well_known(cid: &Cid) -> Option<Bytes> {
    let mh = cid.hash();
    if mh.code() == IDENTITY {
        return Some(Bytes::copy_from_slice(mh.digest()));
    }
    let empty: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(EMPTY_DIRECTORY).into();
    (cid.codec() == unixfs::DAG_PB && mh.code() == unixfs::SHA2_256 && mh.digest() == empty)
        .then(|| Bytes::from_static(&EMPTY_DIRECTORY))
}

pub async fn block(reg: &Registry, cid: &Cid) -> Result<Bytes> {
    if let Some(b) = well_known(cid) {
        return Ok(b);
    }
    reg.get_block(cid).await?.ok_or(DagError::Missing(*cid))
}

/// What a UnixFS block is.
pub enum Node {
    /// A raw block: a whole file.
    Raw(Bytes),
    File { links: Vec<DecodedLink>, content: Bytes, blocksizes: Vec<u64>, size: u64 },
    Directory { links: Vec<DecodedLink> },
    /// dag-pb that is neither (HAMT shards, symlinks, ...), or another codec.
    Other,
}

pub async fn node(reg: &Registry, cid: &Cid) -> Result<Node> {
    let bytes = block(reg, cid).await?;
    decode(cid, bytes)
}

pub fn decode(cid: &Cid, bytes: Bytes) -> Result<Node> {
    let malformed = |e: unixfs::DecodeError| DagError::Malformed { cid: *cid, detail: e.to_string() };
    match cid.codec() {
        unixfs::RAW => Ok(Node::Raw(bytes)),
        unixfs::DAG_PB => {
            let node = unixfs::decode_node(&bytes).map_err(malformed)?;
            let data = unixfs::unixfs_data(&node.data).map_err(malformed)?;
            match data.kind {
                unixfs::UNIXFS_DIRECTORY => Ok(Node::Directory { links: node.links }),
                0 | unixfs::UNIXFS_FILE => {
                    let size = data.filesize.unwrap_or(data.content.len() as u64 + data.blocksizes.iter().sum::<u64>());
                    let content = Bytes::copy_from_slice(data.content);
                    Ok(Node::File { links: node.links, content, blocksizes: data.blocksizes, size })
                }
                _ => Ok(Node::Other),
            }
        }
        _ => Ok(Node::Other),
    }
}

/// Follows `path` (segments) from `root`; returns every CID on the way, the last one the target.
pub async fn resolve(reg: &Registry, root: Cid, path: &[String]) -> Result<Vec<Cid>> {
    let mut chain = vec![root];
    for (i, segment) in path.iter().enumerate() {
        let current = *chain.last().expect("the chain starts with the root");
        let Node::Directory { links } = node(reg, &current).await? else {
            return Err(DagError::NotFound(format!("{} is not a directory", path[..i].join("/"))));
        };
        let next = links
            .iter()
            .find(|l| &l.name == segment)
            .ok_or_else(|| DagError::NotFound(format!("no link named {segment:?} under {current}")))?;
        chain.push(next.cid);
    }
    Ok(chain)
}

/// A piece of a file: `len` bytes from `skip` into the content of leaf `cid` (or inline content).
#[derive(Debug, Clone)]
pub enum Piece {
    Leaf { cid: Cid, skip: u64, len: u64 },
    Inline(Bytes),
}

/// The size of a UnixFS file, and its root node decoded.
pub async fn file_size(reg: &Registry, cid: &Cid) -> Result<Option<u64>> {
    Ok(match node(reg, cid).await? {
        Node::Raw(b) => Some(b.len() as u64),
        Node::File { size, .. } => Some(size),
        _ => None,
    })
}

/// The pieces covering bytes `start..end` (exclusive) of the file at `cid`, in order. Only
/// interior nodes are read; leaves are named, not fetched.
pub async fn plan_range(reg: &Registry, cid: Cid, start: u64, end: u64) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    // (node, offset of its first content byte, its content size when a parent said so); popped
    // in file order.
    let mut stack: Vec<(Cid, u64, Option<u64>)> = vec![(cid, 0, None)];
    while let Some((cid, offset, size)) = stack.pop() {
        if let (unixfs::RAW, Some(size)) = (cid.codec(), size) {
            let (from, to) = (offset.max(start), (offset + size).min(end));
            if to > from {
                out.push(Piece::Leaf { cid, skip: from - offset, len: to - from });
            }
            continue;
        }
        match node(reg, &cid).await? {
            Node::Raw(b) => {
                let len = b.len() as u64;
                let (from, to) = (offset.max(start).min(offset + len), (offset + len).min(end).max(offset));
                if to > from {
                    out.push(Piece::Inline(b.slice((from - offset) as usize..(to - offset) as usize)));
                }
            }
            Node::File { links, content, blocksizes, .. } => {
                let own = content.len() as u64;
                let (from, to) = (offset.max(start), (offset + own).min(end));
                if to > from {
                    out.push(Piece::Inline(content.slice((from - offset) as usize..(to - offset) as usize)));
                }
                let mut at = offset + own;
                let mut children = Vec::new();
                for (i, link) in links.iter().enumerate() {
                    let size = *blocksizes.get(i).ok_or_else(|| DagError::Malformed {
                        cid,
                        detail: "fewer blocksizes than links".into(),
                    })?;
                    if at + size > start && at < end {
                        children.push((link.cid, at, Some(size)));
                    }
                    at += size;
                }
                stack.extend(children.into_iter().rev());
            }
            Node::Directory { .. } | Node::Other => {
                return Err(DagError::NotFound(format!("{cid} is not a file")));
            }
        }
    }
    Ok(out)
}
