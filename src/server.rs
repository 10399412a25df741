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

pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServeError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let blobs = BlobStore::open(&config.data_dir)?;
    let meta = SqliteStore::open(&config.data_dir.join("metadata.sqlite"))?;
    let blocks = crate::blockstore::BlockIndex::open(&config.data_dir.join("blocks.sqlite"))?;
    let mut registry = Registry::open(meta, blobs, blocks, config.cid_profile).await?;
    registry.sparse_manifests = config.sparse_manifests;
    let registry = Arc::new(registry);
    let reg = registry.clone();
    let server = actix_web::HttpServer::new(move || actix_web::App::new().wrap(api::version_header()).configure(api::configure(reg.clone())))
        .bind(config.api)
        .map_err(|source| ServeError::Bind { addr: config.api.to_string(), source })?;
    for addr in server.addrs() {
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "OCI Distribution API listening");
    }
    server.run().await.map_err(ServeError::Server)
}
