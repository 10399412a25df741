//! Node configuration: command-line flags, `AF_*` environment variables and an optional TOML file,
//! in that order of precedence, over built-in defaults.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_API: &str = "0.0.0.0:5000";
pub const DEFAULT_DATA_DIR: &str = "./data";

/// What `af registry serve` runs with, after merging every source.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    pub sparse_manifests: bool,
    pub cid_profile: crate::unixfs::Profile,
    /// Uploads idle this long are discarded.
    pub upload_expiry: std::time::Duration,
}

/// Default idle time after which an upload session is discarded.
pub const DEFAULT_UPLOAD_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The optional TOML file: every key is optional and named like its flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub api: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub sparse_manifests: Option<bool>,
    pub cid_profile: Option<String>,
    pub upload_expiry: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is invalid: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error(transparent)]
    Profile(#[from] crate::unixfs::UnknownProfile),
    #[error("upload-expiry {0:?} is not a duration such as \"24h\" or \"30m\"")]
    Duration(String),
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
    pub fn merge(
        api: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        sparse_manifests: Option<bool>,
        cid_profile: Option<crate::unixfs::Profile>,
        upload_expiry: Option<std::time::Duration>,
        file: FileConfig,
    ) -> Result<Self, ConfigError> {
        let upload_expiry = match upload_expiry {
            Some(d) => d,
            None => match &file.upload_expiry {
                Some(text) => humantime::parse_duration(text).map_err(|_| ConfigError::Duration(text.clone()))?,
                None => DEFAULT_UPLOAD_EXPIRY,
            },
        };
        let cid_profile = match cid_profile {
            Some(p) => p,
            None => file.cid_profile.as_deref().map(str::parse).transpose()?.unwrap_or_default(),
        };
        Ok(ServeConfig {
            cid_profile,
            upload_expiry,
            api: api.or(file.api).unwrap_or_else(|| DEFAULT_API.parse().expect("default address")),
            data_dir: data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            sparse_manifests: sparse_manifests.or(file.sparse_manifests).unwrap_or(false),
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
        let c = ServeConfig::merge(None, Some("/flag".into()), None, None, None, file).unwrap();
        assert_eq!(c.cid_profile, crate::unixfs::Profile::KuboV1);
        assert_eq!(c.upload_expiry, std::time::Duration::from_secs(90 * 60));
        assert_eq!(c.api, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        let d = ServeConfig::merge(None, None, None, None, None, FileConfig::default()).unwrap();
        assert_eq!(d.cid_profile, crate::unixfs::Profile::UnixfsV1_2025);
        assert_eq!(d.upload_expiry, DEFAULT_UPLOAD_EXPIRY);
        let bad: FileConfig = toml::from_str("upload-expiry = \"soon\"").unwrap();
        assert!(ServeConfig::merge(None, None, None, None, None, bad).is_err());
        let bad: FileConfig = toml::from_str("cid-profile = \"nope\"").unwrap();
        assert!(ServeConfig::merge(None, None, None, None, None, bad).is_err());
        assert_eq!(d.api, DEFAULT_API.parse().unwrap());
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}
