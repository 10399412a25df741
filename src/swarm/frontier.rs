//! The frontier of a DAG being fetched ahead of its reader: the links of every block fetched so
//! far, not asked for yet, each next one picked at random. Nodes fetching one DAG at once then
//! ask its seed for different blocks and trade the rest among themselves, where in one order
//! they would all want the same block of the same seed at once. Shared by the operator's walks
//! (`fetch`) and the pull-through (`pull`), which differ in where the blocks go.

use cid::Cid;
use std::collections::{HashMap, HashSet};

/// Links remembered as still to fetch; past it, the reader fetches the rest as it reaches them.
const MAX_LINKS: usize = 1 << 18;

#[derive(Default)]
pub struct Frontier {
    /// Links not asked for yet.
    links: indexmap::IndexSet<Cid>,
    /// Every link seen, with its place (see [`place_of`]).
    seen: HashMap<Cid, u64>,
    in_flight: HashSet<Cid>,
    rng: Option<fastrand::Rng>,
}

impl Frontier {
    /// Adds `links`, those of block `parent` in its order, not seen before (nor well known:
    /// those are never fetched).
    pub fn add(&mut self, parent: &Cid, links: impl IntoIterator<Item = Cid>) {
        let first = place_of(parent);
        for (i, cid) in links.into_iter().enumerate() {
            if self.links.len() >= MAX_LINKS || crate::dag::well_known(&cid).is_some() || self.seen.contains_key(&cid) {
                continue;
            }
            self.seen.insert(cid, first.wrapping_add(i as u64 + 1));
            self.links.insert(cid);
        }
    }

    /// The place of `cid` in its DAG: its index among its parent's links, from a start drawn
    /// from the parent's digest; of a block the frontier never listed, its digest's.
    pub fn place(&self, cid: &Cid) -> u64 {
        place_in(&self.seen, cid)
    }

    /// A link picked at random, now in flight, while fewer than `at_most` are.
    pub fn next(&mut self, at_most: usize) -> Option<Cid> {
        self.next_in(at_most, None)
    }

    /// [`Frontier::next`], preferring links of `stripe` (`(k, n)`: those whose place is `k`
    /// modulo `n`), when there are any: `n` nodes fetching one DAG at once, each with its own
    /// `k`, then start on different blocks, and each takes the rest from the others.
    pub fn next_in(&mut self, at_most: usize, stripe: Option<(u64, u64)>) -> Option<Cid> {
        if self.in_flight.len() >= at_most || self.links.is_empty() {
            return None;
        }
        let n = self.links.len();
        let rng = self.rng.get_or_insert_with(fastrand::Rng::new);
        let mut i = rng.usize(..n);
        if let Some((k, of)) = stripe.filter(|(_, of)| *of > 1) {
            // A few tries find one of the stripe (1 in `of` is) while the stripe has any.
            for _ in 0..of * 4 {
                if place_in(&self.seen, &self.links[i]) % of == k {
                    break;
                }
                i = rng.usize(..n);
            }
        }
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
        self.seen.entry(*cid).or_insert_with(|| place_of(cid));
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

/// The place `seen` gives `cid`, or its digest's.
fn place_in(seen: &HashMap<Cid, u64>, cid: &Cid) -> u64 {
    seen.get(cid).copied().unwrap_or_else(|| place_of(cid))
}

/// A place drawn from `cid`'s digest: a root's, and where its links' places start.
///
/// A node's stripe among `n` nodes fetching one DAG at once is the blocks whose place is its
/// index modulo `n`. Siblings have consecutive places, so a parent's links are dealt evenly:
/// stripes of the digest alone held from 25 to 44 of 256 blocks among 8 nodes, and the seed
/// sent the largest stripe's last blocks long after the others'.
pub fn place_of(cid: &Cid) -> u64 {
    let digest = cid.hash().digest();
    let mut word = [0u8; 8];
    let tail = &digest[digest.len().saturating_sub(8)..];
    word[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(word)
}

/// The links of block `cid` if it is a dag-pb node.
pub fn links_of(cid: &Cid, bytes: &[u8]) -> Vec<Cid> {
    if cid.codec() != crate::unixfs::DAG_PB {
        return Vec::new();
    }
    crate::unixfs::decode_node(bytes).map(|node| node.links.into_iter().map(|l| l.cid).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::test_cid as cid;

    /// Nine nodes with a stripe each start on blocks of their own stripe, until it runs out;
    /// then on anything left; each link goes out once.
    #[test]
    fn links_of_a_nodes_stripe_go_first() {
        // Seeded: the picks, and so the test, the same every run.
        let mut frontier = Frontier { rng: Some(fastrand::Rng::with_seed(7)), ..Default::default() };
        frontier.add(&cid(1000), (0..900).map(cid));
        let in_stripe = (0..900).map(cid).filter(|c| frontier.place(c) % 9 == 4).count();
        let mut picked = Vec::new();
        while let Some(c) = frontier.next_in(usize::MAX, Some((4, 9))) {
            picked.push(c);
        }
        assert_eq!(picked.len(), 900);
        // A pick finds the stripe within 36 tries while the stripe holds most of what is left
        // of it: the first quarter of it goes out almost alone (a try fails 8 times in 9).
        let first = &picked[..in_stripe / 4];
        let of_stripe = first.iter().filter(|c| frontier.place(c) % 9 == 4).count();
        assert!(of_stripe * 100 >= first.len() * 90, "{of_stripe} of the first {} are of the stripe", first.len());
        picked.sort();
        picked.dedup();
        assert_eq!(picked.len(), 900, "each link once");
    }

    /// Every node finds the same place for a link, and a parent's links are dealt among 8
    /// stripes evenly (digests alone deal 256 blocks from 25 to 44 a stripe).
    #[test]
    fn a_parents_links_are_dealt_evenly() {
        let (mut here, mut there) = (Frontier::default(), Frontier::default());
        let links = |parent: u32| (0..174).map(move |i| cid(i + 174 * (parent - 5000)));
        // One node learns of the parents in one order, another in the other.
        for parent in [5000, 5001] {
            here.add(&cid(parent), links(parent));
        }
        for parent in [5001, 5000] {
            there.add(&cid(parent), links(parent));
        }
        let mut stripes = [0u32; 8];
        for i in 0..348 {
            assert_eq!(here.place(&cid(i)), there.place(&cid(i)));
            stripes[(here.place(&cid(i)) % 8) as usize] += 1;
        }
        assert!(stripes.iter().all(|n| (42..=45).contains(n)), "{stripes:?}");
        // A block the frontier never listed (a root) has a place all the same.
        assert_eq!(here.place(&cid(9999)), place_of(&cid(9999)));
    }
}
