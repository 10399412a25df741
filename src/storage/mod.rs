//! Bytes on disk: content-addressed blob files and in-progress uploads.
//!
//! Layout under the data directory:
//! - `blobs/<alg>/<xx>/<hex>`: a verified blob, immutable, written once by rename.
//! - `uploads/<uuid>`: an upload in progress; its length is the upload's offset.
//!
//! This module knows nothing of repositories or HTTP; it never decides what is visible (the
//! metadata store does), it only guarantees that a blob file exists only with verified content.

mod arriving;
mod blobstore;
mod download;
pub mod health;
mod upload;

pub use arriving::{Arriving, Progress};
pub use blobstore::{BlobStore, GcLock};
pub use download::{read_range, BlobBytes};
pub use upload::{append_stream, AppendOutcome, SideHasher, Written};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upload {0} has no data file")]
    UploadMissing(String),
    #[error("background task failed: {0}")]
    Task(String),
}

impl StorageError {
    /// The disk (or the user's quota) is full: the write may succeed once space returns.
    pub fn is_full(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if is_full(source))
    }
}

/// `len` bytes of `file` at `offset`, read into a buffer that is not zeroed first: a read path
/// serves every byte of a layer, and zeroing each 1 MiB block before the copy into it was a
/// pass over the data of its own (`memset`, 2% of a fleet's CPU). Fewer bytes than `len` there
/// is an `UnexpectedEof`.
pub fn read_exact_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut buf = bytes::BytesMut::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let at = libc::off_t::try_from(offset + filled as u64).map_err(std::io::Error::other)?;
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        // SAFETY: pread writes at most `spare.len()` bytes into the spare capacity, which this
        // buffer owns; no reference to uninitialised bytes is made.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: the kernel initialised the `n` bytes after the current length.
            n => unsafe { buf.set_len(filled + n as usize) },
        }
    }
    Ok(buf.freeze())
}

/// [`read_exact_at`] on a blocking thread, for async callers holding the file open.
pub async fn read_exact_at_blocking(file: std::sync::Arc<std::fs::File>, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    tokio::task::spawn_blocking(move || read_exact_at(&file, offset, len)).await.map_err(std::io::Error::other)?
}

/// Lets SQLite read its files through a memory map instead of a copy per page read: at ten
/// million blocks, copying the block index's 64 KiB pages took most of a GC's 450 s. Up to 1 TiB
/// (`.cargo/config.toml` raises the bundled build's 2 GiB ceiling). The cost: an I/O error while
/// reading a mapped page is a SIGBUS, so the node stops (and the next start checks every page)
/// where it would have answered an error.
pub const SQLITE_MMAP: &str = "PRAGMA mmap_size = 1099511627776;";

/// ENOSPC or EDQUOT.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::read_exact_at;

    #[test]
    fn a_read_at_an_offset_gives_those_bytes_and_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(&read_exact_at(&file, 12_345, 1 << 20).unwrap()[..], &data[12_345..12_345 + (1 << 20)]);
        assert_eq!(&read_exact_at(&file, 0, data.len() as u64).unwrap()[..], &data[..]);
        assert!(read_exact_at(&file, 0, 0).unwrap().is_empty());
        let short = read_exact_at(&file, data.len() as u64 - 10, 11).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
