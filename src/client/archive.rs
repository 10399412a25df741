//! Docker archives (`docker save` / `docker load`'s format, `docker-archive:FILE`): a tar of
//! `manifest.json` (`[{Config, RepoTags, Layers}]`), the image config and each layer as an
//! uncompressed tar. Pushed, an archive's layers go as they are (`application/vnd.oci.image.
//! layer.v1.tar`, their digests their diff IDs); pulled, each layer is verified against its
//! digest as it arrives, decompressed if gzip'd, and checked against the config's diff ID.

use super::engine::Engine;
use super::reference::ImageRef;
use super::transfer::{Moved, Report, TransferError};
use super::Registry;
use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, TransferError>;

fn err(path: &Path, detail: impl std::fmt::Display) -> TransferError {
    TransferError::Layout { path: path.display().to_string(), detail: detail.to_string() }
}

/// Where each entry's bytes are in the archive file: name → (offset, size).
fn index(path: &Path) -> Result<HashMap<String, (u64, u64)>> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = HashMap::new();
    for entry in archive.entries().map_err(|e| err(path, e))? {
        let entry = entry.map_err(|e| err(path, format!("not a tar archive: {e}")))?;
        let name = entry.path().map_err(|e| err(path, e))?.to_string_lossy().trim_start_matches("./").to_string();
        entries.insert(name, (entry.raw_file_position(), entry.size()));
    }
    Ok(entries)
}

fn read_entry(path: &Path, at: (u64, u64)) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    file.seek(SeekFrom::Start(at.0)).map_err(|e| err(path, e))?;
    let mut bytes = Vec::new();
    file.take(at.1).read_to_end(&mut bytes).map_err(|e| err(path, e))?;
    Ok(bytes)
}

/// The sha256 of `size` bytes at `offset` of `path`, read once.
fn hash_range(path: &Path, (offset, size): (u64, u64)) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| err(path, e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file.take(size), &mut hasher).map_err(|e| err(path, e))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Every `repo:tag` the archive at `path` names (its manifest.json's RepoTags).
pub fn archive_tags(path: &Path) -> Result<Vec<String>> {
    let list = read_manifest_list(path)?.1;
    Ok(list.iter().flat_map(|m| m["RepoTags"].as_array().into_iter().flatten()).filter_map(Value::as_str).map(str::to_string).collect())
}

/// Where each entry is (see [`index`]) and the images manifest.json lists.
type ManifestList = (HashMap<String, (u64, u64)>, Vec<Value>);

fn read_manifest_list(path: &Path) -> Result<ManifestList> {
    let entries = index(path)?;
    let at = *entries.get("manifest.json").ok_or_else(|| err(path, "no manifest.json: not a docker archive"))?;
    let list: Vec<Value> = serde_json::from_slice(&read_entry(path, at)?).map_err(|e| err(path, format!("manifest.json: {e}")))?;
    Ok((entries, list))
}

/// Pushes the image `tag` (`repo:tag` as in its RepoTags; the only one if none) of the archive
/// at `path` to `dst`.
pub async fn push(registry: &Registry, path: &Path, tag: Option<&str>, dst: &ImageRef, report: Report<'_>) -> Result<Moved> {
    let (path, tag) = (path.to_path_buf(), tag.map(str::to_string));
    let (entries, manifest) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || -> Result<_> {
            let (entries, list) = read_manifest_list(&path)?;
            let chosen: Vec<Value> = match &tag {
                Some(t) => list
                    .into_iter()
                    .filter(|m| m["RepoTags"].as_array().is_some_and(|tags| tags.iter().any(|x| x.as_str().is_some_and(|x| x == t || x.ends_with(&format!("/{t}"))))))
                    .collect(),
                None => list,
            };
            match chosen.as_slice() {
                [one] => Ok((entries, one.clone())),
                [] => Err(TransferError::Selection(format!("{}: no image {}", path.display(), tag.as_deref().unwrap_or("at all")))),
                _ => Err(TransferError::Selection(format!("{}: several images: name one with docker-archive:{}:REPO:TAG", path.display(), path.display()))),
            }
        }
    })
    .await
    .map_err(|e| err(&path, e))??;
    let entry = |name: &str| entries.get(name.trim_start_matches("./")).copied().ok_or_else(|| err(&path, format!("{name} is named in manifest.json but not in the archive")));
    let config_at = entry(manifest["Config"].as_str().unwrap_or_default())?;
    let config = read_entry(&path, config_at)?;
    let config_digest = super::transfer::sha256_digest(&config);
    let mut moved = Moved::default();
    let mut layers = Vec::new();
    for name in manifest["Layers"].as_array().map(Vec::as_slice).unwrap_or_default().iter().filter_map(Value::as_str) {
        let at = entry(name)?;
        let digest = tokio::task::spawn_blocking({
            let path = path.clone();
            move || hash_range(&path, at)
        })
        .await
        .map_err(|e| err(&path, e))??;
        layers.push((digest, at));
    }
    let config_sent = super::transfer::upload_bytes(registry, &dst.repository, &config_digest, bytes::Bytes::from(config.clone()), report).await?;
    report.end(&config_digest, config.len() as u64, !config_sent);
    tally(&mut moved, config.len() as u64, config_sent);
    for (digest, at) in &layers {
        let sent = super::transfer::upload_range(registry, &dst.repository, digest, path.clone(), *at, report).await?;
        report.end(digest, at.1, !sent);
        tally(&mut moved, at.1, sent);
    }
    moved.digest = put_image(registry, dst, (&config_digest, config.len() as u64), &layers.iter().map(|(d, at)| (d.clone(), at.1)).collect::<Vec<_>>()).await?;
    Ok(moved)
}

/// PUTs, as `dst`, the OCI image manifest of the config and uncompressed layers given as
/// (digest, size); returns the manifest's digest.
pub async fn put_image(registry: &Registry, dst: &ImageRef, (config_digest, config_size): (&str, u64), layers: &[(String, u64)]) -> Result<String> {
    let image = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|(d, size)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size})).collect::<Vec<_>>(),
    });
    let body = bytes::Bytes::from(serde_json::to_vec(&image).expect("a JSON value serializes"));
    let digest = super::transfer::sha256_digest(&body);
    let scope = format!("repository:{}:pull,push", dst.repository);
    let url = registry.url(&format!("/v2/{}/manifests/{}", dst.repository, dst.reference));
    registry.check(registry.send(&scope, |http| http.put(&url).header("content-type", "application/vnd.oci.image.manifest.v1+json").body(body.clone())).await?).await?;
    Ok(digest)
}

pub(super) fn tally(moved: &mut Moved, size: u64, sent: bool) {
    moved.blobs += 1;
    if sent {
        moved.bytes += size;
    } else {
        moved.skipped += 1;
    }
}

/// An image pulled into a working directory: its config and uncompressed layers, verified.
struct Fetched {
    moved: Moved,
    config_digest: String,
    config_file: PathBuf,
    /// (diff ID, file) per layer, in order.
    layers: Vec<(String, PathBuf)>,
}

/// Pulls `src` (one image: `platform` picks it from an index) into a new docker archive at
/// `path`, named `repo_tag` in it.
pub async fn pull(registry: &Registry, src: &ImageRef, path: &Path, repo_tag: &str, platform: Option<&str>, unpack_ratio: u64, report: Report<'_>) -> Result<Moved> {
    let work = tempdir_beside(path)?;
    let result = async {
        let fetched = fetch(registry, src, &work, platform, unpack_ratio, report).await?;
        let (path, repo_tag) = (path.to_path_buf(), repo_tag.to_string());
        let Fetched { moved, config_digest, config_file, layers } = fetched;
        tokio::task::spawn_blocking(move || write_archive(&path, &repo_tag, &config_digest, &config_file, &layers)).await.map_err(|e| err(Path::new("archive"), e))??;
        Ok(moved)
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Pulls `src` into the local engine (its load API), named `repo_tag` there: the archive is
/// made as the engine reads it, from layers kept in a working directory under the system's
/// temporary directory. Returns what moved and what the engine said.
pub async fn pull_into_engine(
    registry: &Registry,
    engine: &Engine,
    src: &ImageRef,
    repo_tag: &str,
    platform: Option<&str>,
    unpack_ratio: u64,
    report: Report<'_>,
) -> Result<(Moved, String)> {
    engine.ping().await?;
    let work = std::env::temp_dir().join(format!("af-pull-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&work).map_err(|e| err(&work, e))?;
    let result = async {
        let Fetched { moved, config_digest, config_file, layers } = fetch(registry, src, &work, platform, unpack_ratio, report).await?;
        let (reader, writer) = tokio::io::duplex(1 << 20);
        let writer = tokio_util::io::SyncIoBridge::new(writer);
        let repo_tag = repo_tag.to_string();
        let tar = tokio::task::spawn_blocking(move || {
            let mut out = write_tar(writer, &repo_tag, &config_digest, &config_file, &layers)?;
            out.shutdown()
        });
        let said = engine.load(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20)).await;
        let written = tar.await.map_err(|e| err(Path::new("archive"), e))?;
        let said = said?;
        written.map_err(|e| err(&work, format!("writing the archive for the engine: {e}")))?;
        Ok((moved, said))
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Pulls `src`'s config and layers into `work`, each verified against its digest as it
/// arrives and each layer's uncompressed bytes against the config's diff ID.
async fn fetch(registry: &Registry, src: &ImageRef, work: &Path, platform: Option<&str>, unpack_ratio: u64, report: Report<'_>) -> Result<Fetched> {
    let (bytes, _, _) = registry.manifest(&src.repository, &src.reference, reqwest::Method::GET).await?;
    let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| registry.protocol(format!("{src}: not JSON: {e}")))?;
    let mut digest = super::transfer::sha256_digest(&bytes);
    if src.is_digest() && digest != src.reference {
        return Err(TransferError::Mismatch { digest: src.reference.clone(), actual: digest });
    }
    if let Some(children) = doc["manifests"].as_array() {
        let wanted = platform.unwrap_or("linux/amd64");
        let child = children
            .iter()
            .find(|c| super::transfer::platform_matches(&c["platform"], wanted))
            .ok_or_else(|| TransferError::Selection(format!("{src} has no image for {wanted} (--platform)")))?;
        let child_digest = child["digest"].as_str().unwrap_or_default().to_string();
        let (child_bytes, _, _) = registry.manifest(&src.repository, &child_digest, reqwest::Method::GET).await?;
        let actual = super::transfer::sha256_digest(&child_bytes);
        if actual != child_digest {
            return Err(TransferError::Mismatch { digest: child_digest, actual });
        }
        doc = serde_json::from_slice(&child_bytes).map_err(|e| registry.protocol(format!("{src}@{child_digest}: not JSON: {e}")))?;
        digest = child_digest;
    }
    let config_desc = &doc["config"];
    let config_digest = config_desc["digest"].as_str().ok_or_else(|| registry.protocol("a manifest without a config".into()))?;
    let config_file = work.join("config");
    super::transfer::download(registry, &src.repository, config_digest, config_desc["size"].as_u64().unwrap_or(0), &config_file, report).await?;
    report.end(config_digest, config_desc["size"].as_u64().unwrap_or(0), false);
    // Only its diff IDs are read, field by field: parsed whole, a 48 MiB config took 833 MiB.
    #[derive(serde::Deserialize, Default)]
    struct Config {
        #[serde(default)]
        rootfs: RootFs,
    }
    #[derive(serde::Deserialize, Default)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    if std::fs::metadata(&config_file).map_err(|e| err(&config_file, e))?.len() > MAX_CONFIG {
        return Err(err(&config_file, format!("the image config is over {MAX_CONFIG} bytes")));
    }
    let reader = std::io::BufReader::new(std::fs::File::open(&config_file).map_err(|e| err(&config_file, e))?);
    let config: Config = serde_json::from_reader(reader).map_err(|e| err(&config_file, format!("the image config is not JSON: {e}")))?;
    let diff_ids = config.rootfs.diff_ids;
    let mut moved = Moved { digest: digest.clone(), ..Default::default() };
    tally(&mut moved, config_desc["size"].as_u64().unwrap_or(0), true);
    let mut layers = Vec::new();
    for (i, layer) in doc["layers"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let layer_digest = layer["digest"].as_str().ok_or_else(|| registry.protocol("a layer without a digest".into()))?;
        let size = layer["size"].as_u64().unwrap_or(0);
        let blob = work.join(format!("layer{i}"));
        super::transfer::download(registry, &src.repository, layer_digest, size, &blob, report).await?;
        report.end(layer_digest, size, false);
        tally(&mut moved, size, true);
        let gzip = layer["mediaType"].as_str().is_some_and(|m| m.contains("gzip"));
        let tar = work.join(format!("layer{i}.tar"));
        let diff_id = tokio::task::spawn_blocking({
            let (blob, tar) = (blob.clone(), tar.clone());
            move || uncompressed(&blob, &tar, gzip, unpack_ratio)
        })
        .await
        .map_err(|e| err(&blob, e))??;
        let _ = std::fs::remove_file(&blob);
        if let Some(expected) = diff_ids.get(i).filter(|d| **d != diff_id) {
            return Err(TransferError::Mismatch { digest: expected.clone(), actual: diff_id });
        }
        layers.push((diff_id, tar));
    }
    Ok(Fetched { moved, config_digest: config_digest.to_string(), config_file, layers })
}

/// The largest image config read (they are kilobytes; a hostile one was 48 MiB).
const MAX_CONFIG: u64 = 16 << 20;

/// How much larger than its compressed bytes a layer may unpack to, and the size any layer may
/// unpack to: a gzip bomb of 1 MiB once wrote 2 GiB. `--max-unpack-ratio` raises it.
pub const DEFAULT_UNPACK_RATIO: u64 = 100;
const UNPACK_FLOOR: u64 = 64 << 20;

/// A working directory next to `path` (same disk, removed by the caller).
fn tempdir_beside(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(format!(".af-pull-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    Ok(dir)
}

/// Writes the layer in `blob` (gzip'd or not) to `tar` uncompressed; returns its diff ID.
fn uncompressed(blob: &Path, tar: &Path, gzip: bool, ratio: u64) -> Result<String> {
    let compressed = std::fs::metadata(blob).map_err(|e| err(blob, e))?.len();
    let limit = compressed.saturating_mul(ratio).max(UNPACK_FLOOR);
    let mut written = 0u64;
    let input = std::io::BufReader::new(std::fs::File::open(blob).map_err(|e| err(blob, e))?);
    let mut reader: Box<dyn Read> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(input)) } else { Box::new(input) };
    let mut out = std::io::BufWriter::new(std::fs::File::create(tar).map_err(|e| err(tar, e))?);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(blob, format!("cannot decompress the layer: {e}")))?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > limit {
            drop(out);
            let _ = std::fs::remove_file(tar);
            return Err(err(blob, format!("the layer unpacks to over {limit} bytes, {ratio} times its {compressed} (a gzip bomb?); pass --max-unpack-ratio to allow more")));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| err(tar, e))?;
    }
    out.flush().map_err(|e| err(tar, e))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn write_archive(path: &Path, repo_tag: &str, config_digest: &str, config_file: &Path, layers: &[(String, PathBuf)]) -> Result<()> {
    let tmp = path.with_extension("af-part");
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        write_tar(std::io::BufWriter::new(file), repo_tag, config_digest, config_file, layers)?.flush()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(path, e)
    })
}

/// Writes the docker archive of one image, `repo_tag`, to `out`; returns `out`.
fn write_tar<W: Write>(out: W, repo_tag: &str, config_digest: &str, config_file: &Path, layers: &[(String, PathBuf)]) -> std::io::Result<W> {
    let mut archive = tar::Builder::new(out);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    archive.append_path_with_name(config_file, &config_name)?;
    let mut names = Vec::new();
    for (diff_id, file) in layers {
        let name = format!("{}.tar", diff_id.trim_start_matches("sha256:"));
        if !names.contains(&name) {
            archive.append_path_with_name(file, &name)?;
        }
        names.push(name);
    }
    let manifest = serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": names}]))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "manifest.json", manifest.as_slice())?;
    archive.into_inner()
}
