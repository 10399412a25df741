//! State changes outside uploads and manifest pushes: mounts, unlinks, deletes, pins, visibility
//! and blocks added through the RPC. Each is made here, so each bumps the change generation (see
//! [`Registry::generation`]) and sends its event before it returns.

use super::{Registry, Result};
use crate::blockstore::Owner;
use crate::digest::Digest;
use crate::events::Event;
use crate::metadata::Reference;
use cid::Cid;

impl Registry {
    /// Makes `repo` (created if needed) public or private. Returns once every live node sharing
    /// the metadata has seen the change, so none serves by what it cached before; the nodes that
    /// did not confirm within [`super::ACK_WAIT`] are returned (they are busy or stuck).
    pub async fn set_visibility(&self, repo: &str, public: bool) -> Result<Vec<String>> {
        let before = self.meta.is_public(repo).await?.unwrap_or(false);
        self.meta.set_public(repo, public).await?;
        let generation = self.changed().await?;
        if before != public {
            self.emit(Event::VisibilityChanged { repository: repo.to_string(), public });
        }
        self.await_nodes(generation).await
    }

    /// Links blob `digest` into `repo` from `from` (any repository when None: the caller has
    /// checked what it may read). Returns its size, None when there is nothing to mount.
    pub async fn mount(&self, repo: &str, from: Option<&str>, digest: &Digest) -> Result<Option<u64>> {
        let mounted = self.meta.mount_blob(repo, from, digest).await?;
        if mounted.is_some() {
            self.changed().await?;
        }
        Ok(mounted)
    }

    /// Removes blob `digest` from `repo` (its bytes stay while anything else links them, until
    /// a GC). False when it was not there.
    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let removed = self.meta.unlink_blob(repo, digest).await?;
        if removed {
            self.changed().await?;
            self.emit(Event::Removed { repository: repo.to_string(), reference: digest.to_string() });
        }
        Ok(removed)
    }

    /// Deletes a manifest (with its tags) or one tag. False when it was not there.
    pub async fn delete(&self, repo: &str, reference: &Reference) -> Result<bool> {
        let removed = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        if removed {
            self.changed().await?;
            let reference = match reference {
                Reference::Digest(d) => d.to_string(),
                Reference::Tag(t) => t.clone(),
            };
            self.emit(Event::Removed { repository: repo.to_string(), reference });
        }
        Ok(removed)
    }

    /// Keeps a manifest from GC (`af registry pin`). Returns its digest, None if unknown.
    pub async fn pin_image(&self, repo: &str, reference: &Reference) -> Result<Option<Digest>> {
        Ok(self.meta.pin(repo, reference).await?)
    }

    /// Lets GC take a manifest again. False when it was not pinned.
    pub async fn unpin_image(&self, repo: &str, digest: &Digest) -> Result<bool> {
        Ok(self.meta.unpin(repo, digest).await?)
    }

    /// Records blocks added through the RPC (verified by the caller as they were parsed) for
    /// `owner`, the pin they arrive under.
    pub async fn store_blocks<B: AsRef<[u8]> + Send + 'static>(&self, blocks: Vec<(Cid, B)>, owner: Owner) -> Result<()> {
        Ok(self.blocks.record_inline(blocks, owner).await?)
    }

    /// Pins `root` (RPC `pin/add`): it and what it links are kept, and public while pinned.
    pub async fn pin_block(&self, root: &Cid) -> Result<()> {
        self.pin_block_as(root, true).await
    }

    /// Pins `root` recursively, or directly (`pin/add?recursive=false`: the root block alone is
    /// kept; the blocks that came with it are public while it stands, but a GC may take them).
    pub async fn pin_block_as(&self, root: &Cid, recursive: bool) -> Result<()> {
        self.pin_block_with(root, recursive, false).await
    }

    /// [`Registry::pin_block_as`]; `trusted_only`: its blocks came (in part) from peers this node
    /// trusts, so what it holds goes to trusted peers and the operator only.
    pub async fn pin_block_with(&self, root: &Cid, recursive: bool, trusted_only: bool) -> Result<()> {
        let new = !self.blocks.is_pinned(root).await?;
        self.blocks.pin(root, recursive, trusted_only).await?;
        self.changed().await?;
        if new {
            self.emit(Event::Pinned { root: root.to_string() });
        }
        Ok(())
    }

    /// Removes the pin on `root`. False when there was none.
    pub async fn unpin_block(&self, root: &Cid) -> Result<bool> {
        let removed = self.blocks.unpin(root).await?;
        if removed {
            self.changed().await?;
            self.emit(Event::Unpinned { root: root.to_string() });
        }
        Ok(removed)
    }

    /// Keeps IPNS `record` for `name` once it validates and supersedes the one held (a higher
    /// sequence, or the same and a later validity); what it says.
    pub async fn put_ipns_record(&self, name: &crate::ipns::Name, record: Vec<u8>) -> std::result::Result<crate::ipns::Record, IpnsPutError> {
        let now = std::time::SystemTime::now();
        let new = crate::ipns::validate(name, &record, now)?;
        let (key, check, name) = (name.canonical(), new.clone(), *name);
        let kept = self
            .blocks
            .put_ipns_record(&key, record, move |held| match held.and_then(|h| crate::ipns::validate(&name, h, now).ok()) {
                Some(old) => check.supersedes(&old) || check == old,
                None => true,
            })
            .await
            .map_err(|e| IpnsPutError::Registry(e.into()))?;
        if !kept {
            return Err(IpnsPutError::Older);
        }
        Ok(new)
    }

    /// Whether `repo` is public; created (public if `public_if_new`) if it did not exist.
    pub async fn visibility_or_create(&self, repo: &str, public_if_new: bool) -> Result<bool> {
        let public = self.meta.visibility_or_create(repo, public_if_new).await?;
        self.changed().await?;
        Ok(public)
    }

    /// Whether `repo`, `origin`'s replica, is public; created as one (public if
    /// `public_if_new`) if it did not exist; None if it is not `origin`'s replica.
    pub async fn replica_or_create(&self, repo: &str, origin: &str, public_if_new: bool, stamp: i64) -> Result<Option<bool>> {
        let public = self.meta.replica_or_create(repo, origin, public_if_new, stamp).await?;
        self.changed().await?;
        Ok(public)
    }

    /// Whether a claim of `origin` signed at `stamp` is the newest applied to its replica
    /// `repo` (recorded if so); false for an older claim, or a repository not `origin`'s.
    pub async fn advance_replica(&self, repo: &str, origin: &str, stamp: i64) -> Result<bool> {
        Ok(self.meta.advance_replica(repo, origin, stamp).await?)
    }

    /// The node whose cluster pins made `repo` here, if it is a replica.
    pub async fn replica_of(&self, repo: &str) -> Result<Option<String>> {
        Ok(self.meta.replica_of(repo).await?)
    }

    /// Sets how many nodes IPFS Cluster keeps `repo`'s images on (None: the node's default).
    pub async fn set_replicas(&self, repo: &str, replicas: Option<u32>) -> Result<()> {
        self.meta.set_replicas(repo, replicas).await?;
        self.changed().await?;
        self.emit(Event::ReplicasChanged { repository: repo.to_string() });
        Ok(())
    }

    /// What [`Self::set_replicas`] set.
    pub async fn replicas(&self, repo: &str) -> Result<Option<u32>> {
        Ok(self.meta.replicas(repo).await?)
    }

    /// Records what pinning the image DAG `root` did to tags.
    pub async fn record_pin_tags(&self, root: &Cid, tags: Vec<crate::blockstore::PinTag>) -> Result<()> {
        Ok(self.blocks.record_pin_tags(root, tags).await?)
    }

    /// What pins of image DAGs did to tags: of `root`, or of every pin (pin root, tag).
    pub async fn pin_tags(&self, root: Option<&Cid>) -> Result<Vec<(String, crate::blockstore::PinTag)>> {
        Ok(self.blocks.pin_tags(root).await?)
    }

    /// Removes the tags the pin of `root` gave that still point where it put them (a tag moved
    /// since is someone else's now), and forgets the record: what nothing else keeps is then
    /// the GC's. The number of tags removed.
    pub async fn release_pin_tags(&self, root: &Cid) -> Result<usize> {
        let mut removed = 0;
        for (_, t) in self.blocks.pin_tags(Some(root)).await? {
            if t.conflict {
                continue;
            }
            let reference = Reference::Tag(t.tag.clone());
            let here = self.meta.get_manifest(&t.repository, &reference).await?;
            if here.is_some_and(|m| m.digest.to_string() == t.digest) && self.delete(&t.repository, &reference).await? {
                tracing::info!(pin = %root, repository = %t.repository, tag = %t.tag, "unpinned: removed the tag the pin gave");
                removed += 1;
            }
        }
        self.blocks.forget_pin_tags(root).await?;
        Ok(removed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpnsPutError {
    #[error(transparent)]
    Invalid(#[from] crate::ipns::IpnsError),
    #[error("can't replace a newer value with an older value")]
    Older,
    #[error(transparent)]
    Registry(#[from] super::RegistryError),
}
