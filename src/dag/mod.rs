//! Reading UnixFS DAGs out of the block store, for whoever asks (gateway, RPC, CAR export, and
//! later the swarm): a [`Reader`] reads blocks verified against their CID and admitted by the
//! request's [`Exposure`]; path resolution; files as lazy streams of their bytes; CAR walks
//! (`car`).
//!
//! Every walk is bounded whatever the DAG's shape: files and CARs are read lazily (memory is the
//! pending links of the current path, never the whole DAG), stop when their consumer is dropped,
//! and read at most [`MAX_BLOCKS_PER_WALK`] blocks.

pub mod car;

use crate::exposure::{Admission, Audience, Exposure, Found, Policy};
use crate::ipld;
use crate::registry::RegistryError;
use crate::unixfs::{self, DecodedLink};
use bytes::Bytes;
use cid::Cid;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The empty UnixFS directory, which monitoring fetches from every gateway.
const EMPTY_DIRECTORY: [u8; 4] = [0x0a, 0x02, 0x08, 0x01];
const IDENTITY: u64 = 0x00;
/// The most blocks one request may read: a 256 GiB file of 256 KiB leaves. A DAG that repeats a
/// subtree may describe far more than it holds; it is cut off here.
pub const MAX_BLOCKS_PER_WALK: u64 = 1 << 20;
/// The most path segments a request may name.
pub const MAX_PATH_SEGMENTS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DagError {
    #[error("block {0} is not on this node")]
    Missing(Cid),
    #[error("{0}")]
    NotFound(String),
    #[error("block {cid}: {detail}")]
    Malformed { cid: Cid, detail: String },
    /// A path that ends inside a block, on a value that is not a link: serving part of a block
    /// is not something a gateway does.
    #[error("{0}")]
    Unsupported(String),
    #[error("this request read {0} blocks, the most one may; the DAG repeats itself or is too large to serve in one request")]
    TooMuchWork(u64),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<ipld::Malformed> for DagError {
    fn from(e: ipld::Malformed) -> Self {
        DagError::Malformed { cid: e.cid, detail: e.detail }
    }
}

pub type Result<T> = std::result::Result<T, DagError>;

/// A block that needs no store: identity CIDs and the empty directory.
pub fn well_known(cid: &Cid) -> Option<Bytes> {
    let mh = cid.hash();
    if mh.code() == IDENTITY {
        return Some(Bytes::copy_from_slice(mh.digest()));
    }
    let empty: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(EMPTY_DIRECTORY).into();
    (cid.codec() == unixfs::DAG_PB && mh.code() == unixfs::SHA2_256 && mh.digest() == empty).then(|| Bytes::from_static(&EMPTY_DIRECTORY))
}

/// Whether `cid` carries its own bytes (an identity multihash).
pub fn is_identity(cid: &Cid) -> bool {
    cid.hash().code() == IDENTITY
}

/// Where a [`Reader`]'s blocks come from: the node's block store through the exposure policy
/// ([`Reader::new`]), or blocks verified on their way in, such as a CAR being imported
/// ([`Reader::over`]). Every walk (paths, directories, files, CARs) is written once, in
/// `Reader`, whatever the source.
pub trait BlockSource: Send + Sync + 'static {
    /// The block's bytes, verified against `cid`, with how they may go out; None when the source
    /// lacks the block or may not let it out (the two are indistinguishable from outside).
    fn fetch<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, Result<Option<(Bytes, Admission)>>>;

    /// Whoever reads may have everything (no vouching needed).
    fn sees_all(&self) -> bool;

    /// Links of a block fetched as [`Admission::Vouching`]: the same content.
    fn vouch(&self, links: Vec<Cid>);

    /// Whether the source has block `cid` (for a source that fetches what the node lacks: has
    /// it now), as [`BlockSource::fetch`] would find it, without the bytes where it can tell.
    fn holds<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.fetch(cid).await?.is_some()) })
    }
}

/// Where a reader of the store gets a block the node lacks (peers, through the swarm): bytes
/// verified against `cid` on their way in, or None.
pub trait Elsewhere: Send + Sync + 'static {
    fn get<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, Option<Bytes>>;
}

/// The node's block store, each block admitted by one request's exposure; a block it lacks
/// comes from `elsewhere`, if there is one and the exposure admits it (`Exposure::admit_absent`).
struct Store {
    exposure: Exposure,
    elsewhere: Option<Box<dyn Elsewhere>>,
}

impl BlockSource for Store {
    fn fetch<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, Result<Option<(Bytes, Admission)>>> {
        Box::pin(async move {
            match self.exposure.get(cid).await? {
                Found::Block(bytes, admission) => Ok(Some((bytes, admission))),
                Found::Refused => Ok(None),
                Found::Absent => {
                    let Some(elsewhere) = &self.elsewhere else { return Ok(None) };
                    let admission = self.exposure.admit_absent(cid).await?;
                    if admission == Admission::Refused {
                        return Ok(None);
                    }
                    Ok(elsewhere.get(cid).await.map(|bytes| (bytes, admission)))
                }
            }
        })
    }

    fn sees_all(&self) -> bool {
        self.exposure.sees_all()
    }

    fn vouch(&self, links: Vec<Cid>) {
        self.exposure.vouch(links)
    }
}

/// One request's view of a block source: every block it reads is verified and admitted by the
/// source, and counted against the request's budget.
pub struct Reader {
    source: Box<dyn BlockSource>,
    read: AtomicU64,
    /// Small blocks this request already read and admitted: a DAG that repeats a subtree reads
    /// the same few blocks over and over.
    recent: std::sync::Mutex<Recent>,
    /// The last block read, whatever its size: a response reads its target once to resolve the
    /// path and again to answer (raw, file, CAR); this keeps that second read off the disk and
    /// the hash.
    last: std::sync::Mutex<Option<(Cid, Bytes)>>,
}

/// A bounded set of small blocks, dropped whole when full (cheap, and enough for repeats).
#[derive(Default)]
struct Recent {
    blocks: std::collections::HashMap<Cid, Bytes>,
    bytes: usize,
}

/// Blocks at most this large are remembered, up to [`RECENT_BYTES`] per request.
const RECENT_BLOCK: usize = 64 << 10;
const RECENT_BYTES: usize = 1 << 20;

impl Reader {
    /// A reader of the node's block store for `audience`.
    pub fn new(policy: &Arc<Policy>, audience: Audience) -> Arc<Reader> {
        let exposure = Exposure::new(policy.clone(), audience);
        Self::over(Store { exposure, elsewhere: None })
    }

    /// A reader of the node's block store for `audience` that gets what the node lacks from
    /// `elsewhere`, as far as the exposure lets it (content the registry knows as this
    /// audience's). Nothing it gets is kept.
    pub fn fetching(policy: &Arc<Policy>, audience: Audience, elsewhere: impl Elsewhere) -> Arc<Reader> {
        let exposure = Exposure::new(policy.clone(), audience);
        Self::over(Store { exposure, elsewhere: Some(Box::new(elsewhere)) })
    }

    /// A reader of another block source.
    pub fn over(source: impl BlockSource) -> Arc<Reader> {
        Arc::new(Reader { source: Box::new(source), read: AtomicU64::new(0), recent: Default::default(), last: Default::default() })
    }

    /// Whether this reader's audience may have everything.
    pub fn sees_all(&self) -> bool {
        self.source.sees_all()
    }

    /// The block's bytes, verified; `Missing` when it is absent or not for this audience (the
    /// two are indistinguishable from outside).
    pub async fn block(&self, cid: &Cid) -> Result<Bytes> {
        let n = self.read.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_BLOCKS_PER_WALK {
            return Err(DagError::TooMuchWork(MAX_BLOCKS_PER_WALK));
        }
        if let Some(b) = well_known(cid) {
            return Ok(b);
        }
        if let Some(b) = self.recent.lock().expect("recent lock").blocks.get(cid) {
            return Ok(b.clone());
        }
        if let Some((_, b)) = self.last.lock().expect("last lock").as_ref().filter(|(c, _)| c == cid) {
            return Ok(b.clone());
        }
        let Some((bytes, admission)) = self.source.fetch(cid).await? else {
            return Err(DagError::Missing(*cid));
        };
        // Only dag-pb vouches: the DAGs this node builds (blobs, images) are dag-pb, and a
        // DAG-CBOR block that came with a pinned image has no business opening anything.
        if admission == Admission::Vouching && !self.source.sees_all() && cid.codec() == unixfs::DAG_PB {
            if let Ok(links) = block_links(cid, &bytes) {
                self.source.vouch(links);
            }
        }
        *self.last.lock().expect("last lock") = Some((*cid, bytes.clone()));
        if bytes.len() <= RECENT_BLOCK {
            let mut recent = self.recent.lock().expect("recent lock");
            if recent.bytes + bytes.len() > RECENT_BYTES {
                *recent = Recent::default();
            }
            recent.bytes += bytes.len();
            recent.blocks.insert(*cid, bytes.clone());
        }
        Ok(bytes)
    }

    /// Block `cid` is there ([`BlockSource::holds`]), for a walk that needs none of its bytes
    /// (a raw leaf of a pin's DAG); counted as a block read.
    pub async fn holds(&self, cid: &Cid) -> Result<()> {
        let n = self.read.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_BLOCKS_PER_WALK {
            return Err(DagError::TooMuchWork(MAX_BLOCKS_PER_WALK));
        }
        if well_known(cid).is_some() || self.source.holds(cid).await? {
            return Ok(());
        }
        Err(DagError::Missing(*cid))
    }

    pub async fn node(&self, cid: &Cid) -> Result<Node> {
        let bytes = self.block(cid).await?;
        decode(cid, bytes)
    }

    /// Follows `path` (segments) from `root`; returns every CID on the way, the last one the
    /// target. Every block passed through is read through [`Reader::block`].
    pub async fn resolve(&self, root: Cid, path: &[String]) -> Result<Vec<Cid>> {
        Ok(self.resolve_with_proof(root, path).await?.0)
    }

    /// [`Reader::resolve`], and every block read on the way in order (the sub-shards of sharded
    /// directories too): what a trustless client needs to verify the path.
    pub async fn resolve_with_proof(&self, root: Cid, path: &[String]) -> Result<(Vec<Cid>, Vec<Cid>)> {
        if path.len() > MAX_PATH_SEGMENTS {
            return Err(DagError::NotFound(format!("the path has {} segments; at most {MAX_PATH_SEGMENTS} are followed", path.len())));
        }
        let mut chain = vec![root];
        let mut proof = vec![root];
        // The root itself must be readable even when the path is empty.
        let mut current = self.node(&root).await?;
        let mut i = 0;
        while i < path.len() {
            let segment = &path[i];
            let here = *chain.last().expect("the chain starts with the root");
            let missing = || DagError::NotFound(format!("no link named {segment:?} under {here}"));
            let next = match current {
                Node::Directory { links } => links.iter().find(|l| &l.name == segment).ok_or_else(missing)?.cid,
                Node::Shard { links } => {
                    let mut links = links;
                    let mut depth = 0;
                    loop {
                        match unixfs::hamt::lookup(&links, segment, depth) {
                            unixfs::hamt::Step::Found(cid) => break cid,
                            unixfs::hamt::Step::Absent => return Err(missing()),
                            unixfs::hamt::Step::Descend(shard) => {
                                let Node::Shard { links: below } = self.node(&shard).await? else {
                                    return Err(DagError::Malformed { cid: shard, detail: "a sub-shard that is not a shard".into() });
                                };
                                proof.push(shard);
                                links = below;
                                depth += 1;
                            }
                        }
                    }
                }
                // Several segments may lead through one DAG-CBOR or DAG-JSON block to a link.
                Node::Ipld(value) => match ipld::step(&value, &path[i..]) {
                    ipld::Step::Link { cid, used } => {
                        i += used - 1;
                        cid
                    }
                    ipld::Step::Absent => return Err(missing()),
                    ipld::Step::Value => {
                        return Err(DagError::Unsupported(format!("/{} is a value inside block {here}, not a link: only whole blocks are served", path[i..].join("/"))))
                    }
                },
                _ => return Err(DagError::NotFound(format!("{} is not a directory", path[..i].join("/")))),
            };
            current = self.node(&next).await?;
            chain.push(next);
            proof.push(next);
            i += 1;
        }
        Ok((chain, proof))
    }

    /// The entries of a directory, plain or sharded (every sub-shard read), in link order.
    pub async fn entries(&self, node: Node) -> Result<Vec<DecodedLink>> {
        let links = match node {
            Node::Directory { links } => return Ok(links),
            Node::Shard { links } => links,
            _ => return Err(DagError::NotFound("not a directory".into())),
        };
        let mut out = Vec::new();
        // Depth first, in index order: a stack of the links still to look at, reversed.
        let mut stack: Vec<DecodedLink> = links.into_iter().rev().collect();
        while let Some(link) = stack.pop() {
            match unixfs::hamt::entry_name(&link).map(str::to_string) {
                Some(name) => out.push(DecodedLink { name, ..link }),
                None => match self.node(&link.cid).await? {
                    Node::Shard { links } => stack.extend(links.into_iter().rev()),
                    _ => return Err(DagError::Malformed { cid: link.cid, detail: "a sub-shard that is not a shard".into() }),
                },
            }
        }
        Ok(out)
    }

    /// The size of a UnixFS file, checked against what its root says of its parts.
    pub async fn file_size(&self, cid: &Cid) -> Result<Option<u64>> {
        Ok(match self.node(cid).await? {
            Node::Raw(b) => Some(b.len() as u64),
            Node::File { size, .. } => Some(size),
            _ => None,
        })
    }
}

/// What a UnixFS block is.
pub enum Node {
    /// A raw block: a whole file.
    Raw(Bytes),
    /// A file node; `size` is its content's length, checked against its parts' sizes.
    File {
        links: Vec<DecodedLink>,
        content: Bytes,
        blocksizes: Vec<u64>,
        size: u64,
    },
    Directory {
        links: Vec<DecodedLink>,
    },
    /// A node of a HAMT-sharded directory (see `unixfs::hamt`): its links as stored.
    Shard {
        links: Vec<DecodedLink>,
    },
    /// A UnixFS symbolic link: its target, as written.
    Symlink(Bytes),
    /// A DAG-CBOR or DAG-JSON block.
    Ipld(ipld_core::ipld::Ipld),
    /// dag-pb that is neither (HAMT shards, symlinks, ...), or another codec.
    Other,
}

/// Multicodec codes of the IPLD codecs blocks may have here, by Kubo's names.
pub fn codec_named(name: &str) -> Option<u64> {
    Some(match name {
        "raw" => unixfs::RAW,
        "dag-pb" => unixfs::DAG_PB,
        "dag-cbor" => DAG_CBOR,
        "dag-json" => DAG_JSON,
        "json" => JSON,
        "cbor" => CBOR,
        "libp2p-key" => LIBP2P_KEY,
        _ => return None,
    })
}

pub use crate::ipld::{links_possible, CBOR, DAG_CBOR, DAG_JSON, JSON, LIBP2P_KEY};

pub fn decode(cid: &Cid, bytes: Bytes) -> Result<Node> {
    let malformed = |detail: String| DagError::Malformed { cid: *cid, detail };
    match cid.codec() {
        unixfs::RAW => Ok(Node::Raw(bytes)),
        unixfs::DAG_PB => {
            let node = unixfs::decode_node(&bytes).map_err(|e| malformed(e.to_string()))?;
            let data = unixfs::unixfs_data(&node.data).map_err(|e| malformed(e.to_string()))?;
            match data.kind {
                unixfs::UNIXFS_DIRECTORY => Ok(Node::Directory { links: node.links }),
                unixfs::UNIXFS_HAMT_SHARD => {
                    if data.fanout != Some(unixfs::hamt::FANOUT as u64) || data.hash_type != Some(unixfs::hamt::MURMUR3_X64_64) {
                        return Err(malformed("a HAMT shard with another fanout or hash than 256 and murmur3-x64-64".into()));
                    }
                    Ok(Node::Shard { links: node.links })
                }
                0 | unixfs::UNIXFS_FILE => {
                    if data.blocksizes.len() != node.links.len() {
                        return Err(malformed(format!("{} links but {} blocksizes", node.links.len(), data.blocksizes.len())));
                    }
                    let parts =
                        data.blocksizes.iter().try_fold(data.content.len() as u64, |a, b| a.checked_add(*b)).ok_or_else(|| malformed("its blocksizes add up past 2^64".into()))?;
                    if let Some(claimed) = data.filesize.filter(|f| *f != parts) {
                        return Err(malformed(format!("filesize {claimed} but its parts hold {parts} bytes")));
                    }
                    let content = Bytes::copy_from_slice(data.content);
                    Ok(Node::File { links: node.links, content, blocksizes: data.blocksizes, size: parts })
                }
                unixfs::UNIXFS_SYMLINK => Ok(Node::Symlink(Bytes::copy_from_slice(data.content))),
                _ => Ok(Node::Other),
            }
        }
        // Bytes that do not decode are still a block (`block/put` takes any): served raw, never
        // walked through.
        c if ipld::is_linking(c) => Ok(ipld::decode(cid, &bytes).map(Node::Ipld).unwrap_or(Node::Other)),
        _ => Ok(Node::Other),
    }
}

/// The CIDs a block links to, whatever its codec (none for raw, JSON and CBOR blocks).
pub fn block_links(cid: &Cid, bytes: &[u8]) -> Result<Vec<Cid>> {
    Ok(ipld::block_links(cid, bytes)?)
}

/// A pending part of a file walk: a node whose content starts at `offset` of the file and that
/// its parent says holds `size` bytes.
struct Pending {
    cid: Cid,
    offset: u64,
    size: Option<u64>,
}

/// Bytes `start..end` of the file at `cid`, read lazily depth first: only the links of the nodes
/// on the current path are held, every block is verified and admitted as it is read, the walk
/// ends when the stream is dropped, and a part whose size disagrees with what its parent said is
/// an error (the stream ends there).
pub fn file_stream(reader: Arc<Reader>, cid: Cid, start: u64, end: u64) -> impl futures_util::Stream<Item = std::result::Result<Bytes, std::io::Error>> {
    let stack = vec![Pending { cid, offset: 0, size: None }];
    futures_util::stream::unfold((reader, stack), move |(reader, mut stack)| async move {
        loop {
            let p = stack.pop()?;
            match next_piece(&reader, p, start, end, &mut stack).await {
                Ok(Some(bytes)) => return Some((Ok(bytes), (reader, stack))),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "file read stopped");
                    return Some((Err(std::io::Error::other(e)), (reader, Vec::new())));
                }
            }
        }
    })
}

async fn next_piece(reader: &Reader, p: Pending, start: u64, end: u64, stack: &mut Vec<Pending>) -> Result<Option<Bytes>> {
    let node = reader.node(&p.cid).await?;
    let malformed = |detail: String| DagError::Malformed { cid: p.cid, detail };
    match node {
        Node::Raw(b) => {
            let len = b.len() as u64;
            if p.size.is_some_and(|s| s != len) {
                return Err(malformed(format!("its parent says {} bytes, it holds {len}", p.size.unwrap_or(0))));
            }
            let (from, to) = (p.offset.max(start), (p.offset + len).min(end));
            Ok((to > from).then(|| b.slice((from - p.offset) as usize..(to - p.offset) as usize)))
        }
        Node::File { links, content, blocksizes, size } => {
            if p.size.is_some_and(|s| s != size) {
                return Err(malformed(format!("its parent says {} bytes, it holds {size}", p.size.unwrap_or(0))));
            }
            let own = content.len() as u64;
            let mut at = p.offset + own;
            let mut children = Vec::new();
            for (link, size) in links.iter().zip(blocksizes) {
                let next = at.checked_add(size).ok_or_else(|| malformed("sizes past 2^64".into()))?;
                if next > start && at < end {
                    children.push(Pending { cid: link.cid, offset: at, size: Some(size) });
                }
                at = next;
            }
            stack.extend(children.into_iter().rev());
            let (from, to) = (p.offset.max(start), (p.offset + own).min(end));
            Ok((to > from).then(|| content.slice((from - p.offset) as usize..(to - p.offset) as usize)))
        }
        Node::Directory { .. } | Node::Shard { .. } | Node::Symlink(_) | Node::Ipld(_) | Node::Other => Err(DagError::NotFound(format!("{} is not a file", p.cid))),
    }
}

/// The first `n` bytes of a file (to sniff its type).
pub async fn file_head(reader: Arc<Reader>, cid: Cid, n: u64) -> std::result::Result<Bytes, std::io::Error> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = std::pin::pin!(file_stream(reader, cid, 0, n));
    while let Some(piece) = s.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(Bytes::from(out))
}
