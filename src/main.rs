//! The `af` binary: parses the command line, sets up logging, dispatches to `cli`, and reports
//! errors in one line.

mod cli;

use af_registry::config::Overrides;
use clap::{Parser, Subcommand};
use cli::accounts::{OrgCommand, TokenCommand, UserCommand};
use cli::client::Target;
use cli::maintenance::PinCommand;
use cli::DataDir;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "af", version, about = "af: a decentralized container registry node")]
struct Cli {
    /// Log lines as text, or as JSON objects one per line.
    #[arg(long, global = true, env = "AF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registry node and its administration.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Print the root CID a file gets as a UnixFS DAG (like `ipfs add --only-hash -Q`).
    Cid {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// unixfs-v1-2025 (1 MiB chunks, 1024 links) or kubo-v1 (256 KiB, 174: `ipfs add --cid-version=1`).
        #[arg(long, default_value = "unixfs-v1-2025")]
        profile: af_registry::unixfs::Profile,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Run a registry node.
    Serve(Box<ServeArgs>),
    /// Rehash every blob and block of a data directory; quarantine and mark missing what no
    /// longer matches. Exits 1 if anything was corrupt. Safe while the node runs.
    Verify {
        #[command(flatten)]
        data: DataDir,
    },
    /// Exit 0 if the node's API answers (`/v2/`: 200, or 401 with authentication on), else 1
    /// with the reason: the container's HEALTHCHECK, with nothing but the node's own binary.
    Health {
        /// The API's address; an unspecified one (0.0.0.0) is asked on loopback.
        #[arg(long, env = "AF_API", default_value = af_registry::config::DEFAULT_API)]
        api: std::net::SocketAddr,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 4)]
        timeout: u64,
    },
    /// Write an image as a CARv1 whose root is the image CID (an OCI layout as a UnixFS
    /// directory; `ipfs dag import` + `ipfs get` unpack it for `skopeo copy oci:<dir>:<tag>`).
    Export {
        /// <repository>:<tag> or <repository>@<digest>.
        image: String,
        /// Output file [default: standard output].
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Collect garbage: remove untagged, unpinned, unreferenced manifests and the blobs and
    /// blocks nothing kept references, once older than the grace period. Safe while the node runs.
    Gc {
        /// Content younger than this is kept; at least the node's --gc-grace [default: 1h].
        #[arg(long, env = "AF_GC_GRACE", value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Accounts: users log in with a password or an access token.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Access tokens: shown once at creation, stored only as a hash.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Organisations: namespaces whose members have a role (read, write, admin).
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Make a repository public (anyone may pull) or private (the default).
    Visibility {
        repository: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// How many nodes IPFS Cluster keeps each of a repository's images on (0: the node's
    /// --replicas); nodes with --cluster-api apply it.
    Replicas {
        repository: String,
        replicas: u32,
        #[command(flatten)]
        data: DataDir,
    },
    /// Pins: manifests a GC keeps even when no tag points at them.
    Pin {
        #[command(subcommand)]
        command: PinCommand,
    },
    /// Import an image CAR (from `export`): every block and blob is verified before anything is
    /// stored; blobs, manifests and tags are recreated. Safe while the node runs.
    Import {
        /// The CAR file, or `-` for standard input.
        file: PathBuf,
        /// Repository to import into [default: the one the CAR's index.json names].
        #[arg(long)]
        repo: Option<String>,
        #[command(flatten)]
        data: DataDir,
        /// The node's CID profile (as given to `serve`) [default: unixfs-v1-2025].
        #[arg(long, env = "AF_CID_PROFILE")]
        cid_profile: Option<af_registry::unixfs::Profile>,
    },
    /// Log in to a registry; the login is kept where Docker keeps it (shared with docker,
    /// podman and skopeo).
    Login {
        /// host[:port] [default: --registry, AF_REGISTRY or the client config's].
        #[arg(value_name = "REGISTRY")]
        host: Option<String>,
        #[arg(long, short)]
        username: Option<String>,
        /// Read the password or access token from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Forget the login kept for a registry.
    Logout {
        /// host[:port] [default: --registry, AF_REGISTRY or the client config's].
        #[arg(value_name = "REGISTRY")]
        host: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Repositories you may read, with tags, sizes, creation dates and image CIDs.
    List {
        /// `REGISTRY`, `REGISTRY/NAMESPACE` or `NAMESPACE` (only its repositories); the registry
        /// is the first part when it has a dot or a port or is `localhost`, as in references
        /// [default registry: --registry, AF_REGISTRY, or the client config's].
        #[arg(value_name = "[REGISTRY/]NAMESPACE")]
        namespace: Option<String>,
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// An image: digest, platforms, layers with their CIDs, size, build date, image CID,
    /// referrers.
    Info {
        /// `myapp:latest`, `host:port/ns/app:tag` or `...@sha256:<hex>`.
        reference: String,
        /// Print the manifest's bytes as stored, nothing else.
        #[arg(long)]
        raw: bool,
        #[arg(long)]
        json: bool,
        /// The IPFS gateway to link the image CID on, e.g. http://127.0.0.1:8080 [default: an
        /// ipfs:// link].
        #[arg(long, env = "AF_GATEWAY_URL")]
        gateway_url: Option<String>,
        /// IPFS Cluster's REST API, to show where the image is pinned and how far its
        /// replication got, e.g. http://127.0.0.1:9094.
        #[arg(long, env = "AF_CLUSTER_API")]
        cluster_api: Option<String>,
        /// user:password for the cluster's REST API.
        #[arg(long, env = "AF_CLUSTER_CREDENTIALS", hide_env_values = true)]
        cluster_credentials: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Point a tag at what another reference names (same registry; blobs mounted across
    /// repositories).
    Tag {
        source: String,
        destination: String,
        #[command(flatten)]
        target: Target,
    },
    /// Push an image to a registry: from the local engine (DOCKER_HOST: Docker, or podman
    /// system service), an OCI image layout or a docker archive.
    Push {
        /// Where it goes: `myapp:latest`, `host:port/ns/app:tag`; from the engine, also the
        /// image's name there (as typed, else in full).
        reference: String,
        /// The image: `oci:DIR[:TAG]` or `docker-archive:FILE[:REPO:TAG]` [default: the local engine].
        #[arg(long)]
        from: Option<String>,
        /// Every tag of the repository (REFERENCE names the repository, without a tag).
        #[arg(long)]
        all_tags: bool,
        /// No line per blob.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Pull an image from a registry (into the local engine, an OCI image layout or a docker
    /// archive), every blob verified.
    Pull {
        reference: String,
        /// Where it goes: `oci:DIR[:TAG]` (TAG defaults to the reference's) or
        /// `docker-archive:FILE[:REPO:TAG]` [default: the local engine, DOCKER_HOST].
        #[arg(long)]
        to: Option<String>,
        /// Only this image of a multi-platform index: `os/arch[/variant]`, e.g. linux/arm64.
        #[arg(long)]
        platform: Option<String>,
        #[arg(long, short)]
        quiet: bool,
        /// Into a docker archive or the engine: how many times its compressed size a layer may
        /// unpack to (past it, a gzip bomb is refused); layers up to 64 MiB unpacked always pass.
        #[arg(long, default_value_t = af_registry::client::archive::DEFAULT_UNPACK_RATIO)]
        max_unpack_ratio: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a tag, or a manifest by digest (with its tags).
    Delete {
        reference: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    settings: Overrides,
    /// Optional TOML file with the same settings (kebab-case keys); flags and AF_* win over it.
    #[arg(long, env = "AF_CONFIG")]
    config: Option<PathBuf>,
}

fn main() {
    // Everything this process creates (the data directory, databases, blobs, exports) is the
    // user's alone: it holds the token signing key and private layers.
    // SAFETY: umask only sets the process's file mode mask.
    unsafe { libc::umask(0o077) };
    // Two malloc arenas, not glibc's eight per core: with the many threads a busy node runs, the
    // arenas' fragmentation grew its memory with every image pushed (about 6 KiB an image in
    // the soak; under 1 KiB with two). Set before any thread starts.
    // SAFETY: mallopt only tunes the allocator; no allocation is in flight yet.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // One line: the error and its causes, with no control characters (a registry's names
        // and messages end up here: never escape sequences to the user's terminal).
        let line: String = format!("{e:#}").chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        eprintln!("af: {line}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The filter when `AF_LOG` is unset or empty. The web framework's own start-up and shutdown
/// lines (one per worker and listener) are below it; the node logs one line per listener itself.
const DEFAULT_LOG: &str = "info,actix_server=warn,actix_web=warn";

fn run(cli: Cli) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("AF_LOG").ok().filter(|v| !v.trim().is_empty()).and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok()).unwrap_or_else(|| DEFAULT_LOG.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a collector.
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Registry { command } => match command {
            RegistryCommand::Serve(args) => cli::serve(args.settings, args.config),
            RegistryCommand::Export { image, output, data } => cli::images::export(image, output, data),
            RegistryCommand::Import { file, repo, data, cid_profile } => cli::images::import(file, repo, data, cid_profile),
            RegistryCommand::Gc { grace, data } => cli::maintenance::gc(grace, data),
            RegistryCommand::Pin { command } => cli::maintenance::pin(command),
            RegistryCommand::User { command } => cli::block_on(cli::accounts::user(command)),
            RegistryCommand::Token { command } => cli::block_on(cli::accounts::token(command)),
            RegistryCommand::Org { command } => cli::block_on(cli::accounts::org(command)),
            RegistryCommand::Visibility { repository, visibility, data } => cli::maintenance::visibility(repository, visibility, data),
            RegistryCommand::Replicas { repository, replicas, data } => cli::maintenance::replicas(repository, replicas, data),
            RegistryCommand::Verify { data } => cli::maintenance::verify(data),
            RegistryCommand::Health { api, timeout } => cli::block_on(cli::health(api, std::time::Duration::from_secs(timeout))),
            RegistryCommand::Login { host, username, password_stdin, target } => cli::block_on(cli::client::login(target, host, username, password_stdin)),
            RegistryCommand::Logout { host, target } => cli::client::logout(target, host),
            RegistryCommand::List { namespace, json, target } => cli::block_on(cli::client::list(target, namespace, json)),
            RegistryCommand::Info { reference, raw, json, gateway_url, cluster_api, cluster_credentials, target } => {
                let cluster = cluster_api.map(|url| af_registry::cluster::Cluster::new(&url, cluster_credentials.as_deref())).transpose()?;
                cli::block_on(cli::client::info(target, reference, raw, json, gateway_url, cluster))
            }
            RegistryCommand::Tag { source, destination, target } => cli::block_on(cli::client::tag(target, source, destination)),
            RegistryCommand::Push { reference, from, all_tags, quiet, target } => cli::block_on(cli::client::push(target, reference, from, all_tags, quiet)),
            RegistryCommand::Pull { reference, to, platform, quiet, max_unpack_ratio, target } => {
                cli::block_on(cli::client::pull(target, reference, to, platform, quiet, max_unpack_ratio))
            }
            RegistryCommand::Delete { reference, target } => cli::block_on(cli::client::delete(target, reference)),
        },
        Command::Cid { file, profile } => cli::cid(file, profile),
    }
}
