//! A Kubo-compatible RPC (`--rpc`, loopback port 5001 by default): the `/api/v0` calls operators'
//! scripts and monitoring use, in Kubo's shapes, so `ipfs --api /ip4/127.0.0.1/tcp/5001 ...` and
//! `curl http://host:5001/api/v0/repo/stat` keep working.
//!
//! On a loopback bind the caller is the operator: it may read anything and write. Bound beyond
//! loopback, reads see only public content (as on the gateway) and writes need an
//! administrator's credentials.

// Handlers answer early with a finished response; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use crate::auth::Auth;
use crate::blockstore::Owner;
use crate::dag::{DagError, Node, Reader};
use crate::exposure::Audience;
use crate::registry::Registry;
use crate::swarm::keeper::Keeper;
use crate::unixfs::{self, DagBlock, Importer};
use actix_multipart::Multipart;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;

mod names;
mod pins;

/// Kubo's default fan-out for `ipfs add`.
const KUBO_MAX_LINKS: usize = 174;
const KUBO_CHUNK: usize = 256 * 1024;
/// The widest file node `add` makes: its links (~40 bytes each) stay far under a 2 MiB block.
const MAX_FILE_LINKS: usize = 8192;
/// The most one file of an `add` that stores (not `--only-hash`) holds, counting its blocks.
const MAX_ADD: usize = 128 << 20;

pub struct RpcState {
    pub registry: Arc<Registry>,
    /// What may leave the node (the same policy as the gateway's).
    pub policy: Arc<crate::exposure::Policy>,
    pub auth: Option<Arc<Auth>>,
    pub identity: crate::identity::Identity,
    /// The swarm (peers, Bitswap).
    pub swarm: crate::swarm::Handle,
    /// Never fetch from peers (`--offline`).
    pub offline: bool,
    pub data_dir: std::path::PathBuf,
    /// Bound to loopback only: the caller is the operator.
    pub loopback: bool,
    /// The address the RPC listens on (its own origin, for the cross-site checks).
    pub bind: std::net::SocketAddr,
    /// Writes that may run at once ([`CONCURRENT_WRITES`]).
    pub writes: tokio::sync::Semaphore,
    /// What the node offers to store (`--storage-max`; None: its disk's size).
    pub storage_max: Option<u64>,
    /// What `repo/gc` spares (`--gc-grace`), as the scheduled GC does.
    pub gc_grace: std::time::Duration,
    /// IPFS Cluster (`--cluster-api`): what its pins say of the images pinned here.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Kubo's error body.
fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({"Message": message.to_string(), "Code": 0, "Type": "error"}))
}

/// An answer the request itself caused (a bad argument, content that is not there or not a
/// file, a pin that does not exist). Kubo answers 500 for most of these; its clients (its CLI,
/// kubo-rpc-client, IPFS Cluster) read the error body whatever the status, so 400 keeps 5xx for
/// the node's own failures, as HTTP means it.
pub(crate) fn bad_request(message: impl std::fmt::Display) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message)
}

fn dag_failure(e: DagError) -> HttpResponse {
    match e {
        DagError::Missing(cid) => bad_request(format!("block was not found locally (offline): {cid}")),
        e @ (DagError::NotFound(_) | DagError::Unsupported(_) | DagError::TooMuchWork(_)) => bad_request(e),
        // Stored or fetched content that does not decode: the content's fault, as a gateway says.
        e @ DagError::Malformed { .. } => error(StatusCode::BAD_GATEWAY, e),
        DagError::Registry(e @ crate::registry::RegistryError::Metadata(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        e @ DagError::Registry(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn args(req: &HttpRequest, key: &str) -> Vec<String> {
    form_urlencoded::parse(req.query_string().as_bytes()).filter(|(k, _)| k == key).map(|(_, v)| v.into_owned()).collect()
}

fn arg(req: &HttpRequest, key: &str) -> Option<String> {
    args(req, key).into_iter().next()
}

fn flag(req: &HttpRequest, key: &str) -> Option<bool> {
    arg(req, key).map(|v| v.is_empty() || v == "true" || v == "1")
}

/// `<cid>[/path...]` or `/ipfs/<cid>[/path...]`.
fn parse_path(s: &str) -> Result<(Cid, Vec<String>), HttpResponse> {
    let s = s.strip_prefix("/ipfs/").unwrap_or(s);
    let mut parts = s.split('/').filter(|p| !p.is_empty());
    let first = parts.next().ok_or_else(|| bad_request("argument \"ipfs-path\" is required"))?;
    let cid = Cid::try_from(first).map_err(|e| bad_request(format!("invalid path {s:?}: {e}")))?;
    Ok((cid, parts.map(str::to_string).collect()))
}

pub fn configure(state: Arc<RpcState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .route("/api/v0/{command:.*}", web::to(dispatch))
            .default_service(web::to(|| async { error(StatusCode::NOT_FOUND, "404 page not found") }));
    }
}

/// Every command `dispatch` answers (what metrics may name; anything else is `<unknown>`).
const COMMANDS: &[&str] = &[
    "add",
    "bitswap/ledger",
    "bitswap/stat",
    "block/get",
    "block/put",
    "block/stat",
    "cat",
    "dag/export",
    "dag/import",
    "id",
    "ls",
    "name/publish",
    "name/resolve",
    "pin/add",
    "pin/ls",
    "pin/rm",
    "pin/update",
    "registry/import",
    "repo/gc",
    "repo/stat",
    "resolve",
    "routing/findprovs",
    "routing/provide",
    "routing/put",
    "swarm/addrs",
    "swarm/connect",
    "swarm/disconnect",
    "swarm/peers",
    "version",
];

pub fn is_command(command: &str) -> bool {
    COMMANDS.contains(&command.trim_end_matches('/'))
}

const READS: &[&str] = &[
    "id",
    "version",
    "repo/stat",
    "block/get",
    "block/stat",
    "cat",
    "ls",
    "pin/ls",
    "dag/export",
    "swarm/peers",
    "swarm/addrs",
    "bitswap/stat",
    "bitswap/ledger",
    "resolve",
    "name/resolve",
];

/// Reads that tell the node's own business (its size right after a push, its peers and their
/// addresses, what went to each): the operator's alone, wherever the RPC is bound.
const OPERATOR_READS: &[&str] = &["repo/stat", "swarm/peers", "swarm/addrs", "bitswap/stat", "bitswap/ledger"];

/// Kubo's rule against websites in the operator's browser: a request that names an origin
/// (`Origin`, else `Referer`) must come from the RPC's own; and on loopback the `Host` must be a
/// loopback name, so a DNS name rebound to 127.0.0.1 reaches nothing.
fn same_origin(req: &HttpRequest, state: &RpcState) -> Result<(), HttpResponse> {
    let port = state.bind.port();
    let mut own: Vec<String> = ["127.0.0.1", "localhost", "[::1]"].iter().map(|h| format!("{h}:{port}")).collect();
    if !state.bind.ip().is_unspecified() {
        own.push(state.bind.to_string());
    }
    let forbidden = |why: String| error(StatusCode::FORBIDDEN, format!("403 - Forbidden: {why}"));
    let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let origin = header("origin").map(str::to_string).or_else(|| {
        // A Referer's origin: scheme://host[:port], up to the path.
        header("referer").map(|r| r.splitn(4, '/').take(3).collect::<Vec<_>>().join("/"))
    });
    if let Some(origin) = origin {
        let host = origin.strip_prefix("http://").unwrap_or("");
        let allowed = own.iter().any(|h| h == host) || (!state.loopback && Some(host) == req.headers().get("host").and_then(|h| h.to_str().ok()));
        if !allowed {
            return Err(forbidden(format!("origin {origin:?} is not this RPC's")));
        }
    }
    // Any loopback name will do, on any port (a proxy on this machine, as IPFS Cluster's, names
    // its own); a DNS name never does, whatever address it resolves to.
    if state.loopback {
        let host = header("host").unwrap_or("");
        if !is_loopback_host(host) {
            return Err(forbidden(format!("host {host:?} is not a loopback name")));
        }
    }
    Ok(())
}

/// `127.x.y.z[:port]`, `localhost[:port]` or `[::1][:port]`.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn dispatch(req: HttpRequest, body: web::Payload, state: web::Data<RpcState>) -> HttpResponse {
    if let Err(resp) = same_origin(&req, &state) {
        return resp;
    }
    let command = req.match_info().query("command").trim_end_matches('/').to_string();
    let read = READS.contains(&command.as_str());
    // Kubo takes POST only (a browser cannot be tricked into a cross-site POST with a body the
    // way it can into a GET); monitoring's GETs of read-only calls are accepted too.
    if req.method() != Method::POST && !(read && req.method() == Method::GET) {
        return error(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on /api/v0/{command}", req.method()));
    }
    if (!read || OPERATOR_READS.contains(&command.as_str())) && !state.loopback {
        if let Err(resp) = require_admin(&req, &state).await {
            return resp;
        }
    }
    let reg = state.registry.clone();
    match command.as_str() {
        "id" => {
            let me = state.swarm.peer_id;
            let addresses: Vec<String> = state.swarm.addresses().await.unwrap_or_default().iter().map(|a| format!("{a}/p2p/{me}")).collect();
            HttpResponse::Ok().json(json!({
                "ID": state.identity.peer_id,
                "PublicKey": state.identity.public_key,
                "Addresses": addresses,
                "AgentVersion": format!("af-registry/{}", env!("CARGO_PKG_VERSION")),
                "Protocols": state.swarm.protocols(),
            }))
        }
        "version" => HttpResponse::Ok().json(json!({
            // Semver, as the Kubo CLI requires of the node it talks to.
            "Version": env!("CARGO_PKG_VERSION"),
            "Commit": "",
            "Repo": "16",
            "System": format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
            "Golang": "",
        })),
        "repo/stat" => repo_stat(&req, &state).await,
        "repo/gc" => repo_gc(&state).await,
        "resolve" => match readable_path(&req, &state).await {
            Ok((_, cid)) => HttpResponse::Ok().json(json!({"Path": format!("/ipfs/{cid}")})),
            Err(resp) => resp,
        },
        "swarm/peers" => match state.swarm.peers().await {
            Ok(peers) => HttpResponse::Ok().json(json!({"Peers": peers
                .iter()
                .map(|(peer, addr)| json!({"Addr": addr.to_string(), "Peer": peer.to_string(), "Latency": "", "Muxer": "", "Direction": 0, "Streams": null}))
                .collect::<Vec<_>>()})),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        // Kubo's `swarm addrs`: the addresses the routing table keeps, by peer.
        "swarm/addrs" => match state.swarm.known_addresses().await {
            Ok(known) => {
                let addrs: serde_json::Map<String, serde_json::Value> =
                    known.into_iter().map(|(peer, addrs)| (peer.to_string(), json!(addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()))).collect();
                HttpResponse::Ok().json(json!({"Addrs": addrs}))
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        "swarm/connect" => {
            let mut out = Vec::new();
            for a in args(&req, "arg") {
                let addr: libp2p::Multiaddr = match a.parse() {
                    Ok(addr) => addr,
                    Err(e) => return bad_request(format!("{a:?} is not a multiaddress: {e}")),
                };
                match state.swarm.connect(addr).await {
                    Ok(peer) => out.push(format!("connect {peer} success")),
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("connect {a} failure: {e}")),
                }
            }
            HttpResponse::Ok().json(json!({"Strings": out}))
        }
        "swarm/disconnect" => {
            let mut out = Vec::new();
            for a in args(&req, "arg") {
                let peer = a.parse::<libp2p::Multiaddr>().ok().and_then(|m| crate::swarm::peer_of(&m)).or_else(|| a.parse().ok());
                let Some(peer) = peer else { return bad_request(format!("{a:?} names no peer")) };
                match state.swarm.disconnect(peer).await {
                    Ok(true) => out.push(format!("disconnect {peer} success")),
                    Ok(false) => return bad_request(format!("disconnect {peer} failure: not connected")),
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            }
            HttpResponse::Ok().json(json!({"Strings": out}))
        }
        "routing/findprovs" => {
            let cid = match arg(&req, "arg").map(|a| parse_path(&a)) {
                Some(Ok((cid, _))) => cid,
                Some(Err(resp)) => return resp,
                None => return bad_request("argument \"key\" is required"),
            };
            let n = match arg(&req, "num-providers").map(|v| v.parse::<usize>()) {
                None => 20,
                Some(Ok(n)) if (1..=1000).contains(&n) => n,
                Some(_) => return bad_request("num-providers must be 1..1000"),
            };
            match state.swarm.find_providers(cid, n).await {
                // Kubo's stream of routing events, one line each: type 4 is a provider.
                Ok(found) => {
                    let lines: String = found
                        .iter()
                        .map(|(peer, addrs)| {
                            let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                            format!("{}\n", json!({"Extra": "", "ID": "", "Responses": [{"Addrs": addrs, "ID": peer.to_string()}], "Type": 4}))
                        })
                        .collect();
                    HttpResponse::Ok().insert_header(("X-Chunked-Output", "1")).content_type("application/json").body(lines)
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        "routing/provide" => {
            let mut lines = String::new();
            for a in args(&req, "arg") {
                let cid = match parse_path(&a) {
                    Ok((cid, _)) => cid,
                    Err(resp) => return resp,
                };
                // Only what anyone may fetch is announced: a provider record tells the world the node holds it.
                match state.policy.may_send(&cid, &Audience::Anyone).await {
                    Ok(true) => {}
                    Ok(false) => return bad_request(format!("{cid} is not public content this node holds")),
                    Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
                }
                if let Err(e) = state.swarm.provide(cid).await {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                }
                lines.push_str(&format!("{}\n", json!({"Extra": "", "ID": "", "Responses": null, "Type": 0})));
            }
            HttpResponse::Ok().insert_header(("X-Chunked-Output", "1")).content_type("application/json").body(lines)
        }
        "bitswap/ledger" => {
            let Some(peer) = arg(&req, "arg").and_then(|a| a.parse::<libp2p::PeerId>().ok()) else {
                return bad_request("argument \"peer\" is required: a peer ID");
            };
            let l = state.swarm.bitswap.ledger(&peer);
            HttpResponse::Ok().json(json!({
                "Peer": peer.to_string(),
                // Kubo's debt ratio: what we sent over what we received.
                "Value": l.sent as f64 / (l.received as f64 + 1.0),
                "Sent": l.sent,
                "Recv": l.received,
                "Exchanged": l.exchanged,
            }))
        }
        "bitswap/stat" => {
            let stats = &state.swarm.bitswap.stats;
            let peers = state.swarm.peers().await.unwrap_or_default();
            HttpResponse::Ok().json(json!({
                "ProvideBufLen": 0,
                "Wantlist": [],
                "Peers": peers.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>(),
                "BlocksReceived": stats.blocks_received.load(std::sync::atomic::Ordering::Relaxed),
                "DataReceived": 0,
                "DupBlksReceived": 0,
                "DupDataReceived": 0,
                "MessagesReceived": stats.messages_received.load(std::sync::atomic::Ordering::Relaxed),
                "BlocksSent": stats.blocks_sent.load(std::sync::atomic::Ordering::Relaxed),
                "DataSent": stats.data_sent.load(std::sync::atomic::Ordering::Relaxed),
            }))
        }
        "block/get" => match readable_path(&req, &state).await {
            Ok((reader, cid)) => match reader.block(&cid).await {
                Ok(bytes) => stream_response(bytes),
                Err(e) => dag_failure(e),
            },
            Err(resp) => resp,
        },
        "block/stat" => match readable_path(&req, &state).await {
            Ok((reader, cid)) => match reader.block(&cid).await {
                Ok(bytes) => HttpResponse::Ok().json(json!({"Key": cid.to_string(), "Size": bytes.len()})),
                Err(e) => dag_failure(e),
            },
            Err(resp) => resp,
        },
        "cat" => match readable_path(&req, &state).await {
            Ok((reader, cid)) => cat(reader, cid).await,
            Err(resp) => resp,
        },
        "ls" => match readable_path(&req, &state).await {
            Ok((reader, cid)) => ls(&reader, cid).await,
            Err(resp) => resp,
        },
        "dag/export" => match readable_path(&req, &state).await {
            Ok((reader, cid)) => HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("application/vnd.ipld.car").streaming(crate::dag::car::whole(reader, cid)),
            Err(resp) => resp,
        },
        "pin/ls" => pins::ls(&req, &state).await,
        "registry/import" => registry_import(&req, &state).await,
        "pin/add" => match gc_shared(&reg).await {
            Ok(lock) => pins::add(&req, &state, lock).await,
            Err(resp) => resp,
        },
        "pin/update" => match gc_shared(&reg).await {
            Ok(_lock) => pins::update(&req, &state).await,
            Err(resp) => resp,
        },
        "pin/rm" => pins::rm(&req, &state).await,
        "routing/put" => names::routing_put(&req, body, &state).await,
        "name/publish" => names::publish(&req, &state).await,
        "name/resolve" => names::resolve(&req, &state).await,
        "block/put" | "add" | "dag/import" => {
            // Bounded in total, not only per request.
            let Ok(_permit) = state.writes.acquire().await else {
                return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
            };
            // Held shared from the first block stored to the pin, as publishing a blob holds
            // it: a GC (exclusive) sees either none of it or the pin.
            let _gc = match gc_shared(&reg).await {
                Ok(lock) => lock,
                Err(resp) => return resp,
            };
            match command.as_str() {
                "block/put" => block_put(&req, body, &reg).await,
                "add" => add(&req, body, &reg).await,
                _ => dag_import(&req, body, &state.policy).await,
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("unknown command {command:?}")),
    }
}

/// The GC lock, shared (see `gc`).
async fn gc_shared(reg: &Arc<Registry>) -> Result<crate::storage::GcLock, HttpResponse> {
    reg.gc_shared_lock().await.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

async fn require_admin(req: &HttpRequest, state: &RpcState) -> Result<(), HttpResponse> {
    let denied =
        || error(StatusCode::FORBIDDEN, "this call needs the operator's credentials: an administrator's password or access token, or a token whose scope is registry:operator:*");
    let Some(auth) = state.auth.as_ref().filter(|a| a.config.enabled) else { return Err(denied()) };
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    match auth.caller(header, &peer).await {
        Ok(caller) if crate::auth::Auth::is_operator(&caller) => Ok(()),
        _ => Err(denied()),
    }
}

/// Who the caller is to the exposure policy: on loopback, or with an administrator's
/// credentials, the operator; anyone else sees only public content (as on the gateway).
async fn audience(req: &HttpRequest, state: &RpcState) -> Audience {
    if state.loopback || (req.headers().contains_key("authorization") && require_admin(req, state).await.is_ok()) {
        Audience::Operator
    } else {
        Audience::Anyone
    }
}

/// A reader for this caller, and the `arg` path resolved through it to a CID it may read.
async fn readable_path(req: &HttpRequest, state: &RpcState) -> Result<(Arc<Reader>, Cid), HttpResponse> {
    let raw = arg(req, "arg").ok_or_else(|| bad_request("argument \"cid\" is required"))?;
    let (root, path) = parse_path(&raw)?;
    // The operator's reads fetch what the node lacks from peers, as Kubo's do; anyone else's
    // never make the node fetch.
    let reader = match audience(req, state).await {
        Audience::Operator => fetching_reader(req, state, &root).0,
        other => Reader::new(&state.policy, other),
    };
    let chain = reader.resolve(root, &path).await.map_err(dag_failure)?;
    Ok((reader, *chain.last().expect("a chain has a target")))
}

/// `repo/gc`: a GC now, as `af registry gc` runs it (content younger than the grace period
/// stays, unlike Kubo's); one line per block removed, Kubo's `{"Key": {"/": cid}}`.
async fn repo_gc(state: &RpcState) -> HttpResponse {
    match state.registry.gc_listing(state.gc_grace).await {
        Ok((report, removed)) => {
            tracing::info!(%report, "repo/gc");
            chunked_json(removed.iter().map(|cid| json!({"Key": {"/": cid.to_string()}})).collect())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn stream_response(bytes: Bytes) -> HttpResponse {
    HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("text/plain").body(bytes)
}

async fn repo_stat(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let (size, blocks) = match state.registry.usage().await {
        Ok(u) => u,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let max = state.storage_max.unwrap_or_else(|| disk_capacity(&state.data_dir));
    if flag(req, "size-only").unwrap_or(false) {
        return HttpResponse::Ok().json(json!({"RepoSize": size, "StorageMax": max}));
    }
    HttpResponse::Ok().json(json!({
        "RepoSize": size,
        "StorageMax": max,
        "NumObjects": blocks,
        "RepoPath": state.data_dir.display().to_string(),
        "Version": "fs-repo@16",
    }))
}

/// The size of the file system holding the data directory.
fn disk_capacity(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return 0 };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_blocks as u64 * st.f_frsize as u64
}

async fn cat(reader: Arc<Reader>, cid: Cid) -> HttpResponse {
    let size = match reader.file_size(&cid).await {
        Ok(Some(s)) => s,
        Ok(None) => return bad_request("this dag node is a directory"),
        Err(e) => return dag_failure(e),
    };
    HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("text/plain").streaming(crate::dag::file_stream(reader, cid, 0, size))
}

async fn ls(reader: &Reader, cid: Cid) -> HttpResponse {
    let links = match reader.node(&cid).await {
        Ok(Node::File { links, .. }) => links,
        Ok(dir @ (Node::Directory { .. } | Node::Shard { .. })) => match reader.entries(dir).await {
            Ok(l) => l,
            Err(e) => return dag_failure(e),
        },
        Ok(_) => Vec::new(),
        Err(e) => return dag_failure(e),
    };
    let mut out = Vec::new();
    for l in links {
        // A raw leaf is a file whose size its link already gives: no need to read (and rehash) it.
        if l.cid.codec() == unixfs::RAW {
            out.push(json!({"Name": l.name, "Hash": l.cid.to_string(), "Size": l.tsize, "Type": 2, "Target": ""}));
            continue;
        }
        let (kind, size) = match reader.node(&l.cid).await {
            Ok(Node::Directory { .. } | Node::Shard { .. }) => (1, 0),
            Ok(Node::File { size, .. }) => (2, size),
            _ => (2, l.tsize),
        };
        out.push(json!({"Name": l.name, "Hash": l.cid.to_string(), "Size": size, "Type": kind, "Target": ""}));
    }
    HttpResponse::Ok().json(json!({"Objects": [{"Hash": cid.to_string(), "Links": out}]}))
}

/// Every block of the DAG under `root` is here, intact (so a pin can keep it): the gateway's
/// depth-first CAR walk, drained.
async fn check_complete(policy: &Arc<crate::exposure::Policy>, root: Cid) -> Result<(), String> {
    let reader = Reader::new(policy, Audience::Operator);
    let mut blocks = std::pin::pin!(crate::dag::car::whole(reader, root));
    while let Some(block) = blocks.next().await {
        block.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// An operator's reader that fetches missing blocks from peers (kept, recorded under `root`),
/// with the keeper to flush before the fetched blocks may be counted on.
/// `offline=true` (Kubo's global option) keeps one request to what the node holds.
fn fetching_reader(req: &HttpRequest, state: &RpcState, root: &Cid) -> (Arc<Reader>, Option<Keeper>) {
    fetching_reader_for(req, state, Owner::Pin(root.to_string()))
}

/// [`fetching_reader`], keeping what it fetches for `owner`.
fn fetching_reader_for(req: &HttpRequest, state: &RpcState, owner: Owner) -> (Arc<Reader>, Option<Keeper>) {
    if state.offline || flag(req, "offline") == Some(true) {
        return (Reader::new(&state.policy, Audience::Operator), None);
    }
    let keeper = Keeper::new(state.registry.clone(), owner);
    (Reader::over(crate::swarm::fetch::Fetching::new(state.registry.clone(), state.swarm.clone(), keeper.clone())), Some(keeper))
}

/// An operator's reader that fetches what the node lacks from peers without keeping it (unless
/// offline).
fn passing_reader(req: &HttpRequest, state: &RpcState) -> Arc<Reader> {
    if state.offline || flag(req, "offline") == Some(true) {
        return Reader::new(&state.policy, Audience::Operator);
    }
    Reader::over(crate::swarm::fetch::Fetching::passing(state.registry.clone(), state.swarm.clone()))
}

/// Imports the OCI image layout at CID `arg` (an image CID another node gives its tags) into
/// repository `repo` (default: the one its index.json names): its manifests and tags now, read
/// from peers; its layers recorded by their roots and fetched from peers when first pulled.
async fn registry_import(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let Some(raw) = arg(req, "arg") else { return bad_request("argument \"cid\" is required") };
    let root = match parse_path(&raw) {
        Ok((root, path)) if path.is_empty() => root,
        Ok(_) => return bad_request("an image CID, without a path"),
        Err(resp) => return resp,
    };
    let reader = passing_reader(req, state);
    match crate::car::import_dag(&state.registry, reader, root, arg(req, "repo")).await {
        Ok(s) => HttpResponse::Ok().json(json!({
            "Repository": s.repository,
            "Manifests": s.manifests,
            "Blobs": s.blobs,
            "NewBlobs": s.new_blobs,
            "Tags": s.tags.iter().map(|(tag, image)| json!({"Tag": tag, "Image": image})).collect::<Vec<_>>(),
        })),
        // What the image holds is the caller's problem (a manifest the registry refuses); the
        // node's own failures are ours.
        Err(
            e @ crate::car::CarError::Registry(
                crate::registry::RegistryError::Manifest(_) | crate::registry::RegistryError::ManifestReference(_) | crate::registry::RegistryError::ManifestDigest { .. },
            ),
        ) => bad_request(format!("nothing more imported from {root}: {e}")),
        Err(e @ (crate::car::CarError::Registry(_) | crate::car::CarError::Metadata(_) | crate::car::CarError::Task(_))) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => bad_request(format!("nothing imported from {root}: {e}")),
    }
}

/// What a multipart body delivers: a part's bytes, piece by piece, then its end (with its file
/// name, if it has one).
enum Part {
    Data(Bytes),
    End(Option<String>),
}

/// The parts of a multipart body, pulled one piece at a time: nothing is buffered here, and
/// dropping it (the client left, or the handler refused) ends the request's work.
struct Parts {
    multipart: Multipart,
    field: Option<(actix_multipart::Field, Option<String>)>,
}

impl Parts {
    fn new(req: &HttpRequest, body: web::Payload) -> Parts {
        Parts { multipart: Multipart::new(req.headers(), body), field: None }
    }

    async fn next(&mut self) -> Option<Result<Part, HttpResponse>> {
        loop {
            if let Some((field, name)) = &mut self.field {
                return match field.next().await {
                    Some(Ok(chunk)) => Some(Ok(Part::Data(chunk))),
                    Some(Err(e)) => Some(Err(bad_request(format!("reading the request: {e}")))),
                    None => {
                        let name = name.take();
                        self.field = None;
                        Some(Ok(Part::End(name)))
                    }
                };
            }
            let field = match self.multipart.next().await? {
                Ok(f) => f,
                Err(e) => return Some(Err(bad_request(format!("malformed multipart body: {e}")))),
            };
            let name = field
                .content_disposition()
                .and_then(|d| d.get_filename())
                .map(|n| form_urlencoded::parse(format!("x={n}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default());
            if field.content_type().is_some_and(|t| t.essence_str() == "application/x-directory") {
                return Some(Err(bad_request("directories are not supported by this node's add (add files one by one)")));
            }
            self.field = Some((field, name));
        }
    }
}

/// Writes through the RPC at once: each holds up to [`MAX_ADD`] (`add`) or a few MiB.
pub const CONCURRENT_WRITES: usize = 2;

async fn block_put(req: &HttpRequest, body: web::Payload, reg: &Registry) -> HttpResponse {
    let codec = match arg(req, "cid-codec").or_else(|| arg(req, "format")).as_deref() {
        None => unixfs::RAW,
        Some("protobuf") | Some("v0") => unixfs::DAG_PB,
        Some(name) => match crate::dag::codec_named(name) {
            Some(c) => c,
            None => return bad_request(format!("cid-codec {name:?} is not supported (raw, dag-pb, dag-cbor, dag-json, json, cbor, libp2p-key)")),
        },
    };
    let mhtype = arg(req, "mhtype").unwrap_or_else(|| "sha2-256".into());
    let Some((mh_code, default_len)) = crate::blockstore::multihash_named(&mhtype) else {
        return bad_request(format!("mhtype {mhtype:?} is not supported"));
    };
    // -1, Kubo's default, is the hash's own length.
    let mh_len = match arg(req, "mhlen").map(|v| v.parse::<i64>()) {
        None | Some(Ok(-1)) => default_len,
        Some(Ok(n)) if (0..=64).contains(&n) => n as usize,
        _ => return bad_request("mhlen is not a length from 0 to 64, or -1"),
    };
    let pin = flag(req, "pin").unwrap_or(false);
    let mut parts = Parts::new(req, body);
    let mut out = Vec::new();
    let mut data = Vec::new();
    // Each block is stored when its part ends: one block in memory at a time.
    while let Some(part) = parts.next().await {
        match part {
            Ok(Part::Data(chunk)) => {
                if data.len() + chunk.len() > crate::car::MAX_BLOCK {
                    return bad_request("blocks are limited to 2 MiB");
                }
                data.extend_from_slice(&chunk);
            }
            Ok(Part::End(_)) => {
                let data = std::mem::take(&mut data);
                if codec == unixfs::DAG_PB && unixfs::decode_node(&data).is_err() {
                    return bad_request("the block is not valid dag-pb");
                }
                let digest = match crate::blockstore::hash_with(mh_code, if mh_code == 0 { data.len() } else { mh_len }, &data) {
                    Ok(d) => d,
                    Err(e) => return bad_request(format!("mhtype {mhtype}, mhlen {mh_len}: {e}")),
                };
                let cid = match cid::multihash::Multihash::<64>::wrap(mh_code, &digest) {
                    Ok(mh) => cid::Cid::new_v1(codec, mh),
                    Err(e) => return bad_request(format!("the block's multihash: {e}")),
                };
                out.push(json!({"Key": cid.to_string(), "Size": data.len()}));
                if let Err(e) = reg.store_blocks(vec![(cid, data)], Owner::Pin(cid.to_string())).await {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                }
                if pin {
                    if let Err(e) = reg.pin_block(&cid).await {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                    }
                }
            }
            Err(resp) => return resp,
        }
    }
    match out.len() {
        1 => HttpResponse::Ok().json(out.remove(0)),
        _ => chunked_json(out),
    }
}

/// Several JSON values, one per line, as Kubo streams a command's outputs.
fn chunked_json(values: Vec<serde_json::Value>) -> HttpResponse {
    let body: String = values.iter().map(|v| format!("{v}\n")).collect();
    HttpResponse::Ok().insert_header(("X-Chunked-Output", "1")).content_type("application/json").body(body)
}

/// What one leaf or node costs while a file is added, beyond its data.
const BLOCK_OVERHEAD: usize = 256;
/// Blocks recorded in one transaction.
const RECORD_BATCH: usize = 4096;

async fn add(req: &HttpRequest, body: web::Payload, reg: &Registry) -> HttpResponse {
    let only_hash = flag(req, "only-hash").unwrap_or(false);
    let cid_version = arg(req, "cid-version").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let raw_leaves = flag(req, "raw-leaves").unwrap_or(cid_version == 1);
    if cid_version != 1 || !raw_leaves {
        return bad_request("this node adds with CIDv1 and raw leaves only: pass --cid-version=1");
    }
    let chunk = match arg(req, "chunker").as_deref() {
        None | Some("default") => KUBO_CHUNK,
        Some(c) => match c.strip_prefix("size-").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if (1..=(1 << 20)).contains(&n) => n,
            _ => return bad_request(format!("chunker {c:?} is not supported (size-N, N up to 1048576)")),
        },
    };
    let max_links = match arg(req, "max-file-links") {
        None => KUBO_MAX_LINKS,
        Some(v) => match v.parse::<usize>() {
            // One link per node would never finish a tree; past a few thousand a node outgrows a block.
            Ok(n) if (2..=MAX_FILE_LINKS).contains(&n) => n,
            _ => return bad_request(format!("max-file-links {v:?} is not between 2 and {MAX_FILE_LINKS}")),
        },
    };
    let pin = flag(req, "pin").unwrap_or(true);
    let mut parts = Parts::new(req, body);
    let mut importer = Importer::with_layout(chunk, max_links);
    // Stored blocks are kept inline, so a file being added is held until its end, counting its
    // blocks as well as its bytes; only-hash keeps nothing.
    let (mut blocks, mut data): (Vec<DagBlock>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    while let Some(part) = parts.next().await {
        match part {
            Ok(Part::Data(chunk)) => {
                if only_hash {
                    importer.update(&chunk, &mut ());
                    continue;
                }
                importer.update(&chunk, &mut blocks);
                data.extend_from_slice(&chunk);
                if data.len() + blocks.len() * BLOCK_OVERHEAD > MAX_ADD {
                    return bad_request(
                        "a file added through the RPC is limited to 128 MiB, counting 256 bytes per block (only-hash is not); push large content through the OCI API",
                    );
                }
            }
            Ok(Part::End(name)) => {
                let finished = std::mem::replace(&mut importer, Importer::with_layout(chunk, max_links));
                let root = if only_hash {
                    finished.finish(&mut ())
                } else {
                    let root = finished.finish(&mut blocks);
                    let (file_blocks, file_data) = (std::mem::take(&mut blocks), std::mem::take(&mut data));
                    if let Err(resp) = record_file(reg, root.cid, file_blocks, &file_data, pin).await {
                        return resp;
                    }
                    root
                };
                let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| root.cid.to_string());
                out.push(json!({"Name": name, "Hash": root.cid.to_string(), "Size": root.tsize.to_string()}));
            }
            Err(resp) => return resp,
        }
    }
    chunked_json(out)
}

/// Records an added file's blocks (in batches, so they are not all copied at once) and pins it.
async fn record_file(reg: &Registry, root: Cid, blocks: Vec<DagBlock>, data: &[u8], pin: bool) -> Result<(), HttpResponse> {
    let owner = Owner::Pin(root.to_string());
    for batch in blocks.chunks(RECORD_BATCH) {
        let batch = batch
            .iter()
            .map(|b| match b {
                DagBlock::Leaf { cid, offset, len } => (*cid, data[*offset as usize..(*offset + *len) as usize].to_vec()),
                DagBlock::Node { cid, bytes } => (*cid, bytes.clone()),
            })
            .collect();
        reg.store_blocks(batch, owner.clone()).await.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    if pin {
        reg.pin_block(&root).await.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    Ok(())
}

/// Blocks of a `dag/import` recorded in one transaction, at most this many bytes.
const IMPORT_BATCH_BYTES: usize = 8 << 20;

async fn dag_import(req: &HttpRequest, body: web::Payload, policy: &Arc<crate::exposure::Policy>) -> HttpResponse {
    let reg = policy.registry();
    let mut parts = Parts::new(req, body);
    let mut reader = crate::car::SectionReader::default();
    let (mut batch, mut batch_bytes) = (Vec::new(), 0usize);
    // Blocks are stored as they arrive and verified; a CAR that breaks off leaves blocks no pin
    // names, which a GC sweeps after its grace period.
    loop {
        let part = parts.next().await;
        let done = match part {
            Some(Ok(Part::Data(chunk))) => {
                let blocks = match reader.push(&chunk) {
                    Ok(b) => b,
                    Err(e) => return bad_request(e),
                };
                for (cid, data) in blocks {
                    batch_bytes += data.len();
                    batch.push((cid, data));
                }
                false
            }
            Some(Ok(Part::End(_))) => false,
            Some(Err(resp)) => return resp,
            None => true,
        };
        if (done && !batch.is_empty()) || batch_bytes >= IMPORT_BATCH_BYTES {
            let owner = reader.roots().and_then(|r| r.first()).map(|r| Owner::Pin(r.to_string())).unwrap_or(Owner::Nothing);
            if let Err(e) = reg.store_blocks(std::mem::take(&mut batch), owner).await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
            batch_bytes = 0;
        }
        if done {
            break;
        }
    }
    if let Err(e) = reader.finish() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    let roots = reader.roots().unwrap_or_default().to_vec();
    let pin_roots = flag(req, "pin-roots").unwrap_or(true);
    let mut out = Vec::new();
    for root in roots {
        let msg = if !pin_roots {
            String::new()
        } else if let Err(e) = check_complete(policy, root).await {
            e
        } else if let Err(e) = reg.pin_block(&root).await {
            e.to_string()
        } else {
            String::new()
        };
        out.push(json!({"Root": {"Cid": {"/": root.to_string()}, "PinErrorMsg": msg}}));
    }
    chunked_json(out)
}
