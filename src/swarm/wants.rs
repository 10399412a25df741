//! Bitswap, the client side's bookkeeping: which sessions want which blocks, and the judgement of
//! every block a peer sends. A block's CID is computed from the bytes that came (Bitswap 1.1+
//! sends only a CID prefix), so a corrupted block is a block nobody wanted: a peer that sends
//! one is misbehaving, and is disconnected and kept out of sessions for [`BAN`].

use super::message::{Entry, Message, WantType, Wantlist};
use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a peer that sent a wrong block is left out of sessions.
pub const BAN: Duration = Duration::from_secs(600);
/// CIDs remembered as wanted lately, to tell a late or duplicate block from a wrong one.
const WANTED_LATELY: usize = 1 << 16;

/// What a peer said about a block a session wants.
#[derive(Debug)]
pub enum News {
    /// The block, verified: its bytes hash to `cid`.
    Block {
        cid: Cid,
        data: Bytes,
        from: PeerId,
    },
    DontHave {
        cid: Cid,
        from: PeerId,
    },
    Have {
        cid: Cid,
        from: PeerId,
    },
}

/// What a block that arrived was.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A session waited for it.
    Wanted,
    /// Wanted a moment ago (a duplicate from a second peer, or after a timeout moved on).
    Late,
    /// Nobody asked for anything that hashes so: corrupted, or unsolicited.
    Wrong,
}

type SessionId = u64;
/// The sessions waiting for a block, each with its mailbox and, once it has asked a peer for the
/// block, whether to pass it on to strangers as it arrives.
type Waiting = Vec<(SessionId, mpsc::UnboundedSender<News>, Option<bool>)>;

#[derive(Default)]
pub struct Wants {
    interest: Mutex<HashMap<Cid, Waiting>>,
    lately: Mutex<(HashSet<Cid>, VecDeque<Cid>)>,
    banned: Mutex<HashMap<PeerId, Instant>>,
    next: AtomicU64,
}

/// A session's mailbox: what peers said about the blocks it wants. Dropping it withdraws them.
pub struct Inbox {
    id: SessionId,
    tx: mpsc::UnboundedSender<News>,
    pub rx: mpsc::UnboundedReceiver<News>,
    /// The fetch this session's blocks are kept for, if they go out while it runs.
    underway: Option<std::sync::Arc<crate::exposure::Underway>>,
}

impl Wants {
    pub fn open(&self, underway: Option<std::sync::Arc<crate::exposure::Underway>>) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        Inbox { id: self.next.fetch_add(1, Ordering::Relaxed), tx, rx, underway }
    }

    /// Whether a session has asked a peer for `cid`: `Some(true)` if for a pin whose blocks go
    /// to strangers as they arrive (none came from a trusted peer), `Some(false)` if only for
    /// content whose blocks go to strangers as its owner's do. A peer that will be told HAVE
    /// soon (a stranger, for the first; a trusted peer, for either) learns nothing from being
    /// told nothing meanwhile that it would not learn anyway.
    pub fn fetching(&self, cid: &Cid) -> Option<bool> {
        let interest = self.interest.lock().expect("wants lock");
        let asked = interest.get(cid).into_iter().flatten().filter_map(|(_, _, passing)| *passing);
        asked.reduce(|a, b| a || b)
    }

    /// `inbox` has asked a peer for `cid`: see [`Wants::fetching`].
    pub fn asked(&self, inbox: &Inbox, cid: &Cid) {
        let passing = inbox.underway.as_ref().is_some_and(|u| !u.came_from_trusted());
        if let Some(entry) = self.interest.lock().expect("wants lock").get_mut(cid).and_then(|w| w.iter_mut().find(|(id, _, _)| *id == inbox.id)) {
            entry.2 = Some(passing);
        }
    }

    /// `inbox` waits for `cid`.
    pub fn want(&self, inbox: &Inbox, cid: Cid) {
        let mut interest = self.interest.lock().expect("wants lock");
        let waiting = interest.entry(cid).or_default();
        if waiting.iter().all(|(id, _, _)| *id != inbox.id) {
            waiting.push((inbox.id, inbox.tx.clone(), None));
        }
        drop(interest);
        let mut lately = self.lately.lock().expect("lately lock");
        if lately.0.insert(cid) {
            lately.1.push_back(cid);
            if lately.1.len() > WANTED_LATELY {
                if let Some(old) = lately.1.pop_front() {
                    lately.0.remove(&old);
                }
            }
        }
    }

    /// `inbox` no longer waits for `cid`.
    pub fn unwant(&self, inbox: &Inbox, cid: &Cid) {
        let mut interest = self.interest.lock().expect("wants lock");
        if let Some(waiting) = interest.get_mut(cid) {
            waiting.retain(|(id, _, _)| *id != inbox.id);
            if waiting.is_empty() {
                interest.remove(cid);
            }
        }
    }

    /// Withdraws everything `inbox` waits for.
    pub fn close(&self, inbox: &Inbox, cids: impl IntoIterator<Item = Cid>) {
        for cid in cids {
            self.unwant(inbox, &cid);
        }
    }

    /// A block arrived from `from`: handed to every session waiting for the CID its bytes hash
    /// to (each is then no longer waiting for it).
    pub fn arrived(&self, from: PeerId, prefix: &[u8], data: Bytes) -> Arrival {
        let Some(cid) = cid_of(prefix, &data) else { return Arrival::Wrong };
        let waiting = self.interest.lock().expect("wants lock").remove(&cid);
        match waiting {
            Some(waiting) => {
                for (_, tx, _) in waiting {
                    let _ = tx.send(News::Block { cid, data: data.clone(), from });
                }
                Arrival::Wanted
            }
            None if self.lately.lock().expect("lately lock").0.contains(&cid) => Arrival::Late,
            None => Arrival::Wrong,
        }
    }

    /// `from` says whether it has `cid`.
    pub fn presence(&self, from: PeerId, cid: Cid, have: bool) {
        if let Some(waiting) = self.interest.lock().expect("wants lock").get(&cid) {
            for (_, tx, _) in waiting {
                let news = if have { News::Have { cid, from } } else { News::DontHave { cid, from } };
                let _ = tx.send(news);
            }
        }
    }

    /// Leaves `peer` out of sessions for [`BAN`].
    pub fn ban(&self, peer: PeerId) {
        let mut banned = self.banned.lock().expect("banned lock");
        let now = Instant::now();
        banned.retain(|_, until| *until > now);
        banned.insert(peer, now + BAN);
    }

    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.lock().expect("banned lock").get(peer).is_some_and(|until| *until > Instant::now())
    }
}

/// The CID of `data` under `prefix` (version, codec, multihash code and length), if its hash is
/// one this node computes.
pub fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
    let mut fields = [0u64; 4];
    let mut at = 0;
    for f in &mut fields {
        let (v, n) = crate::varint::decode(prefix.get(at..)?).ok()??;
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

/// A message cancelling earlier wants of `cids`.
pub fn cancels_message(cids: &[Cid]) -> Message {
    let entries = cids.iter().map(|cid| Entry { block: cid.to_bytes(), priority: 0, cancel: true, want_type: WantType::Block as i32, send_dont_have: false }).collect();
    Message { wantlist: Some(Wantlist { entries, full: false }), ..Default::default() }
}

/// A message wanting `cids` (`kind`, with send-dont-have).
pub fn wants_message(cids: &[Cid], kind: WantType) -> Message {
    let entries = cids.iter().map(|cid| Entry { block: cid.to_bytes(), priority: 1, cancel: false, want_type: kind as i32, send_dont_have: true }).collect();
    Message { wantlist: Some(Wantlist { entries, full: false }), ..Default::default() }
}
