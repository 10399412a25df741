//! CAR responses of the trustless gateway: the blocks that prove the path from the root, then
//! the target's blocks by `dag-scope` (`all`, `entity`, `block`) and `entity-bytes`, depth first,
//! with or without duplicates. Streamed block by block; every block is verified as it is read.

use super::dag::{self, Node};
use super::text;
use crate::registry::Registry;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
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
}

impl Params {
    pub fn from_request(req: &HttpRequest) -> Result<Params, HttpResponse> {
        let bad = |m: String| text(StatusCode::BAD_REQUEST, m);
        let q = |k: &str| super::query(req, k);
        let accept = req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
        let accept_param = |name: &str| -> Option<String> {
            accept
                .split(',')
                .find(|i| i.trim().starts_with(super::CAR_TYPE))
                .and_then(|i| i.split(';').skip(1).find_map(|p| p.trim().strip_prefix(&format!("{name}=")).map(str::to_string)))
        };
        if let Some(v) = accept_param("version") {
            if v != "1" {
                return Err(text(StatusCode::NOT_ACCEPTABLE, format!("CAR version {v} is not supported; version=1 is")));
            }
        }
        let order = q("car-order").or_else(|| accept_param("order"));
        if let Some(o) = order.filter(|o| o != "dfs" && o != "unk") {
            return Err(text(StatusCode::NOT_ACCEPTABLE, format!("CAR order {o:?} is not supported; dfs is")));
        }
        let dups = match q("car-dups").or_else(|| accept_param("dups")).as_deref() {
            None | Some("n") => false,
            Some("y") => true,
            Some(other) => return Err(bad(format!("car-dups={other:?} is neither y nor n"))),
        };
        let scope = match q("dag-scope").as_deref() {
            None | Some("all") => DagScope::All,
            Some("entity") => DagScope::Entity,
            Some("block") => DagScope::Block,
            Some(other) => return Err(bad(format!("dag-scope={other:?} is not all, entity or block"))),
        };
        let entity_bytes = match q("entity-bytes") {
            None => None,
            Some(v) => {
                let parse = || -> Option<(i64, Option<i64>)> {
                    let (a, b) = v.split_once(':')?;
                    let from = a.parse().ok()?;
                    let to = if b == "*" { None } else { Some(b.parse().ok()?) };
                    Some((from, to))
                };
                Some(parse().ok_or_else(|| bad(format!("entity-bytes={v:?} is not from:to")))?)
            }
        };
        Ok(Params { scope, entity_bytes, dups })
    }
}

/// Resolves `entity-bytes` against a file of `size` bytes: the range `start..end`, or None when it
/// selects nothing.
fn byte_range(entity_bytes: Option<(i64, Option<i64>)>, size: u64) -> Option<(u64, u64)> {
    let size_i = size as i64;
    let (from, to) = entity_bytes.unwrap_or((0, None));
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
    let mut len = (cid_bytes.len() + data.len()) as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(&cid_bytes);
    out.extend_from_slice(data);
    Bytes::from(out)
}

fn header(root: &Cid) -> Bytes {
    let h = iroh_car::CarHeader::new_v1(vec![*root]).encode().expect("a CAR header encodes");
    let mut out = Vec::new();
    let mut len = h.len() as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(&h);
    Bytes::from(out)
}

struct State {
    reg: Arc<Registry>,
    stack: Vec<Work>,
    seen: HashSet<Cid>,
    dups: bool,
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
            let bytes = match dag::block(&self.reg, &cid).await {
                Ok(b) => b,
                Err(e) => return Some(Err(std::io::Error::other(e.to_string()))),
            };
            if let Err(e) = self.expand(cid, &bytes, expand) {
                return Some(Err(std::io::Error::other(e.to_string())));
            }
            return Some(Ok(section(&cid, &bytes)));
        }
    }

    fn expand(&mut self, cid: Cid, bytes: &Bytes, expand: Expand) -> dag::Result<()> {
        if matches!(expand, Expand::Nothing) || cid.codec() != crate::unixfs::DAG_PB {
            return Ok(());
        }
        let node = dag::decode(&cid, bytes.clone())?;
        let children: Vec<Work> = match (expand, node) {
            (Expand::All, Node::File { links, .. } | Node::Directory { links }) => {
                links.into_iter().map(|l| Work::Visit { cid: l.cid, expand: Expand::All }).collect()
            }
            (Expand::All, Node::Other) => crate::unixfs::decode_node(bytes)
                .map(|n| n.links.into_iter().map(|l| Work::Visit { cid: l.cid, expand: Expand::All }).collect())
                .unwrap_or_default(),
            (Expand::Entity, Node::File { size, .. }) => match byte_range(self.entity_bytes, size) {
                Some((start, end)) => return self.expand(cid, bytes, Expand::Range { offset: 0, start, end }),
                None => Vec::new(),
            },
            (Expand::Range { offset, start, end }, Node::File { links, content, blocksizes, .. }) => {
                let mut at = offset + content.len() as u64;
                let mut out = Vec::new();
                for (link, size) in links.iter().zip(blocksizes) {
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
pub fn stream(
    reg: Arc<Registry>,
    root: Cid,
    chain: Vec<Cid>,
    params: Params,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
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
    let state = State {
        reg,
        stack,
        seen: HashSet::new(),
        dups: params.dups,
        entity_bytes: params.entity_bytes,
        header: Some(header(&root)),
    };
    futures_util::stream::unfold(state, |mut s| async move { s.step().await.map(|item| (item, s)) })
}
