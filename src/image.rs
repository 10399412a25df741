//! Image DAGs: every manifest as a UnixFS directory laid out as an OCI image layout.
//!
//! ```text
//! <image CID>/
//!   oci-layout                  {"imageLayoutVersion":"1.0.0"}
//!   index.json                  one descriptor: the manifest, its tag as ref.name
//!   blobs/<alg>/<hex>           the manifest, its config and layers; for an index its children
//! ```
//!
//! Unpacked anywhere (a CAR export, `ipfs get`), the directory is an OCI layout that skopeo and
//! umoci read, so an image can travel by CID alone. Blobs link to the roots of their own DAGs,
//! so the layout shares every block with the blobs it holds. This module is pure: the registry
//! gathers the entries (it knows the stores) and records the blocks.

use crate::digest::Digest;
use crate::unixfs::{self, DirEntry, Profile, Root};
use cid::Cid;
use serde_json::json;
use std::collections::BTreeMap;

/// The descriptor annotation that carries the repository, so an import knows where the image
/// belongs without being told.
pub const REPOSITORY_ANNOTATION: &str = "dev.af-registry.repository";
/// The OCI annotation that names an image in a layout; skopeo's `oci:<dir>:<tag>` looks it up.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The manifest an image DAG is built for.
pub struct TopManifest<'a> {
    pub repository: &'a str,
    pub media_type: &'a str,
    pub digest: &'a Digest,
    pub size: u64,
}

/// An image layout's DAG: its root, and the blocks it adds to those of its blobs (directories,
/// the layout files, the manifests' own bytes).
pub struct ImageDag {
    pub root: Cid,
    pub blocks: Vec<(Cid, Vec<u8>)>,
}

/// What goes under `blobs/`: blob DAGs by their root, manifests (kept in the metadata, not as
/// blob files) by their bytes.
#[derive(Default)]
pub struct LayoutBlobs {
    entries: BTreeMap<Digest, Root>,
    blocks: Vec<(Cid, Vec<u8>)>,
}

impl LayoutBlobs {
    pub fn add_blob(&mut self, digest: Digest, root: Root) {
        self.entries.insert(digest, root);
    }

    pub fn add_manifest(&mut self, digest: Digest, content: &[u8], profile: Profile) {
        if self.entries.contains_key(&digest) {
            return;
        }
        let (root, blocks) = unixfs::import_bytes(content, profile);
        self.blocks.extend(blocks);
        self.entries.insert(digest, root);
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.entries.contains_key(digest)
    }

    /// The `blobs` directory, with one subdirectory per algorithm, and its blocks.
    fn directory(&self, profile: Profile) -> (Root, Vec<(Cid, Vec<u8>)>) {
        let mut by_alg: BTreeMap<&str, Vec<DirEntry>> = BTreeMap::new();
        for (digest, root) in &self.entries {
            by_alg.entry(digest.algorithm().as_str()).or_default().push(DirEntry { name: digest.hex().to_string(), cid: root.cid, tsize: root.tsize });
        }
        let mut blocks = self.blocks.clone();
        let mut algs = Vec::new();
        for (alg, entries) in by_alg {
            // Thousands of children (a large index) shard it, as Kubo would.
            let (root, dir_blocks) = unixfs::directory_for(entries, profile);
            blocks.extend(dir_blocks);
            algs.push(DirEntry { name: alg.to_string(), cid: root.cid, tsize: root.tsize });
        }
        let (root, bytes) = unixfs::directory(algs);
        blocks.push((root.cid, bytes));
        (root, blocks)
    }
}

/// `index.json` for `top`, naming it `tag` when there is one. Keys are sorted (serde_json's
/// map), so the bytes, and so the image CID, depend only on the values.
pub fn index_json(top: &TopManifest<'_>, tag: Option<&str>) -> Vec<u8> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(REPOSITORY_ANNOTATION.into(), top.repository.into());
    if let Some(tag) = tag {
        annotations.insert(REF_NAME_ANNOTATION.into(), tag.into());
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::OCI_INDEX,
        "manifests": [{
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": top.size,
            "annotations": annotations,
        }],
    });
    serde_json::to_vec(&index).expect("a JSON value serializes")
}

/// The image DAG of `top` with `blobs` (which must hold `top` itself), named `tag` if given.
pub fn build(top: &TopManifest<'_>, blobs: &LayoutBlobs, tag: Option<&str>, profile: Profile) -> ImageDag {
    let (blobs_root, mut blocks) = blobs.directory(profile);
    let (index_root, index_blocks) = unixfs::import_bytes(&index_json(top, tag), profile);
    let (layout_root, layout_blocks) = unixfs::import_bytes(OCI_LAYOUT, profile);
    blocks.extend(index_blocks);
    blocks.extend(layout_blocks);
    let entry = |name: &str, root: &Root| DirEntry { name: name.into(), cid: root.cid, tsize: root.tsize };
    let (root, bytes) = unixfs::directory(vec![entry("blobs", &blobs_root), entry("index.json", &index_root), entry("oci-layout", &layout_root)]);
    blocks.push((root.cid, bytes));
    ImageDag { root: root.cid, blocks }
}
