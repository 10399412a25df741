//! Streaming a byte range of a blob file out: one blocking thread reads ahead into a small bounded
//! channel while the network side sends, so disk and network overlap and at most
//! `CHANNEL_DEPTH` chunks per download are in memory. 1 MiB reads: smaller ones measured 5-10%
//! slower on a warm 1 GiB pull.

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

const CHUNK: usize = 1024 * 1024;
const CHANNEL_DEPTH: usize = 2;

/// The `len` bytes of `file` starting at `start`, as a stream of chunks.
pub fn read_range(mut file: File, start: u64, len: u64) -> impl Stream<Item = std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than recorded",
                    )));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
