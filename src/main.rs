//! The `af` binary: command-line parsing, logging set-up and error reporting. Everything else is
//! in the library.

mod accounts;

use accounts::{OrgCommand, TokenCommand, UserCommand};
use af_registry::config::{FileConfig, Overrides, ServeConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "af", version, about = "af: a decentralized container registry node")]
struct Cli {
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
}

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

#[derive(Subcommand)]
enum PinCommand {
    /// Keep a manifest (and so its blobs) through GCs even when untagged.
    Add {
        /// <repository>:<tag> (the manifest it points at now) or <repository>@<digest>.
        image: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove a pin.
    Rm {
        /// <repository>:<tag> or <repository>@<digest>.
        image: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// List pins.
    Ls {
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the OCI Distribution API [default: 0.0.0.0:5000].
    #[arg(long, env = "AF_API")]
    api: Option<SocketAddr>,
    /// Address of the IPFS HTTP gateway (/ipfs/<cid>) [default: 0.0.0.0:8080].
    #[arg(long, env = "AF_GATEWAY")]
    gateway: Option<SocketAddr>,
    /// Address of the Kubo-compatible RPC (/api/v0); beyond loopback, writes need an
    /// administrator's credentials and reads see public content only [default: 127.0.0.1:5001].
    #[arg(long, env = "AF_RPC")]
    rpc: Option<SocketAddr>,
    /// Directory for blobs, uploads and the metadata database [default: ./data].
    #[arg(long, env = "AF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// postgres://user:password@host/db: keep the metadata in PostgreSQL, shared by several
    /// nodes [default: SQLite in the data directory].
    #[arg(long, env = "AF_DATABASE_URL")]
    database_url: Option<String>,
    /// Accept manifests whose layers or child manifests are not in the repository (sparse
    /// mirrors of multi-arch images) [default: false: refused with MANIFEST_BLOB_UNKNOWN].
    #[arg(long, env = "AF_SPARSE_MANIFESTS", num_args = 0..=1, default_missing_value = "true")]
    sparse_manifests: Option<bool>,
    /// How blobs become UnixFS DAGs: unixfs-v1-2025 (1 MiB chunks, 1024 links) or kubo-v1
    /// (256 KiB, 174; `ipfs add --cid-version=1`) [default: unixfs-v1-2025].
    #[arg(long, env = "AF_CID_PROFILE")]
    cid_profile: Option<af_registry::unixfs::Profile>,
    /// Discard upload sessions idle this long, e.g. 24h, 30m [default: 24h].
    #[arg(long, env = "AF_UPLOAD_EXPIRY", value_parser = humantime::parse_duration)]
    upload_expiry: Option<std::time::Duration>,
    /// Run a GC this often, e.g. 24h; 0s: never (only `af registry gc`) [default: 24h].
    #[arg(long, env = "AF_GC_INTERVAL", value_parser = humantime::parse_duration)]
    gc_interval: Option<std::time::Duration>,
    /// Content younger than this is never collected; also how long a client may take between
    /// seeing a blob and pushing the manifest that references it [default: 1h].
    #[arg(long, env = "AF_GC_GRACE", value_parser = humantime::parse_duration)]
    gc_grace: Option<std::time::Duration>,
    /// token: every request needs credentials unless the repository is public (the Docker token
    /// flow); none: an open registry for local development [default: token].
    #[arg(long, env = "AF_AUTH")]
    auth: Option<af_registry::config::AuthMode>,
    /// The URL clients reach this node at, e.g. https://registry.example.com, for the token
    /// realm in challenges [default: the scheme and Host of each request].
    #[arg(long, env = "AF_PUBLIC_URL")]
    public_url: Option<String>,
    /// Address of a reverse proxy whose X-Forwarded-* and Forwarded headers are believed
    /// (repeat, or comma-separate in AF_TRUSTED_PROXY) [default: none: those headers are ignored].
    #[arg(long = "trusted-proxy", env = "AF_TRUSTED_PROXY", value_delimiter = ',')]
    trusted_proxy: Option<Vec<std::net::IpAddr>>,
    /// Upload sessions one user (or, anonymous, one address) may hold open [default: 64].
    #[arg(long, env = "AF_MAX_UPLOADS")]
    max_uploads: Option<u64>,
    /// Optional TOML file with the same settings (kebab-case keys); flags and AF_* win over it.
    #[arg(long, env = "AF_CONFIG")]
    config: Option<PathBuf>,
}

fn main() {
    // Everything this process creates (the data directory, databases, blobs, exports) is the
    // user's alone: it holds the token signing key and private layers.
    // SAFETY: umask only sets the process's file mode mask.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // One line: the error and its causes.
        eprintln!("af: {e:#}");
        std::process::exit(1);
    }
}

/// The registry of an existing data directory, alongside any node serving it.
pub async fn attach(data: DataDir, profile: af_registry::unixfs::Profile) -> anyhow::Result<af_registry::registry::Registry> {
    let data_dir = data.data_dir.unwrap_or_else(|| PathBuf::from(af_registry::config::DEFAULT_DATA_DIR));
    anyhow::ensure!(data_dir.is_dir(), "no data directory at {}", data_dir.display());
    Ok(af_registry::server::open_registry(&data_dir, data.database_url.as_deref(), profile, false).await?)
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(f)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AF_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Registry { command: RegistryCommand::Serve(args) } => {
            let file = match &args.config {
                Some(path) => FileConfig::load(path)?,
                None => FileConfig::default(),
            };
            let flags = Overrides {
                api: args.api,
                gateway: args.gateway,
                rpc: args.rpc,
                data_dir: args.data_dir,
                database_url: args.database_url,
                sparse_manifests: args.sparse_manifests,
                cid_profile: args.cid_profile,
                upload_expiry: args.upload_expiry,
                gc_interval: args.gc_interval,
                gc_grace: args.gc_grace,
                auth: args.auth,
                public_url: args.public_url,
                trusted_proxies: args.trusted_proxy,
                max_uploads: args.max_uploads,
            };
            let config = ServeConfig::merge(flags, file)?;
            actix_web::rt::System::new()
                .block_on(af_registry::server::serve(config))
                .context("registry node stopped")
        }
        Command::Registry { command: RegistryCommand::Export { image, output, data } } => {
            let (repo, reference) = af_registry::names::parse_image_reference(&image)?;
            actix_web::rt::System::new().block_on(async {
                // Export makes no blobs, so the profile does not matter.
                let registry = std::sync::Arc::new(attach(data, Default::default()).await?);
                let summary = match &output {
                    None => {
                        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::io::stdout());
                        let summary = af_registry::car::export(registry.clone(), &repo, &reference, &mut out).await?;
                        tokio::io::AsyncWriteExt::flush(&mut out).await.context("cannot write to standard output")?;
                        summary
                    }
                    Some(path) => {
                        // Written aside and renamed, so a failed export leaves no partial CAR.
                        let partial = path.with_extension("partial");
                        let file = tokio::fs::File::create(&partial)
                            .await
                            .with_context(|| format!("cannot create {}", partial.display()))?;
                        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
                        let summary = af_registry::car::export(registry.clone(), &repo, &reference, &mut out).await;
                        let summary = match summary {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = std::fs::remove_file(&partial);
                                return Err(e.into());
                            }
                        };
                        out.into_inner().sync_all().await.with_context(|| format!("cannot write {}", partial.display()))?;
                        std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
                        summary
                    }
                };
                eprintln!("exported {image}: root {}, {} blocks, {} bytes", summary.root, summary.blocks, summary.bytes);
                Ok(())
            })
        }
        Command::Registry { command: RegistryCommand::Import { file, repo, data, cid_profile } } => {
            let input: Box<dyn std::io::Read + Send> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?)
            };
            let input = std::io::BufReader::with_capacity(1 << 20, input);
            actix_web::rt::System::new().block_on(async {
                let registry = attach(data, cid_profile.unwrap_or_default()).await?;
                let s = af_registry::car::import(&registry, input, repo)
                    .await
                    .with_context(|| format!("nothing imported from {}", file.display()))?;
                println!(
                    "imported into {}: {} manifests, {} blobs ({} new) from CAR root {}",
                    s.repository, s.manifests, s.blobs, s.new_blobs, s.car_root
                );
                for (tag, image) in &s.tags {
                    println!("{}:{tag} image CID {}", s.repository, image.as_deref().unwrap_or("(none)"));
                }
                Ok(())
            })
        }
        Command::Registry { command: RegistryCommand::Gc { grace, data } } => actix_web::rt::System::new().block_on(async {
            let registry = attach(data, Default::default()).await?;
            let report = registry.gc(grace.unwrap_or(af_registry::registry::DEFAULT_GRACE)).await.context("gc stopped")?;
            println!("gc: {report}");
            Ok(())
        }),
        Command::Registry { command: RegistryCommand::Pin { command } } => actix_web::rt::System::new().block_on(async {
            match command {
                PinCommand::Add { image, data } => {
                    let (repo, reference) = af_registry::names::parse_image_reference(&image)?;
                    let registry = attach(data, Default::default()).await?;
                    let digest = registry.meta.pin(&repo, &reference).await?;
                    let digest = digest.with_context(|| format!("{image} is not in this registry"))?;
                    println!("pinned {repo}@{digest}");
                }
                PinCommand::Rm { image, data } => {
                    let (repo, reference) = af_registry::names::parse_image_reference(&image)?;
                    let registry = attach(data, Default::default()).await?;
                    let digest = match reference {
                        af_registry::metadata::Reference::Digest(d) => d,
                        tag => registry.meta.get_manifest(&repo, &tag).await?.map(|m| m.digest).with_context(|| format!("{image} is not in this registry"))?,
                    };
                    anyhow::ensure!(registry.meta.unpin(&repo, &digest).await?, "{repo}@{digest} is not pinned");
                    println!("unpinned {repo}@{digest}");
                }
                PinCommand::Ls { data } => {
                    let registry = attach(data, Default::default()).await?;
                    for (repo, digest) in registry.meta.list_pins().await? {
                        println!("{repo}@{digest}");
                    }
                }
            }
            Ok(())
        }),
        Command::Registry { command: RegistryCommand::User { command } } => block_on(accounts::user(command)),
        Command::Registry { command: RegistryCommand::Token { command } } => block_on(accounts::token(command)),
        Command::Registry { command: RegistryCommand::Org { command } } => block_on(accounts::org(command)),
        Command::Registry { command: RegistryCommand::Visibility { repository, visibility, data } } => block_on(async move {
            anyhow::ensure!(af_registry::names::is_valid_name(&repository), "{repository:?} is not a valid repository name");
            let registry = attach(data, Default::default()).await?;
            registry.set_visibility(&repository, visibility == "public").await?;
            println!("{repository} is {visibility}");
            Ok(())
        }),
        Command::Registry { command: RegistryCommand::Verify { data } } => {
            actix_web::rt::System::new().block_on(async {
                // The profile only matters for new uploads, which verify does not make.
                let registry = attach(data, Default::default()).await?;
                let report = registry
                    .verify(|f| println!("corrupt: {}: {}; {}", f.object, f.problem, f.action))
                    .await
                    .context("verification stopped")?;
                println!(
                    "verified {} blobs ({} bytes) and {} blocks: {} corrupt",
                    report.blobs,
                    report.bytes,
                    report.blocks,
                    report.findings.len()
                );
                if !report.findings.is_empty() {
                    std::process::exit(1);
                }
                Ok(())
            })
        }
        Command::Cid { file, profile } => {
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
    }
}
