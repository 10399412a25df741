//! What the registry tells the rest of the node when its state changes: content became available
//! (a blob published, an image stored or tagged), visibility changed, content was swept. The
//! swarm will provide and stop providing roots from these; nothing else may infer them.
//!
//! A broadcast: every subscriber sees every event sent after it subscribed; one that falls more
//! than [`CAPACITY`] events behind is told it lagged (and should rescan), never blocks the sender.

use crate::digest::Digest;

/// Events a subscriber may fall behind by before it lags.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A blob's bytes and DAG became available in `repository` (an upload completed).
    BlobPublished { repository: String, digest: Digest, root: String },
    /// A manifest was stored, or tags moved to it: its image CID (if it has a DAG) and the
    /// tags that now name it with theirs.
    ImageStored { repository: String, digest: Digest, image: Option<String>, tags: Vec<(String, Option<String>)> },
    /// A repository became public or private.
    VisibilityChanged { repository: String, public: bool },
    /// The number of nodes a repository's images are kept on changed (`af registry replicas`).
    ReplicasChanged { repository: String },
    /// A blob (by digest), a manifest (by digest) or a tag left `repository`; the content stays
    /// while anything else keeps it, until a GC.
    Removed { repository: String, reference: String },
    /// A root was pinned through the RPC: it and what it links are kept and public.
    Pinned { root: String },
    /// An RPC pin was removed.
    Unpinned { root: String },
    /// Another process sharing the metadata (the CLI, a node on the same PostgreSQL) changed
    /// something: what it was is not known here, so whoever keeps a view of the state rebuilds it.
    ChangedElsewhere,
    /// A GC removed content: the blobs whose files went, and how many manifests.
    Swept { blobs: Vec<Digest>, manifests: u64, blocks: u64 },
}

/// The sending side, owned by the registry.
pub struct Events(tokio::sync::broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Self {
        Events(tokio::sync::broadcast::channel(CAPACITY).0)
    }
}

impl Events {
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.0.subscribe()
    }

    /// Sends `event` to whoever listens (nobody listening is fine).
    pub fn send(&self, event: Event) {
        tracing::debug!(?event, "registry event");
        let _ = self.0.send(event);
    }
}
