//! What this node sends a peer over Bitswap (wants, presences, blocks) goes through two
//! outbound streams per peer and protocol, kept open while there is traffic, as boxo's message
//! queue does: one for messages that carry blocks, one for the rest (wants, cancels, HAVE and
//! DONT_HAVE), so a want or a HAVE never waits behind megabytes of blocks to the same peer (boxo
//! too sends its wants and its blocks on different streams). A stream per message would be simpler, but the receiving side of `libp2p-stream`
//! accepts inbound streams through an unbuffered channel and drops those that arrive while it
//! is full: a burst of reply streams from several providers lost replies (each a 2 s re-want),
//! which cut a pull from four providers to a tenth of its speed.

use super::message::{self, Message};
use libp2p::{PeerId, StreamProtocol};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Messages queued for one peer before senders wait (each at most 4 MiB).
const QUEUE: usize = 2;
/// A stream unused this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// How long a peer has to take one message.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

type Queued = (Message, oneshot::Sender<Result<(), String>>);
/// Each peer's queue, by peer, protocol and whether its messages carry blocks.
type Queues = HashMap<Key, mpsc::Sender<Queued>>;
type Key = (PeerId, StreamProtocol, bool);

#[derive(Clone)]
pub struct Outboxes {
    control: libp2p_stream::Control,
    queues: Arc<Mutex<Queues>>,
}

impl Outboxes {
    pub fn new(control: libp2p_stream::Control) -> Self {
        Outboxes { control, queues: Default::default() }
    }

    /// Sends `m` to `peer` on its stream of `protocol` (opened if need be); returns once the
    /// message was written, or why it was not.
    pub async fn send(&self, peer: PeerId, protocol: &StreamProtocol, m: Message) -> Result<(), String> {
        let (done, result) = oneshot::channel();
        let key = (peer, protocol.clone(), !m.payload.is_empty() || !m.blocks.is_empty());
        let mut queued = (m, done);
        for _ in 0..2 {
            let queue = self.queue(&key);
            match queue.send(queued).await {
                Ok(()) => return result.await.map_err(|_| "the peer's queue closed".to_string())?,
                // The queue idled out between lookup and send: take a new one.
                Err(mpsc::error::SendError(back)) => {
                    self.forget(&key, &queue);
                    queued = back;
                }
            }
        }
        Err("no queue for the peer".into())
    }

    fn queue(&self, key: &Key) -> mpsc::Sender<Queued> {
        let mut queues = self.queues.lock().expect("outbox lock");
        if let Some(q) = queues.get(key).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        queues.insert(key.clone(), tx.clone());
        tokio::spawn(run(self.clone(), key.clone(), rx, tx.clone()));
        tx
    }

    fn forget(&self, key: &Key, queue: &mpsc::Sender<Queued>) {
        let mut queues = self.queues.lock().expect("outbox lock");
        if queues.get(key).is_some_and(|q| q.same_channel(queue)) {
            queues.remove(key);
        }
    }
}

/// One peer's queue: writes each message on the open stream, opening one (again) when there is
/// none; closes the stream and ends after [`IDLE`] without messages.
async fn run(outboxes: Outboxes, key: Key, mut rx: mpsc::Receiver<Queued>, me: mpsc::Sender<Queued>) {
    let (peer, protocol) = (key.0, key.1.clone());
    let mut stream: Option<libp2p::Stream> = None;
    loop {
        let Ok(Some((m, done))) = tokio::time::timeout(IDLE, rx.recv()).await else { break };
        let mut result = Err(String::new());
        // A stream the peer closed since is found out on writing: one more try on a new one.
        for _ in 0..2 {
            if stream.is_none() {
                let mut control = outboxes.control.clone();
                match control.open_stream(peer, protocol.clone()).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        result = Err(e.to_string());
                        break;
                    }
                }
            }
            let s = stream.as_mut().expect("opened above");
            match tokio::time::timeout(WRITE_TIMEOUT, message::write(s, &m)).await {
                Ok(Ok(())) => {
                    result = Ok(());
                    break;
                }
                Ok(Err(e)) => result = Err(e.to_string()),
                Err(_) => result = Err("the peer did not take a message in time".into()),
            }
            stream = None;
        }
        let _ = done.send(result);
    }
    outboxes.forget(&key, &me);
    drop(me);
    if let Some(mut s) = stream {
        let _ = futures_util::AsyncWriteExt::close(&mut s).await;
    }
}
