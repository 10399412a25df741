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

mod blocks;
mod dag;
mod files;
mod names;
mod pins;
mod repo;
mod swarm;

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

/// Who may call a command. On a loopback bind the caller is the operator; beyond it, reads see
/// only public content (as on the gateway) and the rest needs the operator's credentials.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any caller; GET is taken too (monitoring's reads).
    Read,
    /// A read that tells the node's own business (its size right after a push, its peers and
    /// their addresses, what went to each): the operator's alone, wherever the RPC is bound.
    OperatorRead,
    Write,
}

/// What a command holds while it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holds {
    Nothing,
    /// The GC lock, shared: a GC (exclusive) sees none of the command's blocks or its pin.
    Gc,
    /// One of [`CONCURRENT_WRITES`] (bounded in total, not only per request), then the GC lock
    /// shared from the first block stored to the pin, as publishing a blob holds it.
    WriteAndGc,
    /// The GC lock, handed to the handler ([`Call::gc`]): its answer streams on after the
    /// handler returns, and the lock goes with the stream's end.
    GcToTheEnd,
}

/// One call of a command: the request, its body, the node, and the GC lock for a command that
/// holds it to the end of its answer.
struct Call {
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<RpcState>,
    gc: Option<crate::storage::GcLock>,
}

type Handler = fn(Call) -> futures_util::future::LocalBoxFuture<'static, HttpResponse>;

struct Command {
    name: &'static str,
    access: Access,
    holds: Holds,
    handler: Handler,
}

const fn command(name: &'static str, access: Access, holds: Holds, handler: Handler) -> Command {
    Command { name, access, holds, handler }
}

use Access::{OperatorRead, Read, Write};
use Holds::{Gc, GcToTheEnd, Nothing, WriteAndGc};

/// Every command the RPC answers: what dispatch runs, what the operator check and the method
/// check read, and what metrics may name (anything else is `<unknown>`).
static COMMANDS: &[Command] = &[
    command("add", Write, WriteAndGc, |c| Box::pin(async move { files::add(&c.req, c.body, &c.state.registry).await })),
    command("bitswap/ledger", OperatorRead, Nothing, |c| Box::pin(async move { swarm::ledger(&c.req, &c.state) })),
    command("bitswap/stat", OperatorRead, Nothing, |c| Box::pin(async move { swarm::bitswap_stat(&c.state).await })),
    command("block/get", Read, Nothing, |c| Box::pin(async move { blocks::get(&c.req, &c.state).await })),
    command("block/put", Write, WriteAndGc, |c| Box::pin(async move { blocks::put(&c.req, c.body, &c.state.registry).await })),
    command("block/stat", Read, Nothing, |c| Box::pin(async move { blocks::stat(&c.req, &c.state).await })),
    command("cat", Read, Nothing, |c| Box::pin(async move { files::cat(&c.req, &c.state).await })),
    command("dag/export", Read, Nothing, |c| Box::pin(async move { dag::export(&c.req, &c.state).await })),
    command("dag/import", Write, WriteAndGc, |c| Box::pin(async move { dag::import(&c.req, c.body, &c.state.policy).await })),
    command("id", Read, Nothing, |c| Box::pin(async move { repo::id(&c.state).await })),
    command("ls", Read, Nothing, |c| Box::pin(async move { files::ls(&c.req, &c.state).await })),
    command("name/publish", Write, Nothing, |c| Box::pin(async move { names::publish(&c.req, &c.state).await })),
    command("name/resolve", Read, Nothing, |c| Box::pin(async move { names::resolve(&c.req, &c.state).await })),
    command("pin/add", Write, GcToTheEnd, |mut c| {
        Box::pin(async move {
            let gc = c.gc.take().expect("pin/add holds the GC lock");
            pins::add(&c.req, &c.state, gc).await
        })
    }),
    command("pin/ls", Read, Nothing, |c| Box::pin(async move { pins::ls(&c.req, &c.state).await })),
    command("pin/rm", Write, Nothing, |c| Box::pin(async move { pins::rm(&c.req, &c.state).await })),
    command("pin/update", Write, Gc, |c| Box::pin(async move { pins::update(&c.req, &c.state).await })),
    command("registry/import", Write, Nothing, |c| Box::pin(async move { dag::registry_import(&c.req, &c.state).await })),
    command("repo/gc", Write, Nothing, |c| Box::pin(async move { repo::repo_gc(&c.state).await })),
    command("repo/stat", OperatorRead, Nothing, |c| Box::pin(async move { repo::repo_stat(&c.req, &c.state).await })),
    command("resolve", Read, Nothing, |c| Box::pin(async move { dag::resolve(&c.req, &c.state).await })),
    command("routing/findprovs", Write, Nothing, |c| Box::pin(async move { swarm::find_providers(&c.req, &c.state).await })),
    command("routing/provide", Write, Nothing, |c| Box::pin(async move { swarm::provide(&c.req, &c.state).await })),
    command("routing/put", Write, Nothing, |c| Box::pin(async move { names::routing_put(&c.req, c.body, &c.state).await })),
    command("swarm/addrs", OperatorRead, Nothing, |c| Box::pin(async move { swarm::addrs(&c.state).await })),
    command("swarm/connect", Write, Nothing, |c| Box::pin(async move { swarm::connect(&c.req, &c.state).await })),
    command("swarm/disconnect", Write, Nothing, |c| Box::pin(async move { swarm::disconnect(&c.req, &c.state).await })),
    command("swarm/peers", OperatorRead, Nothing, |c| Box::pin(async move { swarm::peers(&c.state).await })),
    command("version", Read, Nothing, |_| Box::pin(async move { repo::version() })),
];

pub fn is_command(command: &str) -> bool {
    find(command).is_some()
}

fn find(command: &str) -> Option<&'static Command> {
    let name = command.trim_end_matches('/');
    COMMANDS.iter().find(|c| c.name == name)
}

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
    let name = req.match_info().query("command").trim_end_matches('/').to_string();
    let command = find(&name);
    let access = command.map_or(Write, |c| c.access);
    // Kubo takes POST only (a browser cannot be tricked into a cross-site POST with a body the
    // way it can into a GET); monitoring's GETs of read-only calls are accepted too.
    if req.method() != Method::POST && !(access != Write && req.method() == Method::GET) {
        return error(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on /api/v0/{name}", req.method()));
    }
    if access != Read && !state.loopback {
        if let Err(resp) = require_admin(&req, &state).await {
            return resp;
        }
    }
    let Some(command) = command else { return error(StatusCode::NOT_FOUND, format!("unknown command {name:?}")) };
    let node = state.clone();
    let _permit = match command.holds {
        WriteAndGc => match node.writes.acquire().await {
            Ok(permit) => Some(permit),
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down"),
        },
        _ => None,
    };
    let gc = match command.holds {
        Nothing => None,
        Gc | WriteAndGc | GcToTheEnd => match gc_shared(&state.registry).await {
            Ok(lock) => Some(lock),
            Err(resp) => return resp,
        },
    };
    // Held here until the handler is done, whatever the handler's future captures.
    let (_held, handed) = if command.holds == GcToTheEnd { (None, gc) } else { (gc, None) };
    (command.handler)(Call { req, body, state, gc: handed }).await
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

fn stream_response(bytes: Bytes) -> HttpResponse {
    HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("text/plain").body(bytes)
}

/// An operator's reader that fetches missing blocks from peers (kept, recorded under `root`),
/// with the keeper to flush before the fetched blocks may be counted on.
/// `offline=true` (Kubo's global option) keeps one request to what the node holds.
fn fetching_reader(req: &HttpRequest, state: &RpcState, root: &Cid) -> (Arc<Reader>, Option<Keeper>) {
    fetching_reader_for(req, state, Owner::Pin(root.to_string()), None)
}

/// [`fetching_reader`], keeping what it fetches for `owner`, telling `underway` (a pin's fetch)
/// when a block comes from a trusted peer.
fn fetching_reader_for(req: &HttpRequest, state: &RpcState, owner: Owner, underway: Option<Arc<crate::exposure::Underway>>) -> (Arc<Reader>, Option<Keeper>) {
    if state.offline || flag(req, "offline") == Some(true) {
        return (Reader::new(&state.policy, Audience::Operator), None);
    }
    let keeper = Keeper::new(state.registry.clone(), owner, state.swarm.bitswap.clone(), &state.policy);
    (Reader::over(crate::swarm::fetch::Fetching::recording(state.registry.clone(), state.swarm.clone(), keeper.clone(), underway)), Some(keeper))
}

/// An operator's reader that fetches what the node lacks from peers without keeping it (unless
/// offline).
fn passing_reader(req: &HttpRequest, state: &RpcState) -> Arc<Reader> {
    if state.offline || flag(req, "offline") == Some(true) {
        return Reader::new(&state.policy, Audience::Operator);
    }
    Reader::over(crate::swarm::fetch::Fetching::passing(state.registry.clone(), state.swarm.clone()))
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

/// Lines streamed as they come, as Kubo streams a long command's outputs; an `Err` cuts the
/// response short (no final chunk), so a client reading to the end sees a failure.
fn streamed_lines(lines: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> HttpResponse {
    let body = futures_util::stream::unfold(lines, |mut rx| async move { rx.recv().await.map(|line| (line, rx)) });
    HttpResponse::Ok().insert_header(("X-Chunked-Output", "1")).content_type("application/json").streaming(body)
}

/// Several JSON values, one per line, as Kubo streams a command's outputs.
fn chunked_json(values: Vec<serde_json::Value>) -> HttpResponse {
    let body: String = values.iter().map(|v| format!("{v}\n")).collect();
    HttpResponse::Ok().insert_header(("X-Chunked-Output", "1")).content_type("application/json").body(body)
}
