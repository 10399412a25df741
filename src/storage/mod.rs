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

/// ENOSPC or EDQUOT.
/// Lets SQLite read its files through a memory map instead of a copy per page read: at ten
/// million blocks, copying the block index's 64 KiB pages took most of a GC's 450 s. Up to 1 TiB
/// (`.cargo/config.toml` raises the bundled build's 2 GiB ceiling). The cost: an I/O error while
/// reading a mapped page is a SIGBUS, so the node stops (and the next start checks every page)
/// where it would have answered an error.
pub const SQLITE_MMAP: &str = "PRAGMA mmap_size = 1099511627776;";

pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.display().to_string(), source }
}
