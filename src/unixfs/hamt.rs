//! HAMT-sharded UnixFS directories, as Kubo (boxo) writes and reads them: fanout 256, names
//! hashed with murmur3-x64-64 (the first half of murmur3's x64 128-bit hash, seed 0, big-endian),
//! each level indexed by the next byte of that hash. A node's links are sorted by index; a link
//! to an entry is named by its index in two upper-case hex digits followed by the entry's name, a
//! link to a sub-shard by the index alone. Its `Data` is UnixFS type HAMTShard with the occupied
//! indexes as a big-endian bitfield (leading zero bytes left out), hashType 0x22 and the fanout.
//!
//! Kubo shards a directory whose plain node would be too large: with IPIP-499's
//! `unixfs-v1-2025`, when that node's block exceeds 256 KiB; with `kubo-v1` ("links"
//! estimation), when the names and CIDs of its links add up past 256 KiB. Both thresholds were
//! measured against Kubo 0.42 (`tests/unixfs_interop.rs` checks the CIDs against it).

use super::pb::{self, Link};
use super::{cid_v1, DirEntry, Profile, Root, DAG_PB};
use cid::Cid;

pub const FANOUT: usize = 256;
/// murmur3-x64-64 in the multicodec table, as UnixFS names its hash.
pub const MURMUR3_X64_64: u64 = 0x22;
const THRESHOLD: usize = 256 * 1024;
/// Bytes of the hash, hence levels, a shard can use.
const HASH_BYTES: usize = 8;

/// murmur3's x64 128-bit hash with seed 0; its first half.
pub fn murmur3_x64_64(data: &[u8]) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    let (mut h1, mut h2) = (0u64, 0u64);
    let blocks = data.chunks_exact(16);
    let tail = blocks.remainder();
    for block in blocks {
        let k1 = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(block[8..].try_into().expect("8 bytes"));
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(*b) << (8 * i);
        } else {
            k2 |= u64::from(*b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    h1 ^= data.len() as u64;
    h2 ^= data.len() as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1.wrapping_add(h2)
}

/// Whether Kubo would shard a directory of `entries` (with `plain`, its plain node's bytes).
pub fn needs_sharding(entries: &[DirEntry], plain: &[u8], profile: Profile) -> bool {
    match profile {
        Profile::UnixfsV1_2025 => plain.len() > THRESHOLD,
        Profile::KuboV1 => entries.iter().map(|e| e.name.len() + e.cid.to_bytes().len()).sum::<usize>() > THRESHOLD,
    }
}

/// The `Data` of a shard node with `occupied` indexes.
fn shard_data(occupied: &[usize]) -> Vec<u8> {
    let mut bits = [0u8; FANOUT / 8];
    for i in occupied {
        bits[FANOUT / 8 - 1 - i / 8] |= 1 << (i % 8);
    }
    let first = bits.iter().position(|b| *b != 0).unwrap_or(bits.len());
    let bitfield = &bits[first..];
    let mut out = vec![0x08, 0x05, 0x12];
    pb::varint(&mut out, bitfield.len() as u64);
    out.extend_from_slice(bitfield);
    out.extend_from_slice(&[0x28, MURMUR3_X64_64 as u8, 0x30]);
    pb::varint(&mut out, FANOUT as u64);
    out
}

/// A sharded directory of `entries` (names unique): its root and every shard node's block,
/// children before parents.
pub fn sharded(entries: Vec<DirEntry>) -> (Root, Vec<(Cid, Vec<u8>)>) {
    let hashed: Vec<(u64, DirEntry)> = entries.into_iter().map(|e| (murmur3_x64_64(e.name.as_bytes()), e)).collect();
    let mut blocks = Vec::new();
    let root = shard(hashed, 0, &mut blocks);
    (root, blocks)
}

fn shard(entries: Vec<(u64, DirEntry)>, depth: usize, blocks: &mut Vec<(Cid, Vec<u8>)>) -> Root {
    let mut slots: Vec<Vec<(u64, DirEntry)>> = (0..FANOUT).map(|_| Vec::new()).collect();
    for (hash, entry) in entries {
        // Past the hash's last byte, names that still collide share a shard forever; Kubo gives
        // up there too. Eight levels hold far more names than a block index ever will.
        let index = (hash >> (8 * (HASH_BYTES - 1 - depth.min(HASH_BYTES - 1)))) as u8 as usize;
        slots[index].push((hash, entry));
    }
    let mut names = Vec::new();
    let mut targets = Vec::new();
    let mut occupied = Vec::new();
    for (index, mut slot) in slots.into_iter().enumerate() {
        match slot.len() {
            0 => continue,
            1 => {
                let (_, e) = slot.pop().expect("one entry");
                names.push(format!("{index:02X}{}", e.name));
                targets.push((e.cid, e.tsize));
            }
            _ if depth + 1 >= HASH_BYTES => {
                // Full 64-bit collisions: keep them in one leaf shard (never reached in practice).
                slot.sort_by(|a, b| a.1.name.cmp(&b.1.name));
                for (_, e) in slot {
                    names.push(format!("{index:02X}{}", e.name));
                    targets.push((e.cid, e.tsize));
                }
            }
            _ => {
                let child = shard(slot, depth + 1, blocks);
                names.push(format!("{index:02X}"));
                targets.push((child.cid, child.tsize));
            }
        }
        occupied.push(index);
    }
    let cids: Vec<Vec<u8>> = targets.iter().map(|(c, _)| c.to_bytes()).collect();
    let links: Vec<Link<'_>> = names.iter().zip(&cids).zip(&targets).map(|((name, cid), (_, tsize))| Link { cid, name, tsize: *tsize }).collect();
    let bytes = pb::dag_pb_node(&links, &shard_data(&occupied));
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    let tsize = bytes.len() as u64 + targets.iter().map(|(_, t)| t).sum::<u64>();
    let cid = cid_v1(DAG_PB, &digest);
    blocks.push((cid, bytes));
    Root { cid, filesize: 0, tsize }
}

/// Where `name` is under a shard node: the link to follow from a node at `depth` (its links
/// named as above). `Found(cid)`: the entry; `Descend(cid)`: the sub-shard to look in next.
pub enum Step {
    Found(Cid),
    Descend(Cid),
    Absent,
}

/// One step of a lookup of `name` in a shard node at `depth` with `links`.
pub fn lookup(links: &[pb::DecodedLink], name: &str, depth: usize) -> Step {
    if depth >= HASH_BYTES {
        return Step::Absent;
    }
    let hash = murmur3_x64_64(name.as_bytes());
    let index = (hash >> (8 * (HASH_BYTES - 1 - depth))) as u8;
    let prefix = format!("{index:02X}");
    for l in links {
        if l.name == prefix {
            return Step::Descend(l.cid);
        }
        if l.name.len() > 2 && l.name.starts_with(&prefix) && &l.name[2..] == name {
            return Step::Found(l.cid);
        }
    }
    Step::Absent
}

/// The entry name a shard node's link carries after its index, or None for a link to a
/// sub-shard (its index alone).
pub fn entry_name(link: &pb::DecodedLink) -> Option<&str> {
    link.name.get(2..).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_kubos_shard_indexes() {
        // Indexes Kubo 0.42 gave these names (root slot, then the sub-shard's).
        let h = murmur3_x64_64(b"c676b6e9a4ca6b5ac36368e46b51915a0fcf7371a90c9155ddfa82195555496a");
        assert_eq!(h.to_be_bytes()[..2], [0x00, 0x04]);
        let h = murmur3_x64_64(b"095eaa09cd36d1f1e7a963c9ad618edab13f466882c9027ab81ffc18b0eb727e");
        assert_eq!(h.to_be_bytes()[..2], [0x00, 0x42]);
        // Empty input and a tail over eight bytes (murmur3's reference values).
        assert_eq!(murmur3_x64_64(b""), 0);
        assert_eq!(murmur3_x64_64(b"hello"), 0xcbd8a7b341bd9b02);
    }

    #[test]
    fn a_directory_of_twenty_thousand_entries_fits_kubos_block_limit() {
        let entries: Vec<DirEntry> = (0..20_000u32)
            .map(|i| {
                let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(i.to_be_bytes()).into();
                DirEntry { name: hex::encode(digest), cid: cid_v1(super::super::RAW, &digest), tsize: 10 }
            })
            .collect();
        for profile in [Profile::UnixfsV1_2025, Profile::KuboV1] {
            let (root, blocks) = super::super::directory_for(entries.clone(), profile);
            assert!(blocks.len() > 256, "sharded: {} blocks", blocks.len());
            assert!(blocks.iter().all(|(_, b)| b.len() <= 1 << 20));
            assert_eq!(blocks.last().map(|(c, _)| *c), Some(root.cid), "the root comes last");
        }
    }

    #[test]
    fn bitfields_are_big_endian_without_leading_zeros() {
        assert_eq!(shard_data(&[0]), vec![0x08, 0x05, 0x12, 0x01, 0x01, 0x28, 0x22, 0x30, 0x80, 0x02]);
        let d = shard_data(&[255, 4]);
        assert_eq!(&d[3..4], &[32]);
        assert_eq!(d[4], 0x80);
        assert_eq!(d[4 + 31], 0x10);
    }
}
