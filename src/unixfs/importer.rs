//! The streaming balanced-layout builder.
//!
//! Kubo's balanced layout (go-unixfs `importer/balanced`) grows a tree top-down, but the tree it
//! ends with is the one obtained bottom-up: leaves grouped `max_links` at a time into height-1
//! nodes, those grouped into height-2 nodes, and so on, the last group at each height taking what
//! is left, until one node remains; a single chunk is its own root. That form can be built while
//! the bytes stream in, closing each node as soon as it is full, with `O(height × max_links)`
//! state and no look-ahead.

use super::pb::{dag_pb_node, unixfs_file_data, Link};
use super::{cid_v1, Profile, DAG_PB, RAW};
use cid::Cid;
use sha2::{Digest as _, Sha256};

/// A block the importer made.
#[derive(Debug)]
pub enum NewBlock<'a> {
    /// A raw leaf: bytes `offset .. offset + len` of the input, which it does not copy.
    Leaf { cid: Cid, offset: u64, len: u64 },
    /// An interior dag-pb node, with its encoded bytes.
    Node { cid: Cid, bytes: &'a [u8] },
}

/// Receives blocks as the importer makes them, children before their parents.
pub trait BlockSink {
    fn block(&mut self, block: NewBlock<'_>);
}

/// When only the root CID is wanted.
impl BlockSink for () {
    fn block(&mut self, _: NewBlock<'_>) {}
}

/// The root of an imported file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub cid: Cid,
    /// Bytes of file content.
    pub filesize: u64,
    /// Bytes of every block of the DAG (what a dag-pb link's Tsize says).
    pub tsize: u64,
}

#[derive(Debug, Clone)]
struct Child {
    cid: Cid,
    tsize: u64,
    filesize: u64,
}

/// Builds the UnixFS DAG of one file from its bytes, fed in any pieces.
#[derive(Clone)]
pub struct Importer {
    chunk_size: usize,
    max_links: usize,
    hasher: Sha256,
    chunk_len: usize,
    consumed: u64,
    /// `levels[h]`: finished children waiting for their height-(h+1) parent.
    levels: Vec<Vec<Child>>,
    scratch: Vec<u8>,
}

impl Importer {
    pub fn new(profile: Profile) -> Self {
        Self::with_layout(profile.chunk_size(), profile.max_links())
    }

    /// Any chunk size and fan-out, as Kubo's `--chunker=size-N` and `Import.UnixFSFileMaxLinks`
    /// allow (used to test deep trees with little data).
    pub fn with_layout(chunk_size: usize, max_links: usize) -> Self {
        assert!(chunk_size > 0 && max_links > 1, "chunks must hold bytes and nodes at least two links");
        Importer { chunk_size, max_links, hasher: Sha256::new(), chunk_len: 0, consumed: 0, levels: vec![Vec::new()], scratch: Vec::new() }
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    pub fn update(&mut self, mut data: &[u8], sink: &mut impl BlockSink) {
        while !data.is_empty() {
            let take = (self.chunk_size - self.chunk_len).min(data.len());
            self.hasher.update(&data[..take]);
            self.chunk_len += take;
            self.consumed += take as u64;
            data = &data[take..];
            if self.chunk_len == self.chunk_size {
                self.emit_leaf(sink);
            }
        }
    }

    fn emit_leaf(&mut self, sink: &mut impl BlockSink) {
        let digest: [u8; 32] = self.hasher.finalize_reset().into();
        let cid = cid_v1(RAW, &digest);
        let len = self.chunk_len as u64;
        sink.block(NewBlock::Leaf { cid, offset: self.consumed - len, len });
        self.chunk_len = 0;
        self.push(0, Child { cid, tsize: len, filesize: len }, sink);
    }

    fn push(&mut self, level: usize, child: Child, sink: &mut impl BlockSink) {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(child);
        if self.levels[level].len() == self.max_links {
            self.close(level, sink);
        }
    }

    /// Turns the children waiting at `level` into their parent node.
    fn close(&mut self, level: usize, sink: &mut impl BlockSink) {
        let children = std::mem::take(&mut self.levels[level]);
        let filesize = children.iter().map(|c| c.filesize).sum();
        let blocksizes: Vec<u64> = children.iter().map(|c| c.filesize).collect();
        let data = unixfs_file_data(filesize, &blocksizes);
        let cid_bytes: Vec<Vec<u8>> = children.iter().map(|c| c.cid.to_bytes()).collect();
        let links: Vec<Link<'_>> = children.iter().zip(&cid_bytes).map(|(c, b)| Link { cid: b, name: "", tsize: c.tsize }).collect();
        self.scratch = dag_pb_node(&links, &data);
        let digest: [u8; 32] = Sha256::digest(&self.scratch).into();
        let cid = cid_v1(DAG_PB, &digest);
        sink.block(NewBlock::Node { cid, bytes: &self.scratch });
        let tsize = self.scratch.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        self.push(level + 1, Child { cid, tsize, filesize }, sink);
    }

    /// Ends the input and returns the root. An empty input is one empty raw leaf, as in Kubo.
    pub fn finish(mut self, sink: &mut impl BlockSink) -> Root {
        if self.chunk_len > 0 || self.consumed == 0 {
            self.emit_leaf(sink);
        }
        let mut level = 0;
        loop {
            let higher = self.levels[level + 1..].iter().any(|l| !l.is_empty());
            if !higher && self.levels[level].len() == 1 {
                let root = self.levels[level].pop().expect("one child");
                return Root { cid: root.cid, filesize: root.filesize, tsize: root.tsize };
            }
            if !self.levels[level].is_empty() {
                self.close(level, sink);
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(data: &[u8], profile: Profile, piece: usize) -> Root {
        let mut imp = Importer::new(profile);
        for p in data.chunks(piece.max(1)) {
            imp.update(p, &mut ());
        }
        imp.finish(&mut ())
    }

    #[test]
    fn literal_vectors() {
        for p in [Profile::UnixfsV1_2025, Profile::KuboV1] {
            assert_eq!(root_of(b"hello world", p, 3).cid.to_string(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
            assert_eq!(root_of(b"", p, 1).cid.to_string(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
        }
    }

    #[test]
    fn how_the_input_is_split_does_not_matter() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let whole = root_of(&data, Profile::KuboV1, data.len());
        for piece in [1000, 4096, 262_144, 262_145] {
            assert_eq!(root_of(&data, Profile::KuboV1, piece), whole);
        }
        assert_eq!(whole.filesize, 700_000);
    }

    #[test]
    fn blocks_come_children_first_and_cover_the_input() {
        let data = vec![9u8; 3 * 262_144 + 5];
        let mut imp = CollectingImporter::new(Profile::KuboV1);
        imp.update(&data);
        let (root, blocks) = imp.finish();
        let leaves: Vec<(u64, u64)> = blocks
            .iter()
            .filter_map(|b| match b {
                DagBlock::Leaf { offset, len, .. } => Some((*offset, *len)),
                DagBlock::Node { .. } => None,
            })
            .collect();
        assert_eq!(leaves.len(), 4);
        assert_eq!(leaves.iter().map(|l| l.1).sum::<u64>(), data.len() as u64);
        assert_eq!(leaves[3].0, 3 * 262_144);
        assert!(matches!(blocks.last().unwrap(), DagBlock::Node { cid, .. } if *cid == root.cid));
    }
}

/// A block of a file's DAG, kept until the file is published: leaves by position, nodes by value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DagBlock {
    Leaf { cid: Cid, offset: u64, len: u64 },
    Node { cid: Cid, bytes: Vec<u8> },
}

impl BlockSink for Vec<DagBlock> {
    fn block(&mut self, block: NewBlock<'_>) {
        self.push(match block {
            NewBlock::Leaf { cid, offset, len } => DagBlock::Leaf { cid, offset, len },
            NewBlock::Node { cid, bytes } => DagBlock::Node { cid, bytes: bytes.to_vec() },
        });
    }
}

/// An importer that keeps the blocks it makes (a few dozen bytes per leaf), for an upload whose
/// DAG is recorded when it is published.
#[derive(Clone)]
pub struct CollectingImporter {
    importer: Importer,
    blocks: Vec<DagBlock>,
}

impl CollectingImporter {
    pub fn new(profile: Profile) -> Self {
        CollectingImporter { importer: Importer::new(profile), blocks: Vec::new() }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.importer.update(data, &mut self.blocks);
    }

    pub fn consumed(&self) -> u64 {
        self.importer.consumed()
    }

    pub fn finish(mut self) -> (Root, Vec<DagBlock>) {
        let root = self.importer.finish(&mut self.blocks);
        (root, self.blocks)
    }
}
