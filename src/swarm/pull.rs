//! Pull-through: a blob this node knows by its root CID but does not hold is fetched over
//! Bitswap (from the nodes the metadata names as holders, the other nodes on the same metadata,
//! the connected peers, or DHT providers) while the client reads it. The file's blocks are
//! wanted up to [`WINDOW`] bytes ahead of the reader, each batch in a random order, from all
//! peers at once (`session`); its bytes go in order to `Registry::receive_blob`, which writes
//! them to an upload file, checks the digest at the end and publishes the blob; readers follow
//! that file (`storage::Arriving`). One fetch per blob, whoever asks.
//!
//! While it runs, its blocks are offered to peers as they arrive (from memory, then from the
//! upload file once written; see `exposure::Receiving`): nodes pulling one image at once, a
//! rollout, feed each other instead of all asking its one holder for every block, and the
//! random order makes them ask it for different blocks.

use super::session::{Arrived, Session};
use super::{Handle, SwarmError};
use crate::dag::{self, Node};
use crate::exposure::{Policy, Receiving};
use crate::digest::Digest;
use crate::metadata::{BlobInfo, NodeRecord};
use crate::registry::{ReceivedDag, Registry};
use crate::storage::{Arriving, Progress};
use crate::unixfs::DagBlock;
use bytes::Bytes;
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{oneshot, watch};

/// Bytes of leaves wanted ahead of the one the reader waits for.
pub const WINDOW: u64 = 24 << 20;
/// What a part whose size is unknown or beyond a block (an inner node) counts for in the window.
const INNER_NODE: u64 = 4 << 10;
/// The largest block a peer may send (Kubo's limit): a part said to be smaller is a leaf.
const MAX_LEAF: u64 = 2 << 20;

/// The swarm's pull-through, as the registry's [`crate::registry::Remote`].
pub struct Pulls {
    reg: Weak<Registry>,
    policy: Weak<Policy>,
    swarm: Handle,
    running: Mutex<HashMap<Digest, Arc<Arriving>>>,
}

impl Pulls {
    pub fn new(reg: &Arc<Registry>, policy: &Arc<Policy>, swarm: Handle) -> Arc<Pulls> {
        Arc::new(Pulls { reg: Arc::downgrade(reg), policy: Arc::downgrade(policy), swarm, running: Mutex::new(HashMap::new()) })
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
        let (Some(reg), Some(policy)) = (self.reg.upgrade(), self.policy.upgrade()) else {
            progress.send_modify(|p| p.end = Some(Err("the node is stopping".into())));
            return arriving;
        };
        let receiving = Arc::new(policy.receiving(digest.clone(), arriving.clone()));
        let (repo, digest, info) = (repo.to_string(), digest.clone(), info.clone());
        let swarm = self.swarm.clone();
        let written = arriving.follow();
        tokio::spawn(async move {
            // The holders first, then the other nodes: they may be pulling it too.
            let mut hints: Vec<_> = holders.into_iter().filter_map(hint).collect();
            match reg.live_fellows().await {
                Ok(fellows) => {
                    for (peer, addrs) in fellows.into_iter().filter_map(hint) {
                        if hints.iter().all(|(p, _)| *p != peer) {
                            hints.push((peer, addrs));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the other nodes are unknown; pulling from the holders"),
            }
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
            let leaves = Leaves::default();
            let server = swarm.bitswap.clone();
            let arrived: Arrived = {
                let (receiving, server) = (receiving.clone(), server.clone());
                Arc::new(move |cid, bytes| {
                    receiving.arrived(cid, bytes);
                    server.arrived_here(&[cid]);
                })
            };
            tokio::spawn(move_to_file(written, receiving.clone(), leaves.clone()));
            let body = Box::pin(file_bytes(Session::passing_on(swarm, hints, arrived), root, info.size, dag.clone(), leaves));
            match reg.receive_blob(&repo, &digest, "swarm", (root, dag), body, progress).await {
                Ok(size) => tracing::info!(%digest, size, elapsed = ?started.elapsed(), "pulled a blob from peers"),
                Err(e) => tracing::warn!(%digest, error = %e, "pull from peers failed"),
            }
            // Published (its blocks are in the store now) or failed: no longer offered from here.
            drop(receiving);
        });
        arriving
    }
}

/// Leaves consumed by the reader, in file order (CID, offset, length): each is offered from
/// memory until its bytes are in the upload file.
type Leaves = Arc<Mutex<VecDeque<(Cid, u64, u64)>>>;

/// Offers each consumed leaf from the upload file once the fetch has written it, so its bytes
/// are not held in memory; ends with the fetch.
async fn move_to_file(mut written: watch::Receiver<Progress>, receiving: Arc<Receiving>, leaves: Leaves) {
    loop {
        let (upto, ended) = {
            let p = written.borrow_and_update();
            (p.written, p.end.is_some())
        };
        if ended {
            return;
        }
        {
            let mut leaves = leaves.lock().expect("leaves lock");
            while let Some(&(cid, offset, len)) = leaves.front().filter(|(_, offset, len)| offset + len <= upto) {
                receiving.leaf(cid, offset, len);
                leaves.pop_front();
            }
        }
        if written.changed().await.is_err() {
            return;
        }
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
fn file_bytes(session: Session, root: Cid, limit: u64, dag: ReceivedDag, leaves: Leaves) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let parts = VecDeque::from([Part { cid: root, size: None, fetch: None }]);
    let rng = fastrand::Rng::new();
    futures_util::stream::unfold((session, parts, 0u64, rng), move |(session, mut parts, mut sent, mut rng)| {
        let (dag, leaves) = (dag.clone(), leaves.clone());
        async move {
            loop {
                // Ask for what the window allows once it is half empty, the front part first and
                // the rest in a random order: wants go in batches, so peers answer with few
                // streams (a burst of reply streams loses some), and nodes pulling the same file
                // at once ask its holder for different blocks and trade the rest.
                let mut ahead: u64 = parts.iter().filter(|p| p.fetch.is_some()).map(Part::cost).sum();
                if let Some(front) = parts.front_mut().filter(|p| p.fetch.is_none()) {
                    ahead += front.cost();
                    front.fetch = Some(session.ask(front.cid));
                }
                if ahead <= WINDOW / 2 {
                    let mut batch = Vec::new();
                    for (i, part) in parts.iter().enumerate().filter(|(_, p)| p.fetch.is_none()) {
                        if ahead > 0 && ahead + part.cost() > WINDOW {
                            break;
                        }
                        ahead += part.cost();
                        batch.push(i);
                    }
                    rng.shuffle(&mut batch);
                    for i in batch {
                        parts[i].fetch = Some(session.ask(parts[i].cid));
                    }
                }
                let mut part = parts.pop_front()?;
                let fail = |e: String| Some((Err(std::io::Error::other(e)), (session.clone(), VecDeque::new(), u64::MAX, fastrand::Rng::new())));
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
                        leaves.lock().expect("leaves lock").push_back((part.cid, sent, len));
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
                return Some((Ok(content), (session, parts, sent, rng)));
            }
        }
    })
}
