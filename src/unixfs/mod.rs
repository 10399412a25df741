//! UnixFS files as Kubo builds them: fixed-size chunks, raw leaves, CIDv1, the balanced layout.
//!
//! [`Importer`] consumes a byte stream once and reports every block it makes, so the DAG of a blob
//! is computed while the blob arrives, never by reading it a second time. Root CIDs equal Kubo's
//! for the same bytes and profile (checked against Kubo's own golden CIDs and, in the test suite,
//! against Kubo and the JavaScript importer).

pub mod hamt;
mod importer;
pub mod pb;

pub use importer::{BlockSink, CollectingImporter, DagBlock, Importer, NewBlock, Root};
pub use pb::{decode_node, file_data, unixfs_data, unixfs_type, DecodeError, DecodedLink, DecodedNode, UnixfsData};

/// UnixFS `Data.Type` of a directory.
pub const UNIXFS_DIRECTORY: u64 = 1;
/// UnixFS `Data.Type` of a file.
pub const UNIXFS_FILE: u64 = 2;
/// UnixFS `Data.Type` of a HAMT-sharded directory.
pub const UNIXFS_HAMT_SHARD: u64 = 5;
/// A symbolic link: its data is the target path.
pub const UNIXFS_SYMLINK: u64 = 4;

use std::fmt;
use std::str::FromStr;

/// Multicodec of raw blocks (leaves).
pub const RAW: u64 = 0x55;
/// Multicodec of dag-pb blocks (interior nodes, directories).
pub const DAG_PB: u64 = 0x70;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// How a file is cut and laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// IPIP-499 `unixfs-v1-2025`: 1 MiB chunks, 1024 links per node.
    #[default]
    UnixfsV1_2025,
    /// What `ipfs add --cid-version=1` makes: 256 KiB chunks, 174 links per node.
    KuboV1,
}

impl Profile {
    pub fn chunk_size(self) -> usize {
        match self {
            Profile::UnixfsV1_2025 => 1024 * 1024,
            Profile::KuboV1 => 256 * 1024,
        }
    }

    pub fn max_links(self) -> usize {
        match self {
            Profile::UnixfsV1_2025 => 1024,
            Profile::KuboV1 => 174,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::UnixfsV1_2025 => "unixfs-v1-2025",
            Profile::KuboV1 => "kubo-v1",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown CID profile {0:?} (known: unixfs-v1-2025, kubo-v1)")]
pub struct UnknownProfile(String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unixfs-v1-2025" => Ok(Profile::UnixfsV1_2025),
            "kubo-v1" => Ok(Profile::KuboV1),
            other => Err(UnknownProfile(other.to_string())),
        }
    }
}

/// The CIDv1 of a block with `codec` whose sha2-256 is `digest`.
pub fn cid_v1(codec: u64, digest: &[u8; 32]) -> cid::Cid {
    let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, digest).expect("32 bytes fit a 64-byte multihash");
    cid::Cid::new_v1(codec, mh)
}

/// A named entry of a directory: the root of a file or directory and its Tsize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub cid: cid::Cid,
    pub tsize: u64,
}

/// A plain (unsharded) UnixFS directory node as Kubo makes it: links sorted by name bytewise,
/// `Data` = Type Directory. Returns its root and its encoded bytes.
pub fn directory(mut entries: Vec<DirEntry>) -> (Root, Vec<u8>) {
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let cids: Vec<Vec<u8>> = entries.iter().map(|e| e.cid.to_bytes()).collect();
    let links: Vec<pb::Link<'_>> = entries.iter().zip(&cids).map(|(e, cid)| pb::Link { cid, name: &e.name, tsize: e.tsize }).collect();
    let bytes = pb::dag_pb_node(&links, &pb::UNIXFS_DIRECTORY_DATA);
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    let tsize = bytes.len() as u64 + entries.iter().map(|e| e.tsize).sum::<u64>();
    (Root { cid: cid_v1(DAG_PB, &digest), filesize: 0, tsize }, bytes)
}

/// A directory of `entries` as Kubo makes it with `profile`: one plain node, or HAMT shards when
/// that node would be past Kubo's threshold (see `hamt`). Its root and blocks.
pub fn directory_for(entries: Vec<DirEntry>, profile: Profile) -> (Root, Vec<(cid::Cid, Vec<u8>)>) {
    let (root, bytes) = directory(entries.clone());
    if hamt::needs_sharding(&entries, &bytes, profile) {
        hamt::sharded(entries)
    } else {
        let cid = root.cid;
        (root, vec![(cid, bytes)])
    }
}

/// The UnixFS file DAG of a small in-memory value (a manifest, `index.json`), every block with
/// its bytes, children before parents.
pub fn import_bytes(data: &[u8], profile: Profile) -> (Root, Vec<(cid::Cid, Vec<u8>)>) {
    let mut importer = CollectingImporter::new(profile);
    importer.update(data);
    let (root, blocks) = importer.finish();
    let blocks = blocks
        .into_iter()
        .map(|b| match b {
            DagBlock::Leaf { cid, offset, len } => (cid, data[offset as usize..(offset + len) as usize].to_vec()),
            DagBlock::Node { cid, bytes } => (cid, bytes),
        })
        .collect();
    (root, blocks)
}

/// The root of what `data` yields under `profile`, in one pass: one thread reads ahead while this
/// one hashes, so the time is the hashing's, not reading plus hashing.
pub fn import_reader<R: std::io::Read + Send>(mut data: R, profile: Profile) -> std::io::Result<Root> {
    const BUF: usize = 1 << 20;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..6 {
        empty_tx.send(vec![0u8; BUF]).expect("receiver alive");
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Ok(mut buf) = empty_rx.recv() {
                buf.resize(BUF, 0);
                let mut filled = 0;
                // Fill whole buffers: pipes and stdin return short reads.
                let result = loop {
                    match data.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == BUF {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let done = filled < BUF || result.is_err();
                let item = result.map(|_| buf);
                if full_tx.send(item).is_err() || done {
                    return;
                }
            }
        });
        let mut importer = Importer::new(profile);
        while let Ok(item) = full_rx.recv() {
            let buf = item?;
            if buf.is_empty() {
                break;
            }
            importer.update(&buf, &mut ());
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        Ok(importer.finish(&mut ()))
    })
}

#[cfg(test)]
mod kubo_vectors {
    //! Kubo's own golden CIDs (tests/data/unixfs-kubo.tsv, from Kubo's
    //! test/cli/cid_profiles_test.go). Rows of `unixfs-v0-2015` (CIDv0 with dag-pb leaves) are
    //! not a profile this node builds and are left out.
    use super::*;
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    use sha2::{Digest as _, Sha256};
    use std::collections::BTreeMap;

    fn vectors() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unixfs-kubo.tsv");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn chacha_input_matches_the_files_check_line() {
        let mut c = chacha20::ChaCha20::new(&Sha256::digest(b"chunk-v1-seed"), &[0u8; 12].into());
        let mut first = [0u8; 16];
        c.apply_keystream(&mut first);
        assert_eq!(hex::encode(first), "d0e858d590ad0786d216007abe1a38d1");
    }

    /// Fills a buffer with the next bytes of an input.
    type Fill = Box<dyn FnMut(&mut [u8])>;

    #[test]
    fn root_cids_equal_kubos() {
        // (profile, input) -> [(size, cid)], so each input stream is generated once.
        let mut groups: BTreeMap<(String, String), Vec<(u64, String)>> = BTreeMap::new();
        for line in vectors().lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let (profile, input, size, cid) = (f[0], f[1], f[2].parse::<u64>().unwrap(), f[3]);
            if profile == "unixfs-v0-2015" {
                continue;
            }
            groups.entry((profile.to_string(), input.to_string())).or_default().push((size, cid.to_string()));
        }
        let mut checked = 0;
        for ((profile, input), mut rows) in groups {
            let profile: Profile = profile.parse().unwrap();
            rows.sort();
            let mut imp = Importer::new(profile);
            let mut fed = 0u64;
            let mut stream: Fill = match input.split_once(':').unwrap() {
                ("literal", text) => {
                    let bytes = text.as_bytes().to_vec();
                    let mut pos = 0;
                    Box::new(move |buf: &mut [u8]| {
                        buf.copy_from_slice(&bytes[pos..pos + buf.len()]);
                        pos += buf.len();
                    })
                }
                ("chacha", seed) => {
                    let mut c = chacha20::ChaCha20::new(&Sha256::digest(seed.as_bytes()), &[0u8; 12].into());
                    Box::new(move |buf: &mut [u8]| {
                        buf.fill(0);
                        c.apply_keystream(buf);
                    })
                }
                (other, _) => panic!("unknown input kind {other}"),
            };
            let mut buf = vec![0u8; 1 << 20];
            for (size, want) in rows {
                while fed < size {
                    let n = (size - fed).min(buf.len() as u64) as usize;
                    stream(&mut buf[..n]);
                    imp.update(&buf[..n], &mut ());
                    fed += n as u64;
                }
                let root = imp.clone().finish(&mut ());
                assert_eq!(root.cid.to_string(), want, "{profile} {input} {size} bytes");
                assert_eq!(root.filesize, size);
                checked += 1;
            }
        }
        assert_eq!(checked, 7, "every CIDv1 row was checked");
    }
}

#[cfg(test)]
mod directory_tests {
    use super::*;

    #[test]
    fn empty_directory_is_the_well_known_one() {
        let (root, bytes) = directory(Vec::new());
        assert_eq!(bytes, [0x0a, 0x02, 0x08, 0x01]);
        let v0 = cid::Cid::new_v0(*root.cid.hash()).unwrap();
        assert_eq!(v0.to_string(), "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
        assert_eq!(root.tsize, 4);
    }

    #[test]
    fn directory_links_are_sorted_and_sized() {
        let a = import_bytes(b"hello", Profile::default()).0;
        let entry = |name: &str| DirEntry { name: name.into(), cid: a.cid, tsize: a.tsize };
        let (root, bytes) = directory(vec![entry("b"), entry("a"), entry("B")]);
        let node = decode_node(&bytes).unwrap();
        let names: Vec<&str> = node.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["B", "a", "b"]);
        assert_eq!(root.tsize, bytes.len() as u64 + 15);
        assert_eq!(unixfs_type(&node.data).unwrap(), UNIXFS_DIRECTORY);
    }
}
