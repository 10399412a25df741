//! Whether the SQLite files of a data directory can be trusted before the node serves from them.
//! A damaged `metadata.sqlite` or `blocks.sqlite` (a bad disk, a file copied without its WAL, a
//! truncated restore) stops the node with the file's name and what to do, instead of answers read
//! from a broken index. Every page is checked (`PRAGMA quick_check`: about 1.5 s a GiB) after a
//! crash, when no clean stop was recorded, or when the files are small enough that it costs
//! little; after a clean stop of a large node only the header, the length and the schema are
//! (start-up stays fast however large the files).

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// Up to this many bytes of databases, every start reads every page (about 0.7 s).
const ALWAYS_THOROUGH: u64 = 512 << 20;

/// Written when the node stops cleanly, removed when it starts.
const CLEAN_STOP: &str = "clean-stop";

/// The SQLite files a data directory holds, each with what replaces it if it is lost.
const FILES: [(&str, &str); 2] = [
    (
        "metadata.sqlite",
        "restore it (with its -wal file) from a backup, or try `sqlite3 metadata.sqlite .recover`; the blobs under blobs/ are intact and `af registry verify` checks them",
    ),
    (
        "blocks.sqlite",
        "restore it from a backup taken while the node was stopped, or try `sqlite3 blocks.sqlite .recover`; `af registry verify` then reports any block the index lacks",
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("{path} is damaged ({problem}); the node will not start on it: {remedy}")]
pub struct Damaged {
    pub path: String,
    pub problem: String,
    pub remedy: &'static str,
}

/// Checks every SQLite file in `data_dir` that exists; `after_crash` (no clean stop recorded):
/// every page, however large.
pub fn check(data_dir: &Path, after_crash: bool) -> Result<(), Damaged> {
    let total: u64 = FILES.iter().filter_map(|(name, _)| std::fs::metadata(data_dir.join(name)).ok()).map(|m| m.len()).sum();
    let thorough = after_crash || total <= ALWAYS_THOROUGH;
    for (name, remedy) in FILES {
        let path = data_dir.join(name);
        if !path.exists() {
            continue;
        }
        check_file(&path, thorough).map_err(|problem| Damaged { path: path.display().to_string(), problem, remedy })?;
    }
    Ok(())
}

fn check_file(path: &Path, thorough: bool) -> Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    truncation(path, len)?;
    // Read-write (not read-only): a WAL left by a crash is replayed, as the node will do.
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let schema: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if schema == 0 && len > 0 {
        // A file with content but no schema: not one of ours, or its pages were lost.
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(|e| e.to_string())?;
        if pages > 1 {
            return Err("it holds pages but no tables".into());
        }
    }
    if thorough {
        let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(|e| e.to_string())?;
        let problems: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())?.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        if problems != ["ok"] {
            return Err(problems.join("; "));
        }
    }
    Ok(())
}

/// A file shorter than its own header says, with no WAL that could hold the rest: truncated.
fn truncation(path: &Path, len: u64) -> Result<(), String> {
    use std::io::Read;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if len < 100 {
        return if len == 0 { Ok(()) } else { Err(format!("{len} bytes, shorter than a database header")) };
    }
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    if &header[..16] != b"SQLite format 3\0" {
        return Err("not a SQLite database (its header is overwritten)".into());
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    // The size in the header counts only if the file was last written by a SQLite that keeps it.
    let (pages, change, valid_for) = (u64::from(be32(28)), be32(24), be32(92));
    if change == valid_for && pages * page_size > len {
        return Err(format!("truncated: {len} bytes of the {} its header records", pages * page_size));
    }
    Ok(())
}

/// Marks the start of a run: whether the previous one stopped cleanly (its mark is consumed, so a
/// crash of this run leaves none).
pub fn take_clean_stop(data_dir: &Path) -> bool {
    std::fs::remove_file(clean_stop_path(data_dir)).is_ok()
}

/// Records a clean stop, once every write has been made: each database's WAL is folded into it
/// first, so a stopped node's files are whole on their own (to copy, to back up, to check).
pub fn mark_clean_stop(data_dir: &Path) {
    for (name, _) in FILES {
        let path = data_dir.join(name);
        if !path.exists() {
            continue;
        }
        let folded = Connection::open(&path).and_then(|c| {
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))
        });
        match folded {
            Ok(0) => {}
            Ok(_) => tracing::warn!(file = %path.display(), "the WAL could not be folded in at stop: a reader held it"),
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "the WAL could not be folded in at stop"),
        }
    }
    if let Err(e) = std::fs::write(clean_stop_path(data_dir), b"") {
        tracing::warn!(error = %e, "could not record the clean stop; the next start checks the databases whole");
    }
}

fn clean_stop_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CLEAN_STOP)
}
