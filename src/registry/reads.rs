//! Reading what the registry holds: blobs as byte streams, blocks verified.

use super::{corrupt, Registry, RegistryError, Result, NODE_ALIVE_SECS};
use crate::blockstore::BlockIndex;
use crate::digest::Digest;
use crate::metadata::{BlobInfo, ManifestRecord, Page, Reference, Referrer, ReferrerPage};
use bytes::Bytes;
use cid::Cid;
use std::sync::Arc;

impl Registry {
    /// Opens a blob of `repo` for reading: its bytes (a stream of any range), its length and what
    /// the metadata says of it. A blob this node lacks is fetched through the [`super::Remote`]
    /// when there is one (its bytes stream as they arrive); otherwise the client is sent to a
    /// node that holds it.
    pub async fn open_blob(&self, repo: &str, digest: &Digest) -> Result<(crate::storage::BlobBytes, u64, BlobInfo)> {
        let info = self.linked_blob(repo, digest).await?;
        if let Some((file, len)) = self.blobs.open_blob(digest)? {
            return Ok((crate::storage::BlobBytes::Local(file), len, info));
        }
        let holders = self.holders(digest).await?;
        match self.remote.get() {
            Some(remote) => Ok((crate::storage::BlobBytes::Arriving(remote.pull(repo, digest, &info, holders)), info.size, info)),
            None => Err(Self::elsewhere(digest, holders)),
        }
    }

    /// What [`Self::open_blob`] would answer, without reading or fetching a byte: the blob's
    /// length and what the metadata says of it.
    pub async fn stat_blob(&self, repo: &str, digest: &Digest) -> Result<(u64, BlobInfo)> {
        let info = self.linked_blob(repo, digest).await?;
        if let Some(len) = self.blobs.blob_len(digest)? {
            return Ok((len, info));
        }
        if self.remote.get().is_some() {
            return Ok((info.size, info));
        }
        Err(Self::elsewhere(digest, self.holders(digest).await?))
    }

    async fn linked_blob(&self, repo: &str, digest: &Digest) -> Result<BlobInfo> {
        let Some(info) = self.meta.blob_info(repo, digest).await? else {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        };
        // A client that saw the blob may reference it next: keep it out of a GC's reach. The
        // read and the touch are two statements: a GC committed between them took the link, and
        // answering from the read would promise a blob that is gone.
        if crate::clock::unix_now() - info.touched_at > self.settings.touch_after.as_secs() as i64 && !self.meta.touch_blob(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        Ok(info)
    }

    /// The other live nodes sharing the metadata that hold blob `digest`.
    async fn holders(&self, digest: &Digest) -> Result<Vec<crate::metadata::NodeRecord>> {
        Ok(match &self.settings.node_id {
            Some(me) => self.meta.live_holders(digest, me, NODE_ALIVE_SECS).await?,
            None => Vec::new(),
        })
    }

    fn elsewhere(digest: &Digest, holders: Vec<crate::metadata::NodeRecord>) -> RegistryError {
        match holders.into_iter().next() {
            Some(node) => RegistryError::Elsewhere { digest: digest.clone(), url: node.api_url },
            None => {
                tracing::warn!(%digest, "blob is in the metadata but no live node holds its file");
                RegistryError::NoHolder(digest.clone())
            }
        }
    }

    /// The block index: its reads are the block service's (`exposure::Policy`), its writes the
    /// registry's.
    pub fn block_index(&self) -> &BlockIndex {
        &self.blocks
    }

    /// What is public, as the metadata says: the block service's view of it.
    pub fn visibility_store(&self) -> Arc<dyn crate::metadata::Visibility> {
        self.meta.clone()
    }

    /// The bytes of block `cid` if this node holds it, verified (see `blockstore`). For the
    /// node's own use: whatever leaves the node is read through a `dag::Reader`, which asks the
    /// exposure policy.
    pub async fn get_block(&self, cid: &cid::Cid) -> Result<Option<Bytes>> {
        self.blocks.get(cid).await.map_err(corrupt)
    }

    /// What the metadata says of blob `digest` in `repo`, None when it is not linked there.
    pub async fn blob_info(&self, repo: &str, digest: &Digest) -> Result<Option<BlobInfo>> {
        Ok(self.meta.blob_info(repo, digest).await?)
    }

    /// A manifest of `repo` by tag or digest.
    pub async fn manifest(&self, repo: &str, reference: &Reference) -> Result<Option<ManifestRecord>> {
        Ok(self.meta.get_manifest(repo, reference).await?)
    }

    /// A page of `repo`'s tags; None when the repository is unknown.
    pub async fn tags(&self, repo: &str, page: &Page) -> Result<Option<Vec<String>>> {
        Ok(self.meta.list_tags(repo, page).await?)
    }

    /// A page of repository names, in order.
    /// One page of the public repositories holding a manifest (what anyone may see listed).
    pub async fn public_repositories(&self, page: &Page) -> Result<Vec<String>> {
        Ok(self.meta.list_public_repositories(page).await?)
    }

    pub async fn repositories(&self, page: &Page) -> Result<Vec<String>> {
        Ok(self.meta.list_repositories(page).await?)
    }

    /// A page of the manifests in `repo` whose subject is `subject`; true when more follow.
    pub async fn referrers(&self, repo: &str, subject: &Digest, artifact_type: Option<&str>, page: &ReferrerPage) -> Result<(Vec<Referrer>, bool)> {
        Ok(self.meta.referrers(repo, subject, artifact_type, page).await?)
    }

    /// Pinned manifests (`af registry pin`), as (repository, digest).
    pub async fn image_pins(&self) -> Result<Vec<(String, Digest)>> {
        Ok(self.meta.list_pins().await?)
    }

    /// Roots pinned through the RPC.
    /// Whether `repo` is public; None when there is no such repository.
    pub async fn visibility(&self, repo: &str) -> Result<Option<bool>> {
        Ok(self.meta.visibility(repo).await?)
    }

    /// The valid IPNS record held for `name`, with what it says; None when there is none (or it
    /// expired).
    pub async fn ipns_record(&self, name: &crate::ipns::Name) -> Result<Option<(Vec<u8>, crate::ipns::Record)>> {
        let Some(bytes) = self.blocks.ipns_record(&name.canonical()).await? else { return Ok(None) };
        Ok(crate::ipns::validate(name, &bytes, std::time::SystemTime::now()).ok().map(|r| (bytes, r)))
    }

    /// Follows `value` through the IPNS keys it names, by the records held here, at most
    /// [`crate::ipns::MAX_HOPS`] of them; `ttl` becomes the shortest TTL met on the way.
    pub async fn follow_ipns(&self, mut value: String, mut ttl: std::time::Duration) -> Result<crate::ipns::Followed> {
        use crate::ipns::{Followed, Name};
        for _ in 0..crate::ipns::MAX_HOPS {
            let Some(next) = value.strip_prefix("/ipns/") else { return Ok(Followed::Path(value, ttl)) };
            let (next_name, next_rest) = next.split_once('/').unwrap_or((next, ""));
            // Not a key (a DNSLink name): following stops there.
            let Ok((next_name, _)) = Name::parse(next_name) else { return Ok(Followed::Path(value, ttl)) };
            let Some((_, record)) = self.ipns_record(&next_name).await? else { return Ok(Followed::NoRecord(next_name)) };
            value = if next_rest.is_empty() { record.value } else { format!("{}/{next_rest}", record.value.trim_end_matches('/')) };
            ttl = ttl.min(record.ttl);
        }
        Ok(Followed::TooDeep(value))
    }

    /// Blob bytes the node holds plus inline block bytes, and how many blocks it indexes.
    pub async fn usage(&self) -> Result<(u64, u64)> {
        let blobs = self.meta.list_blobs().await?;
        let (blocks, inline_bytes) = self.blocks.stat().await?;
        Ok((blobs.iter().map(|(_, s)| s).sum::<u64>() + inline_bytes, blocks))
    }

    /// The local file of the blob whose DAG root is `root`, if it is `size` bytes long: a whole
    /// blob's bytes, verified when it was pushed, served without walking its leaves.
    pub async fn blob_file_by_root(&self, root: &Cid, size: u64) -> Result<Option<std::fs::File>> {
        let Some(digest) = self.meta.blob_by_root(&root.to_string()).await? else { return Ok(None) };
        Ok(self.blobs.open_blob(&digest)?.filter(|(_, len)| *len == size).map(|(f, _)| f))
    }

    /// Blob roots and image CIDs of public repositories.
    pub async fn public_roots(&self) -> Result<Vec<String>> {
        Ok(self.meta.public_roots().await?)
    }

    /// Where a CAR import stages its blob files (on the blob store's file system).
    pub fn staging_dir(&self) -> std::path::PathBuf {
        self.blobs.staging_dir()
    }

    /// The GC lock, shared: held by writers of blocks from storing them to pinning them, so a
    /// GC never sweeps blocks a pin is about to name.
    pub async fn gc_shared_lock(&self) -> Result<crate::storage::GcLock> {
        self.on_disk(|store| store.gc_lock(false)).await
    }
}
