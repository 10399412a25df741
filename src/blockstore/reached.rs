//! What a GC's mark has reached, in 16 bytes a block: at ten million blocks the multihashes
//! themselves, each in an allocation of its own, took over a gigabyte.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Multihashes held as 128-bit fingerprints: two SipHash-1-3 sums under keys drawn at random for
/// this GC, so no one who chooses blocks can make two fingerprints collide, and the chance of any
/// collision among 20 million entries is about 2^-81.
pub struct Reached {
    keys: (RandomState, RandomState),
    entries: HashSet<u128, Prehashed>,
}

/// A block reached is marked (a sweep keeps it); one whose links were followed is also expanded.
/// Both live in the one set, the expansion under the fingerprint with this bit pattern flipped.
const EXPANDED: u128 = 0x5a5a_5a5a_5a5a_5a5a_5a5a_5a5a_5a5a_5a5a;

impl Reached {
    pub fn new() -> Self {
        Reached { keys: (RandomState::new(), RandomState::new()), entries: HashSet::default() }
    }

    fn fingerprint(&self, multihash: &[u8]) -> u128 {
        (u128::from(self.keys.0.hash_one(multihash)) << 64) | u128::from(self.keys.1.hash_one(multihash))
    }

    /// Marks `multihash`; true the first time.
    pub fn mark(&mut self, multihash: &[u8]) -> bool {
        let fp = self.fingerprint(multihash);
        self.entries.insert(fp)
    }

    /// Records that the links of `multihash` are being followed; true the first time.
    pub fn expand(&mut self, multihash: &[u8]) -> bool {
        let fp = self.fingerprint(multihash) ^ EXPANDED;
        self.entries.insert(fp)
    }

    pub fn is_marked(&self, multihash: &[u8]) -> bool {
        self.entries.contains(&self.fingerprint(multihash))
    }
}

/// The fingerprints are keyed hashes already: the table uses their low bits as they are.
#[derive(Default, Clone, Copy)]
struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = Passthrough;
    fn build_hasher(&self) -> Passthrough {
        Passthrough(0)
    }
}

struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys come here, as one write of their 16 bytes.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64 ^ (n >> 64) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_expansions_are_kept_apart() {
        let mut r = Reached::new();
        let (a, b) = (b"\x12\x20aaaa".as_slice(), b"\x12\x20bbbb".as_slice());
        assert!(!r.is_marked(a));
        assert!(r.mark(a));
        assert!(!r.mark(a), "marked once");
        assert!(r.is_marked(a) && !r.is_marked(b));
        // A block first reached through a raw link (marked only) is still expanded when a
        // dag-pb link reaches it later.
        assert!(r.expand(a));
        assert!(!r.expand(a));
        assert!(r.expand(b));
        assert!(!r.is_marked(b), "expanding does not mark");
    }

    #[test]
    fn ten_thousand_distinct_multihashes_stay_distinct() {
        let mut r = Reached::new();
        for i in 0u32..10_000 {
            assert!(r.mark(&i.to_le_bytes()));
        }
        for i in 0u32..10_000 {
            assert!(r.is_marked(&i.to_le_bytes()));
        }
        assert!(!r.is_marked(&10_000u32.to_le_bytes()));
    }
}
