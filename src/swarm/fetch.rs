//! Bitswap, the client side: wanting blocks from peers. A want goes to the connected peers (or,
//! with none, to providers found on the DHT) as want-block with send-dont-have; the first block
//! that arrives is hashed, and only a block whose hash is the wanted CID's is handed on (a CID is
//! computed from the bytes that came, so a corrupted block is one nobody wanted). All peers
//! answering DONT_HAVE, or silence for [`FETCH_TIMEOUT`], ends the want.

use super::bitswap::BITSWAP_120;
use super::message::{self, Entry, Message, Wantlist, WantType};
use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a want waits for a block.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long before a want is sent again.
pub const REWANT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Wants {
    pending: Mutex<HashMap<Cid, Pending>>,
    /// Blocks that arrived lately, for a waiter that comes just after (a walk asking for a
    /// block its prefetch already received and is still storing).
    recent: Mutex<std::collections::VecDeque<(Cid, Bytes)>>,
}

/// Bytes of blocks kept in [`Wants::recent`] (a few blocks: the waiter comes a moment after).
const RECENT_BYTES: usize = 8 << 20;

/// What [`Wants::register`] found.
pub enum Want {
    /// It arrived a moment ago.
    Ready(Bytes),
    /// Wait for it; `first`: nobody else asked for it yet, so send the wants.
    Wait { rx: oneshot::Receiver<Bytes>, first: bool },
}

#[derive(Default)]
struct Pending {
    waiters: Vec<oneshot::Sender<Bytes>>,
    asked: usize,
    refused: usize,
}

impl Wants {
    /// Waits for `cid` to arrive; the first waiter of a CID also sends the wants.
    pub fn register(&self, cid: Cid) -> Want {
        let mut pending = self.pending.lock().expect("wants lock");
        if let Some((_, bytes)) = self.recent.lock().expect("recent lock").iter().find(|(c, _)| *c == cid) {
            return Want::Ready(bytes.clone());
        }
        let (tx, rx) = oneshot::channel();
        let first = !pending.contains_key(&cid);
        pending.entry(cid).or_default().waiters.push(tx);
        Want::Wait { rx, first }
    }

    pub fn asked(&self, cid: &Cid, peers: usize) {
        if let Some(p) = self.pending.lock().expect("wants lock").get_mut(cid) {
            p.asked += peers;
        }
    }

    /// Forgets a want nobody waits for any more.
    pub fn forget(&self, cid: &Cid) {
        let mut pending = self.pending.lock().expect("wants lock");
        if pending.get(cid).is_some_and(|p| p.waiters.iter().all(|w| w.is_closed())) {
            pending.remove(cid);
        }
    }

    /// A block arrived: handed to whoever wanted it if its bytes hash to a wanted CID. Returns
    /// whether anyone did.
    pub fn arrived(&self, prefix: &[u8], data: Vec<u8>) -> bool {
        let Some(cid) = cid_of(prefix, &data) else {
            tracing::debug!(?prefix, "bitswap: a block under a prefix this node does not hash");
            return false;
        };
        let mut pending = self.pending.lock().expect("wants lock");
        let Some(p) = pending.remove(&cid) else {
            tracing::debug!(%cid, "bitswap: a block nobody wanted");
            return false;
        };
        let data = Bytes::from(data);
        let mut recent = self.recent.lock().expect("recent lock");
        recent.push_back((cid, data.clone()));
        while recent.iter().map(|(_, b)| b.len()).sum::<usize>() > RECENT_BYTES && recent.len() > 1 {
            recent.pop_front();
        }
        for w in p.waiters {
            let _ = w.send(data.clone());
        }
        true
    }

    /// A peer said it lacks `cid`: when every peer asked has, the want ends.
    pub fn refused(&self, cid: &Cid) {
        let mut pending = self.pending.lock().expect("wants lock");
        if let Some(p) = pending.get_mut(cid) {
            p.refused += 1;
            if p.refused >= p.asked {
                pending.remove(cid);
            }
        }
    }
}

/// The CID of `data` under `prefix` (version, codec, multihash code and length), if its hash is
/// one this node computes.
fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
    let mut fields = [0u64; 4];
    let mut at = 0;
    for f in &mut fields {
        let (v, n) = crate::varint::decode(&prefix[at..]).ok()??;
        *f = v;
        at += n;
    }
    let [version, codec, code, len] = fields;
    if code != crate::unixfs::SHA2_256 || len != 32 {
        return None;
    }
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(data).into();
    let mh = cid::multihash::Multihash::<64>::wrap(code, &digest).ok()?;
    match version {
        0 if codec == crate::unixfs::DAG_PB => Cid::new_v0(mh).ok(),
        1 => Some(Cid::new_v1(codec, mh)),
        _ => None,
    }
}

/// Sends one want-block for `cid` to `peer` on a new stream.
pub async fn send_want(mut control: libp2p_stream::Control, peer: PeerId, cid: Cid) -> Result<(), String> {
    let entry = Entry { block: cid.to_bytes(), priority: 1, cancel: false, want_type: WantType::Block as i32, send_dont_have: true };
    let m = Message { wantlist: Some(Wantlist { entries: vec![entry], full: false }), ..Default::default() };
    let mut stream = control.open_stream(peer, BITSWAP_120).await.map_err(|e| e.to_string())?;
    message::write(&mut stream, &m).await.map_err(|e| e.to_string())?;
    futures_util::AsyncWriteExt::close(&mut stream).await.map_err(|e| e.to_string())
}

/// A block source for the operator's walks that fetches what the node lacks from peers and keeps
/// it (recorded for `owner`, the pin it arrives under): `pin/add` and `block/get` of content only
/// peers have. When a dag-pb block comes, its missing links are wanted at once (at most
/// [`PREFETCH`] in flight), so a walk finds them arriving rather than asking one at a time.
pub struct Fetching {
    pub reg: std::sync::Arc<crate::registry::Registry>,
    pub swarm: super::Handle,
    pub owner: crate::blockstore::Owner,
    pub prefetch: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Links wanted ahead of a walk (with 1 MiB leaves, this many MiB in flight).
pub const PREFETCH: usize = 32;

impl Fetching {
    pub fn new(reg: std::sync::Arc<crate::registry::Registry>, swarm: super::Handle, root: &Cid) -> Self {
        let owner = crate::blockstore::Owner::Pin(root.to_string());
        Fetching { reg, swarm, owner, prefetch: std::sync::Arc::new(tokio::sync::Semaphore::new(PREFETCH)) }
    }

    /// The block, local or fetched and kept.
    async fn get(reg: &crate::registry::Registry, swarm: &super::Handle, owner: &crate::blockstore::Owner, cid: &Cid) -> crate::dag::Result<Option<Bytes>> {
        if let Some(bytes) = reg.get_block(cid).await? {
            return Ok(Some(bytes));
        }
        let Ok(bytes) = swarm.fetch(*cid).await else { return Ok(None) };
        reg.store_blocks(vec![(*cid, bytes.to_vec())], owner.clone()).await?;
        Ok(Some(bytes))
    }
}

impl crate::dag::BlockSource for Fetching {
    fn fetch<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, crate::dag::Result<Option<(Bytes, crate::exposure::Admission)>>> {
        Box::pin(async move {
            let Some(bytes) = Self::get(&self.reg, &self.swarm, &self.owner, cid).await? else { return Ok(None) };
            if cid.codec() == crate::unixfs::DAG_PB {
                if let Ok(node) = crate::unixfs::decode_node(&bytes) {
                    for link in node.links {
                        if crate::dag::well_known(&link.cid).is_some() || self.reg.has_block(&link.cid).await.unwrap_or(true) {
                            continue;
                        }
                        let Ok(permit) = self.prefetch.clone().try_acquire_owned() else { break };
                        let (reg, swarm, owner) = (self.reg.clone(), self.swarm.clone(), self.owner.clone());
                        tokio::spawn(async move {
                            let _ = Self::get(&reg, &swarm, &owner, &link.cid).await;
                            drop(permit);
                        });
                    }
                }
            }
            Ok(Some((bytes, crate::exposure::Admission::Vouching)))
        })
    }

    fn sees_all(&self) -> bool {
        true
    }

    fn vouch(&self, _links: Vec<Cid>) {}
}
