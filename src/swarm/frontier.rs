//! The frontier of a DAG being fetched ahead of its reader: the links of every block fetched so
//! far, not asked for yet, each next one picked at random. Nodes fetching one DAG at once then
//! ask its seed for different blocks and trade the rest among themselves, where in one order
//! they would all want the same block of the same seed at once. Shared by the operator's walks
//! (`fetch`) and the pull-through (`pull`), which differ in where the blocks go.

use cid::Cid;
use std::collections::HashSet;

/// Links remembered as still to fetch; past it, the reader fetches the rest as it reaches them.
const MAX_LINKS: usize = 1 << 18;

#[derive(Default)]
pub struct Frontier {
    /// Links not asked for yet.
    links: indexmap::IndexSet<Cid>,
    seen: HashSet<Cid>,
    in_flight: HashSet<Cid>,
    rng: Option<fastrand::Rng>,
}

impl Frontier {
    /// Adds `links` not seen before (nor well known: those are never fetched).
    pub fn add(&mut self, links: impl IntoIterator<Item = Cid>) {
        for cid in links {
            if self.links.len() < MAX_LINKS && crate::dag::well_known(&cid).is_none() && self.seen.insert(cid) {
                self.links.insert(cid);
            }
        }
    }

    /// A link picked at random, now in flight, while fewer than `at_most` are.
    pub fn next(&mut self, at_most: usize) -> Option<Cid> {
        if self.in_flight.len() >= at_most || self.links.is_empty() {
            return None;
        }
        let n = self.links.len();
        let i = self.rng.get_or_insert_with(fastrand::Rng::new).usize(..n);
        let cid = self.links.swap_remove_index(i).expect("an index below the length");
        self.in_flight.insert(cid);
        Some(cid)
    }

    pub fn in_flight(&self, cid: &Cid) -> bool {
        self.in_flight.contains(cid)
    }

    /// `cid`, which the reader needs now, is in flight from now on (whether it was due or not).
    pub fn claim(&mut self, cid: &Cid) {
        self.links.swap_remove(cid);
        self.seen.insert(*cid);
        self.in_flight.insert(*cid);
    }

    /// Takes `cid` off the links still to fetch, if it is there: then it is in flight.
    pub fn claim_due(&mut self, cid: &Cid) -> bool {
        let due = self.links.swap_remove(cid);
        if due {
            self.in_flight.insert(*cid);
        }
        due
    }

    /// The fetch of `cid` ended (either way).
    pub fn landed(&mut self, cid: &Cid) {
        self.in_flight.remove(cid);
    }
}

/// The links of block `cid` if it is a dag-pb node.
pub fn links_of(cid: &Cid, bytes: &[u8]) -> Vec<Cid> {
    if cid.codec() != crate::unixfs::DAG_PB {
        return Vec::new();
    }
    crate::unixfs::decode_node(bytes).map(|node| node.links.into_iter().map(|l| l.cid).collect()).unwrap_or_default()
}
