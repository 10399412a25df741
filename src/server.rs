//! Starting a node: open the stores, then serve the API until told to stop.

use crate::api;
use crate::config::ServeConfig;
use crate::metadata::sqlite::SqliteStore;
use crate::registry::Registry;
use crate::storage::BlobStore;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    BlockIndex(#[from] crate::blockstore::BlockIndexError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server failed: {0}")]
    Server(std::io::Error),
}

/// Opens the stores of a data directory (creating them if absent); with `serving`, also
/// reconciles its uploads, which only the process that serves it may do.
pub async fn open_registry(
    data_dir: &std::path::Path,
    profile: crate::unixfs::Profile,
    serving: bool,
) -> Result<Registry, ServeError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| ServeError::DataDir { path: data_dir.display().to_string(), source })?;
    let blobs = BlobStore::open(data_dir)?;
    let meta = SqliteStore::open(&data_dir.join("metadata.sqlite"))?;
    let blocks = crate::blockstore::BlockIndex::open(&data_dir.join("blocks.sqlite"))?;
    if serving {
        Ok(Registry::open(meta, blobs, blocks, profile).await?)
    } else {
        Ok(Registry::attach(meta, blobs, blocks, profile))
    }
}

/// Sweeps idle uploads every so often: a quarter of the expiry, between 1 s and 10 min.
fn spawn_upload_expiry(registry: Arc<Registry>, expiry: std::time::Duration) {
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

/// Runs a GC every `interval` (never when it is zero).
fn spawn_gc(registry: Arc<Registry>, interval: std::time::Duration, grace: std::time::Duration) {
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

pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let mut registry = open_registry(&config.data_dir, config.cid_profile, true).await?;
    registry.sparse_manifests = config.sparse_manifests;
    registry.touch_after = config.gc_grace / 4;
    let registry = Arc::new(registry);
    spawn_upload_expiry(registry.clone(), config.upload_expiry);
    spawn_gc(registry.clone(), config.gc_interval, config.gc_grace);
    let reg = registry.clone();
    let server = actix_web::HttpServer::new(move || actix_web::App::new().wrap(api::version_header()).configure(api::configure(reg.clone())))
        .bind(config.api)
        .map_err(|source| ServeError::Bind { addr: config.api.to_string(), source })?;
    for addr in server.addrs() {
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "OCI Distribution API listening");
    }
    server.run().await.map_err(ServeError::Server)
}
