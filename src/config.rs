//! Node configuration: command-line flags, `AF_*` environment variables and an optional TOML file,
//! in that order of precedence, over built-in defaults.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_API: &str = "0.0.0.0:5000";
pub const DEFAULT_GATEWAY: &str = "0.0.0.0:8080";
pub const DEFAULT_RPC: &str = "127.0.0.1:5001";
pub const DEFAULT_METRICS: &str = "127.0.0.1:5002";
pub const DEFAULT_DATA_DIR: &str = "./data";
/// HTTP connections a listener holds at once, all clients together.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// HTTP connections one client address may hold on a listener.
pub const DEFAULT_PER_ADDRESS: usize = 256;

/// Declares every setting once: its doc (the flag's help), its clap attributes (flag and `AF_*`
/// variable), its TOML key (the flag's name, kebab-case, unless renamed) and its default (none:
/// the setting is optional). From that come [`Overrides`] (what one source gave), [`ServeConfig`]
/// (what the node runs with) and [`ServeConfig::merge`].
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $(#[serde($($serde:tt)*)])?
        $name:ident: $ty:ty $(= $default:expr)?;
    )*) => {
        /// Values one source gave (flags and `AF_*` variables, which clap merges, or the TOML
        /// file); None: not given.
        #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Overrides {
            $( $(#[doc = $doc])* #[arg($($arg)*)] $(#[serde($($serde)*)])? pub $name: Option<$ty>, )*
        }

        /// What `af registry serve` runs with, after merging every source.
        #[derive(Debug, Clone)]
        pub struct ServeConfig {
            $( $(#[doc = $doc])* pub $name: settings!(@type $ty $(, $default)?), )*
        }

        impl ServeConfig {
            /// Flag/env values (already combined by clap) over the file over the defaults.
            pub fn merge(flags: Overrides, file: Overrides) -> Self {
                ServeConfig { $( $name: settings!(@value flags.$name.or(file.$name) $(, $default)?), )* }
            }
        }
    };
    (@type $ty:ty) => { Option<$ty> };
    (@type $ty:ty, $default:expr) => { $ty };
    (@value $given:expr) => { $given };
    (@value $given:expr, $default:expr) => { $given.unwrap_or_else(|| $default) };
}

settings! {
    /// Address of the OCI Distribution API [default: 0.0.0.0:5000].
    #[arg(long, env = "AF_API")]
    api: SocketAddr = DEFAULT_API.parse().expect("default address");
    /// Address of the IPFS HTTP gateway (/ipfs/<cid>) [default: 0.0.0.0:8080].
    #[arg(long, env = "AF_GATEWAY")]
    gateway: SocketAddr = DEFAULT_GATEWAY.parse().expect("default address");
    /// Address of the Kubo-compatible RPC (/api/v0); beyond loopback, writes need an
    /// administrator's credentials and reads see public content only [default: 127.0.0.1:5001].
    #[arg(long, env = "AF_RPC")]
    rpc: SocketAddr = DEFAULT_RPC.parse().expect("default address");
    /// The gateway's public URL, e.g. https://ipfs.example.com, for the image links of the web
    /// page at / [default: the gateway's port on the host the page was asked from].
    #[arg(long, env = "AF_GATEWAY_URL")]
    gateway_url: String;
    /// The gateway's own domain, e.g. dweb.example.com, to serve as a subdomain gateway:
    /// <cid>.ipfs.<domain> and <name>.ipns.<domain>, each content root its own origin
    /// [default: none: a path gateway only].
    #[arg(long, env = "AF_GATEWAY_DOMAIN")]
    gateway_domain: String;
    /// DNS server (ip:port) asked for DNSLink TXT records (`_dnslink.<domain>`) of /ipns/<domain>
    /// and of Host names pointing at the gateway [default: the system's resolvers].
    #[arg(long, env = "AF_DNS_RESOLVER")]
    dns_resolver: SocketAddr;
    /// Address of the Prometheus metrics listener (/metrics); it says how much the registry
    /// holds and serves, so keep it off the internet [default: 127.0.0.1:5002].
    #[arg(long, env = "AF_METRICS")]
    metrics: SocketAddr = DEFAULT_METRICS.parse().expect("default address");
    /// Directory for blobs, uploads and the metadata database [default: ./data].
    #[arg(long, env = "AF_DATA_DIR")]
    data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR);
    /// postgres://user:password@host/db: keep the metadata in PostgreSQL, shared by several
    /// nodes [default: SQLite in the data directory].
    #[arg(long, env = "AF_DATABASE_URL")]
    database_url: String;
    /// Accept manifests whose layers or child manifests are not in the repository (sparse
    /// mirrors of multi-arch images) [default: false: refused with MANIFEST_BLOB_UNKNOWN].
    #[arg(long, env = "AF_SPARSE_MANIFESTS", num_args = 0..=1, default_missing_value = "true")]
    sparse_manifests: bool = false;
    /// How blobs become UnixFS DAGs: unixfs-v1-2025 (1 MiB chunks, 1024 links) or kubo-v1
    /// (256 KiB, 174; `ipfs add --cid-version=1`) [default: unixfs-v1-2025].
    #[arg(long, env = "AF_CID_PROFILE")]
    cid_profile: crate::unixfs::Profile = Default::default();
    /// Discard upload sessions idle this long, e.g. 24h, 30m [default: 24h].
    #[arg(long, env = "AF_UPLOAD_EXPIRY", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    upload_expiry: Duration = DEFAULT_UPLOAD_EXPIRY;
    /// Run a GC this often, e.g. 24h; 0s: never (only `af registry gc`) [default: 24h].
    #[arg(long, env = "AF_GC_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    gc_interval: Duration = DEFAULT_GC_INTERVAL;
    /// Content younger than this is never collected; also how long a client may take between
    /// seeing a blob and pushing the manifest that references it [default: 1h].
    #[arg(long, env = "AF_GC_GRACE", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    gc_grace: Duration = crate::registry::DEFAULT_GRACE;
    /// token: every request needs credentials unless the repository is public (the Docker token
    /// flow); none: an open registry for local development [default: token].
    #[arg(long, env = "AF_AUTH")]
    auth: AuthMode = AuthMode::Token;
    /// The URL clients reach this node at, e.g. https://registry.example.com, for the token
    /// realm in challenges [default: the scheme and Host of each request].
    #[arg(long, env = "AF_PUBLIC_URL")]
    public_url: String;
    /// Address of a reverse proxy whose X-Forwarded-* and Forwarded headers are believed
    /// (repeat, or comma-separate in AF_TRUSTED_PROXY) [default: none: those headers are ignored].
    #[arg(long = "trusted-proxy", env = "AF_TRUSTED_PROXY", value_delimiter = ',')]
    #[serde(rename = "trusted-proxy")]
    trusted_proxies: Vec<std::net::IpAddr> = Vec::new();
    /// Peer ID of a node of the operator's own that may have everything, private content too
    /// (repeat, or comma-separate in AF_TRUSTED_PEER) [default: none: peers get public content].
    #[arg(long = "trusted-peer", env = "AF_TRUSTED_PEER", value_delimiter = ',')]
    #[serde(rename = "trusted-peer")]
    trusted_peers: Vec<PeerIdText> = Vec::new();
    /// Upload sessions one user (or, anonymous, one address) may hold open [default: 64].
    #[arg(long, env = "AF_MAX_UPLOADS")]
    max_uploads: u64 = crate::registry::DEFAULT_MAX_UPLOADS;
    /// HTTP connections each listener (API, gateway, RPC) holds open at once; past it, new ones
    /// wait in the kernel's backlog [default: 4096].
    #[arg(long, env = "AF_MAX_CONNECTIONS")]
    max_connections: usize = DEFAULT_MAX_CONNECTIONS;
    /// HTTP connections one client address may hold open on each listener; past it, new ones
    /// are closed at once (a --trusted-proxy's are not counted) [default: 256].
    #[arg(long, env = "AF_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: usize = DEFAULT_PER_ADDRESS;
    /// libp2p listen address of the swarm (repeat, or comma-separate in AF_SWARM)
    /// [default: /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(long, env = "AF_SWARM", value_delimiter = ',')]
    swarm: Vec<MultiaddrText> = DEFAULT_SWARM.iter().map(|a| a.parse().expect("default address")).collect();
    /// An address others reach this node's swarm at, e.g. /ip4/203.0.113.7/tcp/4001 (repeat, or
    /// comma-separate) [default: none: only what peers observe].
    #[arg(long, env = "AF_SWARM_ANNOUNCE", value_delimiter = ',')]
    swarm_announce: Vec<MultiaddrText> = Vec::new();
    /// Never fetch from peers: the operator's RPC reads and pins and blob pulls see only what
    /// the node holds (the swarm still serves peers) [default: false].
    #[arg(long, env = "AF_OFFLINE", num_args = 0..=1, default_missing_value = "true")]
    offline: bool = false;
    /// A peer to join the DHT through, with /p2p/<peer ID> (repeat, or comma-separate); for the
    /// public IPFS network, its bootstrap list (see the README) [default: none].
    #[arg(long, env = "AF_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<MultiaddrText> = Vec::new();
    /// Swarm connections open at once, all peers together (past it, new ones are refused);
    /// a peer may hold at most 4, and at most 64 may be handshaking at once [default: 512].
    #[arg(long, env = "AF_MAX_PEERS")]
    max_peers: u32 = crate::swarm::DEFAULT_MAX_CONNECTIONS;
    /// How much the node offers to store, e.g. 500GB, 2TiB: `repo/stat`'s StorageMax, by which
    /// IPFS Cluster allocates pins [default: the size of the data directory's disk].
    #[arg(long, env = "AF_STORAGE_MAX")]
    storage_max: ByteSize;
    /// IPFS Cluster's REST API, e.g. http://127.0.0.1:9094: each tagged image is pinned there
    /// on --replicas nodes (private ones only on this node's trusted peers), and images pinned
    /// here take their visibility from the cluster's pin [default: none].
    #[arg(long, env = "AF_CLUSTER_API")]
    cluster_api: String;
    /// user:password for the cluster's REST API, if it asks for them [default: none].
    #[arg(long, env = "AF_CLUSTER_CREDENTIALS")]
    cluster_credentials: String;
    /// Nodes each image is kept on through the cluster, unless `af registry replicas` set
    /// another number for its repository [default: 2].
    #[arg(long, env = "AF_REPLICAS")]
    replicas: u32 = 2;
    /// On SIGTERM or SIGINT, how long requests in flight (uploads, downloads) may take to finish
    /// before they are cut off; an upload cut off resumes after a restart [default: 30s].
    #[arg(long, env = "AF_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    shutdown_timeout: Duration = Duration::from_secs(30);
}

/// Where the swarm listens unless told otherwise.
pub const DEFAULT_SWARM: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];

/// A libp2p multiaddress, checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiaddrText(pub libp2p::Multiaddr);

impl std::str::FromStr for MultiaddrText {
    type Err = libp2p::multiaddr::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(MultiaddrText)
    }
}

/// Default idle time after which an upload session is discarded.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Default time between two scheduled GCs.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(24 * 3600);

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

/// A libp2p peer ID in its usual text form (base58btc of an identity or sha2-256 multihash,
/// `12D3KooW…` or `Qm…`), checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdText(pub String);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a peer ID (base58btc of a multihash, e.g. 12D3KooW…)")]
pub struct NotAPeerId(String);

impl std::str::FromStr for PeerIdText {
    type Err = NotAPeerId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = cid::multibase::decode(format!("z{s}")).map_err(|_| NotAPeerId(s.to_string()))?.1;
        match cid::multihash::Multihash::<64>::from_bytes(&bytes) {
            Ok(mh) if mh.code() == 0x00 || (mh.code() == 0x12 && mh.size() == 32) => Ok(PeerIdText(s.to_string())),
            _ => Err(NotAPeerId(s.to_string())),
        }
    }
}

/// Settings whose text form is their `FromStr`, read from TOML as strings.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(AuthMode, PeerIdText, MultiaddrText, crate::unixfs::Profile, ByteSize);

/// A number of bytes as people write it: `1500000`, `500MB`, `10GB` (powers of 1000, as Kubo's
/// `StorageMax`), `2GiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a size (a number of bytes, or one with kB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
pub struct NotASize(String);

impl std::str::FromStr for ByteSize {
    type Err = NotASize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(NotASize(s.to_string())),
        };
        number.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).map(ByteSize).ok_or_else(|| NotASize(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is invalid: {source}")]
    Parse { path: String, source: toml::de::Error },
}

impl Overrides {
    /// The optional TOML file: every key is optional and named like its flag.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }

    /// The TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Overrides {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!("10GB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000_000));
        assert_eq!("2GiB".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert_eq!("1500".parse::<ByteSize>().unwrap(), ByteSize(1500));
        assert_eq!(file("storage-max = \"5 MB\"").storage_max, Some(ByteSize(5_000_000)));
        for bad in ["", "GB", "10XB", "-1", "99999999999999999999", "1.5GB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let f = file("api = \"127.0.0.1:6000\"\ndata-dir = \"/srv/af\"\ncid-profile = \"kubo-v1\"\nupload-expiry = \"90m\"");
        let flags = Overrides { data_dir: Some("/flag".into()), gc_grace: Some(Duration::from_secs(5)), ..Default::default() };
        let c = ServeConfig::merge(flags, f);
        assert_eq!(c.gc_grace, Duration::from_secs(5));
        assert_eq!(c.gc_interval, DEFAULT_GC_INTERVAL);
        assert_eq!(c.cid_profile, crate::unixfs::Profile::KuboV1);
        assert_eq!(c.upload_expiry, Duration::from_secs(90 * 60));
        assert_eq!(c.api, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        let d = ServeConfig::merge(Overrides::default(), Overrides::default());
        assert_eq!(d.cid_profile, crate::unixfs::Profile::UnixfsV1_2025);
        assert_eq!(d.upload_expiry, DEFAULT_UPLOAD_EXPIRY);
        assert_eq!(d.gc_grace, crate::registry::DEFAULT_GRACE);
        assert_eq!(d.auth, AuthMode::Token, "auth is on unless turned off");
        assert_eq!(ServeConfig::merge(Overrides::default(), file("auth = \"none\"")).auth, AuthMode::None);
        assert_eq!(ServeConfig::merge(Overrides::default(), file("gc-interval = \"0s\"")).gc_interval, Duration::ZERO);
        for bad in ["auth = \"maybe\"", "upload-expiry = \"soon\"", "cid-profile = \"nope\"", "bogus = 1", "trusted-peer = [\"nope\"]"] {
            let err = toml::from_str::<Overrides>(bad).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad} must be refused");
        }
        assert_eq!(d.api, DEFAULT_API.parse().unwrap());
        assert!(d.trusted_proxies.is_empty(), "no proxy is trusted unless named");
        assert!(d.trusted_peers.is_empty(), "no peer is trusted unless named");
        assert!(d.database_url.is_none() && d.public_url.is_none());
        let c = ServeConfig::merge(
            Overrides::default(),
            file("trusted-proxy = [\"10.0.0.1\"]\nmax-uploads = 3\ntrusted-peer = [\"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA\"]"),
        );
        assert_eq!(c.trusted_proxies, vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(c.max_uploads, 3);
        assert_eq!(c.trusted_peers.len(), 1);
    }

    #[test]
    fn peer_ids_are_checked() {
        assert!("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA".parse::<PeerIdText>().is_ok());
        assert!("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N".parse::<PeerIdText>().is_ok());
        for bad in ["", "hello", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "12D3KooW"] {
            assert!(bad.parse::<PeerIdText>().is_err(), "{bad:?}");
        }
    }
}
