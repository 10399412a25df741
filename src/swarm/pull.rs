//! Pull-through: a blob this node knows by its root CID but does not hold is fetched over
//! Bitswap (from the nodes the metadata names as holders, the other nodes on the same metadata,
//! the connected peers, or DHT providers) while the client reads it. Its bytes go in order to
//! `Registry::receive_blob`, which writes them to an upload file, checks the digest at the end
//! and publishes the blob; readers follow that file (`storage::Arriving`). One fetch per blob,
//! whoever asks.
//!
//! Blocks are fetched ahead of the reader, [`PREFETCH`] at a time, each picked at random from
//! the DAG's frontier (the links of every block fetched so far), and written down at once to a
//! scratch file of the pull (unlinked: gone with the pull), so no more than the blocks in
//! flight are in memory however far ahead the fetch runs; the reader, in file order, takes each
//! from there. Nodes pulling one image at once, a rollout, then ask its holder for different
//! blocks, offer each block to the others as soon as it is here (see `exposure::Receiving`),
//! and take from each other what one of them has: the holder is asked only for what no other
//! node said HAVE of (`Session::with_seeds`).

use super::frontier::{links_of, Frontier};
use super::session::Session;
use super::{Handle, SwarmError};
use crate::dag::{self, Node};
use crate::digest::Digest;
use crate::exposure::{Policy, Receiving};
use crate::metadata::{BlobInfo, NodeRecord};
use crate::registry::{ReceivedDag, Registry};
use crate::storage::Arriving;
use crate::unixfs::DagBlock;
use bytes::Bytes;
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Blocks fetched at once ahead of the reader, each asked of every peer (see
/// `super::fetch::PREFETCH`): with 64, 8 pulls at once took 1.80x one alone, with 256 1.55x.
pub const PREFETCH: usize = 256;

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
        let receiving = Arc::new(policy.receiving(digest.clone()));
        let (repo, digest, info) = (repo.to_string(), digest.clone(), info.clone());
        let swarm = self.swarm.clone();
        tokio::spawn(async move {
            let fail = |why: String| progress.send_modify(|p| p.end = Some(Err(why.into())));
            let root = match info.root_cid.parse::<Cid>() {
                Ok(root) => root,
                Err(e) => return fail(format!("root CID {:?}: {e}", info.root_cid)),
            };
            let scratch = match Scratch::create(&reg.staging_dir()) {
                Ok(scratch) => Arc::new(scratch),
                Err(e) => return fail(format!("no scratch file for the pull: {e}")),
            };
            // The holders first, then the other nodes: they may be pulling it too.
            let mut hints: Vec<_> = holders.into_iter().filter_map(hint).collect();
            let seeds: Vec<PeerId> = hints.iter().map(|(p, _)| *p).collect();
            let mut fleet = vec![swarm.peer_id];
            match reg.live_fellows().await {
                Ok(fellows) => {
                    for (peer, addrs) in fellows.into_iter().filter_map(hint) {
                        if !seeds.contains(&peer) {
                            fleet.push(peer);
                        }
                        if hints.iter().all(|(p, _)| *p != peer) {
                            hints.push((peer, addrs));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the other nodes are unknown; pulling from the holders"),
            }
            // This node's place among the nodes on the metadata that may be pulling it too: its
            // stripe of the blocks.
            fleet.sort();
            let stripe = (fleet.iter().position(|p| *p == swarm.peer_id).unwrap_or(0) as u64, fleet.len() as u64);
            tracing::info!(%digest, %root, "pulling a blob from peers");
            let started = std::time::Instant::now();
            let dag = ReceivedDag::default();
            let session = Session::with_seeds(swarm.clone(), hints, seeds);
            let ahead = Arc::new(Ahead {
                session,
                scratch,
                receiving: receiving.clone(),
                server: swarm.bitswap.clone(),
                // The DAG's inner nodes are a small part of it; past this, it is not the blob's.
                budget: info.size + info.size / 16 + (1 << 20),
                stripe,
                plan: Mutex::default(),
                arrived: tokio::sync::Notify::new(),
            });
            let body = Box::pin(file_bytes(ahead, root, info.size, dag.clone()));
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

/// A holder as a session hint: its peer ID and swarm addresses.
fn hint(node: NodeRecord) -> Option<(PeerId, Vec<Multiaddr>)> {
    let peer = node.id.parse().ok()?;
    Some((peer, node.swarm_addrs.iter().filter_map(|a| a.parse().ok()).collect()))
}

/// The pull's scratch file: blocks fetched ahead, appended as they come. Unlinked once open,
/// so it is gone when the pull is, whatever way it ends.
struct Scratch {
    file: Arc<File>,
    end: AtomicU64,
}

impl Scratch {
    fn create(dir: &std::path::Path) -> std::io::Result<Scratch> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("pull-{}", uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Scratch { file: Arc::new(file), end: AtomicU64::new(0) })
    }

    /// Appends `bytes`; where they went.
    async fn put(&self, bytes: Bytes) -> std::io::Result<u64> {
        let at = self.end.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.write_all_at(&bytes, at)).await.map_err(std::io::Error::other)??;
        Ok(at)
    }

    async fn get(&self, at: u64, len: u64) -> std::io::Result<Bytes> {
        crate::storage::read_exact_at_blocking(self.file.clone(), at, len).await
    }
}

/// The fetch ahead of the reader.
struct Ahead {
    session: Session,
    scratch: Arc<Scratch>,
    receiving: Arc<Receiving>,
    server: Arc<super::bitswap::Server>,
    /// Bytes the fetch ahead may write down at most.
    budget: u64,
    /// Whose blocks this node fetches first (see `Frontier::next_in`).
    stripe: (u64, u64),
    plan: Mutex<Plan>,
    /// A fetch ended (either way).
    arrived: tokio::sync::Notify,
}

#[derive(Default)]
struct Plan {
    frontier: Frontier,
    /// Blocks written down: where in the scratch file.
    here: HashMap<Cid, (u64, u64)>,
    failed: HashMap<Cid, String>,
}

impl Ahead {
    /// Adds `links` (of block `parent`) to the frontier and starts fetches while there is room
    /// and budget.
    fn queue(self: &Arc<Self>, parent: &Cid, links: Vec<Cid>) {
        self.plan.lock().expect("pull plan lock").frontier.add(parent, links);
        while self.scratch.end.load(Ordering::SeqCst) <= self.budget {
            let Some(cid) = self.plan.lock().expect("pull plan lock").frontier.next_in(PREFETCH, Some(self.stripe)) else { return };
            self.start(cid);
        }
    }

    /// Fetches `cid`, offers it to peers, writes it down and puts its links on the frontier.
    fn start(self: &Arc<Self>, cid: Cid) {
        let ahead = self.clone();
        tokio::spawn(async move {
            let mut links = Vec::new();
            let place = ahead.plan.lock().expect("pull plan lock").frontier.place(&cid);
            let outcome = match ahead.session.ask_at(cid, place).await {
                Ok(Ok(bytes)) => {
                    ahead.receiving.arrived(cid, bytes.clone());
                    ahead.server.arrived_here(&[cid]);
                    links = links_of(&cid, &bytes);
                    let len = bytes.len() as u64;
                    match ahead.scratch.put(bytes).await {
                        Ok(at) => {
                            ahead.receiving.spilled(cid, ahead.scratch.file.clone(), at, len);
                            Ok((at, len))
                        }
                        Err(e) => Err(format!("the pull's scratch file: {e}")),
                    }
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(SwarmError::Stopped.to_string()),
            };
            {
                let mut plan = ahead.plan.lock().expect("pull plan lock");
                plan.frontier.landed(&cid);
                match outcome {
                    Ok(at) => plan.here.insert(cid, at).map(drop),
                    Err(e) => plan.failed.insert(cid, e).map(drop),
                };
            }
            ahead.arrived.notify_waiters();
            ahead.queue(&cid, links);
        });
    }

    /// Block `cid`, once fetched (at once if its turn had not come).
    async fn take(self: &Arc<Self>, cid: &Cid) -> Result<Bytes, String> {
        loop {
            let arrived = self.arrived.notified();
            let (here, start) = {
                let mut plan = self.plan.lock().expect("pull plan lock");
                if let Some(e) = plan.failed.get(cid) {
                    return Err(e.clone());
                }
                let here = plan.here.get(cid).copied();
                let start = here.is_none() && !plan.frontier.in_flight(cid);
                if start {
                    plan.frontier.claim(cid);
                }
                (here, start)
            };
            if let Some((at, len)) = here {
                return self.scratch.get(at, len).await.map_err(|e| format!("the pull's scratch file: {e}"));
            }
            if start {
                self.start(*cid);
            }
            arrived.await;
        }
    }
}

/// The bytes of the UnixFS file at `root`, in order, each block taken from `ahead`. At most
/// `limit` bytes: a DAG that holds more is an error. Each block is recorded in `dag` before its
/// bytes are passed on.
fn file_bytes(ahead: Arc<Ahead>, root: Cid, limit: u64, dag: ReceivedDag) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let parts: VecDeque<(Cid, Option<u64>)> = VecDeque::from([(root, None)]);
    futures_util::stream::unfold((ahead, parts, 0u64), move |(ahead, mut parts, mut sent)| {
        let dag = dag.clone();
        async move {
            loop {
                let (cid, expected) = parts.pop_front()?;
                let fail = |e: String| Some((Err(std::io::Error::other(e)), (ahead.clone(), VecDeque::new(), u64::MAX)));
                let bytes = match ahead.take(&cid).await {
                    Ok(bytes) => bytes,
                    Err(e) => return fail(e),
                };
                let node = match dag::decode(&cid, bytes.clone()) {
                    Ok(node) => node,
                    Err(e) => return fail(e.to_string()),
                };
                let (content, size) = match node {
                    Node::Raw(b) => {
                        let len = b.len() as u64;
                        dag.lock().expect("received DAG lock").push(DagBlock::Leaf { cid, offset: sent, len });
                        (b, len)
                    }
                    Node::File { links, content, blocksizes, size } => {
                        dag.lock().expect("received DAG lock").push(DagBlock::Node { cid, bytes: bytes.to_vec() });
                        for (link, size) in links.iter().zip(blocksizes).rev() {
                            parts.push_front((link.cid, Some(size)));
                        }
                        (content, size)
                    }
                    _ => return fail(format!("{cid} is not part of a file")),
                };
                if expected.is_some_and(|s| s != size) {
                    return fail(format!("{cid}: its parent says {} bytes, it holds {size}", expected.unwrap_or(0)));
                }
                if content.is_empty() {
                    continue;
                }
                sent += content.len() as u64;
                if sent > limit {
                    return fail(format!("the DAG at {root} holds more than the blob's {limit} bytes"));
                }
                return Some((Ok(content), (ahead, parts, sent)));
            }
        }
    })
}
