//! Starting a node: open the stores, then serve the API until told to stop.

mod access;
pub mod connections;
mod replication;
mod tasks;

use crate::api;
use crate::auth::{Auth, AuthConfig};
use crate::config::ServeConfig;
use crate::metadata::sqlite::SqliteStore;
use crate::metadata::{MetadataStore, Role, TokenKind};
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
    #[error("cannot set up authentication: {0}")]
    Admin(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Swarm(#[from] crate::swarm::SwarmError),
    #[error("server failed: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Damaged(#[from] crate::storage::health::Damaged),
}

/// Opens the stores of a data directory (creating them if absent); with `serving`, also
/// reconciles its uploads, which only the process that serves it may do.
pub async fn open_registry(data_dir: &std::path::Path, database_url: Option<&str>, profile: crate::unixfs::Profile, serving: bool) -> Result<Registry, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServeError::DataDir { path: data_dir.display().to_string(), source })?;
    if serving {
        private_modes(data_dir).map_err(|source| ServeError::DataDir { path: data_dir.display().to_string(), source })?;
        let clean = crate::storage::health::take_clean_stop(data_dir);
        crate::storage::health::check(data_dir, !clean)?;
    }
    let blobs = BlobStore::open(data_dir)?;
    let meta: Arc<dyn MetadataStore> = match database_url {
        Some(url) => crate::metadata::postgres::PgStore::connect(url).await?,
        None => SqliteStore::open(&data_dir.join("metadata.sqlite"))?,
    };
    let blocks = crate::blockstore::BlockIndex::open(&data_dir.join("blocks.sqlite"), blobs.clone())?;
    if serving {
        crate::car::sweep_staging(&blobs.staging_dir());
        Ok(Registry::open(meta, blobs, blocks, profile).await?)
    } else {
        Ok(Registry::attach(meta, blobs, blocks, profile))
    }
}

/// Makes the data directory the node user's alone (0700 directories, 0600 files): it holds the
/// token signing key and private layers. New files get those modes from the process umask
/// (set in `main`); this repairs a directory made before, or copied in with other modes.
pub fn private_modes(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![dir.to_path_buf()];
    let mut repaired = 0u64;
    while let Some(d) = pending.pop() {
        let meta = std::fs::symlink_metadata(&d)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            repaired += 1;
        }
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let mode = entry.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode & 0o700))?;
                    repaired += 1;
                }
            }
        }
    }
    if repaired > 0 {
        tracing::warn!(repaired, dir = %dir.display(), "the data directory was readable by others; made private");
    }
    Ok(())
}

/// The first administrator: `AF_ADMIN_USER` (default `admin`) gets the password in
/// `AF_ADMIN_PASSWORD` when that is set; otherwise, on a database without any user, it is created
/// without a password and a bootstrap token (valid 24 h) is printed once on standard output.
async fn bootstrap_admin(meta: &Arc<dyn crate::metadata::AuthStore>) -> Result<(), ServeError> {
    let name = std::env::var("AF_ADMIN_USER").unwrap_or_else(|_| "admin".to_string());
    if !crate::names::is_namespace(&name) {
        return Err(ServeError::Admin(format!("AF_ADMIN_USER {name:?} is not a valid user name")));
    }
    let admin = |e: &dyn std::fmt::Display| ServeError::Admin(e.to_string());
    if let Ok(password) = std::env::var("AF_ADMIN_PASSWORD") {
        crate::auth::secrets::check_password(&password).map_err(|e| admin(&format!("AF_ADMIN_PASSWORD: {e}")))?;
        // The same password as stored: kept as it is. Hashing it again (a new salt) would end
        // every refresh token and remembered login it minted, at each restart.
        if let Some(phc) = meta.get_user(&name).await?.and_then(|u| u.password_hash) {
            let given = password.clone();
            let same = tokio::task::spawn_blocking(move || crate::auth::secrets::Verifier::default().verify(&given, &phc)).await.map_err(|e| admin(&e))?;
            if same {
                return Ok(());
            }
        }
        let phc = crate::auth::secrets::hash_off_thread(password).await.map_err(|e| admin(&e))?;
        if !meta.create_user(&name, Some(&phc), true).await? && !meta.set_password(&name, &phc).await? {
            return Err(ServeError::Admin(format!("{name:?} is the name of an organisation")));
        }
        tracing::info!(user = %name, "administrator password set from AF_ADMIN_PASSWORD");
        return Ok(());
    }
    if !meta.list_users().await?.is_empty() {
        return Ok(());
    }
    meta.create_user(&name, None, true).await?;
    let expires_at = Some(crate::clock::unix_now() + 24 * 3600);
    let description = Some("bootstrap".to_string());
    let (_, token) = crate::auth::mint_token(meta.as_ref(), &name, TokenKind::Access, Role::Admin, description, expires_at, None).await.map_err(|e| admin(&e))?;
    // Standard output, not the log: this is the only time the token is shown.
    println!("af: first start: administrator {name:?} created; its bootstrap token (valid 24 h, shown once):");
    println!("{token}");
    println!("af: log in with it (docker login -u {name}), then `af registry user passwd {name}` or create tokens.");
    Ok(())
}

pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let mut registry = open_registry(&config.data_dir, config.database_url.as_deref(), config.cid_profile, true).await?;
    let identity = crate::identity::load_or_create(&config.data_dir).map_err(|e| ServeError::Admin(e.to_string()))?;
    registry.configure(crate::registry::Settings {
        sparse_manifests: config.sparse_manifests,
        touch_after: config.gc_grace / 4,
        node_id: Some(identity.peer_id.clone()),
        max_uploads: config.max_uploads,
    });
    let registry = Arc::new(registry);
    let api_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.api));
    tasks::spawn_change_watch(registry.clone());
    tasks::spawn_upload_expiry(registry.clone(), config.upload_expiry);
    tasks::spawn_gc(registry.clone(), config.gc_interval, config.gc_grace);
    let auth = if config.auth == crate::config::AuthMode::Token {
        bootstrap_admin(&registry.accounts()).await?;
        let auth_config = AuthConfig { enabled: true, public_url: config.public_url.clone(), service: "af-registry".into(), trusted_proxies: config.trusted_proxies.clone() };
        Some(Arc::new(Auth::new(registry.accounts(), auth_config).await.map_err(|e| ServeError::Admin(e.to_string()))?))
    } else {
        tracing::warn!("authentication is off (--auth none): anyone who reaches the API can push, pull and delete");
        None
    };
    let policy = crate::exposure::Policy::new(registry.clone(), config.trusted_peers.iter().map(|p| p.0.clone()));
    let swarm_config = crate::swarm::SwarmConfig {
        listen: config.swarm.iter().map(|a| a.0.clone()).collect(),
        announce: config.swarm_announce.iter().map(|a| a.0.clone()).collect(),
        bootstrap: config.bootstrap.iter().map(|a| a.0.clone()).collect(),
        max_connections: config.max_peers,
    };
    let swarm = crate::swarm::start(identity.seed, policy.clone(), swarm_config)?;
    if !config.offline {
        registry.set_remote(crate::swarm::pull::Pulls::new(&registry, &policy, swarm.clone()));
    }
    tasks::spawn_heartbeat(registry.clone(), api_url, swarm.clone());
    let gateway_swarm = (!config.offline).then(|| swarm.clone());
    let dnslink = match crate::dnslink::DnsLink::new(config.dns_resolver) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "DNSLink names are not resolved");
            None
        }
    };
    let naming = Arc::new(crate::gateway::Naming {
        dnslink,
        domain: config.gateway_domain.as_ref().map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        trusted_proxies: config.trusted_proxies.clone(),
    });
    let cluster = match &config.cluster_api {
        Some(url) => Some(Arc::new(crate::cluster::Cluster::new(url, config.cluster_credentials.as_deref()).map_err(|e| ServeError::Admin(e.to_string()))?)),
        None => None,
    };
    if let Some(cluster) = &cluster {
        let mut trusted: std::collections::HashSet<String> = config.trusted_peers.iter().map(|p| p.0.clone()).collect();
        trusted.insert(identity.peer_id.clone());
        let me = identity.peer_id.clone();
        let key = libp2p::identity::Keypair::ed25519_from_bytes(identity.seed).map_err(|e| ServeError::Admin(e.to_string()))?;
        replication::spawn(replication::Replication { reg: registry.clone(), cluster: cluster.clone(), replicas: config.replicas, grace: config.gc_grace, trusted, me, key });
        tracing::info!(cluster = %cluster.url(), replicas = config.replicas, "images are kept on several nodes through IPFS Cluster");
    }
    let peer_id = identity.peer_id.clone();
    let version = env!("CARGO_PKG_VERSION");
    let grace = config.shutdown_timeout.as_secs();
    let rpc_state = Arc::new(crate::rpc::RpcState {
        registry: registry.clone(),
        policy: policy.clone(),
        auth: auth.clone(),
        identity,
        swarm,
        offline: config.offline,
        data_dir: config.data_dir.clone(),
        loopback: config.rpc.ip().is_loopback(),
        bind: config.rpc,
        writes: tokio::sync::Semaphore::new(crate::rpc::CONCURRENT_WRITES),
        storage_max: config.storage_max.map(|s| s.0),
        gc_grace: config.gc_grace,
        cluster: cluster.clone(),
    });
    let reg = registry.clone();
    let links = actix_web::web::Data::new(api::home::Links {
        gateway_url: config.gateway_url.clone(),
        gateway_port: config.gateway.port(),
        trusted_proxies: config.trusted_proxies.clone(),
    });
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_worker = config.max_connections.div_ceil(workers).max(1);
    let limits = || {
        let limits = connections::PerAddress::new(config.max_connections_per_ip, config.trusted_proxies.clone());
        move |io: &dyn std::any::Any, data: &mut actix_web::dev::Extensions| limits.on_connect(io, data)
    };
    // Listened for before the first listener is bound: a SIGTERM that comes as soon as the node
    // answers must stop it cleanly too, not kill it (the default action until a handler is in
    // place), or the next start takes it for a crash.
    let stop = stop_signal();
    // The three public listeners are built alike: each counts its own connections (a client
    // crowding the gateway leaves the API be), stops on the node's signal with its grace, and
    // says where it listens.
    macro_rules! public_listener {
        ($app:expr, $addr:expr, $($said:tt)+) => {{
            let listener = actix_web::HttpServer::new($app)
                .workers(workers)
                .max_connections(per_worker)
                .on_connect(limits())
                .disable_signals()
                .shutdown_timeout(grace)
                .bind($addr)
                .map_err(|source| ServeError::Bind { addr: $addr.to_string(), source })?;
            for addr in listener.addrs() {
                tracing::info!(%addr, version, %peer_id, $($said)+);
            }
            listener
        }};
    }
    let server = public_listener!(
        move || {
            actix_web::App::new()
                .app_data(links.clone())
                .wrap(api::version_header())
                .wrap(actix_web::middleware::from_fn(access::api))
                .configure(api::configure(reg.clone(), auth.clone()))
        },
        config.api,
        data_dir = %config.data_dir.display(),
        "OCI Distribution API listening"
    );
    let gateway = public_listener!(
        move || actix_web::App::new().wrap(actix_web::middleware::from_fn(access::gateway)).configure(crate::gateway::configure(
            policy.clone(),
            gateway_swarm.clone(),
            naming.clone()
        )),
        config.gateway,
        "IPFS gateway listening"
    );
    let rpc = public_listener!(
        move || actix_web::App::new().wrap(actix_web::middleware::from_fn(access::rpc)).configure(crate::rpc::configure(rpc_state.clone())),
        config.rpc,
        "Kubo-compatible RPC listening"
    );
    let totals = registry.clone();
    let metrics = actix_web::HttpServer::new(move || {
        let registry = totals.clone();
        actix_web::App::new().route(
            "/metrics",
            actix_web::web::get().to(move || {
                let registry = registry.clone();
                async move { metrics_page(&registry).await }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(grace)
    .bind(config.metrics)
    .map_err(|source| ServeError::Bind { addr: config.metrics.to_string(), source })?;
    for addr in metrics.addrs() {
        tracing::info!(%addr, version, %peer_id, "Prometheus metrics listening");
    }
    let servers = [server.run(), gateway.run(), rpc.run(), metrics.run()];
    let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
    tokio::spawn(async move {
        let signal = stop.await;
        tracing::info!(signal, "stopping: no new connections; requests in flight have {grace} s to finish");
        futures_util::future::join_all(handles.iter().map(|h| h.stop(true))).await;
    });
    futures_util::future::try_join_all(servers).await.map_err(ServeError::Server)?;
    crate::storage::health::mark_clean_stop(&config.data_dir);
    tracing::info!("stopped");
    Ok(())
}

/// The Prometheus text exposition, with what the registry holds counted now.
async fn metrics_page(registry: &Registry) -> actix_web::HttpResponse {
    let stored = &crate::metrics::METRICS.stored;
    match registry.totals().await {
        Ok(t) => {
            for (what, n) in
                [("repositories", t.repositories), ("manifests", t.manifests), ("blobs", t.blobs), ("blob_bytes", t.blob_bytes), ("upload_sessions", t.upload_sessions)]
            {
                stored.with_label_values(&[what]).set(n);
            }
        }
        // The counters still answer; the totals keep their last values (the error is counted).
        Err(e) => tracing::warn!(error = %e, "metrics: the registry's totals could not be read"),
    }
    actix_web::HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(crate::metrics::render())
}

/// SIGTERM (what a container runtime sends) or SIGINT (Ctrl-C): the name of the one that came.
/// The handlers are in place when this returns, before the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}
