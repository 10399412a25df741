//! Copying images between a registry and an OCI image layout on disk (`push --from oci:DIR`,
//! `pull --to oci:DIR`): blobs stream (never whole in memory), several at once; a blob the
//! registry has is not sent again; every blob pulled is hashed as it is written and kept only
//! if it matches its digest.

use super::reference::ImageRef;
use super::{ClientError, Registry};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Blobs moved at once.
pub const CONCURRENT: usize = 4;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{path}: {detail}")]
    Layout { path: String, detail: String },
    #[error("{digest}: the registry sent bytes whose digest is {actual}")]
    Mismatch { digest: String, actual: String },
    #[error("{0}")]
    Selection(String),
    #[error(transparent)]
    Engine(#[from] super::engine::EngineError),
}

type Result<T> = std::result::Result<T, TransferError>;

fn layout_err(path: &Path, detail: impl std::fmt::Display) -> TransferError {
    TransferError::Layout { path: path.display().to_string(), detail: detail.to_string() }
}

/// What moved: the top manifest's digest, and bytes sent or received (blobs skipped aside).
#[derive(Debug, Default)]
pub struct Moved {
    pub digest: String,
    pub bytes: u64,
    pub blobs: usize,
    pub skipped: usize,
}

/// Told how each blob's transfer goes (for progress bars or lines).
pub trait Progress: Send + Sync {
    /// `size` bytes of `digest` are about to move.
    fn begin(&self, _digest: &str, _size: u64) {}
    /// `bytes` more of `digest` moved.
    fn advance(&self, _digest: &str, _bytes: u64) {}
    /// `digest` is done: moved, or `already` there.
    fn end(&self, digest: &str, size: u64, already: bool);
}

pub type Report<'a> = &'a std::sync::Arc<dyn Progress>;

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| layout_err(dir, format!("{digest:?} is not a digest")))?;
    if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(layout_err(dir, format!("{digest:?} is not a sha256 digest")));
    }
    Ok(dir.join("blobs").join(alg).join(hex))
}

/// `sha256:<hex>` of `bytes`.
pub(super) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Index levels followed at most (an index of indexes of manifests is two): a hostile layout or
/// registry nested 6,000 deep overflowed the stack.
pub const MAX_DEPTH: usize = 8;
/// The most bytes of `index.json` or a manifest read from a layout: the registry's own limit.
const MAX_LAYOUT_JSON: usize = crate::manifest::MAX_MANIFEST_BYTES;

/// Opens `path`, a file of the layout at `dir`, for reading: only a regular file inside the
/// layout, reached through no symbolic link below `dir` (a blob linked to a key file elsewhere
/// was read and sent), never a device or a FIFO (opened without waiting for a writer).
fn open_inside(dir: &Path, path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let inside = path.strip_prefix(dir).map_err(|_| layout_err(path, "not inside the layout"))?;
    let mut at = dir.to_path_buf();
    for part in inside.components() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| layout_err(&at, e))?;
        if meta.file_type().is_symlink() {
            return Err(layout_err(&at, "a symbolic link: only the layout's own files are read"));
        }
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(|e| layout_err(path, e))?;
    let meta = file.metadata().map_err(|e| layout_err(path, e))?;
    if !meta.is_file() {
        return Err(layout_err(path, "not a regular file"));
    }
    Ok(file)
}

/// The bytes of a small file of the layout (at most `limit`).
fn read_small(dir: &Path, path: &Path, limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = open_inside(dir, path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|e| layout_err(path, e))?;
    if bytes.len() > limit {
        return Err(layout_err(path, format!("over {limit} bytes")));
    }
    Ok(bytes)
}

fn read_json(dir: &Path, path: &Path) -> Result<Value> {
    let bytes = read_small(dir, path, MAX_LAYOUT_JSON)?;
    serde_json::from_slice(&bytes).map_err(|e| layout_err(path, format!("not JSON: {e}")))
}

/// What a walk of manifests has seen: each digest is pushed or pulled once however often the
/// indexes name it (a 319 KB layout named a million), and indexes nest [`MAX_DEPTH`] deep at most.
#[derive(Default)]
pub struct Walk {
    seen: std::collections::HashSet<String>,
    depth: usize,
}

impl Walk {
    /// True the first time manifest `digest` is met.
    fn first(&mut self, digest: &str) -> bool {
        self.seen.insert(format!("manifest {digest}"))
    }

    /// True the first time blob `digest` is met (a manifest's bytes and a blob's go to
    /// different endpoints, so one digest may be both).
    fn first_blob(&mut self, digest: &str) -> bool {
        self.seen.insert(format!("blob {digest}"))
    }

    fn deeper(&mut self, at: &str) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(TransferError::Selection(format!("{at}: indexes nest more than {MAX_DEPTH} deep")));
        }
        self.depth += 1;
        Ok(())
    }
}

/// The manifest descriptor `tag` names in the layout's index.json (the only one, if no tag).
fn select(dir: &Path, tag: Option<&str>) -> Result<Value> {
    let index = read_json(dir, &dir.join("index.json"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let found: Vec<&Value> = match tag {
        Some(t) => manifests.iter().filter(|m| m["annotations"][REF_NAME] == t).collect(),
        None => manifests.iter().collect(),
    };
    match (found.as_slice(), tag) {
        ([one], _) => Ok((*one).clone()),
        ([], Some(t)) => Err(TransferError::Selection(format!("{}: no image tagged {t:?}", dir.display()))),
        ([], None) => Err(TransferError::Selection(format!("{}: the layout holds no image", dir.display()))),
        (_, _) => Err(TransferError::Selection(format!("{}: several images: name one with oci:{}:TAG", dir.display(), dir.display()))),
    }
}

/// The tags of the layout at `dir` (its index's `ref.name` annotations), in index order.
pub fn layout_tags(dir: &Path) -> Result<Vec<String>> {
    let index = read_json(dir, &dir.join("index.json"))?;
    let mut tags: Vec<String> = index["manifests"].as_array().into_iter().flatten().filter_map(|m| m["annotations"][REF_NAME].as_str()).map(str::to_string).collect();
    tags.dedup();
    Ok(tags)
}

/// Pushes the image `tag` of the layout at `dir` to `dst` (its tag, or digest).
pub async fn push(registry: &Registry, dir: &Path, tag: Option<&str>, dst: &ImageRef, report: Report<'_>) -> Result<Moved> {
    let top = select(dir, tag)?;
    let mut moved = Moved::default();
    let digest = push_manifest(registry, dir, &top, &dst.repository, Some(&dst.reference), report, &mut moved, &mut Walk::default()).await?;
    moved.digest = digest;
    Ok(moved)
}

/// Pushes the manifest `desc` names (its children and blobs first); returns its digest. A
/// manifest this walk pushed already is not pushed again.
#[allow(clippy::too_many_arguments)]
async fn push_manifest(
    registry: &Registry,
    dir: &Path,
    desc: &Value,
    repo: &str,
    reference: Option<&str>,
    report: Report<'_>,
    moved: &mut Moved,
    walk: &mut Walk,
) -> Result<String> {
    let digest = desc["digest"].as_str().ok_or_else(|| layout_err(dir, "a descriptor without a digest"))?.to_string();
    if reference.is_none() && !walk.first(&digest) {
        return Ok(digest);
    }
    let path = blob_path(dir, &digest)?;
    let bytes = read_small(dir, &path, MAX_LAYOUT_JSON)?;
    if sha256_digest(&bytes) != digest {
        return Err(layout_err(&path, format!("its bytes do not match {digest}")));
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| layout_err(&path, format!("not JSON: {e}")))?;
    if let Some(children) = doc["manifests"].as_array() {
        walk.deeper(&digest)?;
        for child in children {
            Box::pin(push_manifest(registry, dir, child, repo, None, report, moved, walk)).await?;
        }
        walk.depth -= 1;
    }
    each_blob(&doc, report, moved, walk, |digest, size| async move { push_blob(registry, dir, repo, &digest, size, report).await }).await?;
    let media_type = doc["mediaType"].as_str().or(desc["mediaType"].as_str()).unwrap_or("application/vnd.oci.image.manifest.v1+json").to_string();
    let url = registry.url(&format!("/v2/{repo}/manifests/{}", reference.unwrap_or(&digest)));
    let scope = format!("repository:{repo}:pull,push");
    let body = bytes::Bytes::from(bytes);
    registry.check(registry.send(&scope, |http| http.put(&url).header("content-type", &media_type).body(body.clone())).await?).await?;
    Ok(digest)
}

/// Runs `transfer` (true: bytes moved; false: already there) for the config and each layer of
/// the image manifest `doc`, [`CONCURRENT`] at once, reporting and counting each.
async fn each_blob<F, Fut>(doc: &Value, report: Report<'_>, moved: &mut Moved, walk: &mut Walk, transfer: F) -> Result<()>
where
    F: Fn(String, u64) -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let blobs: Vec<(String, u64)> = doc["config"]
        .as_object()
        .into_iter()
        .chain(doc["layers"].as_array().into_iter().flatten().filter_map(Value::as_object))
        .filter_map(|d| Some((d.get("digest")?.as_str()?.to_string(), d.get("size")?.as_u64()?)))
        .filter(|(digest, _)| walk.first_blob(digest))
        .collect();
    let transfer = &transfer;
    let results: Vec<(u64, bool)> = futures_util::stream::iter(blobs.into_iter().map(|(digest, size)| async move {
        let moved_bytes = transfer(digest.clone(), size).await?;
        report.end(&digest, size, !moved_bytes);
        Ok::<_, TransferError>((size, moved_bytes))
    }))
    .buffer_unordered(CONCURRENT)
    .try_collect()
    .await?;
    for (size, moved_bytes) in results {
        moved.blobs += 1;
        if moved_bytes {
            moved.bytes += size;
        } else {
            moved.skipped += 1;
        }
    }
    Ok(())
}

/// Sends blob `digest` unless the repository has it: true if it was sent. The layout's file is
/// checked first, its size and then every byte against the digest, before a byte is sent; what
/// is sent is read from the same open file.
async fn push_blob(registry: &Registry, dir: &Path, repo: &str, digest: &str, size: u64, report: Report<'_>) -> Result<bool> {
    let path = blob_path(dir, digest)?;
    let file = open_inside(dir, &path)?;
    let on_disk = file.metadata().map_err(|e| layout_err(&path, e))?.len();
    if on_disk != size {
        return Err(layout_err(&path, format!("{on_disk} bytes, the manifest says {size}")));
    }
    let file = std::sync::Arc::new(file);
    let actual = {
        let (file, at) = (file.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            let mut hasher = sha2::Sha256::new();
            let mut reader = std::io::BufReader::with_capacity(1 << 20, ReadAt { file: &file, at: 0 });
            std::io::copy(&mut reader, &mut hasher).map_err(|e| layout_err(&at, e))?;
            Ok::<_, TransferError>(format!("sha256:{}", hex::encode(hasher.finalize())))
        })
        .await
        .map_err(|e| layout_err(&path, e))??
    };
    if actual != digest {
        return Err(layout_err(&path, format!("its bytes are {actual}, not {digest}: not sent")));
    }
    let progress = (report.clone(), digest.to_string());
    upload(registry, repo, digest, size, report, move || {
        let (report, digest) = progress.clone();
        reqwest::Body::wrap_stream(chunks_at(file.clone(), 0, size).inspect_ok(move |chunk| report.advance(&digest, chunk.len() as u64)))
    })
    .await
}

/// Reads a file from `at` by position (`pread`), so copies of one open file read on their own.
struct ReadAt<'a> {
    file: &'a std::fs::File,
    at: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The `size` bytes at `offset` of an open file, a MiB at a time, read by position on blocking
/// threads.
fn chunks_at(file: std::sync::Arc<std::fs::File>, offset: u64, size: u64) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::try_unfold((file, offset, size), |(file, at, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = (1u64 << 20).min(left) as usize;
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let n = std::os::unix::fs::FileExt::read_at(&*file, &mut buf, at)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((file, buf))
        })
        .await
        .map_err(std::io::Error::other)??;
        if chunk.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file ended early"));
        }
        let n = chunk.len() as u64;
        Ok(Some((bytes::Bytes::from(chunk), (file, at + n, left - n))))
    })
}

/// Sends blob `digest`, the `size` bytes at `offset` of the file at `path`, unless the repository
/// has it: true if it was sent.
pub async fn upload_range(registry: &Registry, repo: &str, digest: &str, path: PathBuf, (offset, size): (u64, u64), report: Report<'_>) -> Result<bool> {
    let file = std::sync::Arc::new(std::fs::File::open(&path).map_err(|e| layout_err(&path, e))?);
    let progress = (report.clone(), digest.to_string());
    upload(registry, repo, digest, size, report, move || {
        let (report, digest) = progress.clone();
        reqwest::Body::wrap_stream(chunks_at(file.clone(), offset, size).inspect_ok(move |chunk| report.advance(&digest, chunk.len() as u64)))
    })
    .await
}

/// Sends blob `digest`, `bytes`, unless the repository has it: true if it was sent.
pub async fn upload_bytes(registry: &Registry, repo: &str, digest: &str, bytes: bytes::Bytes, report: Report<'_>) -> Result<bool> {
    let size = bytes.len() as u64;
    upload(registry, repo, digest, size, report, move || reqwest::Body::from(bytes.clone())).await
}

/// The upload of one blob (HEAD first; then one POST and one PUT with `body()`, made anew for
/// each attempt, since a challenge answered means a second one).
async fn upload(registry: &Registry, repo: &str, digest: &str, size: u64, report: Report<'_>, body: impl Fn() -> reqwest::Body) -> Result<bool> {
    let scope = format!("repository:{repo}:pull,push");
    let head_url = registry.url(&format!("/v2/{repo}/blobs/{digest}"));
    let head = registry.send(&scope, |http| http.head(&head_url)).await?;
    if head.status().is_success() {
        return Ok(false);
    }
    let start_url = registry.url(&format!("/v2/{repo}/blobs/uploads/"));
    let started = registry.check(registry.send(&scope, |http| http.post(&start_url)).await?).await?;
    let put_url = with_digest(&location(registry, &started)?, digest);
    report.begin(digest, size);
    let response = registry.send(&scope, |http| http.put(&put_url).header("content-type", "application/octet-stream").header("content-length", size).body(body())).await?;
    registry.check(response).await?;
    Ok(true)
}

/// Where an upload continues, from a response's `Location`.
fn location(registry: &Registry, response: &reqwest::Response) -> Result<String> {
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or_else(|| registry.protocol("an upload without a Location".into()))?;
    Ok(if location.starts_with('/') { registry.url(location) } else { location.to_string() })
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The size of blob `digest` if the repository has it (a HEAD, which our registry counts as
/// a use that keeps the blob from a GC for a while).
pub async fn blob_size(registry: &Registry, repo: &str, digest: &str) -> Result<Option<u64>> {
    let scope = format!("repository:{repo}:pull,push");
    let url = registry.url(&format!("/v2/{repo}/blobs/{digest}"));
    let head = registry.send(&scope, |http| http.head(&url)).await?;
    if !head.status().is_success() {
        return Ok(None);
    }
    let size = head.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    Ok(Some(size.ok_or_else(|| registry.protocol(format!("HEAD {digest}: no Content-Length")))?))
}

/// Mounts blob `digest` into `repo` from `from` (same registry) without sending it: true if the
/// registry did. A registry that cannot opens an upload instead, which is cancelled.
pub async fn mount(registry: &Registry, repo: &str, digest: &str, from: &str) -> Result<bool> {
    let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
    let url = registry.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"));
    let response = registry.send(&scope, |http| http.post(&url)).await?;
    match response.status().as_u16() {
        201 => Ok(true),
        202 => {
            if let Ok(session) = location(registry, &response) {
                let _ = registry.send(&scope, |http| http.delete(&session)).await;
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Sends a blob whose bytes come as `body` and whose digest `digest` gives once they have all
/// gone (a streamed PATCH, then the PUT naming the digest): the blob's digest. `body` cannot be
/// sent twice, so the upload is opened first (the POST answers any challenge).
pub async fn upload_streamed(registry: &Registry, repo: &str, body: reqwest::Body, digest: impl std::future::Future<Output = Result<String>>) -> Result<String> {
    let scope = format!("repository:{repo}:pull,push");
    let start_url = registry.url(&format!("/v2/{repo}/blobs/uploads/"));
    let started = registry.check(registry.send(&scope, |http| http.post(&start_url)).await?).await?;
    let patch_url = location(registry, &started)?;
    let body = std::sync::Mutex::new(Some(body));
    let patched = registry
        .send(&scope, |http| {
            let body = body.lock().expect("body lock").take().unwrap_or_else(|| reqwest::Body::from(bytes::Bytes::new()));
            http.patch(&patch_url).header("content-type", "application/octet-stream").body(body)
        })
        .await;
    // The bytes' own error (a bad archive, a digest mismatch) says more than the cut request.
    let digest = digest.await?;
    let patched = registry.check(patched?).await?;
    let put_url = with_digest(&location(registry, &patched)?, &digest);
    registry.check(registry.send(&scope, |http| http.put(&put_url)).await?).await?;
    Ok(digest)
}

/// `os/arch[/variant]` as `--platform` gives it.
pub fn platform_matches(platform: &Value, wanted: &str) -> bool {
    let mut parts = wanted.split('/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    platform["os"].as_str() == os && platform["architecture"].as_str() == arch && variant.is_none_or(|v| platform["variant"].as_str() == Some(v))
}

/// Pulls `src` into the layout at `dir` (created if need be), tagged `tag` there if given:
/// with `platform`, only that image of an index.
pub async fn pull(registry: &Registry, src: &ImageRef, dir: &Path, tag: Option<&str>, platform: Option<&str>, report: Report<'_>) -> Result<Moved> {
    std::fs::create_dir_all(dir.join("blobs").join("sha256")).map_err(|e| layout_err(dir, e))?;
    let mut moved = Moved::default();
    let (bytes, media_type, _) = registry.manifest(&src.repository, &src.reference, reqwest::Method::GET).await?;
    let digest = sha256_digest(&bytes);
    if src.is_digest() && digest != src.reference {
        return Err(TransferError::Mismatch { digest: src.reference.clone(), actual: digest });
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| registry.protocol(format!("{src}: the manifest is not JSON: {e}")))?;
    let mut top = json!({"mediaType": doc["mediaType"].as_str().unwrap_or(&media_type), "digest": digest, "size": bytes.len()});
    match (doc["manifests"].as_array(), platform) {
        (Some(children), Some(wanted)) => {
            let child = children.iter().find(|c| platform_matches(&c["platform"], wanted)).ok_or_else(|| TransferError::Selection(format!("{src} has no image for {wanted}")))?;
            top = json!({"mediaType": child["mediaType"], "digest": child["digest"], "size": child["size"]});
            pull_manifest(registry, &src.repository, dir, &top, report, &mut moved, &mut Walk::default()).await?;
        }
        _ => {
            pull_children_and_blobs(registry, &src.repository, dir, &doc, report, &mut moved, &mut Walk::default()).await?;
            write_blob_bytes(dir, &digest, &bytes)?;
        }
    }
    if let Some(tag) = tag {
        top["annotations"] = json!({ REF_NAME: tag });
    }
    moved.digest = top["digest"].as_str().unwrap_or_default().to_string();
    add_to_index(dir, top, tag)?;
    Ok(moved)
}

/// Pulls the manifest `desc` names and everything under it.
async fn pull_manifest(registry: &Registry, repo: &str, dir: &Path, desc: &Value, report: Report<'_>, moved: &mut Moved, walk: &mut Walk) -> Result<()> {
    let digest = desc["digest"].as_str().ok_or_else(|| registry.protocol("a descriptor without a digest".into()))?;
    // Each manifest once, however often indexes name it (two small indexes once meant 90,301
    // requests).
    if !walk.first(digest) {
        return Ok(());
    }
    let (bytes, _, _) = registry.manifest(repo, digest, reqwest::Method::GET).await?;
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(TransferError::Mismatch { digest: digest.to_string(), actual });
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| registry.protocol(format!("{repo}@{digest}: not JSON: {e}")))?;
    pull_children_and_blobs(registry, repo, dir, &doc, report, moved, walk).await?;
    write_blob_bytes(dir, digest, &bytes)
}

async fn pull_children_and_blobs(registry: &Registry, repo: &str, dir: &Path, doc: &Value, report: Report<'_>, moved: &mut Moved, walk: &mut Walk) -> Result<()> {
    if let Some(children) = doc["manifests"].as_array() {
        walk.deeper(repo)?;
        for child in children {
            Box::pin(pull_manifest(registry, repo, dir, child, report, moved, walk)).await?;
        }
        walk.depth -= 1;
    }
    each_blob(doc, report, moved, walk, |digest, size| async move { pull_blob(registry, repo, dir, &digest, size, report).await }).await?;
    Ok(())
}

/// Fetches blob `digest` into the layout unless a file there already matches it: true if
/// fetched. Written to a temporary file while hashed; renamed into place only if it matches.
async fn pull_blob(registry: &Registry, repo: &str, dir: &Path, digest: &str, size: u64, report: Report<'_>) -> Result<bool> {
    let path = blob_path(dir, digest)?;
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) && hash_file(&path).await? == digest {
        return Ok(false);
    }
    download(registry, repo, digest, size, &path, report).await?;
    Ok(true)
}

/// Fetches blob `digest` (at most `size` bytes) to `path`: written to a temporary file while
/// hashed, renamed into place only if it matches.
pub async fn download(registry: &Registry, repo: &str, digest: &str, size: u64, path: &Path, report: Report<'_>) -> Result<()> {
    let url = registry.url(&format!("/v2/{repo}/blobs/{digest}"));
    let response = registry.check(registry.send(&format!("repository:{repo}:pull"), |http| http.get(&url)).await?).await?;
    let tmp = path.with_extension(format!("part-{}", std::process::id()));
    // Removed however this ends: an error, or the future dropped mid-way (a sibling download
    // failed and the others were cancelled), which once left `.part-` files of 32 MiB.
    let guard = PartFile(tmp.clone());
    report.begin(digest, size);
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| layout_err(&tmp, e))?;
        let mut hasher = sha2::Sha256::new();
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| registry.protocol(format!("{digest}: {e}")))?;
            received += chunk.len() as u64;
            if received > size {
                return Err(registry.protocol(format!("{digest}: more than the {size} bytes its descriptor says")).into());
            }
            hasher.update(&chunk);
            report.advance(digest, chunk.len() as u64);
            file.write_all(&chunk).await.map_err(|e| layout_err(&tmp, e))?;
        }
        file.sync_all().await.map_err(|e| layout_err(&tmp, e))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(TransferError::Mismatch { digest: digest.to_string(), actual });
        }
        std::fs::rename(&tmp, path).map_err(|e| layout_err(path, e))
    }
    .await;
    drop(guard);
    result
}

/// A temporary file removed when dropped (after a rename it is gone already).
struct PartFile(PathBuf);

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn hash_file(path: &Path) -> Result<String> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| layout_err(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| layout_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn write_blob_bytes(dir: &Path, digest: &str, bytes: &[u8]) -> Result<()> {
    let path = blob_path(dir, digest)?;
    std::fs::write(&path, bytes).map_err(|e| layout_err(&path, e))
}

/// Adds `desc` to the layout's index.json (an entry with the same tag is replaced) and writes
/// `oci-layout` if missing.
fn add_to_index(dir: &Path, desc: Value, tag: Option<&str>) -> Result<()> {
    let layout_file = dir.join("oci-layout");
    if !layout_file.exists() {
        std::fs::write(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|e| layout_err(&layout_file, e))?;
    }
    let index_path = dir.join("index.json");
    let mut index =
        if index_path.exists() { read_json(dir, &index_path)? } else { json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}) };
    let manifests = index["manifests"].as_array_mut().ok_or_else(|| layout_err(&index_path, "manifests is not a list"))?;
    manifests.retain(|m| match tag {
        Some(t) => m["annotations"][REF_NAME] != t,
        None => m["digest"] != desc["digest"],
    });
    manifests.push(desc);
    let text = serde_json::to_vec(&index).map_err(|e| layout_err(&index_path, e))?;
    let tmp = dir.join(format!(".index.json.{}", std::process::id()));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &index_path)).map_err(|e| layout_err(&index_path, e))
}
