//! CAR streams (the trustless gateway's responses, the RPC's `dag/export`, `af registry export`): the blocks that prove the path from the root, then
//! the target's blocks by `dag-scope` (`all`, `entity`, `block`) and `entity-bytes`, depth first,
//! with or without duplicates. Streamed block by block; every block is verified as it is read.

use super::{Node, Reader};
use bytes::Bytes;
use cid::Cid;
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagScope {
    All,
    Entity,
    Block,
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub scope: DagScope,
    /// `entity-bytes=from:to`, inclusive, negative values counting from the end, `to` = `*`.
    pub entity_bytes: Option<(i64, Option<i64>)>,
    pub dups: bool,
    /// Leave identity blocks out (the trustless gateway's CARs: they are virtual, inside their
    /// CIDs). `dag/export` keeps them, as Kubo's does.
    pub skip_identity: bool,
}

/// Resolves `entity-bytes` against a file of `size` bytes: the range `start..end`, or None when it
/// selects nothing.
fn byte_range(entity_bytes: Option<(i64, Option<i64>)>, size: u64) -> Option<(u64, u64)> {
    // i128: a file's size may exceed i64, and the sums below must not wrap.
    let size_i = size as i128;
    let (from, to) = entity_bytes.unwrap_or((0, None));
    let (from, to) = (from as i128, to.map(|t| t as i128));
    let from = if from < 0 { (size_i + from).max(0) } else { from };
    let to = match to {
        None => size_i - 1,
        Some(t) if t < 0 => size_i + t,
        Some(t) => t.min(size_i - 1),
    };
    (from <= to && from < size_i).then(|| (from as u64, to as u64 + 1))
}

enum Work {
    /// Emit this block and, per `expand`, what is under it.
    Visit { cid: Cid, expand: Expand },
}

#[derive(Clone, Copy)]
enum Expand {
    /// The block alone.
    Nothing,
    /// Everything under it.
    All,
    /// A file's blocks that hold bytes `start..end` of it; `offset`: where this node's content begins.
    Range { offset: u64, start: u64, end: u64 },
    /// The target under `entity` scope: decided once its kind is known.
    Entity,
}

fn section(cid: &Cid, data: &[u8]) -> Bytes {
    let cid_bytes = cid.to_bytes();
    let mut out = Vec::with_capacity(cid_bytes.len() + data.len() + 10);
    crate::varint::encode(&mut out, (cid_bytes.len() + data.len()) as u64);
    out.extend_from_slice(&cid_bytes);
    out.extend_from_slice(data);
    Bytes::from(out)
}

fn header(root: &Cid) -> Bytes {
    let h = iroh_car::CarHeader::new_v1(vec![*root]).encode().expect("a CAR header encodes");
    let mut out = Vec::new();
    crate::varint::encode(&mut out, h.len() as u64);
    out.extend_from_slice(&h);
    Bytes::from(out)
}

struct State {
    reader: Arc<Reader>,
    stack: Vec<Work>,
    seen: HashSet<Cid>,
    dups: bool,
    skip_identity: bool,
    entity_bytes: Option<(i64, Option<i64>)>,
    header: Option<Bytes>,
}

impl State {
    async fn step(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if let Some(h) = self.header.take() {
            return Some(Ok(h));
        }
        loop {
            let Work::Visit { cid, expand } = self.stack.pop()?;
            if !self.dups && !self.seen.insert(cid) {
                continue;
            }
            let bytes = match self.reader.block(&cid).await {
                Ok(b) => b,
                Err(e) => return Some(Err(std::io::Error::other(e.to_string()))),
            };
            if let Err(e) = self.expand(cid, &bytes, expand) {
                return Some(Err(std::io::Error::other(e.to_string())));
            }
            if self.skip_identity && super::is_identity(&cid) {
                continue;
            }
            return Some(Ok(section(&cid, &bytes)));
        }
    }

    fn expand(&mut self, cid: Cid, bytes: &Bytes, expand: Expand) -> super::Result<()> {
        if matches!(expand, Expand::Nothing) {
            return Ok(());
        }
        if matches!(expand, Expand::All) {
            // The whole DAG: its links are all that matter, whatever its UnixFS data says.
            let links = super::block_links(&cid, bytes)?;
            self.stack.extend(links.into_iter().rev().map(|l| Work::Visit { cid: l, expand: Expand::All }));
            return Ok(());
        }
        if cid.codec() != crate::unixfs::DAG_PB {
            return Ok(());
        }
        let node = super::decode(&cid, bytes.clone())?;
        let children: Vec<Work> = match (expand, node) {
            // A sharded directory's entity is its shards, not what they name.
            (Expand::Entity, Node::Shard { links }) => {
                links.into_iter().filter(|l| crate::unixfs::hamt::entry_name(l).is_none()).map(|l| Work::Visit { cid: l.cid, expand: Expand::Entity }).collect()
            }
            (Expand::Entity, Node::File { size, .. }) => match byte_range(self.entity_bytes, size) {
                Some((start, end)) => return self.expand(cid, bytes, Expand::Range { offset: 0, start, end }),
                None => Vec::new(),
            },
            (Expand::Range { offset, start, end }, Node::File { links, content, blocksizes, .. }) => {
                let mut at = offset + content.len() as u64;
                let mut out = Vec::new();
                for (link, size) in links.iter().zip(blocksizes) {
                    // decode() checked that the sizes add up without overflow.
                    if at + size > start && at < end {
                        out.push(Work::Visit { cid: link.cid, expand: Expand::Range { offset: at, start, end } });
                    }
                    at += size;
                }
                out
            }
            _ => Vec::new(),
        };
        self.stack.extend(children.into_iter().rev());
        Ok(())
    }
}

/// The CAR of a request for `root`, resolved to `chain` (root first, target last).
pub fn stream(reader: Arc<Reader>, root: Cid, chain: Vec<Cid>, params: Params) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let target = *chain.last().expect("a chain has a target");
    let expand = match params.scope {
        DagScope::All => Expand::All,
        DagScope::Entity => Expand::Entity,
        DagScope::Block => Expand::Nothing,
    };
    let mut stack = vec![Work::Visit { cid: target, expand }];
    // The path's blocks come first, root first: pushed last.
    for cid in chain[..chain.len() - 1].iter().rev() {
        stack.push(Work::Visit { cid: *cid, expand: Expand::Nothing });
    }
    let state =
        State { reader, stack, seen: HashSet::new(), dups: params.dups, skip_identity: params.skip_identity, entity_bytes: params.entity_bytes, header: Some(header(&root)) };
    futures_util::stream::unfold(state, |mut s| async move { s.step().await.map(|item| (item, s)) })
}

/// The whole DAG under `root` as a CAR stream (the RPC's `dag/export`, `af registry export`).
pub fn whole(reader: Arc<Reader>, root: Cid) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    stream(reader, root, vec![root], Params { scope: DagScope::All, entity_bytes: None, dups: false, skip_identity: false })
}
