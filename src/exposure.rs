//! The block service: "may block X go to A, and here it is", the one place that decides whether
//! a block may leave the node, for every block a gateway response, an RPC answer, a walk through
//! a path or a Bitswap reply contains. Each block is looked up once (where it is, what it was
//! recorded for), judged, and only then read and verified. It reads the block index and a
//! read-only view of what is public (`metadata::Visibility`); the registry keeps the changes.
//!
//! The operator (loopback RPC, an administrator's credentials) may read everything. Anyone else
//! may read a block when what it was recorded for is public:
//! - a block of a blob's DAG: the blob is linked to a public repository;
//! - a block of an image DAG: that image is a manifest or tag of a public repository;
//! - a block added through the RPC (`add`, `block/put`, `dag/import`) or fetched by one of its
//!   reads: its pin still exists (as a Kubo node serves what it pins), unless that pin brought an
//!   image into a private repository (a private image replicated here stays private), and
//!   unless its blocks came from a peer this node trusts (which may have sent them only because
//!   it trusts this node: a node passes on no more than its source would have given the
//!   asker). While such a pin's DAG is still being fetched, its blocks already here (in the
//!   block index, or verified and on their way to it: `Policy::landing`) go out on the same
//!   terms, so nodes fetching one DAG at once feed each other;
//! - a block of a blob being pulled from peers (pull-through), already written here: as the
//!   blob's (it is linked to its repository in the shared metadata already: that is how this
//!   node knew to pull it, and the source judges it by the same metadata), so nodes pulling one
//!   blob at once feed each other;
//! - a block that a public block of a DAG this node *built* (a blob's or an image's) links to,
//!   within the same request: those DAGs are made from the public content itself, so everything
//!   under them is that content, even where a block was first recorded for something private
//!   (an identical leaf, the `oci-layout` file every image shares).
//!
//! Identity CIDs carry their bytes and are never refused, but they vouch for nothing: what they
//! link to is judged on its own, like anything else. Pinning a registry CID through the RPC does
//! not make it public: repository visibility decides for registry content.

use crate::blockstore::{BlockIndex, Location, Owner};
use crate::metadata::Visibility;
use crate::registry::{corrupt, Registry, Result};
use cid::Cid;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Who the bytes are going to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The operator: everything.
    Operator,
    /// Anyone else: only public content.
    Anyone,
    /// A swarm peer, by its peer ID (base58): everything if it is one of the operator's
    /// `--trusted-peer`s, else what anyone may read.
    Peer(Arc<str>),
}

/// The most links one request remembers as vouched for; past it, blocks are judged by owner only
/// (never more permissive, only slower).
const MAX_VOUCHED: usize = 1 << 20;

/// Owner verdicts the node keeps between requests; past it, the cache starts again empty.
const MAX_VERDICTS: usize = 1 << 16;

/// The node's block service and exposure policy: who is trusted, and the public/private verdict
/// per owner, kept across requests for as long as the registry's change generation stays what it
/// was when the verdict was read (see `Registry::generation`): every change that could alter a
/// verdict bumps it before the change returns, so no verdict outlives the change.
pub struct Policy {
    reg: Arc<Registry>,
    public: Arc<dyn Visibility>,
    trusted: HashSet<String>,
    verdicts: Mutex<Verdicts>,
    /// RPC pins whose DAG is being fetched from peers, by root.
    underway: Mutex<HashMap<String, Arc<Underway>>>,
    /// Blocks of blobs being pulled from peers, by CID (see [`Policy::receiving`]).
    arriving: Mutex<HashMap<Cid, Arc<ArrivingBlock>>>,
}

/// The most blocks of blobs being pulled the node offers at once; past it, further blocks are
/// offered once their blob is published.
const MAX_ARRIVING: usize = 1 << 20;

/// A block being fetched from peers, verified and not written down yet (or, for a blob, not
/// published yet), judged as what it is fetched for.
struct ArrivingBlock {
    owner: Owner,
    held: Held,
}

enum Held {
    /// Just fetched, held by the pull until it is written down.
    Memory(bytes::Bytes),
    /// `len` bytes at `offset` of the pull's scratch file.
    Spilled { file: Arc<std::fs::File>, offset: u64, len: u64 },
}

/// Where a block is.
enum Spot {
    Stored(Location),
    Arriving(Arc<ArrivingBlock>),
}

/// Blocks being fetched from peers for one owner, registered with [`Policy::receiving`] (a blob
/// being pulled) or [`Policy::landing`] (a pin's or an operator's read's blocks on their way to
/// the block index): the blocks recorded here may go out, judged as the owner's, until they are
/// written ([`Receiving::written`]) or it is dropped (the blob is published, the pull failed).
pub struct Receiving {
    policy: Arc<Policy>,
    owner: Owner,
    cids: Mutex<Vec<Cid>>,
}

impl Receiving {
    /// Block `cid` of the blob's DAG arrived (verified), held by the pull until it is written.
    pub fn arrived(&self, cid: Cid, bytes: bytes::Bytes) {
        let mut arriving = self.policy.arriving.lock().expect("arriving lock");
        if arriving.len() < MAX_ARRIVING && !arriving.contains_key(&cid) {
            arriving.insert(cid, Arc::new(ArrivingBlock { owner: self.owner.clone(), held: Held::Memory(bytes) }));
            self.cids.lock().expect("receiving lock").push(cid);
        }
    }

    /// Block `cid` is written down: `len` bytes at `offset` of `file`, read from there from now
    /// on.
    pub fn spilled(&self, cid: Cid, file: Arc<std::fs::File>, offset: u64, len: u64) {
        let mut arriving = self.policy.arriving.lock().expect("arriving lock");
        if arriving.get(&cid).is_some_and(|a| a.owner == self.owner) {
            arriving.insert(cid, Arc::new(ArrivingBlock { owner: self.owner.clone(), held: Held::Spilled { file, offset, len } }));
        }
    }

    /// Blocks `cids` are in the block index now, found there from now on.
    pub fn written(&self, cids: &[Cid]) {
        let mut arriving = self.policy.arriving.lock().expect("arriving lock");
        let mut mine = self.cids.lock().expect("receiving lock");
        for cid in cids {
            if arriving.get(cid).is_some_and(|a| a.owner == self.owner) {
                arriving.remove(cid);
            }
        }
        mine.retain(|c| !cids.contains(c));
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let mut arriving = self.policy.arriving.lock().expect("arriving lock");
        for cid in self.cids.get_mut().expect("receiving lock").drain(..) {
            if arriving.get(&cid).is_some_and(|a| a.owner == self.owner) {
                arriving.remove(&cid);
            }
        }
    }
}

/// A pin's DAG being fetched from peers. Its blocks, stored as they arrive, are passed on while
/// the fetch goes on (peers fetching the same DAG feed each other), as long as none came from a
/// peer this node trusts: such a peer may have sent them only because it trusts this node, and
/// a node passes on no more than its source would have given the asker.
#[derive(Default)]
pub struct Underway {
    from_trusted: std::sync::atomic::AtomicBool,
    fetches: std::sync::atomic::AtomicUsize,
}

impl Underway {
    /// A block came from a peer this node trusts.
    pub fn from_trusted(&self) {
        self.from_trusted.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether any block so far came from a peer this node trusts.
    pub fn came_from_trusted(&self) -> bool {
        self.from_trusted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A fetch registered with [`Policy::fetching`]; withdrawn when dropped.
pub struct Fetch {
    policy: Arc<Policy>,
    root: String,
    pub underway: Arc<Underway>,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        let mut underway = self.policy.underway.lock().expect("underway lock");
        if self.underway.fetches.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            underway.remove(&self.root);
        }
    }
}

#[derive(Default)]
struct Verdicts {
    generation: u64,
    by_owner: HashMap<Owner, bool>,
}

/// What the block service found for a request's block.
#[derive(Debug)]
pub enum Found {
    /// Held, admitted (and why), its bytes verified.
    Block(bytes::Bytes, Admission),
    /// Held, but not for this audience.
    Refused,
    /// Not on this node.
    Absent,
}

impl Policy {
    pub fn new(reg: Arc<Registry>, trusted_peers: impl IntoIterator<Item = String>) -> Arc<Self> {
        let public = reg.visibility_store();
        Arc::new(Policy { reg, public, trusted: trusted_peers.into_iter().collect(), verdicts: Default::default(), underway: Default::default(), arriving: Default::default() })
    }

    /// Registers a fetch from peers of the DAG of RPC pin `root` (which the fetch's blocks are
    /// recorded for). Two fetches of one root share what they learn of their sources.
    pub fn fetching(self: &Arc<Self>, root: &Cid) -> Fetch {
        let root = root.to_string();
        let underway = self.underway.lock().expect("underway lock").entry(root.clone()).or_default().clone();
        underway.fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Fetch { policy: self.clone(), root, underway }
    }

    /// Registers blob `blob`, being pulled from peers: see [`Receiving`].
    pub fn receiving(self: &Arc<Self>, blob: crate::digest::Digest) -> Receiving {
        self.landing(Owner::Blob(blob))
    }

    /// Registers blocks fetched for `owner` on their way to the block index: see [`Receiving`].
    pub fn landing(self: &Arc<Self>, owner: Owner) -> Receiving {
        Receiving { policy: self.clone(), owner, cids: Mutex::new(Vec::new()) }
    }

    /// Whether the blocks of pin `root`, still being fetched, may go to strangers.
    fn passing_on(&self, root: &str) -> bool {
        self.underway.lock().expect("underway lock").get(root).is_some_and(|u| !u.came_from_trusted())
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.reg
    }

    fn index(&self) -> &BlockIndex {
        self.reg.block_index()
    }

    /// Whether swarm peer `peer` (base58) is trusted with everything: a `--trusted-peer` or a node
    /// on the same database.
    pub fn trusts(&self, peer: &str) -> bool {
        self.trusted.contains(peer) || self.reg.is_fellow(peer)
    }

    /// Whether `audience` may have everything.
    fn sees_all(&self, audience: &Audience) -> bool {
        match audience {
            Audience::Operator => true,
            Audience::Anyone => false,
            Audience::Peer(id) => self.trusts(id),
        }
    }

    /// Where block `cid` is and what it was recorded for, without reading it: in the store, or
    /// a block of a blob being pulled (recorded for that blob).
    async fn locate(&self, cid: &Cid) -> Result<Option<(Spot, Owner)>> {
        if let Some((location, owner)) = self.index().locate_owned(cid).await.map_err(corrupt)? {
            return Ok(Some((Spot::Stored(location), owner)));
        }
        let arriving = self.arriving.lock().expect("arriving lock").get(cid).cloned();
        Ok(arriving.map(|a| {
            let owner = a.owner.clone();
            (Spot::Arriving(a), owner)
        }))
    }

    /// What the block of `cid` is held for, stored or on its way to the index, without reading
    /// its bytes.
    async fn owner(&self, cid: &Cid) -> Result<Option<Owner>> {
        if let Some(owner) = self.index().owner_of(cid).await.map_err(corrupt)? {
            return Ok(Some(owner));
        }
        Ok(self.arriving.lock().expect("arriving lock").get(cid).map(|a| a.owner.clone()))
    }

    /// The bytes at `spot`, verified against `cid`; `None` if gone (or not written yet). A
    /// stored block is hashed again as it is read (disk and other processes can change it); an
    /// arriving one was hashed as it arrived, moments ago, and is held in this process's memory
    /// or in its pull's scratch file, unlinked from the start, which no other process can open:
    /// hashing it again for each peer it goes to cost the fleet as much CPU as hashing it on
    /// arrival (`perf`, 8 `docker pull`s at once), and changed nothing it could catch.
    async fn read(&self, cid: &Cid, spot: Spot) -> Result<Option<bytes::Bytes>> {
        let held = match spot {
            Spot::Stored(location) => return self.index().read_at(cid, location).await.map_err(corrupt),
            Spot::Arriving(a) => a,
        };
        match &held.held {
            Held::Memory(bytes) => Ok(Some(bytes.clone())),
            Held::Spilled { file, offset, len } => match crate::storage::read_exact_at_blocking(file.clone(), *offset, *len).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) => {
                    tracing::warn!(%cid, error = %e, "a block of a blob being pulled could not be read back");
                    Ok(None)
                }
            },
        }
    }

    /// May block `cid` go to `audience`, judged on its own (no DAG it was reached through
    /// vouches for it)? For a single block asked for by itself, as a Bitswap want-have is.
    /// False for a block this node does not hold, whoever asks.
    /// An absent block costs what a refused one does (see [`Policy::as_if_refused`]).
    pub async fn may_send(&self, cid: &Cid, audience: &Audience) -> Result<bool> {
        let Some(owner) = self.owner(cid).await? else {
            self.as_if_refused(cid, audience).await?;
            return Ok(false);
        };
        Ok(self.sees_all(audience) || self.judge(cid, &owner).await? != Admission::Refused)
    }

    /// For a block this node lacks, asked for by someone who does not see all: the lookups
    /// [`Policy::judge`] makes of a held private block (its other owners, whether it is a public
    /// root), results unused. A swarm peer times its answers; without this, an absent block was
    /// answered in a third of the time of a held private one, which told the two apart.
    async fn as_if_refused(&self, cid: &Cid, audience: &Audience) -> Result<()> {
        if !self.sees_all(audience) {
            for other in self.index().other_owners(cid).await.map_err(corrupt)? {
                self.owner_is_public(&other).await?;
            }
            self.public.cid_is_public(&cid.to_string()).await?;
        }
        Ok(())
    }

    /// The verified bytes of block `cid` if this node holds it and `audience` may have it, judged
    /// on its own, with one lookup (what a Bitswap want-block needs).
    pub async fn get(&self, cid: &Cid, audience: &Audience) -> Result<Option<bytes::Bytes>> {
        let Some((spot, owner)) = self.locate(cid).await? else {
            self.as_if_refused(cid, audience).await?;
            return Ok(None);
        };
        if !self.sees_all(audience) && self.judge(cid, &owner).await? == Admission::Refused {
            return Ok(None);
        }
        self.read(cid, spot).await
    }

    /// The recursive pins (their whole DAGs kept).
    pub async fn pins(&self) -> Result<Vec<String>> {
        Ok(self.index().pins().await?)
    }

    /// The direct pins (their root blocks alone kept).
    pub async fn direct_pins(&self) -> Result<Vec<String>> {
        Ok(self.index().direct_pins().await?)
    }

    /// Whether the RPC pin of `root` makes what it holds public: it exists, and if it brought
    /// an image into the registry, that image's repository is public.
    async fn pin_is_public(&self, root: &Cid) -> Result<bool> {
        if !self.index().is_pinned_for_anyone(root).await? {
            return Ok(false);
        }
        let tags = self.index().pin_tags(Some(root)).await?;
        let mut repositories: Vec<&str> = tags.iter().map(|(_, t)| t.repository.as_str()).collect();
        repositories.dedup();
        for repo in repositories {
            if self.public.is_public(repo).await? != Some(true) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Is what `owner` names public? From the cache while the generation holds.
    async fn owner_is_public(&self, owner: &Owner) -> Result<bool> {
        let generation = self.reg.generation();
        {
            let mut cache = self.verdicts.lock().expect("verdicts lock");
            if cache.generation != generation {
                cache.by_owner.clear();
                cache.generation = generation;
            }
            if let Some(v) = cache.by_owner.get(owner) {
                return Ok(*v);
            }
        }
        let v = match owner {
            Owner::Blob(d) => self.public.blob_is_public(&d.to_string()).await?,
            Owner::Image(root) => self.public.cid_is_public(root).await?,
            Owner::Pin(root) => match root.parse::<Cid>() {
                Ok(root) => self.pin_is_public(&root).await?,
                Err(_) => false,
            },
            Owner::Nothing => false,
        };
        let mut cache = self.verdicts.lock().expect("verdicts lock");
        // Kept only if nothing changed while it was read: otherwise it may already be stale.
        if cache.generation == generation && self.reg.generation() == generation {
            if cache.by_owner.len() >= MAX_VERDICTS {
                cache.by_owner.clear();
            }
            cache.by_owner.insert(owner.clone(), v);
        }
        Ok(v)
    }

    /// The verdict for a block recorded for `owner`, for anyone who does not see all.
    async fn judge(&self, cid: &Cid, owner: &Owner) -> Result<Admission> {
        if let Owner::Nothing = owner {
            // About this block, not a class of them: not cached.
            return Ok(if self.pin_is_public(cid).await? { Admission::Alone } else { Admission::Refused });
        }
        let admitted = |owner: &Owner| match owner {
            Owner::Blob(_) | Owner::Image(_) => Admission::Vouching,
            _ => Admission::Alone,
        };
        if self.owner_is_public(owner).await? {
            return Ok(admitted(owner));
        }
        if let Owner::Pin(root) = owner {
            // A pin that stands already is judged by what it is (a pin of blocks from trusted
            // peers stays theirs, whoever sends the rest).
            if let (true, Ok(cid)) = (self.passing_on(root), root.parse::<Cid>()) {
                if !self.index().is_pinned(&cid).await? {
                    return Ok(Admission::Alone);
                }
            }
        }
        // First recorded for something private, yet also part of something public (a leaf two
        // blobs share, the oci-layout file of every image).
        for other in self.index().other_owners(cid).await.map_err(corrupt)? {
            if self.owner_is_public(&other).await? {
                return Ok(admitted(&other));
            }
        }
        // Or the root of public content of its own.
        Ok(if self.public.cid_is_public(&cid.to_string()).await? { Admission::Vouching } else { Admission::Refused })
    }
}

/// The exposure decisions of one request (a response, a walk): the policy's verdicts, plus the
/// blocks that public DAGs read in this request vouch for.
pub struct Exposure {
    policy: Arc<Policy>,
    audience: Audience,
    sees_all: bool,
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
    pub fn new(policy: Arc<Policy>, audience: Audience) -> Self {
        let sees_all = policy.sees_all(&audience);
        Exposure { policy, audience, sees_all, vouched: Mutex::new(HashSet::new()) }
    }

    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// Whether this request's audience may have everything (no vouching needed).
    pub fn sees_all(&self) -> bool {
        self.sees_all
    }

    /// Block `cid` for this request: looked up once, judged (a public DAG read earlier in the
    /// request may vouch for it), then read and verified.
    pub async fn get(&self, cid: &Cid) -> Result<Found> {
        let Some((spot, owner)) = self.policy.locate(cid).await? else { return Ok(Found::Absent) };
        let admission = if self.sees_all || self.vouched.lock().expect("vouched lock").contains(cid) { Admission::Vouching } else { self.policy.judge(cid, &owner).await? };
        if admission == Admission::Refused {
            return Ok(Found::Refused);
        }
        // Gone between the lookup and the read (a GC): as if it had never been here.
        Ok(self.policy.read(cid, spot).await?.map_or(Found::Absent, |bytes| Found::Block(bytes, admission)))
    }

    /// May `cid`, which this node lacks, be fetched from elsewhere for this request's audience?
    /// Only what the registry knows as this audience's: everything for those who see all; else
    /// a block a public DAG read in this request links to, or the root of a public blob or
    /// image (say, a blob a node on the same database holds, or one of an image imported by
    /// CID). Never an arbitrary CID: the node is no open proxy to the network.
    pub async fn admit_absent(&self, cid: &Cid) -> Result<Admission> {
        if self.sees_all || self.vouched.lock().expect("vouched lock").contains(cid) {
            return Ok(Admission::Vouching);
        }
        Ok(if self.policy.public.cid_is_public(&cid.to_string()).await? { Admission::Vouching } else { Admission::Refused })
    }

    /// Remembers that `links` (of a block admitted as `Vouching`) are the same content.
    pub fn vouch(&self, links: impl IntoIterator<Item = Cid>) {
        if self.sees_all {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(bytes: &[u8]) -> Cid {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(bytes).into();
        Cid::new_v1(0x55, cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("a 32-byte digest"))
    }

    /// A pin's block on its way to the block index goes out on the pin's terms, as it will once
    /// written: to strangers while the pin's fetch passes on what it gets, to nobody but the
    /// operator and trusted peers once a block came from a trusted peer or for a read that is no
    /// pin's; and it is found in the index alone once written.
    #[tokio::test]
    async fn a_landing_block_goes_out_on_its_owners_terms() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = crate::storage::BlobStore::open(dir.path()).unwrap();
        let meta = crate::metadata::sqlite::SqliteStore::open(&dir.path().join("metadata.sqlite")).unwrap();
        let blocks = BlockIndex::open(&dir.path().join("blocks.sqlite"), blobs.clone()).unwrap();
        let reg = Registry::attach(meta, blobs, blocks, Default::default());
        let policy = Policy::new(Arc::new(reg), ["trusted".to_string()]);
        let (root, leaf) = (raw(b"root"), bytes::Bytes::from_static(b"a leaf of the pin"));
        let cid = raw(&leaf);
        let stranger = Audience::Peer("stranger".into());
        let trusted = Audience::Peer("trusted".into());

        let landing = policy.landing(Owner::Pin(root.to_string()));
        assert_eq!(policy.get(&cid, &Audience::Operator).await.unwrap(), None, "nothing before it lands");
        landing.arrived(cid, leaf.clone());
        // No fetch of that pin under way (an operator's read): the operator and trusted peers only.
        assert_eq!(policy.get(&cid, &stranger).await.unwrap(), None);
        assert_eq!(policy.get(&cid, &trusted).await.unwrap(), Some(leaf.clone()));
        assert_eq!(policy.get(&cid, &Audience::Operator).await.unwrap(), Some(leaf.clone()));

        let fetch = policy.fetching(&root);
        assert_eq!(policy.get(&cid, &stranger).await.unwrap(), Some(leaf.clone()), "a pin's fetch passes on what it gets");
        fetch.underway.from_trusted();
        assert_eq!(policy.get(&cid, &stranger).await.unwrap(), None, "not once a block came from a trusted peer");
        assert_eq!(policy.get(&cid, &trusted).await.unwrap(), Some(leaf.clone()));

        landing.written(&[cid]);
        assert_eq!(policy.get(&cid, &Audience::Operator).await.unwrap(), None, "written, it is the index's to find");
        landing.arrived(cid, leaf.clone());
        drop(landing);
        assert_eq!(policy.get(&cid, &Audience::Operator).await.unwrap(), None, "withdrawn with its registration");
    }
}
