//! The node's background tasks: upload expiry, the heartbeat other nodes see, the GC schedule.

use crate::registry::Registry;
use std::sync::Arc;

/// Sweeps idle uploads every so often: a quarter of the expiry, between 1 s and 10 min.
pub(super) fn spawn_upload_expiry(registry: Arc<Registry>, expiry: std::time::Duration) {
    let every = (expiry / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(600));
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = registry.expire_uploads(expiry).await {
                tracing::warn!(error = %e, "could not expire idle uploads");
            }
        }
    });
}

/// Registers the node in the metadata and keeps its heartbeat fresh, so other nodes sharing the
/// database know where to fetch the blobs it holds (its swarm addresses) or send clients for them.
pub(super) fn spawn_heartbeat(registry: Arc<Registry>, api_url: String, swarm: crate::swarm::Handle) {
    actix_web::rt::spawn(async move {
        // The first beat carries the swarm's addresses: wait (briefly) for its listeners.
        for _ in 0..40 {
            if swarm.addresses().await.is_ok_and(|a| !a.is_empty()) {
                break;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut tick = actix_web::rt::time::interval(std::time::Duration::from_secs((crate::registry::NODE_ALIVE_SECS / 3) as u64));
        loop {
            tick.tick().await;
            let addrs: Vec<String> = swarm.addresses().await.unwrap_or_default().iter().map(|a| a.to_string()).collect();
            if let Err(e) = registry.heartbeat(&api_url, &addrs).await {
                tracing::warn!(error = %e, "could not renew this node's heartbeat");
            }
        }
    });
}

/// Looks for changes other processes sharing the metadata made (see
/// `Registry::watch_shared_changes`), so cached exposure answers do not outlive them.
pub(super) fn spawn_change_watch(registry: Arc<Registry>) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(crate::registry::SHARED_CHANGES_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = registry.watch_shared_changes().await {
                tracing::warn!(error = %e, "could not read the shared change generation");
            }
        }
    });
}

/// Runs a GC every `interval` (never when it is zero).
pub(super) fn spawn_gc(registry: Arc<Registry>, interval: std::time::Duration, grace: std::time::Duration) {
    if interval.is_zero() {
        return;
    }
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval_at(actix_web::rt::time::Instant::now() + interval, interval);
        loop {
            tick.tick().await;
            match registry.gc(grace).await {
                Ok(report) => tracing::info!(%report, "scheduled gc"),
                Err(e) => tracing::warn!(error = %e, "scheduled gc failed"),
            }
        }
    });
}
