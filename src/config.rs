//! Node configuration: command-line flags, `AF_*` environment variables and an optional TOML file,
//! in that order of precedence, over built-in defaults.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_API: &str = "0.0.0.0:5000";
pub const DEFAULT_GATEWAY: &str = "0.0.0.0:8080";
pub const DEFAULT_RPC: &str = "127.0.0.1:5001";
pub const DEFAULT_DATA_DIR: &str = "./data";

/// What `af registry serve` runs with, after merging every source.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub api: SocketAddr,
    /// The IPFS HTTP gateway.
    pub gateway: SocketAddr,
    /// The Kubo-compatible RPC.
    pub rpc: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://...`: metadata on PostgreSQL, shared with other nodes; None: SQLite in the
    /// data directory.
    pub database_url: Option<String>,
    pub sparse_manifests: bool,
    pub cid_profile: crate::unixfs::Profile,
    /// Uploads idle this long are discarded.
    pub upload_expiry: Duration,
    /// How often the node runs a GC itself; zero: never (only `af registry gc`).
    pub gc_interval: Duration,
    /// Content younger than this is never collected.
    pub gc_grace: Duration,
    /// Authentication and access control (false: `--auth none`, an open registry).
    pub auth: bool,
    /// The public base URL clients reach the node at, for the token realm; None: each request's
    /// own scheme and Host.
    pub public_url: Option<String>,
    /// Addresses of reverse proxies whose `X-Forwarded-*` / `Forwarded` headers are believed;
    /// from anyone else they are ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Upload sessions one user (or, anonymous, one address) may hold open.
    pub max_uploads: u64,
}

/// `--auth`: `token` (the Docker token flow, the default) or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Token,
    None,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown auth mode {0:?} (token or none)")]
pub struct UnknownAuthMode(String);

impl std::str::FromStr for AuthMode {
    type Err = UnknownAuthMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "token" => Ok(AuthMode::Token),
            "none" => Ok(AuthMode::None),
            other => Err(UnknownAuthMode(other.to_string())),
        }
    }
}

/// Values given by flags or `AF_*` variables (clap merges those two); None: not given. Each
/// setting's flag, variable and help are declared here, once; its TOML key in [`FileConfig`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address of the OCI Distribution API [default: 0.0.0.0:5000].
    #[arg(long, env = "AF_API")]
    pub api: Option<SocketAddr>,
    /// Address of the IPFS HTTP gateway (/ipfs/<cid>) [default: 0.0.0.0:8080].
    #[arg(long, env = "AF_GATEWAY")]
    pub gateway: Option<SocketAddr>,
    /// Address of the Kubo-compatible RPC (/api/v0); beyond loopback, writes need an
    /// administrator's credentials and reads see public content only [default: 127.0.0.1:5001].
    #[arg(long, env = "AF_RPC")]
    pub rpc: Option<SocketAddr>,
    /// Directory for blobs, uploads and the metadata database [default: ./data].
    #[arg(long, env = "AF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://user:password@host/db: keep the metadata in PostgreSQL, shared by several
    /// nodes [default: SQLite in the data directory].
    #[arg(long, env = "AF_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Accept manifests whose layers or child manifests are not in the repository (sparse
    /// mirrors of multi-arch images) [default: false: refused with MANIFEST_BLOB_UNKNOWN].
    #[arg(long, env = "AF_SPARSE_MANIFESTS", num_args = 0..=1, default_missing_value = "true")]
    pub sparse_manifests: Option<bool>,
    /// How blobs become UnixFS DAGs: unixfs-v1-2025 (1 MiB chunks, 1024 links) or kubo-v1
    /// (256 KiB, 174; `ipfs add --cid-version=1`) [default: unixfs-v1-2025].
    #[arg(long, env = "AF_CID_PROFILE")]
    pub cid_profile: Option<crate::unixfs::Profile>,
    /// Discard upload sessions idle this long, e.g. 24h, 30m [default: 24h].
    #[arg(long, env = "AF_UPLOAD_EXPIRY", value_parser = humantime::parse_duration)]
    pub upload_expiry: Option<std::time::Duration>,
    /// Run a GC this often, e.g. 24h; 0s: never (only `af registry gc`) [default: 24h].
    #[arg(long, env = "AF_GC_INTERVAL", value_parser = humantime::parse_duration)]
    pub gc_interval: Option<std::time::Duration>,
    /// Content younger than this is never collected; also how long a client may take between
    /// seeing a blob and pushing the manifest that references it [default: 1h].
    #[arg(long, env = "AF_GC_GRACE", value_parser = humantime::parse_duration)]
    pub gc_grace: Option<std::time::Duration>,
    /// token: every request needs credentials unless the repository is public (the Docker token
    /// flow); none: an open registry for local development [default: token].
    #[arg(long, env = "AF_AUTH")]
    pub auth: Option<crate::config::AuthMode>,
    /// The URL clients reach this node at, e.g. https://registry.example.com, for the token
    /// realm in challenges [default: the scheme and Host of each request].
    #[arg(long, env = "AF_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Address of a reverse proxy whose X-Forwarded-* and Forwarded headers are believed
    /// (repeat, or comma-separate in AF_TRUSTED_PROXY) [default: none: those headers are ignored].
    #[arg(long = "trusted-proxy", env = "AF_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
    /// Upload sessions one user (or, anonymous, one address) may hold open [default: 64].
    #[arg(long, env = "AF_MAX_UPLOADS")]
    pub max_uploads: Option<u64>,
}

/// Default idle time after which an upload session is discarded.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Default time between two scheduled GCs.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The optional TOML file: every key is optional and named like its flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub api: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub sparse_manifests: Option<bool>,
    pub cid_profile: Option<String>,
    pub upload_expiry: Option<String>,
    pub gc_interval: Option<String>,
    pub gc_grace: Option<String>,
    pub auth: Option<String>,
    pub public_url: Option<String>,
    pub trusted_proxy: Option<Vec<std::net::IpAddr>>,
    pub max_uploads: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is invalid: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error(transparent)]
    Profile(#[from] crate::unixfs::UnknownProfile),
    #[error(transparent)]
    AuthMode(#[from] UnknownAuthMode),
    #[error("{key} {value:?} is not a duration such as \"24h\" or \"30m\"")]
    Duration { key: &'static str, value: String },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }
}

impl ServeConfig {
    /// Merges flag/env values (already combined by clap) over the file over the defaults.
    pub fn merge(flags: Overrides, file: FileConfig) -> Result<Self, ConfigError> {
        let duration = |flag: Option<Duration>, text: &Option<String>, key: &'static str, default: Duration| match flag {
            Some(d) => Ok(d),
            None => match text {
                Some(t) => humantime::parse_duration(t).map_err(|_| ConfigError::Duration { key, value: t.clone() }),
                None => Ok(default),
            },
        };
        let cid_profile = match flags.cid_profile {
            Some(p) => p,
            None => file.cid_profile.as_deref().map(str::parse).transpose()?.unwrap_or_default(),
        };
        Ok(ServeConfig {
            cid_profile,
            upload_expiry: duration(flags.upload_expiry, &file.upload_expiry, "upload-expiry", DEFAULT_UPLOAD_EXPIRY)?,
            gc_interval: duration(flags.gc_interval, &file.gc_interval, "gc-interval", DEFAULT_GC_INTERVAL)?,
            gc_grace: duration(flags.gc_grace, &file.gc_grace, "gc-grace", crate::registry::DEFAULT_GRACE)?,
            api: flags.api.or(file.api).unwrap_or_else(|| DEFAULT_API.parse().expect("default address")),
            gateway: flags.gateway.or(file.gateway).unwrap_or_else(|| DEFAULT_GATEWAY.parse().expect("default address")),
            rpc: flags.rpc.or(file.rpc).unwrap_or_else(|| DEFAULT_RPC.parse().expect("default address")),
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url: flags.database_url.or(file.database_url),
            sparse_manifests: flags.sparse_manifests.or(file.sparse_manifests).unwrap_or(false),
            auth: match flags.auth {
                Some(mode) => mode,
                None => file.auth.as_deref().map(str::parse).transpose()?.unwrap_or(AuthMode::Token),
            } == AuthMode::Token,
            public_url: flags.public_url.or(file.public_url),
            trusted_proxies: flags.trusted_proxies.or(file.trusted_proxy).unwrap_or_default(),
            max_uploads: flags.max_uploads.or(file.max_uploads).unwrap_or(crate::registry::DEFAULT_MAX_UPLOADS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file: FileConfig =
            toml::from_str("api = \"127.0.0.1:6000\"\ndata-dir = \"/srv/af\"\ncid-profile = \"kubo-v1\"\nupload-expiry = \"90m\"")
                .unwrap();
        let flags = Overrides { data_dir: Some("/flag".into()), gc_grace: Some(Duration::from_secs(5)), ..Default::default() };
        let c = ServeConfig::merge(flags, file).unwrap();
        assert_eq!(c.gc_grace, Duration::from_secs(5));
        assert_eq!(c.gc_interval, DEFAULT_GC_INTERVAL);
        assert_eq!(c.cid_profile, crate::unixfs::Profile::KuboV1);
        assert_eq!(c.upload_expiry, Duration::from_secs(90 * 60));
        assert_eq!(c.api, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        let d = ServeConfig::merge(Overrides::default(), FileConfig::default()).unwrap();
        assert_eq!(d.cid_profile, crate::unixfs::Profile::UnixfsV1_2025);
        assert_eq!(d.upload_expiry, DEFAULT_UPLOAD_EXPIRY);
        assert_eq!(d.gc_grace, crate::registry::DEFAULT_GRACE);
        assert!(d.auth, "auth is on unless turned off");
        let file: FileConfig = toml::from_str("auth = \"none\"").unwrap();
        assert!(!ServeConfig::merge(Overrides::default(), file).unwrap().auth);
        let bad: FileConfig = toml::from_str("auth = \"maybe\"").unwrap();
        assert!(ServeConfig::merge(Overrides::default(), bad).is_err());
        let file: FileConfig = toml::from_str("gc-interval = \"0s\"").unwrap();
        assert_eq!(ServeConfig::merge(Overrides::default(), file).unwrap().gc_interval, Duration::ZERO);
        let bad: FileConfig = toml::from_str("upload-expiry = \"soon\"").unwrap();
        assert!(ServeConfig::merge(Overrides::default(), bad).is_err());
        let bad: FileConfig = toml::from_str("cid-profile = \"nope\"").unwrap();
        assert!(ServeConfig::merge(Overrides::default(), bad).is_err());
        assert_eq!(d.api, DEFAULT_API.parse().unwrap());
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        assert!(d.trusted_proxies.is_empty(), "no proxy is trusted unless named");
        let file: FileConfig = toml::from_str("trusted-proxy = [\"10.0.0.1\"]\nmax-uploads = 3").unwrap();
        let c = ServeConfig::merge(Overrides::default(), file).unwrap();
        assert_eq!(c.trusted_proxies, vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(c.max_uploads, 3);
    }
}
