//! Manifests: what a manifest's image DAG holds, storing it, and the event it makes.

use super::{Registry, RegistryError, Result};
use crate::digest::{Algorithm, Digest};
use crate::image::{self, LayoutBlobs, TopManifest};
use crate::manifest;
use crate::metadata::{BlobInfo, ManifestRecord, MetadataError, NewManifest, PutManifestOutcome, Reference};
use crate::unixfs::{self, Root};
use bytes::Bytes;
use std::collections::HashMap;

impl Registry {
    /// The root of a blob's DAG with its Tsize, read from the root block.
    async fn blob_root(&self, info: &BlobInfo) -> Result<Option<Root>> {
        let cid: cid::Cid = info.root_cid.parse().map_err(|e| MetadataError::Corrupt(format!("root CID {}: {e}", info.root_cid)))?;
        // A raw root is the whole blob: its Tsize is the blob's size, no need to read it.
        if cid.codec() == unixfs::RAW {
            return Ok(Some(Root { cid, filesize: info.size, tsize: info.size }));
        }
        let Some(bytes) = self.get_block(&cid).await? else { return Ok(None) };
        let node = unixfs::decode_node(&bytes).map_err(|e| RegistryError::BlockCorrupt { cid: cid.to_string(), detail: e.to_string() })?;
        let tsize = bytes.len() as u64 + node.links.iter().map(|l| l.tsize).sum::<u64>();
        Ok(Some(Root { cid, filesize: info.size, tsize }))
    }

    /// Everything the image layout of a manifest holds under `blobs/`, or None when some of it
    /// is absent from the repository (a sparse manifest has no image DAG).
    async fn layout_blobs(&self, repo: &str, digest: &Digest, content: &[u8], parsed: &manifest::ParsedManifest) -> Result<Option<LayoutBlobs>> {
        let mut layout = LayoutBlobs::default();
        layout.add_manifest(digest.clone(), content, self.profile);
        let mut pending = vec![(parsed.blobs.clone(), parsed.manifests.clone())];
        while let Some((blobs, manifests)) = pending.pop() {
            for blob in blobs {
                if layout.contains(&blob) {
                    continue;
                }
                let Some(info) = self.meta.blob_info(repo, &blob).await? else { return Ok(None) };
                let Some(root) = self.blob_root(&info).await? else { return Ok(None) };
                layout.add_blob(blob, root);
            }
            for child in manifests {
                if layout.contains(&child) {
                    continue;
                }
                let Some(record) = self.meta.get_manifest(repo, &Reference::Digest(child.clone())).await? else {
                    return Ok(None);
                };
                let Ok(parsed) = manifest::parse(Some(&record.media_type), &record.content) else { return Ok(None) };
                layout.add_manifest(child, &record.content, self.profile);
                pending.push((parsed.blobs, parsed.manifests));
            }
        }
        Ok(Some(layout))
    }

    /// Stores a manifest under `reference` (a tag or its digest) plus extra `tags`.
    pub async fn put_manifest(&self, repo: &str, reference: &Reference, content_type: Option<&str>, body: Bytes, mut tags: Vec<String>) -> Result<ManifestRecord> {
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of_bytes(algorithm, &body);
        match reference {
            Reference::Digest(d) if d != &digest => return Err(RegistryError::ManifestDigest { expected: d.clone(), actual: digest }),
            Reference::Tag(t) => tags.insert(0, t.clone()),
            Reference::Digest(_) => {}
        }
        tags.dedup();
        let parsed = manifest::parse(content_type, &body)?;
        let mut tag_images = HashMap::new();
        let mut image_cid = None;
        if let Some(layout) = self.layout_blobs(repo, &digest, &body, &parsed).await? {
            let top = TopManifest { repository: repo, media_type: &parsed.media_type, digest: &digest, size: body.len() as u64 };
            let untagged = image::build(&top, &layout, None, self.profile);
            image_cid = Some(untagged.root.to_string());
            let mut blocks = untagged.blocks;
            for tag in &tags {
                let dag = image::build(&top, &layout, Some(tag), self.profile);
                tag_images.insert(tag.clone(), dag.root.to_string());
                blocks.extend(dag.blocks);
            }
            // Recorded before the metadata names them, so a reader never finds a CID whose
            // blocks are missing; the GC's grace period covers the window in between.
            blocks.sort_by_key(|b| b.0);
            blocks.dedup_by(|a, b| a.0 == b.0);
            let owner = image_cid.clone().map(crate::blockstore::Owner::Image).unwrap_or(crate::blockstore::Owner::Nothing);
            self.blocks.record_inline(blocks, owner).await?;
        }
        let record = ManifestRecord {
            digest,
            media_type: parsed.media_type,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject,
            annotations: parsed.annotations,
            content: body,
            image_cid,
        };
        let new = NewManifest { record: record.clone(), blobs: parsed.blobs, manifests: parsed.manifests, tags, tag_images, require_references: !self.settings.sparse_manifests };
        // What is new, for the event: the manifest itself, and tags that named something else.
        let existed = self.meta.get_manifest(repo, &Reference::Digest(new.record.digest.clone())).await?.is_some();
        let mut moved = Vec::new();
        for tag in &new.tags {
            let now = self.meta.get_manifest(repo, &Reference::Tag(tag.clone())).await?;
            if now.is_none_or(|m| m.digest != new.record.digest) {
                moved.push((tag.clone(), new.tag_images.get(tag).cloned()));
            }
        }
        match self.meta.put_manifest(repo, new.clone()).await? {
            PutManifestOutcome::Stored => {
                if !existed || !moved.is_empty() {
                    self.changed().await?;
                    self.emit(crate::events::Event::ImageStored {
                        repository: repo.to_string(),
                        digest: new.record.digest.clone(),
                        image: new.record.image_cid.clone(),
                        tags: moved,
                    });
                }
                Ok(ManifestRecord {
                    // As a read by the same reference would say.
                    image_cid: match reference {
                        Reference::Tag(t) => new.tag_images.get(t).cloned(),
                        Reference::Digest(_) => record.image_cid.clone(),
                    },
                    ..record
                })
            }
            PutManifestOutcome::MissingReference(d) => Err(RegistryError::ManifestReference(d)),
        }
    }
}
