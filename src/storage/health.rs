//! Whether the SQLite files of a data directory can be trusted before the node serves from them.
//! A damaged `metadata.sqlite` or `blocks.sqlite` (a bad disk, a file copied without its WAL, a
//! truncated restore) stops the node with the file's name and what to do, instead of answers read
//! from a broken index. Every start checks the header, the length and the schema. Every page is
//! checked (`PRAGMA quick_check`: about 1.5 s a GiB) when the files are small enough that it
//! costs little. After a crash (no clean stop recorded) of a large node, the pages the crash
//! could have touched are checked: those its WAL names (the writes under way, and the pages a
//! checkpoint was copying into the file), read back once the WAL is folded in, each against
//! SQLite's page format. So start-up stays fast however large the files; `af registry verify`
//! is the whole check.

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
/// also the pages its WAL names.
pub fn check(data_dir: &Path, after_crash: bool) -> Result<(), Damaged> {
    let total: u64 = FILES.iter().filter_map(|(name, _)| std::fs::metadata(data_dir.join(name)).ok()).map(|m| m.len()).sum();
    let thorough = total <= ALWAYS_THOROUGH;
    check_files(data_dir, thorough, after_crash && !thorough)
}

/// Every page of every SQLite file in `data_dir`, however large (`af registry verify`: what a
/// start after a crash leaves out).
pub fn check_every_page(data_dir: &Path) -> Result<(), Damaged> {
    check_files(data_dir, true, false)
}

fn check_files(data_dir: &Path, thorough: bool, touched: bool) -> Result<(), Damaged> {
    for (name, remedy) in FILES {
        let path = data_dir.join(name);
        if !path.exists() {
            continue;
        }
        check_file(&path, thorough, touched).map_err(|problem| Damaged { path: path.display().to_string(), problem, remedy })?;
    }
    Ok(())
}

fn check_file(path: &Path, thorough: bool, touched: bool) -> Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    truncation(path, len)?;
    // Read before the connection below folds the WAL in (and empties it).
    let wal_pages = if touched { wal_pages(path)? } else { Vec::new() };
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
    if touched {
        // Folded in, so the pages are read from the file the node will serve from.
        let _: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).map_err(|e| e.to_string())?;
        drop(conn);
        return check_pages(path, &wal_pages);
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

/// The pages the frames of `path`'s WAL hold (those of its current generation: salts as in its
/// header), in order, each once.
fn wal_pages(path: &Path) -> Result<Vec<u32>, String> {
    use std::io::Read;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let Ok(file) = std::fs::File::open(&wal) else { return Ok(Vec::new()) };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 32];
    if reader.read_exact(&mut header).is_err() {
        return Ok(Vec::new());
    }
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    if !matches!(be32(&header, 0), 0x377f_0682 | 0x377f_0683) {
        return Err("its WAL file is not a SQLite WAL".into());
    }
    let page_size = be32(&header, 8) as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("its WAL names a page size of {page_size}"));
    }
    let mut pages = Vec::new();
    let mut frame = vec![0u8; 24 + page_size];
    while reader.read_exact(&mut frame).is_ok() {
        if frame[8..16] != header[16..24] {
            break;
        }
        pages.push(be32(&frame, 0));
    }
    pages.sort_unstable();
    pages.dedup();
    Ok(pages)
}

/// Checks `pages` of `path` against SQLite's file format: a b-tree page's header, cell pointers
/// and free-block chain must lie within the page. Pages of other kinds (overflow, free list)
/// have no header to check and pass.
fn check_pages(path: &Path, pages: &[u32]) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0).map_err(|e| e.to_string())?;
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => n as usize,
    };
    let usable = page_size - header[20] as usize;
    let count = file.metadata().map_err(|e| e.to_string())?.len() / page_size as u64;
    let mut page = vec![0u8; page_size];
    for &n in pages.iter().filter(|n| **n >= 1 && u64::from(**n) <= count) {
        file.read_exact_at(&mut page, (u64::from(n) - 1) * page_size as u64).map_err(|e| e.to_string())?;
        btree_page(&page[..usable], if n == 1 { 100 } else { 0 }).map_err(|e| format!("page {n}, which the crash could have touched: {e}"))?;
    }
    Ok(())
}

/// The checks of one b-tree page (its header at `at`), per SQLite's file format.
fn btree_page(page: &[u8], at: usize) -> Result<(), String> {
    let u16_at = |i: usize| usize::from(u16::from_be_bytes([page[i], page[i + 1]]));
    let header = match page[at] {
        0x02 | 0x05 => 12,
        0x0a | 0x0d => 8,
        _ => return Ok(()),
    };
    let cells = u16_at(at + 3);
    let content = match u16_at(at + 5) {
        0 => 65536,
        n => n,
    };
    let pointers_end = at + header + 2 * cells;
    if pointers_end > content.min(page.len()) || content > page.len() {
        return Err(format!("{cells} cells whose pointers end at {pointers_end}, content from {content}, in {} bytes", page.len()));
    }
    if page[at + 7] > 60 {
        return Err(format!("{} fragmented bytes (at most 60)", page[at + 7]));
    }
    for i in 0..cells {
        let cell = u16_at(at + header + 2 * i);
        if cell < content || cell >= page.len() {
            return Err(format!("cell {i} at {cell}, outside the content area {content}..{}", page.len()));
        }
    }
    let (mut free, mut hops) = (u16_at(at + 1), 0);
    while free != 0 {
        hops += 1;
        if free < content || free + 4 > page.len() || hops > page.len() / 4 {
            return Err(format!("a free block at {free}, outside the content area"));
        }
        let next = u16_at(free);
        if next != 0 && next <= free + u16_at(free + 2) {
            return Err(format!("free blocks out of order at {free}"));
        }
        free = next;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database left as a crash leaves it: rows committed into its WAL, never folded in.
    fn crashed_database(dir: &Path) -> PathBuf {
        let path = dir.join("crashed.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v);").unwrap();
        for i in 0..2000 {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("value {i} {}", "x".repeat(i % 50))]).unwrap();
        }
        // No close: a closing connection would fold the WAL in.
        std::mem::forget(conn);
        path
    }

    #[test]
    fn after_a_crash_the_pages_its_wal_names_are_checked_and_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = crashed_database(dir.path());
        let pages = wal_pages(&path).unwrap();
        assert!(pages.len() > 10, "the WAL names the pages written: {pages:?}");
        check_file(&path, false, true).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 2000, "every committed row is there");
    }

    #[test]
    fn a_scrambled_btree_page_the_crash_touched_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = crashed_database(dir.path());
        let pages = wal_pages(&path).unwrap();
        // Folded in, then one of those pages scrambled as a torn write would.
        let conn = Connection::open(&path).unwrap();
        let _: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).unwrap();
        drop(conn);
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        let n = *pages.iter().find(|n| **n > 2).unwrap() as usize;
        for (i, b) in bytes[(n - 1) * page + 3..n * page].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        std::fs::write(&path, bytes).unwrap();
        let err = check_pages(&path, &pages).unwrap_err();
        assert!(err.contains(&format!("page {n}")), "{err}");
        // A page no write touched is not read: the check of untouched pages is `verify`'s.
        check_pages(&path, &[1]).unwrap();
    }
}
