//! Which roots this node provides on the DHT: every root of public content it can serve (blob
//! roots and image CIDs of public repositories, and roots pinned through the RPC), kept in step
//! with the registry's events. New content is provided as it is published; anything that may
//! take content away (a visibility change, a delete, an unpin, a GC, a lagging subscriber) is
//! answered with a full rescan, whose difference is provided and withdrawn. Roots only, never
//! every block, and never a root whose block this node lacks (on a shared database another node
//! may hold it).

use super::Handle;
use crate::events::Event;
use crate::exposure::{Audience, Policy};
use cid::Cid;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// Rescans take at most a tenth of the time: the next may start nine times as long after one
/// ended as it took. A run of deletes or GCs asks for one each; on a small registry a rescan
/// takes milliseconds and comes at once, on one of a million images it takes a minute or two of
/// a core. New content is provided at once regardless.
const RESCAN_SHARE: u32 = 9;

/// Runs until the registry's event channel closes.
pub async fn run(policy: Arc<Policy>, swarm: Handle) {
    let reg = policy.registry();
    let mut events = reg.subscribe();
    let mut provided: HashSet<Cid> = HashSet::new();
    let mut next_rescan = timed_rescan(&policy, &swarm, &mut provided).await;
    let mut rescan_due = false;
    loop {
        if rescan_due && Instant::now() >= next_rescan {
            next_rescan = timed_rescan(&policy, &swarm, &mut provided).await;
            rescan_due = false;
        }
        let event = if rescan_due {
            match tokio::time::timeout_at(next_rescan, events.recv()).await {
                Ok(event) => event,
                Err(_) => continue,
            }
        } else {
            events.recv().await
        };
        match event {
            Ok(Event::BlobPublished { root, .. }) => add(&policy, &swarm, &mut provided, [root]).await,
            Ok(Event::ImageStored { image, tags, .. }) => {
                let roots = image.into_iter().chain(tags.into_iter().filter_map(|(_, cid)| cid));
                add(&policy, &swarm, &mut provided, roots).await
            }
            Ok(Event::Pinned { root }) => add(&policy, &swarm, &mut provided, [root]).await,
            Ok(Event::VisibilityChanged { .. } | Event::Removed { .. } | Event::Unpinned { .. } | Event::Swept { .. } | Event::ChangedElsewhere) | Err(RecvError::Lagged(_)) => {
                rescan_due = true
            }
            Ok(Event::ReplicasChanged { .. }) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Whether anyone may fetch `cid` from this node (held here, and public): the exposure policy
/// decides, so nothing is announced that a peer would then be refused (a registry CID pinned
/// through the RPC is not made public by its pin).
async fn servable(policy: &Policy, cid: &Cid) -> bool {
    policy.may_send(cid, &Audience::Anyone).await.unwrap_or(false)
}

async fn add(policy: &Policy, swarm: &Handle, provided: &mut HashSet<Cid>, roots: impl IntoIterator<Item = String>) {
    for root in roots {
        let Ok(cid) = root.parse::<Cid>() else { continue };
        if !provided.contains(&cid) && servable(policy, &cid).await && swarm.provide(cid).await.is_ok() {
            provided.insert(cid);
        }
    }
}

/// A rescan; returns when the next may start.
async fn timed_rescan(policy: &Policy, swarm: &Handle, provided: &mut HashSet<Cid>) -> Instant {
    let started = Instant::now();
    rescan(policy, swarm, provided).await;
    let took = started.elapsed();
    tracing::debug!(seconds = took.as_secs_f64(), roots = provided.len(), "provided roots rescanned");
    Instant::now() + took * RESCAN_SHARE
}

async fn rescan(policy: &Policy, swarm: &Handle, provided: &mut HashSet<Cid>) {
    let reg = policy.registry();
    let mut now = HashSet::new();
    let roots = match reg.public_roots().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the roots to provide");
            return;
        }
    };
    let pins = policy.pins().await.unwrap_or_default();
    // No more than the DHT store takes (pins first: the operator asked for those): on a registry
    // with millions of roots, checking the rest would only find roots that cannot be provided.
    for root in pins.into_iter().chain(roots) {
        if now.len() >= super::MAX_PROVIDED {
            break;
        }
        let Ok(cid) = root.parse::<Cid>() else { continue };
        if servable(policy, &cid).await {
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
