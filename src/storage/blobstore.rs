use super::{io_err, StorageError};
use crate::digest::{Algorithm, Digest, Hasher};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// Content-addressed blob files plus the upload area they are published from.
///
/// Contract: a file under `blobs/` is only ever created by [`BlobStore::publish`], which renames a
/// fully written, fsync'd upload whose digest the caller has verified; so every blob file holds
/// exactly the bytes its name says.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    quarantine: PathBuf,
    trash: PathBuf,
    staging: PathBuf,
    gc_lock: PathBuf,
    turn: Arc<Turnstile>,
}

/// A hold on `gc.lock` (an flock, so it spans processes: `af registry gc` runs beside the node).
/// Publishing a blob holds it shared from the rename to the metadata commit; a GC holds it
/// exclusively from deciding what is garbage to unlinking it. So a GC never unlinks a file that
/// an upload has just published for a blob it is about to commit.
pub struct GcLock {
    file: File,
    _turn: TurnGuard,
}

impl Drop for GcLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // Closing the file would release it too; this says so explicitly.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Within the process, a GC waiting for the lock goes before publishers that come after it:
/// flock lets new shared holders in while an exclusive one waits, so under a steady stream of
/// pushes a GC would wait for ever (the soak showed it). The preference lasts [`PREFERENCE`] at a
/// time: a publisher that already holds the lock shared and asks for it again (an import that
/// publishes blobs) must not wait for a GC that waits for it.
#[derive(Debug, Default)]
struct Turnstile {
    state: std::sync::Mutex<TurnState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct TurnState {
    shared: usize,
    exclusive: bool,
    exclusive_waiting: usize,
}

/// How long a waiting GC holds new publishers back before letting them by for a moment.
const PREFERENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// A GC's batch (see [`BlobStore::gc_lock_for_batch`]) waits this long for a moment with no
/// publisher before it holds new ones back until those holding the lock let go, for at most
/// [`BRIEF`] at a time (a publisher holds it for one publish; something that holds it much
/// longer, a pin fetching a large DAG, lets the others by again).
const POLITE: std::time::Duration = std::time::Duration::from_millis(20);
const BRIEF: std::time::Duration = PREFERENCE;

struct TurnGuard {
    turn: Arc<Turnstile>,
    exclusive: bool,
}

impl Turnstile {
    fn enter(self: &Arc<Self>, exclusive: bool) -> TurnGuard {
        let mut s = self.state.lock().expect("turnstile");
        if exclusive {
            loop {
                s.exclusive_waiting += 1;
                let (mut held, _) = self.changed.wait_timeout_while(s, PREFERENCE, |s| s.exclusive || s.shared > 0).expect("turnstile");
                held.exclusive_waiting -= 1;
                if !held.exclusive && held.shared == 0 {
                    held.exclusive = true;
                    break;
                }
                // Let publishers held back by the preference by (one of them may be what holds
                // the lock now), then ask again.
                self.changed.notify_all();
                drop(held);
                std::thread::sleep(std::time::Duration::from_millis(20));
                s = self.state.lock().expect("turnstile");
            }
        } else {
            while s.exclusive || s.exclusive_waiting > 0 {
                s = self.changed.wait(s).expect("turnstile");
            }
            s.shared += 1;
        }
        TurnGuard { turn: self.clone(), exclusive }
    }

    /// Exclusive, for one of a GC's short batches: taken in a moment no publisher holds the
    /// turnstile; only if none comes for [`POLITE`] are new publishers held back while those in
    /// it finish, [`BRIEF`] at most. A push then waits for at most another's publish and a
    /// batch, however long the GC.
    fn enter_briefly(self: &Arc<Self>) -> TurnGuard {
        let busy = |s: &mut TurnState| s.exclusive || s.shared > 0;
        let mut s = self.state.lock().expect("turnstile");
        loop {
            let (mut polite, _) = self.changed.wait_timeout_while(s, POLITE, |s| busy(s) || s.exclusive_waiting > 0).expect("turnstile");
            if !busy(&mut polite) && polite.exclusive_waiting == 0 {
                polite.exclusive = true;
                break;
            }
            polite.exclusive_waiting += 1;
            let (mut held, _) = self.changed.wait_timeout_while(polite, BRIEF, busy).expect("turnstile");
            held.exclusive_waiting -= 1;
            if !busy(&mut held) {
                held.exclusive = true;
                break;
            }
            self.changed.notify_all();
            s = held;
        }
        TurnGuard { turn: self.clone(), exclusive: true }
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let mut s = self.turn.state.lock().expect("turnstile");
        if self.exclusive {
            s.exclusive = false;
        } else {
            s.shared -= 1;
        }
        self.turn.changed.notify_all();
    }
}

/// Read buffer for rehashing files; large enough that syscalls do not dominate.
const HASH_BUF: usize = 1 << 20;

impl BlobStore {
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let blobs = data_dir.join("blobs");
        let uploads = data_dir.join("uploads");
        let quarantine = data_dir.join("quarantine");
        let trash = data_dir.join("trash");
        for d in [&blobs, &uploads, &quarantine, &trash] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let store = BlobStore { blobs, uploads, quarantine, trash, staging: data_dir.join("staging"), gc_lock: data_dir.join("gc.lock"), turn: Arc::default() };
        // What a GC that stopped half-way had moved out of the way.
        store.empty_trash()?;
        Ok(store)
    }

    /// Moves the file of a blob a GC removes out of `blobs/` (false if it had none). A rename:
    /// cheap, so a GC does it under its exclusive lock and unlinks after ([`Self::empty_trash`]).
    /// An unlink can take milliseconds (a disk mounted with `discard` trims each one), and
    /// pushes wait while a GC holds the lock.
    pub fn trash_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        let path = self.blob_path(digest);
        let dst = self.trash.join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()));
        match fs::rename(&path, &dst) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Unlinks every file in `trash/`: garbage only, so any process may, at any time.
    pub fn empty_trash(&self) -> Result<u64, StorageError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.trash).map_err(io_err(&self.trash))? {
            let path = entry.map_err(io_err(&self.trash))?.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(removed)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs.join(digest.algorithm().as_str()).join(&hex[..2]).join(hex)
    }

    /// Blocks until `gc.lock` is held, shared (`exclusive` = false: publishing) or exclusive (a GC).
    pub fn gc_lock(&self, exclusive: bool) -> Result<GcLock, StorageError> {
        let turn = self.turn.enter(exclusive);
        self.flock(turn, exclusive)
    }

    /// `gc.lock` exclusive for one short batch of a GC's sweep, taken without holding
    /// publishers back unless none lets go for a while (see `Turnstile::enter_briefly`).
    pub fn gc_lock_for_batch(&self) -> Result<GcLock, StorageError> {
        let turn = self.turn.enter_briefly();
        self.flock(turn, true)
    }

    fn flock(&self, turn: TurnGuard, exclusive: bool) -> Result<GcLock, StorageError> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&self.gc_lock).map_err(io_err(&self.gc_lock))?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(GcLock { file, _turn: turn });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_err(&self.gc_lock)(e));
            }
        }
    }

    /// The directories blob files are spread over (`blobs/<alg>/<xx>`), for a GC's sweep of
    /// files without a row, which lists them one at a time ([`Self::blob_files_in`]).
    pub fn blob_dirs(&self) -> Result<Vec<(Algorithm, PathBuf)>, StorageError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let root = self.blobs.join(alg.as_str());
            let Ok(prefixes) = fs::read_dir(&root) else { continue };
            for prefix in prefixes {
                out.push((alg, prefix.map_err(io_err(&root))?.path()));
            }
        }
        Ok(out)
    }

    /// The blob files in `dir` (one of [`Self::blob_dirs`]) last modified before `before`.
    pub fn blob_files_in(&self, alg: Algorithm, dir: &Path, before: std::time::SystemTime) -> Result<Vec<Digest>, StorageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let Ok(digest) = format!("{}:{}", alg.as_str(), entry.file_name().to_string_lossy()).parse::<Digest>() else {
                continue;
            };
            match entry.metadata().and_then(|m| m.modified()) {
                Ok(mtime) if mtime < before => out.push(digest),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&entry.path())(e)),
            }
        }
        Ok(out)
    }

    /// Scratch space for imports (a CAR's blocks while they are checked); never served.
    pub fn staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }

    pub fn upload_path(&self, id: &Uuid) -> PathBuf {
        self.uploads.join(id.as_hyphenated().to_string())
    }

    /// Creates the empty data file of a new upload.
    pub fn create_upload(&self, id: &Uuid) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok(())
    }

    /// The number of bytes an upload holds, or `None` when it has no data file.
    pub fn upload_len(&self, id: &Uuid) -> Result<Option<u64>, StorageError> {
        file_len(&self.upload_path(id))
    }

    /// Cuts an upload's data file back to `len` bytes (a refused chunk), durably.
    pub fn truncate_upload(&self, id: &Uuid, len: u64) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
        file.set_len(len).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))
    }

    pub fn remove_upload(&self, id: &Uuid) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Ids of every upload data file present (for reconciling with the metadata at start).
    pub fn list_uploads(&self) -> Result<Vec<(Uuid, PathBuf)>, StorageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.uploads).map_err(io_err(&self.uploads))? {
            let entry = entry.map_err(io_err(&self.uploads))?;
            let path = entry.path();
            let id = entry.file_name().to_str().and_then(|n| Uuid::parse_str(n).ok());
            match id {
                Some(id) => out.push((id, path)),
                // Not ours (or a stray temp file): listed with a nil id so the caller removes it.
                None => out.push((Uuid::nil(), path)),
            }
        }
        Ok(out)
    }

    /// Hashes an upload's data file with `algorithm` (for digests other than the streamed sha256).
    pub fn hash_upload(&self, id: &Uuid, algorithm: Algorithm) -> Result<(u64, Hasher), StorageError> {
        let mut hasher = algorithm.hasher();
        let total = self.scan_upload(id, |data| hasher.update(data))?;
        Ok((total, hasher))
    }

    /// Feeds an upload's whole data file to `f` (to rebuild hash state after a restart).
    pub fn scan_upload(&self, id: &Uuid, f: impl FnMut(&[u8])) -> Result<u64, StorageError> {
        self.scan(&self.upload_path(id), f).map_err(|e| match e {
            StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => StorageError::UploadMissing(id.to_string()),
            other => other,
        })
    }

    /// Feeds a blob file to `f`.
    pub fn scan_blob(&self, digest: &Digest, f: impl FnMut(&[u8])) -> Result<u64, StorageError> {
        self.scan(&self.blob_path(digest), f)
    }

    fn scan(&self, path: &Path, mut f: impl FnMut(&[u8])) -> Result<u64, StorageError> {
        let mut file = File::open(path).map_err(io_err(path))?;
        let mut buf = vec![0u8; HASH_BUF];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            f(&buf[..n]);
            total += n as u64;
        }
        Ok(total)
    }

    /// Moves a verified upload into the content-addressed store. The caller must have checked that
    /// the upload's bytes hash to `digest`. If the blob already exists the upload is dropped (a blob
    /// is stored once). Durable on return: data and both directory entries are fsync'd.
    pub fn publish(&self, id: &Uuid, digest: &Digest) -> Result<u64, StorageError> {
        let src = self.upload_path(id);
        let dst = self.blob_path(digest);
        let file = File::open(&src).map_err(io_err(&src))?;
        file.sync_all().map_err(io_err(&src))?;
        let size = file.metadata().map_err(io_err(&src))?.len();
        drop(file);
        if dst.exists() {
            fs::remove_file(&src).map_err(io_err(&src))?;
            return Ok(size);
        }
        let parent = dst.parent().expect("blob path has a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        fs::rename(&src, &dst).map_err(io_err(&dst))?;
        sync_dir(parent)?;
        sync_dir(&self.uploads)?;
        Ok(size)
    }

    /// Opens a blob for reading, or `None` if the file is absent.
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<(File, u64)>, StorageError> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => {
                let len = f.metadata().map_err(io_err(&path))?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Moves a blob file that failed verification out of the store, keeping it for inspection.
    /// Returns where it went, or None if there was no file.
    pub fn quarantine(&self, digest: &Digest) -> Result<Option<PathBuf>, StorageError> {
        let src = self.blob_path(digest);
        if !src.exists() {
            return Ok(None);
        }
        let dst = self.quarantine.join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()));
        fs::rename(&src, &dst).map_err(io_err(&dst))?;
        Ok(Some(dst))
    }

    /// The length of a blob's file, or `None` if it is absent.
    pub fn blob_len(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        file_len(&self.blob_path(digest))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }
}

/// The length of the file at `path`, or `None` if there is none.
fn file_len(path: &Path) -> Result<Option<u64>, StorageError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn publish_moves_an_upload_into_place_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = Uuid::new_v4();
        store.create_upload(&id).unwrap();
        OpenOptions::new().append(true).open(store.upload_path(&id)).unwrap().write_all(b"hello").unwrap();
        let (len, h) = store.hash_upload(&id, Algorithm::Sha256).unwrap();
        assert_eq!(len, 5);
        let d = h.finish();
        assert_eq!(d, Digest::of_bytes(Algorithm::Sha256, b"hello"));
        assert_eq!(store.publish(&id, &d).unwrap(), 5);
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"hello");
        assert_eq!(store.upload_len(&id).unwrap(), None);

        // A second upload of the same bytes leaves the first file and removes the upload.
        let id2 = Uuid::new_v4();
        store.create_upload(&id2).unwrap();
        OpenOptions::new().append(true).open(store.upload_path(&id2)).unwrap().write_all(b"hello").unwrap();
        store.publish(&id2, &d).unwrap();
        assert_eq!(store.upload_len(&id2).unwrap(), None);
        assert!(store.has_blob(&d));
    }

    /// A GC's batches under a steady stream of publishers: every batch gets the lock, and no
    /// publisher waits much longer than a batch holds it plus [`BRIEF`] (a whole GC's exclusive
    /// lock would have held them back for [`PREFERENCE`] at a time).
    #[test]
    fn publishers_wait_for_a_batch_at_most_while_a_gc_takes_many() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let longest_wait_us = Arc::new(AtomicU64::new(0));
        let publishers: Vec<_> = (0..8)
            .map(|_| {
                let (store, stop, longest) = (store.clone(), stop.clone(), longest_wait_us.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let asked = std::time::Instant::now();
                        let _held = store.gc_lock(false).unwrap();
                        longest.fetch_max(asked.elapsed().as_micros() as u64, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(3));
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let _batch = store.gc_lock_for_batch().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let batches = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        publishers.into_iter().for_each(|p| p.join().unwrap());
        assert!(batches < std::time::Duration::from_secs(5), "10 batches took {batches:?}");
        let longest = std::time::Duration::from_micros(longest_wait_us.load(Ordering::Relaxed));
        assert!(longest < std::time::Duration::from_millis(100), "a publisher waited {longest:?}");
    }

    #[test]
    fn a_gc_gets_the_lock_under_a_steady_stream_of_publishers_and_nesting_never_deadlocks() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Eight publishers, each always holding the lock shared or about to: without the
        // turnstile, flock would never find a moment with no shared holder.
        let publishers: Vec<_> = (0..8)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _held = store.gc_lock(false).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(3));
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let started = std::time::Instant::now();
        for _ in 0..3 {
            drop(store.gc_lock(true).unwrap());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "three GCs waited {:?}", started.elapsed());
        // A holder that asks again while a GC waits: both get through.
        let outer = store.gc_lock(false).unwrap();
        let gc = {
            let store = store.clone();
            std::thread::spawn(move || drop(store.gc_lock(true).unwrap()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        let inner = store.gc_lock(false).unwrap();
        drop(inner);
        drop(outer);
        gc.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        publishers.into_iter().for_each(|p| p.join().unwrap());
    }
}
