//! The `af` commands that work on a data directory beside (or without) a node: what each does
//! once `main` has parsed it.

pub mod accounts;
pub mod client;
pub mod images;
pub mod maintenance;

use anyhow::Context;
use std::path::PathBuf;

/// Where the node keeps its data, for commands that work on it beside (or without) the node.
#[derive(clap::Args)]
pub struct DataDir {
    /// The node's data directory [default: ./data].
    #[arg(long, env = "AF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node's PostgreSQL metadata database, if it uses one (as given to `serve`).
    #[arg(long, env = "AF_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DataDir {
    /// The directory: as given, else the default.
    pub fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(af_registry::config::DEFAULT_DATA_DIR))
    }
}

/// The registry of an existing data directory, alongside any node serving it.
pub async fn attach(data: DataDir, profile: af_registry::unixfs::Profile) -> anyhow::Result<af_registry::registry::Registry> {
    let data_dir = data.dir();
    anyhow::ensure!(data_dir.is_dir(), "no data directory at {}", data_dir.display());
    Ok(af_registry::node::open_registry(&data_dir, data.database_url.as_deref(), profile, false).await?)
}

/// Runs `f` to completion on a fresh runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(f)
}

/// `af registry health`: whether the API at `api` answers `/v2/` as a serving node does.
pub async fn health(mut api: std::net::SocketAddr, timeout: std::time::Duration) -> anyhow::Result<()> {
    if api.ip().is_unspecified() {
        api.set_ip(if api.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let url = format!("http://{api}/v2/");
    let client = reqwest::Client::builder().timeout(timeout).no_proxy().build()?;
    let status = client.get(&url).send().await.with_context(|| format!("the API at {url} does not answer"))?.status();
    match status.as_u16() {
        200 | 401 => Ok(()),
        _ => anyhow::bail!("the API at {url} answered {status}, not 200 or 401"),
    }
}

/// `af registry serve`: the node, with settings from flags and AF_* over the file over defaults.
pub fn serve(flags: af_registry::config::Overrides, config: Option<PathBuf>) -> anyhow::Result<()> {
    let file = match &config {
        Some(path) => af_registry::config::Overrides::load(path)?,
        None => af_registry::config::Overrides::default(),
    };
    let config = af_registry::config::ServeConfig::merge(flags, file);
    actix_web::rt::System::new().block_on(af_registry::node::serve(config)).context("registry node stopped")
}

/// `af cid`: the root CID of a file (or standard input) as a UnixFS DAG.
pub fn cid(file: PathBuf, profile: af_registry::unixfs::Profile) -> anyhow::Result<()> {
    let root = if file.as_os_str() == "-" {
        af_registry::unixfs::import_reader(std::io::stdin(), profile)
    } else {
        let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
        af_registry::unixfs::import_reader(f, profile)
    }
    .with_context(|| format!("cannot read {}", file.display()))?;
    println!("{}", root.cid);
    Ok(())
}
