//! Pull-through: a blob this node knows by its root CID but does not hold is fetched over
//! Bitswap (from the nodes the metadata names as holders, the connected peers, or DHT
//! providers) while the client reads it. The file's blocks are wanted in order, up to
//! [`WINDOW`] bytes ahead of the reader, from all peers at once (`session`); its bytes go in
//! order to `Registry::receive_blob`, which writes them to an upload file, checks the digest at
//! the end and publishes the blob; readers follow that file (`storage::Arriving`). One fetch per
//! blob, whoever asks.

use super::session::Session;
use super::{Handle, SwarmError};
use crate::dag::{self, Node};
use crate::digest::Digest;
use crate::metadata::{BlobInfo, NodeRecord};
use crate::registry::{ReceivedDag, Registry};
use crate::storage::Arriving;
use crate::unixfs::DagBlock;
use bytes::Bytes;
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::oneshot;

/// Bytes of leaves wanted ahead of the one the reader waits for.
pub const WINDOW: u64 = 24 << 20;
/// What a part whose size is unknown or beyond a block (an inner node) counts for in the window.
const INNER_NODE: u64 = 4 << 10;
/// The largest block a peer may send (Kubo's limit): a part said to be smaller is a leaf.
const MAX_LEAF: u64 = 2 << 20;

/// The swarm's pull-through, as the registry's [`crate::registry::Remote`].
pub struct Pulls {
    reg: Weak<Registry>,
    swarm: Handle,
    running: Mutex<HashMap<Digest, Arc<Arriving>>>,
}

impl Pulls {
    pub fn new(reg: &Arc<Registry>, swarm: Handle) -> Arc<Pulls> {
        Arc::new(Pulls { reg: Arc::downgrade(reg), swarm, running: Mutex::new(HashMap::new()) })
    }
}

impl crate::registry::Remote for Pulls {
    fn pull(&self, repo: &str, digest: &Digest, info: &BlobInfo, holders: Vec<NodeRecord>) -> Arc<Arriving> {
        let mut running = self.running.lock().expect("pulls lock");
        running.retain(|_, a| !a.ended());
        if let Some(arriving) = running.get(digest) {
            return arriving.clone();
        }
        let (arriving, progress) = Arriving::new();
        running.insert(digest.clone(), arriving.clone());
        let Some(reg) = self.reg.upgrade() else {
            progress.send_modify(|p| p.end = Some(Err("the node is stopping".into())));
            return arriving;
        };
        let hints = holders.into_iter().filter_map(hint).collect();
        let (repo, digest, info) = (repo.to_string(), digest.clone(), info.clone());
        let swarm = self.swarm.clone();
        tokio::spawn(async move {
            let root = match info.root_cid.parse::<Cid>() {
                Ok(root) => root,
                Err(e) => {
                    progress.send_modify(|p| p.end = Some(Err(format!("root CID {:?}: {e}", info.root_cid).into())));
                    return;
                }
            };
            tracing::info!(%digest, %root, "pulling a blob from peers");
            let started = std::time::Instant::now();
            let dag = ReceivedDag::default();
            let body = Box::pin(file_bytes(Session::new(swarm, hints), root, info.size, dag.clone()));
            match reg.receive_blob(&repo, &digest, "swarm", (root, dag), body, progress).await {
                Ok(size) => tracing::info!(%digest, size, elapsed = ?started.elapsed(), "pulled a blob from peers"),
                Err(e) => tracing::warn!(%digest, error = %e, "pull from peers failed"),
            }
        });
        arriving
    }
}

/// A holder as a session hint: its peer ID and swarm addresses.
fn hint(node: NodeRecord) -> Option<(PeerId, Vec<Multiaddr>)> {
    let peer = node.id.parse().ok()?;
    Some((peer, node.swarm_addrs.iter().filter_map(|a| a.parse().ok()).collect()))
}

/// A part of the file: a block whose parent says it holds `size` bytes of the file, and its
/// fetch once started.
struct Part {
    cid: Cid,
    size: Option<u64>,
    /// Its answer, once asked for (dropped: the want is withdrawn).
    fetch: Option<oneshot::Receiver<Result<Bytes, SwarmError>>>,
}

impl Part {
    fn cost(&self) -> u64 {
        self.size.filter(|s| *s <= MAX_LEAF).unwrap_or(INNER_NODE)
    }
}

/// The bytes of the UnixFS file at `root`, in order, through `session`: up to [`WINDOW`] bytes
/// of parts fetched ahead. At most `limit` bytes: a DAG that holds more is an error. Each block
/// is recorded in `dag` before its bytes are passed on.
pub fn file_bytes(session: Session, root: Cid, limit: u64, dag: ReceivedDag) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let parts = VecDeque::from([Part { cid: root, size: None, fetch: None }]);
    futures_util::stream::unfold((session, parts, 0u64), move |(session, mut parts, mut sent)| {
        let dag = dag.clone();
        async move {
            loop {
                // Ask for what the window allows, in file order, once it is half empty: wants go in
                // batches, so peers answer with few streams (a burst of reply streams loses some).
                let mut ahead: u64 = parts.iter().filter(|p| p.fetch.is_some()).map(Part::cost).sum();
                if ahead <= WINDOW / 2 {
                    for part in parts.iter_mut().filter(|p| p.fetch.is_none()) {
                        if ahead > 0 && ahead + part.cost() > WINDOW {
                            break;
                        }
                        ahead += part.cost();
                        part.fetch = Some(session.ask(part.cid));
                    }
                }
                if let Some(front) = parts.front_mut().filter(|p| p.fetch.is_none()) {
                    front.fetch = Some(session.ask(front.cid));
                }
                let mut part = parts.pop_front()?;
                let fail = |e: String| Some((Err(std::io::Error::other(e)), (session.clone(), VecDeque::new(), u64::MAX)));
                let bytes = match part.fetch.take().expect("the front part was asked for").await {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(e)) => return fail(e.to_string()),
                    Err(_) => return fail(SwarmError::Stopped.to_string()),
                };
                let node = match dag::decode(&part.cid, bytes.clone()) {
                    Ok(node) => node,
                    Err(e) => return fail(e.to_string()),
                };
                let (content, size) = match node {
                    Node::Raw(b) => {
                        let len = b.len() as u64;
                        dag.lock().expect("received DAG lock").push(DagBlock::Leaf { cid: part.cid, offset: sent, len });
                        (b, len)
                    }
                    Node::File { links, content, blocksizes, size } => {
                        dag.lock().expect("received DAG lock").push(DagBlock::Node { cid: part.cid, bytes: bytes.to_vec() });
                        for (link, size) in links.iter().zip(blocksizes).rev() {
                            parts.push_front(Part { cid: link.cid, size: Some(size), fetch: None });
                        }
                        (content, size)
                    }
                    _ => return fail(format!("{} is not part of a file", part.cid)),
                };
                if part.size.is_some_and(|s| s != size) {
                    return fail(format!("{}: its parent says {} bytes, it holds {size}", part.cid, part.size.unwrap_or(0)));
                }
                if content.is_empty() {
                    continue;
                }
                sent += content.len() as u64;
                if sent > limit {
                    return fail(format!("the DAG at {root} holds more than the blob's {limit} bytes"));
                }
                return Some((Ok(content), (session, parts, sent)));
            }
        }
    })
}
