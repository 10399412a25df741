//! Which roots this node provides on the DHT: every root of public content it can serve (blob
//! roots and image CIDs of public repositories, and roots pinned through the RPC), kept in step
//! with the registry's events. New content is provided as it is published; anything that may
//! take content away (a visibility change, a delete, an unpin, a GC, a lagging subscriber) is
//! answered with a full rescan, whose difference is provided and withdrawn. Roots only, never
//! every block, and never a root whose block this node lacks (on a shared database another node
//! may hold it).

use super::Handle;
use crate::events::Event;
use crate::registry::Registry;
use cid::Cid;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Runs until the registry's event channel closes.
pub async fn run(reg: Arc<Registry>, swarm: Handle) {
    let mut events = reg.subscribe();
    let mut provided: HashSet<Cid> = HashSet::new();
    rescan(&reg, &swarm, &mut provided).await;
    loop {
        match events.recv().await {
            Ok(Event::BlobPublished { root, .. }) => add(&reg, &swarm, &mut provided, [root]).await,
            Ok(Event::ImageStored { image, tags, .. }) => {
                let roots = image.into_iter().chain(tags.into_iter().filter_map(|(_, cid)| cid));
                add(&reg, &swarm, &mut provided, roots).await
            }
            Ok(Event::Pinned { root }) => add(&reg, &swarm, &mut provided, [root]).await,
            Ok(Event::VisibilityChanged { .. } | Event::Removed { .. } | Event::Unpinned { .. } | Event::Swept { .. } | Event::ChangedElsewhere) | Err(RecvError::Lagged(_)) => {
                rescan(&reg, &swarm, &mut provided).await
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Whether `cid` is public content this node holds the root block of.
async fn servable(reg: &Registry, cid: &Cid) -> bool {
    let public = reg.root_is_public(&cid.to_string()).await.unwrap_or(false) || reg.is_block_pinned(cid).await.unwrap_or(false);
    public && reg.has_block(cid).await.unwrap_or(false)
}

async fn add(reg: &Registry, swarm: &Handle, provided: &mut HashSet<Cid>, roots: impl IntoIterator<Item = String>) {
    for root in roots {
        let Ok(cid) = root.parse::<Cid>() else { continue };
        if !provided.contains(&cid) && servable(reg, &cid).await && swarm.provide(cid).await.is_ok() {
            provided.insert(cid);
        }
    }
}

async fn rescan(reg: &Registry, swarm: &Handle, provided: &mut HashSet<Cid>) {
    let mut now = HashSet::new();
    let roots = match reg.public_roots().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the roots to provide");
            return;
        }
    };
    let pins = reg.block_pins().await.unwrap_or_default();
    for root in roots.into_iter().chain(pins) {
        let Ok(cid) = root.parse::<Cid>() else { continue };
        if reg.has_block(&cid).await.unwrap_or(false) {
            now.insert(cid);
        }
    }
    for gone in provided.difference(&now).copied().collect::<Vec<_>>() {
        let _ = swarm.unprovide(gone).await;
        provided.remove(&gone);
    }
    for new in now.difference(provided).copied().collect::<Vec<_>>() {
        if swarm.provide(new).await.is_ok() {
            provided.insert(new);
        }
    }
    tracing::debug!(roots = provided.len(), "providing");
}
