//! `?format=tar`: a UnixFS file or directory tree as a tar archive, streamed as it is read. The
//! archive's top entry is named after the target's CID; entry names are checked, so no archive
//! of ours can write outside the folder it is extracted into.

use crate::dag::{DagError, Node, Reader};
use crate::registry::Registry;
use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Chunks of archive waiting for the client: a few, so a slow client holds little.
const QUEUE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The DAG names an entry that would land outside the archive's top folder, or nothing.
    #[error("entry {0:?} of the directory would be outside the archive's folder: refused")]
    BadName(String),
    #[error(transparent)]
    Dag(#[from] DagError),
    #[error("{0}")]
    Io(String),
}

/// The archive of `target`: chunks in order, an error ending it early.
pub fn stream(reg: Arc<Registry>, reader: Arc<Reader>, target: Cid) -> mpsc::Receiver<Result<Bytes, TarError>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut writer = Writer { tx, headers: tar::Builder::new(Vec::new()), reg, written: Written::default() };
        let result = writer.entry(&reader, target, target.to_string()).await;
        let end = match result {
            Ok(()) => Ok(Bytes::from_static(&[0u8; 1024])),
            Err(e) => Err(e),
        };
        let _ = writer.tx.send(end).await;
    });
    rx
}

struct Writer {
    tx: mpsc::Sender<Result<Bytes, TarError>>,
    /// Makes each entry's header (long names included); its buffer is emptied after each one.
    headers: tar::Builder<Vec<u8>>,
    /// For files that are whole blobs: their verified blob files, read as the OCI API reads them.
    reg: Arc<Registry>,
    /// Paths written so far, and which of them are symlinks: no entry may repeat a path or land
    /// beneath a symlink (an extractor would write through it, outside the folder).
    written: Written,
}

#[derive(Default)]
struct Written {
    paths: std::collections::HashSet<String>,
    /// Every path written, lowercased, and the symlinks among them: on a case-insensitive file
    /// system `Link/x` goes through a symlink `link`, and `link` and `LINK` are one entry.
    folded: std::collections::HashSet<String>,
    symlinks: std::collections::HashSet<String>,
}

impl Written {
    /// Records `path` (a symlink or not) if it is new and neither beneath nor the same as a
    /// symlink written before, whatever the case of its names (nor a symlink named like an
    /// entry written before). Costs the path's depth, not the entries written (a scan of the
    /// symlinks made 30,000 of them cost 35 CPU-seconds).
    fn admit(&mut self, path: &str, symlink: bool) -> bool {
        let folded = path.to_lowercase();
        let beneath_symlink = folded.match_indices('/').any(|(i, _)| self.symlinks.contains(&folded[..i]));
        let clashes = self.symlinks.contains(&folded) || (symlink && self.folded.contains(&folded));
        if beneath_symlink || clashes || !self.paths.insert(path.to_string()) {
            return false;
        }
        if symlink {
            self.symlinks.insert(folded.clone());
        }
        self.folded.insert(folded);
        true
    }
}

/// Whether a symlink at `path` pointing at `target` stays inside the archive's folder `root`:
/// not absolute, not climbing above it.
fn link_stays_inside(root: &str, path: &str, target: &str) -> bool {
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    !target.starts_with('/') && !target.contains('\0') && clean(&format!("{parent}/{target}")).is_some_and(|p| p == root || p.starts_with(&format!("{root}/")))
}

/// Entries still to write: a directory's children are pushed in reverse so they come in order.
struct Pending {
    cid: Cid,
    path: String,
}

impl Writer {
    async fn send(&self, bytes: Bytes) -> Result<(), TarError> {
        // A client gone is no error of ours: the walk just stops.
        self.tx.send(Ok(bytes)).await.map_err(|_| TarError::Io("the client went away".into()))
    }

    fn header(&mut self, path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> Result<Bytes, TarError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_mtime(0);
        let io = |e: std::io::Error| TarError::Io(e.to_string());
        match link {
            Some(target) => self.headers.append_link(&mut h, path, target).map_err(io)?,
            None => self.headers.append_data(&mut h, path, std::io::empty()).map_err(io)?,
        }
        Ok(Bytes::from(std::mem::take(self.headers.get_mut())))
    }

    async fn entry(&mut self, reader: &Arc<Reader>, target: Cid, root: String) -> Result<(), TarError> {
        let mut stack = vec![Pending { cid: target, path: root.clone() }];
        while let Some(Pending { cid, path }) = stack.pop() {
            let node = reader.node(&cid).await?;
            if !self.written.admit(&path, matches!(node, Node::Symlink(_))) {
                return Err(TarError::BadName(path));
            }
            match node {
                dir @ (Node::Directory { .. } | Node::Shard { .. }) => {
                    let links = reader.entries(dir).await?;
                    let header = self.header(&format!("{path}/"), tar::EntryType::Directory, 0, None)?;
                    self.send(header).await?;
                    for link in links.into_iter().rev() {
                        let inside = clean(&format!("{path}/{}", link.name)).filter(|p| p.starts_with(&format!("{root}/")) && !link.name.contains('\0'));
                        let Some(inside) = inside else { return Err(TarError::BadName(link.name)) };
                        stack.push(Pending { cid: link.cid, path: inside });
                    }
                }
                Node::Symlink(target) => {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    if !link_stays_inside(&root, &path, &target) {
                        return Err(TarError::BadName(format!("{path} -> {target}")));
                    }
                    let header = self.header(&path, tar::EntryType::Symlink, 0, Some(&target))?;
                    self.send(header).await?;
                }
                Node::Raw(bytes) => self.file(reader, cid, &path, bytes.len() as u64).await?,
                Node::File { size, .. } => self.file(reader, cid, &path, size).await?,
                Node::Ipld(_) | Node::Other => return Err(TarError::Dag(DagError::NotFound(format!("{cid} is neither a UnixFS file nor a directory")))),
            }
        }
        Ok(())
    }

    /// A file's entry: its header, its bytes, its padding.
    async fn file(&mut self, reader: &Arc<Reader>, cid: Cid, path: &str, size: u64) -> Result<(), TarError> {
        let header = self.header(path, tar::EntryType::Regular, size, None)?;
        self.send(header).await?;
        // The file's root was admitted by the reader that decoded it.
        let blob_file = self.reg.blob_file_by_root(&cid, size).await.ok().flatten();
        let mut body = super::file_bytes(blob_file, reader.clone(), cid, 0, size);
        let mut sent = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| TarError::Io(e.to_string()))?;
            sent += chunk.len() as u64;
            self.send(chunk).await?;
        }
        if sent != size {
            return Err(TarError::Io(format!("{cid} gave {sent} bytes, not the {size} it says")));
        }
        let pad = (512 - size % 512) % 512;
        if pad > 0 {
            self.send(Bytes::from(vec![0u8; pad as usize])).await?;
        }
        Ok(())
    }
}

/// `path` with `.` and `..` resolved and empty parts dropped; None if it climbs above its start.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_stay_inside() {
        assert_eq!(super::clean("cid/a/../b").as_deref(), Some("cid/b"));
        assert_eq!(super::clean("cid/../../x").as_deref(), None);
        assert_eq!(super::clean("cid/..").as_deref(), Some(""));
    }

    #[test]
    fn nothing_lands_twice_or_beneath_a_symlink() {
        let mut w = super::Written::default();
        assert!(w.admit("cid", false));
        assert!(w.admit("cid/link", true));
        assert!(!w.admit("cid/link", false), "the same path again");
        assert!(!w.admit("cid/link/passwd", false), "through the symlink");
        assert!(w.admit("cid/linked", false));
        assert!(!w.admit("cid/LINK/passwd", false), "through the symlink, on a case-insensitive file system");
        assert!(!w.admit("cid/Link", false), "the symlink's own name in another case");
        assert!(!w.admit("cid/LINKED", true), "a symlink named like an entry written before");
    }

    #[test]
    fn symlinks_point_inside() {
        assert!(super::link_stays_inside("cid", "cid/a/l", "../b"));
        assert!(super::link_stays_inside("cid", "cid/l", "."));
        assert!(!super::link_stays_inside("cid", "cid/l", "/etc/passwd"));
        assert!(!super::link_stays_inside("cid", "cid/a/l", "../../x"));
    }

    #[test]
    fn admitting_is_linear_in_symlinks() {
        let mut w = super::Written::default();
        let started = std::time::Instant::now();
        for i in 0..30_000 {
            assert!(w.admit(&format!("cid/dir/link{i}"), true));
        }
        // 35 CPU-seconds before; here a few milliseconds even unoptimised.
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    }
}
