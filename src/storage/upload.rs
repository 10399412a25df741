//! Streaming an HTTP body onto the end of an upload's data file.
//!
//! The request's chunks cross bounded channels, in batches of about `BATCH` bytes (the chunks
//! themselves, shared, not copies), to two blocking threads: one writes them and computes the
//! digest, the other feeds a [`SideHasher`] (the UnixFS importer). The network side, the disk
//! side and the second hash run on different cores, and no more than `CHANNEL_DEPTH` batches per
//! channel are ever held in memory, whatever the layer size.

use super::{io_err, BlobStore, StorageError};
use crate::digest::Hasher;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fs::File;
use std::fs::OpenOptions;
use std::io::{IoSlice, Write};
use std::sync::Arc;
use uuid::Uuid;

const CHANNEL_DEPTH: usize = 8;
const BATCH: usize = 256 * 1024;
/// Hand written data to the disk every this many bytes instead of leaving it all to the final
/// fsync: the disk then writes while the network is still receiving, and the fsync at the end
/// waits only for the tail. (With the kernel's default dirty limits a 1 GiB upload would
/// otherwise sit in the page cache until that fsync, making push time network + disk.)
const WRITEBACK_STEP: u64 = 8 << 20;

/// Appends that start writeback as they go and end durable. A batch of chunks goes to the file
/// in one vectored write, so no byte is copied on its way from the network buffer to the kernel.
struct Writeback {
    file: File,
    written: u64,
    kicked: u64,
}

impl Writeback {
    fn new(file: File, offset: u64) -> Self {
        Writeback { file, written: offset, kicked: offset }
    }

    fn write(&mut self, batch: &[Bytes]) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = self.file.write_vectored(rest)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n as u64;
            IoSlice::advance_slices(&mut rest, n);
        }
        if self.written - self.kicked >= WRITEBACK_STEP {
            start_writeback(&self.file, self.kicked, self.written - self.kicked);
            self.kicked = self.written;
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; it only schedules I/O. Failure is harmless
    // (the final fsync still makes the data durable), so its result is ignored.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// A second computation over the bytes of an upload, run on its own thread.
pub trait SideHasher: Send + 'static {
    fn update(&mut self, data: &[u8]);
}

/// Told the upload file's length after each write (for readers following an arriving blob).
pub type Written = Arc<dyn Fn(u64) + Send + Sync>;

/// What an append achieved. `result` is the body stream's own error, if it broke off: the bytes
/// received before it are on disk and hashed all the same, so the upload stays consistent and the
/// client may resume from `len`.
pub struct AppendOutcome<E, T> {
    pub len: u64,
    pub hasher: Hasher,
    pub side: T,
    pub received: u64,
    pub result: Result<(), E>,
}

/// Appends `body` to upload `id`, whose data file must currently be `offset` bytes long and whose
/// content so far `hasher` and `side` have consumed. The data is fsync'd before this returns.
/// `side` sees every chunk the body delivered, even one whose write failed: the caller compares
/// what it consumed with the returned length before trusting it.
pub async fn append_stream<S, E, T: SideHasher>(
    store: &BlobStore,
    id: Uuid,
    offset: u64,
    mut hasher: Hasher,
    mut side: T,
    mut body: S,
    progress: Option<Written>,
) -> Result<AppendOutcome<E, T>, StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let path = store.upload_path(&id);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<[Bytes]>>(CHANNEL_DEPTH);
    let (side_tx, mut side_rx) = tokio::sync::mpsc::channel::<Arc<[Bytes]>>(CHANNEL_DEPTH);
    let side_task = tokio::task::spawn_blocking(move || {
        while let Some(batch) = side_rx.blocking_recv() {
            for chunk in batch.iter() {
                side.update(chunk);
            }
        }
        side
    });
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
            return Err(StorageError::Io { path: path.display().to_string(), source: std::io::Error::other(format!("upload is {len} bytes, expected {offset}")) });
        }
        let mut out = Writeback::new(file, offset);
        let mut received = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            out.write(&batch).map_err(io_err(&path))?;
            if let Some(report) = &progress {
                report(out.written);
            }
            for chunk in batch.iter() {
                hasher.update(chunk);
                received += chunk.len() as u64;
            }
        }
        out.finish().map_err(io_err(&path))?;
        Ok((offset + received, hasher, received))
    });

    // The network delivers chunks of a few KiB; sending them to the two threads in batches of
    // about BATCH bytes (the chunks themselves, not copies) keeps thread wake-ups, not hashing,
    // from setting the pace.
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0;
    let mut result = Ok(());
    loop {
        let item = body.next().await;
        let flush = match &item {
            Some(Ok(chunk)) => {
                if !chunk.is_empty() {
                    pending_len += chunk.len();
                    pending.push(chunk.clone());
                }
                pending_len >= BATCH
            }
            _ => !pending.is_empty(),
        };
        if flush {
            let batch: Arc<[Bytes]> = std::mem::take(&mut pending).into();
            pending_len = 0;
            if tx.send(batch.clone()).await.is_err() || side_tx.send(batch).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        match item {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                result = Err(e);
                break;
            }
            None => break,
        }
    }
    drop(tx);
    drop(side_tx);
    let side = side_task.await.map_err(|e| StorageError::Task(e.to_string()))?;
    let (len, hasher, received) = writer.await.map_err(|e| StorageError::Task(e.to_string()))??;
    Ok(AppendOutcome { len, hasher, side, received, result })
}
