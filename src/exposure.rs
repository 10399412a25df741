//! Whether a block may leave the node: the one place that decides it, for every block a gateway
//! response, an RPC answer or a walk through a path contains.
//!
//! The operator (loopback RPC, an administrator's credentials) may read everything. Anyone else
//! may read a block when what it was recorded for is public:
//! - a block of a blob's DAG: the blob is linked to a public repository;
//! - a block of an image DAG: that image is a manifest or tag of a public repository;
//! - a block added through the RPC (`add`, `block/put`, `dag/import`): its pin still exists
//!   (as a Kubo node serves what it pins);
//! - a block that a public block of a DAG this node *built* (a blob's or an image's) links to,
//!   within the same request: those DAGs are made from the public content itself, so everything
//!   under them is that content, even where a block was first recorded for something private
//!   (an identical leaf, the `oci-layout` file every image shares).
//!
//! Identity CIDs carry their bytes and are never refused, but they vouch for nothing: what they
//! link to is judged on its own, like anything else. Pinning a registry CID through the RPC does
//! not make it public: repository visibility decides for registry content.

use crate::blockstore::Owner;
use crate::registry::{Registry, Result};
use cid::Cid;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Who the bytes are going to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The operator: everything.
    Operator,
    /// Anyone else: only public content.
    Anyone,
}

/// The most links one request remembers as vouched for; past it, blocks are judged by owner only
/// (never more permissive, only slower).
const MAX_VOUCHED: usize = 1 << 20;

/// The exposure decisions of one request (a response, a walk): the verdict per owner and the
/// blocks vouched for are remembered for that request only, so a change of visibility takes
/// effect with the next request.
pub struct Exposure {
    reg: Arc<Registry>,
    audience: Audience,
    verdicts: Mutex<HashMap<Owner, bool>>,
    vouched: Mutex<HashSet<Cid>>,
}

/// Why a block was let out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Refused,
    /// Allowed, and its links are the same content (a DAG this node built, or reached from one).
    Vouching,
    /// Allowed; its links are judged on their own.
    Alone,
}

impl Exposure {
    pub fn new(reg: Arc<Registry>, audience: Audience) -> Self {
        Exposure { reg, audience, verdicts: Mutex::new(HashMap::new()), vouched: Mutex::new(HashSet::new()) }
    }

    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// May `cid`, recorded for `owner`, go to this request's audience?
    pub async fn admit(&self, cid: &Cid, owner: &Owner) -> Result<Admission> {
        if self.audience == Audience::Operator {
            return Ok(Admission::Vouching);
        }
        if self.vouched.lock().expect("vouched lock").contains(cid) {
            return Ok(Admission::Vouching);
        }
        let cached = self.verdicts.lock().expect("verdicts lock").get(owner).copied();
        let public = match cached {
            Some(v) => v,
            None => {
                let v = match owner {
                    Owner::Blob(d) => self.reg.meta.blob_is_public(&d.to_string()).await?,
                    Owner::Image(root) => self.reg.meta.cid_is_public(root).await?,
                    Owner::Pin(root) => match root.parse::<Cid>() {
                        Ok(root) => self.reg.blocks.is_pinned(&root).await?,
                        Err(_) => false,
                    },
                    // Not cached: the answer is about this block, not a class of them.
                    Owner::Nothing => return Ok(if self.reg.blocks.is_pinned(cid).await? { Admission::Alone } else { Admission::Refused }),
                };
                self.verdicts.lock().expect("verdicts lock").insert(owner.clone(), v);
                v
            }
        };
        Ok(match (public, owner) {
            (true, Owner::Blob(_) | Owner::Image(_)) => Admission::Vouching,
            (true, _) => Admission::Alone,
            // First recorded for something private, yet the root of public content of its own.
            (false, _) if self.reg.meta.cid_is_public(&cid.to_string()).await? => Admission::Vouching,
            (false, _) => Admission::Refused,
        })
    }

    /// Remembers that `links` (of a block admitted as `Vouching`) are the same content.
    pub fn vouch(&self, links: impl IntoIterator<Item = Cid>) {
        if self.audience == Audience::Operator {
            return;
        }
        let mut vouched = self.vouched.lock().expect("vouched lock");
        for cid in links {
            if vouched.len() >= MAX_VOUCHED {
                return;
            }
            vouched.insert(cid);
        }
    }
}
