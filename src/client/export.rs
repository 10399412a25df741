//! `af registry push` from the local engine: the image the engine exports (a docker-archive tar,
//! `GET /images/{name}/get`) is read as it arrives and each layer the registry lacks streams on
//! to it as that layer's upload, so nothing is written to disk and memory holds a few chunks.
//!
//! What the registry has already (a HEAD of each diff ID, then a mount from the repositories the
//! engine says the image came from on the same registry) is not sent. Layers go uncompressed,
//! as `docker save` gives them (`application/vnd.oci.image.layer.v1.tar`, digest = diff ID).
//! Podman and Docker 25+ name each layer by its digest in the archive, so a layer is skipped
//! before a byte of it moves; Docker's older archives name layers `<id>/layer.tar`, and those
//! are sent while any layer is still missing (the registry keeps one copy either way).

use super::archive::{put_image, tally};
use super::engine::{ByteStream, Engine};
use super::reference::ImageRef;
use super::transfer::{self, Moved, Report, TransferError};
use super::Registry;
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde_json::Value;
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use tokio::sync::{mpsc, oneshot};

type Result<T> = std::result::Result<T, TransferError>;

/// Entries of the export kept in memory (manifest.json, configs): each at most this...
const SMALL_ENTRY: u64 = 8 << 20;
/// ...and all of them together at most this.
const SMALL_TOTAL: u64 = 64 << 20;
/// Chunks of a layer between the archive reader and its upload.
const CHUNK: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 4;

fn bad_archive(name: &str, detail: impl std::fmt::Display) -> TransferError {
    TransferError::Layout { path: format!("the engine's export of {name}"), detail: detail.to_string() }
}

/// What the archive reader hands over, in archive order.
enum Found {
    Small { name: String, bytes: Vec<u8> },
    Layer { name: String, size: u64, expected: Option<String>, chunks: mpsc::Receiver<std::io::Result<Bytes>>, digest: oneshot::Receiver<Result<String>> },
}

/// Pushes the engine's image `name` to `dst`.
pub async fn push(registry: &Registry, engine: &Engine, name: &str, dst: &ImageRef, report: Report<'_>) -> Result<Moved> {
    let inspected = engine.inspect(name).await?.ok_or_else(|| super::engine::EngineError::NoImage(name.to_string()))?;
    let diff_ids: Vec<String> = inspected["RootFS"]["Layers"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
    let mount_sources: Vec<String> = inspected["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|r| ImageRef::parse(r, None).ok())
        .filter(|r| r.registry == dst.registry && r.repository != dst.repository)
        .map(|r| r.repository)
        .collect();
    let repo = &dst.repository;
    let mut moved = Moved::default();
    // Sizes of the blobs the registry holds (or now holds), by digest.
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let mut needed: HashSet<String> = HashSet::new();
    for digest in diff_ids.iter().chain(inspected["Id"].as_str().map(str::to_string).iter()) {
        if sizes.contains_key(digest) || needed.contains(digest) {
            continue;
        }
        let mut size = transfer::blob_size(registry, repo, digest).await?;
        for from in &mount_sources {
            if size.is_some() {
                break;
            }
            if transfer::mount(registry, repo, digest, from).await? {
                size = transfer::blob_size(registry, repo, digest).await?;
            }
        }
        match size {
            Some(size) => {
                sizes.insert(digest.clone(), size);
            }
            None => {
                needed.insert(digest.clone());
            }
        }
    }

    let archive = engine.export(name).await?;
    let (found_tx, mut found_rx) = mpsc::channel(1);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(archive as ByteStream));
    let walker = tokio::task::spawn_blocking({
        let (needed, have) = (needed.clone(), sizes.keys().cloned().collect());
        let name = name.to_string();
        move || walk(reader, &name, needed, have, found_tx)
    });
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    // Entries uploaded as they streamed: name → (digest, size).
    let mut streamed: HashMap<String, (String, u64)> = HashMap::new();
    let uploads = async {
        while let Some(found) = found_rx.recv().await {
            match found {
                Found::Small { name, bytes } => {
                    small.insert(name, bytes);
                }
                Found::Layer { name, size, expected, chunks, digest } => {
                    let label = expected.clone().unwrap_or_else(|| name.clone());
                    report.begin(&label, size);
                    let progress = (report.clone(), label.clone());
                    let body = futures_util::stream::unfold(chunks, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
                        .inspect_ok(move |c| progress.0.advance(&progress.1, c.len() as u64));
                    let digest = async { digest.await.map_err(|_| bad_archive(&name, "the archive reader stopped"))? };
                    let digest = transfer::upload_streamed(registry, repo, reqwest::Body::wrap_stream(body), digest).await?;
                    report.end(&label, size, false);
                    tally(&mut moved, size, true);
                    sizes.insert(digest.clone(), size);
                    streamed.insert(name, (digest, size));
                }
            }
        }
        Ok::<_, TransferError>(())
    }
    .await;
    drop(found_rx);
    let walked = walker.await.map_err(|e| bad_archive(name, e))?;
    // An upload's failure stops the reader ("the upload stopped"): report the cause. The
    // reader's own failures inside a layer reach the upload through its digest.
    uploads?;
    walked?;

    let manifest_json = small.get("manifest.json").ok_or_else(|| bad_archive(name, "no manifest.json: not a docker archive"))?;
    let images: Vec<Value> = serde_json::from_slice(manifest_json).map_err(|e| bad_archive(name, format!("manifest.json: {e}")))?;
    let [image] = images.as_slice() else {
        return Err(bad_archive(name, format!("manifest.json lists {} images, not one", images.len())));
    };
    let config_name = image["Config"].as_str().unwrap_or_default().trim_start_matches("./");
    let (config_digest, config_size) = match (small.get(config_name), streamed.get(config_name)) {
        (Some(bytes), _) => {
            let digest = super::transfer::sha256_digest(bytes);
            let sent = transfer::upload_bytes(registry, repo, &digest, Bytes::from(bytes.clone()), report).await?;
            report.end(&digest, bytes.len() as u64, !sent);
            tally(&mut moved, bytes.len() as u64, sent);
            (digest, bytes.len() as u64)
        }
        (None, Some((digest, size))) => (digest.clone(), *size),
        (None, None) => match digest_in_name(config_name).and_then(|d| Some((sizes.get(&d).copied()?, d))) {
            Some((size, digest)) => {
                report.end(&digest, size, true);
                tally(&mut moved, size, false);
                (digest, size)
            }
            None => return Err(bad_archive(name, format!("its config {config_name:?} is not in the archive"))),
        },
    };
    let mut layers = Vec::new();
    for diff_id in &diff_ids {
        let size = *sizes.get(diff_id).ok_or_else(|| bad_archive(name, format!("layer {diff_id} is not in the archive")))?;
        if !streamed.values().any(|(d, _)| d == diff_id) {
            report.end(diff_id, size, true);
            tally(&mut moved, size, false);
        }
        layers.push((diff_id.clone(), size));
    }
    moved.digest = put_image(registry, dst, (&config_digest, config_size), &layers).await?;
    Ok(moved)
}

/// The digest an archive entry's name gives: `<hex>.tar`, `<hex>.json`, `blobs/sha256/<hex>`.
fn digest_in_name(name: &str) -> Option<String> {
    let stem = name.strip_prefix("blobs/sha256/").or_else(|| name.strip_suffix(".tar")).or_else(|| name.strip_suffix(".json"))?;
    (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{}", stem.to_ascii_lowercase()))
}

/// Reads the archive in order (on a blocking thread): layers in `needed` stream out as
/// [`Found::Layer`], small entries come whole, the rest is skipped.
fn walk(reader: impl Read, image: &str, mut needed: HashSet<String>, have: HashSet<String>, found: mpsc::Sender<Found>) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut small_total = 0;
    let entries = archive.entries().map_err(|e| bad_archive(image, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(image, format!("not a tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| bad_archive(image, e))?.to_string_lossy().trim_start_matches("./").to_string();
        let size = entry.size();
        let named = digest_in_name(&name);
        let wanted = match &named {
            Some(d) => needed.contains(d),
            None => name.ends_with("/layer.tar") && !needed.is_empty(),
        };
        if wanted {
            let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
            let (digest_tx, digest_rx) = oneshot::channel();
            if found.blocking_send(Found::Layer { name: name.clone(), size, expected: named.clone(), chunks: chunk_rx, digest: digest_rx }).is_err() {
                return Ok(());
            }
            let digest = stream_entry(&mut entry, &chunk_tx);
            drop(chunk_tx);
            let digest = digest.map_err(|e| bad_archive(image, format!("{name}: {e}")));
            let digest = digest.and_then(|d| match &named {
                Some(expected) if *expected != d => Err(TransferError::Mismatch { digest: expected.clone(), actual: d }),
                _ => Ok(d),
            });
            let outcome = digest.as_ref().map(|_| ()).map_err(|e| bad_archive(image, e));
            let _ = digest_tx.send(digest.as_ref().cloned().map_err(|e| bad_archive(image, e)));
            outcome?;
            needed.remove(digest.as_ref().expect("checked"));
        } else if named.as_ref().is_some_and(|d| have.contains(d)) || size > SMALL_ENTRY || small_total + size > SMALL_TOTAL {
            continue;
        } else {
            small_total += size;
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(|e| bad_archive(image, format!("{name}: {e}")))?;
            if found.blocking_send(Found::Small { name, bytes }).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Sends `entry`'s bytes down `chunks`, hashing them: their digest. Stops early (with an
/// error) when the upload no longer takes them.
fn stream_entry(entry: &mut impl Read, chunks: &mpsc::Sender<std::io::Result<Bytes>>) -> std::io::Result<String> {
    let mut hasher = sha2::Sha256::new();
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match entry.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = chunks.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            }
        }
        if filled == 0 {
            return Ok(format!("sha256:{}", hex::encode(hasher.finalize())));
        }
        buf.truncate(filled);
        hasher.update(&buf);
        if chunks.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Err(std::io::Error::other("the upload stopped"));
        }
    }
}
