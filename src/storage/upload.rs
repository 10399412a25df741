//! Streaming an HTTP body onto the end of an upload's data file.
//!
//! The request's chunks cross a bounded channel to one blocking thread that writes and hashes
//! them, so the network side and the disk/hash side run on different cores and no more than
//! `CHANNEL_DEPTH` chunks are ever held in memory, whatever the layer size.

use super::{io_err, BlobStore, StorageError};
use crate::digest::Hasher;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use uuid::Uuid;

const CHANNEL_DEPTH: usize = 16;
const WRITE_BUF: usize = 1 << 20;

/// What an append achieved. `result` is the body stream's own error, if it broke off: the bytes
/// received before it are on disk and hashed all the same, so the upload stays consistent and the
/// client may resume from `len`.
pub struct AppendOutcome<E> {
    pub len: u64,
    pub hasher: Hasher,
    pub received: u64,
    pub result: Result<(), E>,
}

/// Appends `body` to upload `id`, whose data file must currently be `offset` bytes long and whose
/// content so far `hasher` has consumed. The data is fsync'd before this returns.
pub async fn append_stream<S, E>(
    store: &BlobStore,
    id: Uuid,
    offset: u64,
    mut hasher: Hasher,
    mut body: S,
) -> Result<AppendOutcome<E>, StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let path = store.upload_path(&id);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || -> Result<(u64, Hasher, u64), StorageError> {
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StorageError::UploadMissing(id.to_string())
            } else {
                io_err(&path)(e)
            }
        })?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len != offset {
            // The caller's view of the upload is stale; refuse rather than corrupt it.
            return Err(StorageError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(format!("upload is {len} bytes, expected {offset}")),
            });
        }
        let mut out = BufWriter::with_capacity(WRITE_BUF, file);
        let mut received = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk).map_err(io_err(&path))?;
            hasher.update(&chunk);
            received += chunk.len() as u64;
        }
        let file = out.into_inner().map_err(|e| io_err(&path)(e.into_error()))?;
        file.sync_data().map_err(io_err(&path))?;
        Ok((offset + received, hasher, received))
    });

    let mut result = Ok(());
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let (len, hasher, received) = writer
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
    Ok(AppendOutcome { len, hasher, received, result })
}
