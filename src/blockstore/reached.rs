//! What a GC's mark has reached, in one 16-byte slot a block, sized once before the mark: at ten
//! million blocks the multihashes themselves, each in an allocation of its own, took over a
//! gigabyte, and a growing hash table holds its old and new arrays at once.

use std::hash::{BuildHasher, RandomState};

/// Multihashes held as fingerprints: two SipHash-1-3 sums under keys drawn at random for this
/// GC, so no one who chooses blocks can make two fingerprints collide; the lowest bit is the
/// block's "links followed" flag, which leaves 127 bits (the chance of any collision among 20
/// million blocks is about 2^-80). An open-addressing table with linear probing; 0 is an empty
/// slot.
pub struct Reached {
    keys: (RandomState, RandomState),
    slots: Vec<u128>,
    len: usize,
}

const EXPANDED: u128 = 1;
/// Slots per block expected (a table past 9/10 full is grown).
const ROOM: f64 = 1.2;

impl Reached {
    /// A table for about `expected` blocks (the block index's row count): grown only if more
    /// are reached (blocks named by roots but absent).
    pub fn with_capacity(expected: usize) -> Self {
        let slots = ((expected as f64 * ROOM) as usize).max(1024);
        Reached { keys: (RandomState::new(), RandomState::new()), slots: vec![0; slots], len: 0 }
    }

    fn fingerprint(&self, multihash: &[u8]) -> u128 {
        let fp = ((u128::from(self.keys.0.hash_one(multihash)) << 64) | u128::from(self.keys.1.hash_one(multihash))) & !EXPANDED;
        if fp == 0 {
            2
        } else {
            fp
        }
    }

    /// The slot holding `fp`, or the empty one where it goes.
    fn slot(&self, fp: u128) -> usize {
        let n = self.slots.len();
        // The fingerprint's high bits spread over the table (a multiply-shift, any table size).
        let mut i = (((fp >> 64) as u64 as u128 * n as u128) >> 64) as usize;
        loop {
            let s = self.slots[i];
            if s == 0 || s & !EXPANDED == fp {
                return i;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }

    fn insert(&mut self, fp: u128, flags: u128) -> (bool, bool) {
        if (self.len + 1) * 10 > self.slots.len() * 9 {
            self.grow();
        }
        let i = self.slot(fp);
        let old = self.slots[i];
        if old == 0 {
            self.len += 1;
        }
        self.slots[i] = fp | (old & EXPANDED) | flags;
        (old == 0, old & EXPANDED == 0)
    }

    fn grow(&mut self) {
        let bigger = vec![0; self.slots.len() * 3 / 2];
        let old = std::mem::replace(&mut self.slots, bigger);
        for s in old.into_iter().filter(|s| *s != 0) {
            let i = self.slot(s & !EXPANDED);
            self.slots[i] = s;
        }
    }

    /// Marks `multihash`; true the first time.
    pub fn mark(&mut self, multihash: &[u8]) -> bool {
        let fp = self.fingerprint(multihash);
        self.insert(fp, 0).0
    }

    /// Marks `multihash` and records that its links are being followed; true the first time
    /// they are (a block first reached through a raw link is marked, not yet expanded).
    pub fn expand(&mut self, multihash: &[u8]) -> bool {
        let fp = self.fingerprint(multihash);
        self.insert(fp, EXPANDED).1
    }

    pub fn is_marked(&self, multihash: &[u8]) -> bool {
        self.slots[self.slot(self.fingerprint(multihash))] != 0
    }

    /// Bytes the table takes.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u128>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_expansions_are_kept_apart() {
        let mut r = Reached::with_capacity(0);
        let (a, b) = (b"\x12\x20aaaa".as_slice(), b"\x12\x20bbbb".as_slice());
        assert!(!r.is_marked(a));
        assert!(r.mark(a));
        assert!(!r.mark(a), "marked once");
        assert!(r.is_marked(a) && !r.is_marked(b));
        // A block first reached through a raw link (marked only) is still expanded when a
        // dag-pb link reaches it later.
        assert!(r.expand(a));
        assert!(!r.expand(a));
        assert!(!r.mark(a), "expanding kept the mark");
        assert!(r.expand(b));
        assert!(r.is_marked(b), "expanding marks");
        assert!(!r.mark(b));
    }

    /// More blocks than the table was sized for: it grows, and every mark and expansion
    /// survives the move.
    #[test]
    fn a_table_sized_too_small_grows_and_keeps_everything() {
        let mut r = Reached::with_capacity(10);
        for i in 0u32..50_000 {
            assert!(r.mark(&i.to_le_bytes()));
            if i % 3 == 0 {
                assert!(r.expand(&i.to_le_bytes()));
            }
        }
        assert!(r.bytes() > 50_000 * 16);
        for i in 0u32..50_000 {
            assert!(r.is_marked(&i.to_le_bytes()));
            assert_eq!(r.expand(&i.to_le_bytes()), i % 3 != 0, "{i}");
        }
        assert!(!r.is_marked(&50_000u32.to_le_bytes()));
    }

    #[test]
    fn a_table_sized_for_its_blocks_does_not_grow() {
        let mut r = Reached::with_capacity(100_000);
        let before = r.bytes();
        for i in 0u32..100_000 {
            r.mark(&i.to_le_bytes());
        }
        assert_eq!(r.bytes(), before);
        assert!(before <= 100_000 * 16 * 121 / 100, "{before}");
    }
}
