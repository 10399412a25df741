//! CAR files (CARv1): an image out of the node and into another.
//!
//! An export is the image DAG (`crate::image`) and everything under it, every block once, in
//! depth-first order, root = the image CID: any IPFS tool can unpack it into an OCI layout. An
//! import verifies the whole file before it stores anything: every block against its CID, the
//! DAG complete from the root, every blob against its digest. Only then are blobs pushed through
//! the same path as an upload (so their DAGs are this node's, in its profile) and manifests and
//! tags stored, children first.

use crate::dag::{self, BlockSource, DagError, Reader};
use crate::digest::Digest;
use crate::exposure::Admission;
use crate::image::{REF_NAME_ANNOTATION, REPOSITORY_ANNOTATION};
use crate::manifest::{self, MAX_MANIFEST_BYTES};
use crate::metadata::{MetadataError, Reference};
use crate::registry::{Registry, RegistryError};
use crate::unixfs::DecodedLink;
use bytes::Bytes;
use cid::Cid;
use iroh_car::CarHeader;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// The largest CAR section accepted: blocks are at most a chunk (1 MiB) plus framing, and
/// IPFS peers refuse blocks over 2 MiB anyway.
const MAX_SECTION: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("{0} is not in this registry")]
    UnknownImage(String),
    #[error("{0} has no image DAG on this node: some of its blobs are absent")]
    NoImage(String),
    #[error("cannot read the image DAG: {0}")]
    Walk(String),
    #[error("cannot write the CAR: {0}")]
    Write(String),
    #[error("not a CARv1 file: {0}")]
    Header(String),
    #[error("the CAR has {0} roots; an image CAR has exactly one")]
    Roots(usize),
    #[error("the CAR is malformed after {blocks} blocks: {detail}")]
    Malformed { blocks: u64, detail: String },
    #[error("block {cid}: {problem}")]
    Block { cid: String, problem: String },
    #[error("{path} (block {cid}) is missing from the CAR")]
    Missing { path: String, cid: String },
    #[error("{path}: {problem}")]
    Layout { path: String, problem: String },
    #[error("the CAR names no repository; pass --repo")]
    NoRepository,
    #[error("{0:?} is not a valid repository name")]
    RepositoryName(String),
    #[error("staging file {path}: {source}")]
    Staging { path: String, source: std::io::Error },
    #[error("reading the CAR: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("import task failed: {0}")]
    Task(String),
    #[error("{repository} was not made here by the pins of {origin}: a cluster pin may not write into it")]
    NotReplica { repository: String, origin: String },
}

type Result<T> = std::result::Result<T, CarError>;

/// Blocks with their bytes.
pub type Blocks = Vec<(Cid, Vec<u8>)>;

fn block_err(cid: &Cid, problem: impl std::fmt::Display) -> CarError {
    CarError::Block { cid: cid.to_string(), problem: problem.to_string() }
}

/// What an export wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub root: Cid,
    pub blocks: u64,
    pub bytes: u64,
}

/// Writes the image `reference` of `repo` as a CARv1 to `out`: the same depth-first walk, one
/// verified block at a time, that the gateway's `?format=car` streams.
pub async fn export<W: AsyncWrite + Send + Unpin>(reg: Arc<Registry>, repo: &str, reference: &Reference, mut out: W) -> Result<ExportSummary> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let name = match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(d) => format!("{repo}@{d}"),
    };
    let m = reg.manifest(repo, reference).await?.ok_or_else(|| CarError::UnknownImage(name.clone()))?;
    let root: Cid = m.image_cid.ok_or(CarError::NoImage(name))?.parse().map_err(|e| MetadataError::Corrupt(format!("image CID: {e}")))?;
    let mut summary = ExportSummary { root, blocks: 0, bytes: 0 };
    let reader = crate::dag::Reader::new(&crate::exposure::Policy::new(reg, []), crate::exposure::Audience::Operator);
    let mut sections = std::pin::pin!(crate::dag::car::whole(reader, root));
    let mut header = true;
    while let Some(section) = sections.next().await {
        // The stream's errors are the walk's: a block missing or corrupt, named by its CID.
        let section = section.map_err(|e| CarError::Walk(e.to_string()))?;
        out.write_all(&section).await.map_err(|e| CarError::Write(e.to_string()))?;
        summary.bytes += section.len() as u64;
        summary.blocks += u64::from(!std::mem::take(&mut header));
    }
    out.flush().await.map_err(|e| CarError::Write(e.to_string()))?;
    Ok(summary)
}

/// Every block of a CAR, verified, in a staging file while the import decides what to keep.
/// A CAR's verified blocks in a staging file (removed when this is dropped).
pub struct Staged {
    file: File,
    path: PathBuf,
    index: HashMap<Cid, (u64, usize)>,
    root: Cid,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads as much as is there, up to `buf.len()`.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn verify_block(cid: &Cid, data: &[u8]) -> Result<()> {
    crate::multihash::verify(cid, data).map_err(|e| block_err(cid, e))
}

/// Removes staging files of imports that ended without cleaning up (killed, crashed); a live
/// import holds a lock on its file and is left alone.
pub fn sweep_staging(staging_dir: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(staging_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("import-") {
            continue;
        }
        let Ok(file) = File::open(&path) else { continue };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            tracing::info!(path = %path.display(), "removing the staging file of an import that did not finish");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Phase 1: reads and verifies every block into a staging file.
pub fn stage(mut input: impl Read, staging_dir: &Path) -> Result<Staged> {
    let header_len = crate::varint::read(&mut input).map_err(CarError::Read)?.ok_or_else(|| CarError::Header("the file is empty".into()))? as usize;
    if header_len > MAX_SECTION {
        return Err(CarError::Header(format!("a header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len];
    if read_full(&mut input, &mut header).map_err(CarError::Read)? < header_len {
        return Err(CarError::Header("truncated header".into()));
    }
    let header = CarHeader::decode(&header).map_err(|e| CarError::Header(e.to_string()))?;
    let root = match header.roots() {
        [root] => *root,
        roots => return Err(CarError::Roots(roots.len())),
    };
    std::fs::create_dir_all(staging_dir).map_err(|source| CarError::Staging { path: staging_dir.display().to_string(), source })?;
    let path = staging_dir.join(format!("import-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|source| CarError::Staging { path: path.display().to_string(), source })?;
    // Held while this import lives: a sweep of the staging directory skips locked files.
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    let mut staged = Staged { file, path, index: HashMap::new(), root };
    let staging_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| CarError::Staging { path, source }
    };
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, staged.file.try_clone().map_err(staging_err(&staged.path))?);
    let (mut offset, mut blocks) = (0u64, 0u64);
    let mut section = Vec::new();
    loop {
        let malformed = |detail: String| CarError::Malformed { blocks, detail };
        let len = match crate::varint::read(&mut input) {
            Ok(None) => break,
            Ok(Some(len)) => len as usize,
            Err(e) => return Err(malformed(format!("section length: {e}"))),
        };
        if len > MAX_SECTION {
            return Err(malformed(format!("a section of {len} bytes")));
        }
        section.resize(len, 0);
        let got = read_full(&mut input, &mut section).map_err(CarError::Read)?;
        let mut cursor = std::io::Cursor::new(&section[..got]);
        let cid = Cid::read_bytes(&mut cursor);
        if got < len {
            return Err(match cid {
                Ok(cid) => block_err(&cid, format!("truncated: {got} of {len} bytes")),
                Err(_) => malformed(format!("truncated section: {got} of {len} bytes")),
            });
        }
        let cid = cid.map_err(|e| malformed(format!("bad CID: {e}")))?;
        let data = &section[cursor.position() as usize..];
        verify_block(&cid, data)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = staged.index.entry(cid) {
            writer.write_all(data).map_err(staging_err(&staged.path))?;
            slot.insert((offset, data.len()));
            offset += data.len() as u64;
        }
        blocks += 1;
    }
    writer.flush().map_err(staging_err(&staged.path))?;
    Ok(staged)
}

/// The most bytes a block may have (Kubo's limit): a larger one is refused, not stored.
pub const MAX_BLOCK: usize = 2 << 20;

/// A CARv1 read as its bytes arrive (the RPC's `dag/import`): feed chunks, take the verified
/// blocks that are complete. Holds at most one section and one chunk.
#[derive(Default)]
pub struct SectionReader {
    pending: Vec<u8>,
    roots: Option<Vec<Cid>>,
    blocks: u64,
}

impl SectionReader {
    /// The roots, once the header has arrived.
    pub fn roots(&self) -> Option<&[Cid]> {
        self.roots.as_deref()
    }

    /// Adds `chunk`; returns the blocks it completed, each verified against its CID.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Blocks> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let malformed = |blocks: u64, detail: String| CarError::Malformed { blocks, detail };
            let Some((len, n)) = crate::varint::decode(&self.pending[at..]).map_err(|e| malformed(self.blocks, e.to_string()))? else { break };
            let len = len as usize;
            let limit = if self.roots.is_none() { MAX_SECTION } else { MAX_BLOCK + 128 };
            if len > limit {
                return Err(malformed(self.blocks, format!("a section of {len} bytes; blocks are limited to {MAX_BLOCK}")));
            }
            if self.pending.len() - at - n < len {
                break;
            }
            let section = &self.pending[at + n..at + n + len];
            at += n + len;
            if self.roots.is_none() {
                let header = CarHeader::decode(section).map_err(|e| CarError::Header(e.to_string()))?;
                self.roots = Some(header.roots().to_vec());
                continue;
            }
            let mut cursor = std::io::Cursor::new(section);
            let cid = Cid::read_bytes(&mut cursor).map_err(|e| malformed(self.blocks, format!("bad CID: {e}")))?;
            let data = &section[cursor.position() as usize..];
            if data.len() > MAX_BLOCK {
                return Err(block_err(&cid, format!("{} bytes; blocks are limited to {MAX_BLOCK}", data.len())));
            }
            verify_block(&cid, data)?;
            out.push((cid, data.to_vec()));
            self.blocks += 1;
        }
        self.pending.drain(..at);
        Ok(out)
    }

    /// The CAR ended: an error if it ended inside a section or before its header.
    pub fn finish(&self) -> Result<()> {
        if self.roots.is_none() {
            return Err(CarError::Header("the CAR ended before its header".into()));
        }
        if !self.pending.is_empty() {
            return Err(CarError::Malformed { blocks: self.blocks, detail: format!("truncated: {} bytes of a section", self.pending.len()) });
        }
        Ok(())
    }
}

/// The staged blocks as a source for a [`Reader`]: verified when they were staged, and all of
/// them the operator's. Read on the calling thread: an import is the CLI's, nothing else waits.
struct StagedBlocks(Arc<Staged>);

impl BlockSource for StagedBlocks {
    fn fetch<'a>(&'a self, cid: &'a Cid) -> futures_util::future::BoxFuture<'a, dag::Result<Option<(Bytes, Admission)>>> {
        Box::pin(async move {
            let Some(&(offset, len)) = self.0.index.get(cid) else { return Ok(None) };
            let mut buf = vec![0u8; len];
            self.0
                .file
                .read_exact_at(&mut buf, offset)
                .map_err(|source| RegistryError::Storage(crate::storage::StorageError::Io { path: self.0.path.display().to_string(), source }))?;
            Ok(Some((Bytes::from(buf), Admission::Vouching)))
        })
    }

    fn sees_all(&self) -> bool {
        true
    }

    fn vouch(&self, _links: Vec<Cid>) {}
}

/// A walk's failure as an import error about `path`.
fn walk_err(path: &str) -> impl Fn(DagError) -> CarError + '_ {
    move |e| match e {
        DagError::Missing(cid) => CarError::Missing { path: path.to_string(), cid: cid.to_string() },
        DagError::Malformed { cid, detail } => block_err(&cid, detail),
        DagError::Registry(e) => CarError::Registry(e),
        e @ (DagError::NotFound(_) | DagError::TooMuchWork(_) | DagError::Unsupported(_)) => CarError::Layout { path: path.to_string(), problem: e.to_string() },
    }
}

/// A file read failed: the walk's error inside, or another.
fn file_err(path: &str, e: std::io::Error) -> CarError {
    match e.into_inner().map(|inner| inner.downcast::<DagError>()) {
        Some(Ok(dag)) => walk_err(path)(*dag),
        Some(Err(other)) => CarError::Layout { path: path.to_string(), problem: other.to_string() },
        None => CarError::Layout { path: path.to_string(), problem: "unreadable".into() },
    }
}

/// An OCI image layout read as a UnixFS DAG, from any block source: the staged blocks of a
/// CAR, or peers (an import by CID).
struct Layout {
    reader: Arc<Reader>,
    root: Cid,
}

impl Layout {
    fn reader(&self) -> Arc<Reader> {
        self.reader.clone()
    }

    /// The entries of the directory at `cid`, plain or sharded.
    async fn directory(&self, cid: &Cid, path: &str) -> Result<Vec<DecodedLink>> {
        let reader = self.reader();
        let node = reader.node(cid).await.map_err(walk_err(path))?;
        reader.entries(node).await.map_err(walk_err(path))
    }

    /// Feeds the content of the UnixFS file at `cid` to `f`, in order.
    async fn file(&self, cid: &Cid, path: &str, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        use futures_util::StreamExt;
        let mut pieces = std::pin::pin!(dag::file_stream(self.reader(), *cid, 0, u64::MAX));
        while let Some(piece) = pieces.next().await {
            f(&piece.map_err(|e| file_err(path, e))?)?;
        }
        Ok(())
    }

    async fn small_file(&self, cid: &Cid, path: &str, limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.file(cid, path, |data| {
            if out.len() + data.len() > limit {
                return Err(CarError::Layout { path: path.to_string(), problem: format!("larger than {limit} bytes") });
            }
            out.extend_from_slice(data);
            Ok(())
        })
        .await?;
        Ok(out)
    }
}

/// One manifest of the layout, with its bytes.
struct LayoutManifest {
    digest: Digest,
    media_type: Option<String>,
    content: Bytes,
    tags: Vec<String>,
}

/// Phase 2: what the layout holds, every blob checked against its digest.
struct Plan {
    repository: String,
    /// Blobs by digest: their root in the layout, and their size.
    blobs: BTreeMap<Digest, (Cid, u64)>,
    /// Children before the manifests that reference them.
    manifests: Vec<LayoutManifest>,
}

#[derive(serde::Deserialize)]
struct IndexJson {
    manifests: Vec<Descriptor>,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Reads the layout at `staged`'s root: its manifests (each checked against its digest) and the
/// blobs they name, with their roots. `verify_blobs`: every blob is read and checked against its
/// digest now (a CAR, all here); otherwise only its size is read, and its bytes are checked when
/// they are first fetched (an import by CID: the layers stay with the peers until pulled).
async fn plan(staged: &Layout, repo_override: Option<String>, verify_blobs: bool) -> Result<Plan> {
    let root = staged.directory(&staged.root, "/").await?;
    let entry = |links: &[DecodedLink], name: &str, path: &str| -> Result<Cid> {
        links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.cid)
            .ok_or_else(|| CarError::Layout { path: path.to_string(), problem: "absent: the CAR's root is not an OCI image layout".into() })
    };
    let index_cid = entry(&root, "index.json", "index.json")?;
    entry(&root, "oci-layout", "oci-layout")?;
    let mut layout_blobs: HashMap<Digest, Cid> = HashMap::new();
    for alg in staged.directory(&entry(&root, "blobs", "blobs")?, "blobs").await? {
        let dir = format!("blobs/{}", alg.name);
        for blob in staged.directory(&alg.cid, &dir).await? {
            let path = format!("{dir}/{}", blob.name);
            let digest: Digest = format!("{}:{}", alg.name, blob.name).parse().map_err(|e| CarError::Layout { path: path.clone(), problem: format!("not a digest: {e}") })?;
            layout_blobs.insert(digest, blob.cid);
        }
    }
    let index: IndexJson = serde_json::from_slice(&staged.small_file(&index_cid, "index.json", MAX_MANIFEST_BYTES).await?)
        .map_err(|e| CarError::Layout { path: "index.json".into(), problem: e.to_string() })?;
    let repository = repo_override.or_else(|| index.manifests.iter().find_map(|d| d.annotations.get(REPOSITORY_ANNOTATION).cloned())).ok_or(CarError::NoRepository)?;
    if !crate::names::is_valid_name(&repository) {
        return Err(CarError::RepositoryName(repository));
    }
    let layout_path = |d: &Digest| format!("blobs/{}/{}", d.algorithm().as_str(), d.hex());
    let locate = |d: &Digest| -> Result<Cid> { layout_blobs.get(d).copied().ok_or_else(|| CarError::Layout { path: layout_path(d), problem: "absent from the layout".into() }) };
    let mut plan = Plan { repository, blobs: BTreeMap::new(), manifests: Vec::new() };
    let mut placed: HashSet<Digest> = HashSet::new();
    // Depth-first, children placed before their parents.
    let mut stack: Vec<(Digest, Option<String>, Vec<String>, bool)> = Vec::new();
    for d in index.manifests.iter().rev() {
        let digest: Digest = d.digest.parse().map_err(|e| CarError::Layout { path: "index.json".into(), problem: format!("digest {:?}: {e}", d.digest) })?;
        let tags: Vec<String> = d.annotations.get(REF_NAME_ANNOTATION).cloned().into_iter().collect();
        if let Some(bad) = tags.iter().find(|t| !crate::names::is_valid_tag(t)) {
            return Err(CarError::Layout { path: "index.json".into(), problem: format!("{bad:?} is not a valid tag") });
        }
        stack.push((digest, d.media_type.clone(), tags, false));
    }
    let mut contents: HashMap<Digest, (Bytes, manifest::ParsedManifest)> = HashMap::new();
    while let Some((digest, media_type, tags, expanded)) = stack.pop() {
        if expanded {
            let (content, _) = &contents[&digest];
            plan.manifests.push(LayoutManifest { digest, media_type, content: content.clone(), tags });
            continue;
        }
        if !contents.contains_key(&digest) {
            let path = layout_path(&digest);
            let content = Bytes::from(staged.small_file(&locate(&digest)?, &path, MAX_MANIFEST_BYTES).await?);
            let actual = Digest::of_bytes(digest.algorithm(), &content);
            if actual != digest {
                return Err(CarError::Layout { path, problem: format!("content digest is {actual}") });
            }
            let parsed = manifest::parse(media_type.as_deref(), &content).map_err(|e| CarError::Layout { path, problem: e.to_string() })?;
            contents.insert(digest.clone(), (content, parsed));
        }
        if !placed.insert(digest.clone()) && tags.is_empty() {
            continue;
        }
        let parsed = contents[&digest].1.clone();
        stack.push((digest, Some(parsed.media_type.clone()), tags, true));
        for child in parsed.manifests.iter().rev().filter(|c| !placed.contains(*c)) {
            stack.push((child.clone(), None, Vec::new(), false));
        }
        for blob in parsed.blobs {
            let cid = locate(&blob)?;
            plan.blobs.insert(blob, (cid, 0));
        }
    }
    for (digest, (cid, size)) in plan.blobs.iter_mut() {
        let path = layout_path(digest);
        if !verify_blobs {
            let reader = staged.reader();
            *size = reader.file_size(cid).await.map_err(walk_err(&path))?.ok_or_else(|| CarError::Layout { path, problem: "not a file".into() })?;
            continue;
        }
        let mut hasher = digest.algorithm().hasher();
        staged
            .file(cid, &path, |data| {
                hasher.update(data);
                Ok(())
            })
            .await?;
        let actual = hasher.finish();
        if &actual != digest {
            return Err(CarError::Layout { path, problem: format!("content digest is {actual}") });
        }
    }
    Ok(plan)
}

/// What an import stored.
#[derive(Debug)]
pub struct ImportSummary {
    pub repository: String,
    pub car_root: Cid,
    pub blobs: usize,
    pub new_blobs: usize,
    pub manifests: usize,
    /// Each tag with the image CID this node gives it.
    pub tags: Vec<(String, Option<String>)>,
}

/// Imports an image CAR read from `input`; nothing is stored unless all of it verifies.
pub async fn import<R: Read + Send + 'static>(reg: &Registry, input: R, repo_override: Option<String>) -> Result<ImportSummary> {
    let staging_dir = reg.staging_dir();
    let staged = tokio::task::spawn_blocking(move || {
        sweep_staging(&staging_dir);
        stage(input, &staging_dir)
    })
    .await
    .map_err(|e| CarError::Task(e.to_string()))??;
    let car_root = staged.root;
    let staged = Layout { reader: Reader::over(StagedBlocks(Arc::new(staged))), root: car_root };
    let plan = plan(&staged, repo_override, true).await?;
    store(reg, plan, car_root, Some(staged.reader())).await
}

/// Imports the image layout at `root` as `reader` finds it (from peers): its manifests, tags
/// and the blobs they name. The blobs are recorded by their root and size, not fetched: a pull
/// fetches each from peers when first read and checks its digest then (`Registry::open_blob`).
pub async fn import_dag(reg: &Registry, reader: Arc<Reader>, root: Cid, repo_override: Option<String>) -> Result<ImportSummary> {
    let plan = plan(&Layout { reader, root }, repo_override, false).await?;
    store(reg, plan, root, None).await
}

/// Who a pinned image comes from, which decides the repository it may write into.
pub enum PinOrigin<'a> {
    /// The operator's own `pin/add` (no cluster pin names it): the repository its layout
    /// names, as it is, or new and private.
    Operator,
    /// A registry node, by its signed cluster pin: only a repository that node's pins created
    /// here (or create now, with the visibility the claim says).
    Node(&'a crate::cluster::Claim),
}

/// Imports the image layout at `root` for a pin of it (IPFS Cluster's, or `pin/add`'s): as
/// [`import_dag`], except that a tag here on another manifest stays where it is (a conflict,
/// logged and returned) rather than move under an operator who did not push, and that a
/// cluster pin writes only into a replica of its own origin ([`PinOrigin`]). Returns the
/// import, whether the repository is public, and, for the record unpinning reads, each tag the
/// pin gave (absent before) or left.
pub async fn import_pinned(reg: &Registry, reader: Arc<Reader>, root: Cid, origin: PinOrigin<'_>) -> Result<(ImportSummary, bool, Vec<crate::blockstore::PinTag>)> {
    let mut plan = plan(&Layout { reader, root }, None, false).await?;
    let repo = plan.repository.clone();
    let public = match origin {
        PinOrigin::Operator => reg.visibility_or_create(&repo, false).await?,
        PinOrigin::Node(claim) => {
            let refused = || CarError::NotReplica { repository: repo.clone(), origin: claim.node.clone() };
            if claim.repository != repo {
                return Err(refused());
            }
            reg.replica_or_create(&repo, &claim.node, claim.public, claim.stamp).await?.ok_or_else(refused)?
        }
    };
    let mut record = Vec::new();
    for m in plan.manifests.iter_mut() {
        let mut kept = Vec::new();
        for tag in std::mem::take(&mut m.tags) {
            let here = reg.manifest(&repo, &Reference::Tag(tag.clone())).await?.map(|h| h.digest);
            let pin_tag = |conflict| crate::blockstore::PinTag { repository: repo.clone(), tag: tag.clone(), digest: m.digest.to_string(), conflict };
            match here {
                Some(here) if here != m.digest => {
                    tracing::warn!(pin = %root, repository = %repo, %tag, %here, pinned = %m.digest, "a pinned image would move a tag: it stays where it is");
                    record.push(pin_tag(true));
                }
                Some(_) => kept.push(tag),
                None => {
                    record.push(pin_tag(false));
                    kept.push(tag);
                }
            }
        }
        m.tags = kept;
    }
    let summary = store(reg, plan, root, None).await?;
    Ok((summary, public, record))
}

/// Stores what `plan` found: each blob not here yet copied from `blobs` (through the upload
/// path, so its DAG is this node's) or, without a reader, recorded by its root; then the
/// manifests and tags, children first.
async fn store(reg: &Registry, plan: Plan, root: Cid, blobs: Option<Arc<Reader>>) -> Result<ImportSummary> {
    let repo = plan.repository.as_str();
    let mut summary =
        ImportSummary { repository: plan.repository.clone(), car_root: root, blobs: plan.blobs.len(), new_blobs: 0, manifests: plan.manifests.len(), tags: Vec::new() };
    for (digest, (cid, size)) in &plan.blobs {
        // Present already, here or in another repository: linked, not copied.
        if reg.blob_info(repo, digest).await?.is_some() || reg.mount(repo, None, digest).await?.is_some() {
            continue;
        }
        match &blobs {
            Some(reader) => reg.put_blob(repo, digest, "import", Box::pin(dag::file_stream(reader.clone(), *cid, 0, u64::MAX))).await.map(drop)?,
            None => reg.adopt_blob(repo, digest, *size, cid).await?,
        }
        summary.new_blobs += 1;
    }
    store_manifests(reg, &plan, &mut summary).await?;
    Ok(summary)
}

async fn store_manifests(reg: &Registry, plan: &Plan, summary: &mut ImportSummary) -> Result<()> {
    let repo = plan.repository.as_str();
    for m in &plan.manifests {
        let stored = reg.put_manifest(repo, &Reference::Digest(m.digest.clone()), m.media_type.as_deref(), m.content.clone(), m.tags.clone()).await?;
        for tag in &m.tags {
            let image = reg.manifest(repo, &Reference::Tag(tag.clone())).await?.and_then(|r| r.image_cid);
            summary.tags.push((tag.clone(), image));
        }
        drop(stored);
    }
    Ok(())
}
