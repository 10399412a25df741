//! A blob being fetched from elsewhere, readable while it arrives: the fetch appends verified
//! bytes to an upload file (see `Registry::receive_blob`) and reports how far it got; each reader
//! follows that file at its own pace, so concurrent pulls of one blob share one fetch and no
//! reader holds more than a window in memory. The digest is checked at the end, and a reader's
//! last window waits for that verdict: a mismatch is an error (the HTTP response is cut short,
//! so the client never takes a wrong blob for a whole one).

use bytes::Bytes;
use futures_util::Stream;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The most a reader reads at once.
const WINDOW: u64 = 1 << 20;

/// Where a fetch stands.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The file the bytes go to (the published blob's once it is complete).
    pub file: Option<PathBuf>,
    /// Bytes in that file so far.
    pub written: u64,
    /// Every byte is written and matched the digest; the blob is not kept yet (the file's sync,
    /// its move into place and the metadata's commit follow, and may still fail). The bytes a
    /// reader has are right from here on: its last window need not wait for the keeping.
    pub verified: bool,
    /// `Some(Ok)` once the blob is complete and matched its digest; `Some(Err)` when the fetch
    /// failed, with why.
    pub end: Option<Result<(), Arc<str>>>,
}

pub struct Arriving {
    progress: watch::Receiver<Progress>,
}

impl Arriving {
    /// A blob arriving, and the sender its fetch reports through.
    pub fn new() -> (Arc<Arriving>, watch::Sender<Progress>) {
        let (tx, rx) = watch::channel(Progress::default());
        (Arc::new(Arriving { progress: rx }), tx)
    }

    /// Whether the fetch ended (either way).
    pub fn ended(&self) -> bool {
        self.progress.borrow().end.is_some()
    }

    /// `len` bytes from `start`, each chunk as soon as the fetch has written it.
    pub fn range(&self, start: u64, len: u64) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let state = (self.progress.clone(), None::<(PathBuf, File)>, start, start.saturating_add(len));
        futures_util::stream::unfold(state, |(mut progress, mut open, at, end)| async move {
            if at >= end {
                return None;
            }
            let want = (at + WINDOW).min(end);
            // The range's last bytes wait for the verdict: a response must not end whole before
            // the digest matched.
            let seen = progress.wait_for(|p| (p.written >= want && (want < end || p.verified)) || p.end.is_some()).await.map(|p| p.clone());
            let p = match seen {
                Ok(p) => p,
                Err(_) => return Some((Err(std::io::Error::other("the fetch stopped")), (progress, None, end, end))),
            };
            if let Some(Err(why)) = &p.end {
                return Some((Err(std::io::Error::other(why.to_string())), (progress, None, end, end)));
            }
            let upto = want.min(p.written);
            if upto <= at {
                // Ended, and short of the range.
                return Some((Err(std::io::ErrorKind::UnexpectedEof.into()), (progress, None, end, end)));
            }
            let Some(path) = p.file.clone() else {
                return Some((Err(std::io::Error::other("the fetch names no file")), (progress, None, end, end)));
            };
            let mut read = read_window(open.take(), path, at, upto).await;
            if matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::NotFound) && p.end.is_none() {
                // Verified, and moved into place (or found there already) between the verdict
                // and this first open: the kept blob's file has the same bytes once it ends.
                read = match progress.wait_for(|p| p.end.is_some()).await.map(|p| p.clone()) {
                    Ok(Progress { end: Some(Ok(())), file: Some(kept), .. }) => read_window(None, kept, at, upto).await,
                    Ok(Progress { end: Some(Err(why)), .. }) => Err(std::io::Error::other(why.to_string())),
                    _ => Err(std::io::Error::other("the fetch stopped")),
                };
            }
            match read {
                Ok((file, bytes)) => Some((Ok(bytes), (progress, Some(file), upto, end))),
                Err(e) => Some((Err(e), (progress, None, end, end))),
            }
        })
    }
}

/// Bytes `at..upto` of the file at `path`, through `open` when it is that file's.
async fn read_window(open: Option<(PathBuf, File)>, path: PathBuf, at: u64, upto: u64) -> std::io::Result<((PathBuf, File), Bytes)> {
    tokio::task::spawn_blocking(move || {
        let (path, file) = match open {
            Some((p, f)) if p == path => (p, f),
            // The upload file was published (renamed) in between: the same bytes.
            _ => {
                let f = File::open(&path)?;
                (path, f)
            }
        };
        let bytes = super::read_exact_at(&file, at, upto - at)?;
        Ok(((path, file), bytes))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// Every byte written, no verdict yet: the reader holds the last window back; a failed
    /// verdict makes it an error, so the response never ends whole.
    #[tokio::test]
    async fn the_last_window_waits_for_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        let data = vec![7u8; (WINDOW * 2 + 10) as usize];
        std::fs::write(&path, &data).unwrap();
        for verdict in [Err::<(), Arc<str>>("content digest is wrong".into()), Ok(())] {
            let (arriving, progress) = Arriving::new();
            progress.send_modify(|p| (p.file, p.written) = (Some(path.clone()), data.len() as u64));
            let mut body = Box::pin(arriving.range(0, data.len() as u64));
            let mut got = Vec::new();
            for _ in 0..2 {
                got.extend_from_slice(&body.next().await.unwrap().unwrap());
            }
            assert_eq!(got.len() as u64, WINDOW * 2);
            let last = tokio::time::timeout(std::time::Duration::from_millis(200), body.next()).await;
            assert!(last.is_err(), "the last window went out before the verdict");
            let ok = verdict.is_ok();
            progress.send_modify(|p| p.end = Some(verdict));
            let last = body.next().await.unwrap();
            assert_eq!(last.is_ok(), ok);
            if ok {
                assert_eq!(last.unwrap().len(), 10);
                assert!(body.next().await.is_none());
            }
        }
    }

    /// Every byte written and matched: the last window goes out before the blob is kept. A
    /// reader whose first open comes after the file moved into place reads the kept file once
    /// the fetch ends.
    #[tokio::test]
    async fn the_last_window_goes_once_the_digest_matched_before_the_keeping() {
        let dir = tempfile::tempdir().unwrap();
        let (upload, kept) = (dir.path().join("upload"), dir.path().join("kept"));
        let data: Vec<u8> = (0..WINDOW + 10).map(|i| i as u8).collect();
        std::fs::write(&upload, &data).unwrap();
        let (arriving, progress) = Arriving::new();
        progress.send_modify(|p| (p.file, p.written) = (Some(upload.clone()), data.len() as u64));
        let mut early = Box::pin(arriving.range(0, data.len() as u64));
        assert_eq!(early.next().await.unwrap().unwrap().len() as u64, WINDOW);
        progress.send_modify(|p| p.verified = true);
        let last = tokio::time::timeout(std::time::Duration::from_secs(5), early.next()).await.expect("the last window waited for the keeping");
        assert_eq!(&last.unwrap().unwrap()[..], &data[WINDOW as usize..]);
        assert!(early.next().await.is_none());

        // Moved into place before a new reader's first open.
        std::fs::rename(&upload, &kept).unwrap();
        let late = tokio::spawn(arriving.range(WINDOW, 10).collect::<Vec<_>>());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        progress.send_modify(|p| (p.file, p.end) = (Some(kept.clone()), Some(Ok(()))));
        let got = late.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].as_ref().unwrap()[..], &data[WINDOW as usize..]);
    }
}
