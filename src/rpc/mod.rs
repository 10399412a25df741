//! A Kubo-compatible RPC (`--rpc`, loopback port 5001 by default): the `/api/v0` calls operators'
//! scripts and monitoring use, in Kubo's shapes, so `ipfs --api /ip4/127.0.0.1/tcp/5001 ...` and
//! `curl http://host:5001/api/v0/repo/stat` keep working.
//!
//! On a loopback bind the caller is the operator: it may read anything and write. Bound beyond
//! loopback, reads see only public content (as on the gateway) and writes need an
//! administrator's credentials.

// Handlers answer early with a finished response; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod identity;

use crate::auth::Auth;
use crate::dag::{DagError, Node, Reader};
use crate::exposure::Audience;
use crate::registry::Registry;
use crate::unixfs::{self, DagBlock, Importer};
use actix_multipart::Multipart;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;

/// Kubo's default fan-out for `ipfs add`.
const KUBO_MAX_LINKS: usize = 174;
const KUBO_CHUNK: usize = 256 * 1024;
/// The widest file node `add` makes: its links (~40 bytes each) stay far under a 2 MiB block.
const MAX_FILE_LINKS: usize = 8192;
/// The most an `add` that stores (not `--only-hash`) takes.
const MAX_ADD: usize = 256 << 20;

pub struct RpcState {
    pub registry: Arc<Registry>,
    pub auth: Option<Arc<Auth>>,
    pub identity: identity::Identity,
    pub data_dir: std::path::PathBuf,
    /// Bound to loopback only: the caller is the operator.
    pub loopback: bool,
    /// The address the RPC listens on (its own origin, for the cross-site checks).
    pub bind: std::net::SocketAddr,
}

/// Kubo's error body.
fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({"Message": message.to_string(), "Code": 0, "Type": "error"}))
}

fn bad_request(message: impl std::fmt::Display) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message)
}

fn dag_failure(e: DagError) -> HttpResponse {
    match e {
        DagError::Missing(cid) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("block was not found locally (offline): {cid}")),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other),
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
        cfg.app_data(web::Data::from(state)).route("/api/v0/{command:.*}", web::to(dispatch)).default_service(web::to(|| async {
            error(StatusCode::NOT_FOUND, "404 page not found")
        }));
    }
}

const READS: &[&str] = &["id", "version", "repo/stat", "block/get", "block/stat", "cat", "ls", "pin/ls", "dag/export", "swarm/peers"];

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
        let allowed = own.iter().any(|h| h == host) || (!state.loopback && host == req.connection_info().host());
        if !allowed {
            return Err(forbidden(format!("origin {origin:?} is not this RPC's")));
        }
    }
    if state.loopback {
        let host = header("host").unwrap_or("");
        if !own.iter().any(|h| h == host) {
            return Err(forbidden(format!("host {host:?} is not a loopback name of this RPC")));
        }
    }
    Ok(())
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
    if !read && !state.loopback {
        if let Err(resp) = require_admin(&req, &state).await {
            return resp;
        }
    }
    let reg = state.registry.clone();
    match command.as_str() {
        "id" => HttpResponse::Ok().json(json!({
            "ID": state.identity.peer_id,
            "PublicKey": state.identity.public_key,
            "Addresses": [],
            "AgentVersion": format!("af-registry/{}", env!("CARGO_PKG_VERSION")),
            "Protocols": [],
        })),
        "version" => HttpResponse::Ok().json(json!({
            // Semver, as the Kubo CLI requires of the node it talks to.
            "Version": env!("CARGO_PKG_VERSION"),
            "Commit": "",
            "Repo": "16",
            "System": format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
            "Golang": "",
        })),
        "repo/stat" => repo_stat(&state).await,
        "swarm/peers" => HttpResponse::Ok().json(json!({"Peers": []})),
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
            Ok((reader, cid)) => HttpResponse::Ok()
                .insert_header(("X-Stream-Output", "1"))
                .content_type("application/vnd.ipld.car")
                .streaming(crate::dag::car::whole(reader, cid)),
            Err(resp) => resp,
        },
        "pin/ls" => pin_ls(&req, &state).await,
        "pin/add" => pin_add(&req, &reg).await,
        "pin/rm" => {
            let mut removed = Vec::new();
            for a in args(&req, "arg") {
                let cid = match parse_path(&a) {
                    Ok((cid, _)) => cid,
                    Err(resp) => return resp,
                };
                match reg.blocks.unpin(&cid).await {
                    Ok(true) => removed.push(cid.to_string()),
                    Ok(false) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{cid} is not pinned")),
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            }
            HttpResponse::Ok().json(json!({"Pins": removed}))
        }
        "block/put" => block_put(&req, body, &reg).await,
        "add" => add(&req, body, &reg).await,
        "dag/import" => dag_import(&req, body, &reg).await,
        _ => error(StatusCode::NOT_FOUND, format!("unknown command {command:?}")),
    }
}

async fn require_admin(req: &HttpRequest, state: &RpcState) -> Result<(), HttpResponse> {
    let denied = || error(StatusCode::FORBIDDEN, "writes to this RPC need an administrator's credentials");
    let Some(auth) = state.auth.as_ref().filter(|a| a.config.enabled) else { return Err(denied()) };
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    match auth.caller(header, &peer).await {
        Ok(caller) if caller.identity().is_some_and(|i| i.is_admin && i.cap == crate::metadata::Role::Admin) => Ok(()),
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
    let reader = Reader::new(state.registry.clone(), audience(req, state).await);
    let chain = reader.resolve(root, &path).await.map_err(dag_failure)?;
    Ok((reader, *chain.last().expect("a chain has a target")))
}

/// The pins, as far as this caller may read their roots.
async fn pin_ls(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let pins = match state.registry.blocks.pins().await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let reader = Reader::new(state.registry.clone(), audience(req, state).await);
    let mut keys = serde_json::Map::new();
    for pin in pins {
        let Ok(cid) = pin.parse::<Cid>() else { continue };
        if reader.audience() == Audience::Anyone {
            match reader.block(&cid).await {
                Ok(_) => {}
                Err(DagError::Registry(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
                Err(_) => continue,
            }
        }
        keys.insert(pin, json!({"Type": "recursive", "Name": ""}));
    }
    HttpResponse::Ok().json(json!({"Keys": keys}))
}

fn stream_response(bytes: Bytes) -> HttpResponse {
    HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("text/plain").body(bytes)
}

async fn repo_stat(state: &RpcState) -> HttpResponse {
    let blobs = match state.registry.meta.list_blobs().await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let (blocks, inline_bytes) = match state.registry.blocks.stat().await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let size = blobs.iter().map(|(_, s)| s).sum::<u64>() + inline_bytes;
    HttpResponse::Ok().json(json!({
        "RepoSize": size,
        "StorageMax": disk_capacity(&state.data_dir),
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
        Ok(None) => return error(StatusCode::INTERNAL_SERVER_ERROR, "this dag node is a directory"),
        Err(e) => return dag_failure(e),
    };
    HttpResponse::Ok()
        .insert_header(("X-Stream-Output", "1"))
        .content_type("text/plain")
        .streaming(crate::dag::file_stream(reader, cid, 0, size))
}

async fn ls(reader: &Reader, cid: Cid) -> HttpResponse {
    let links = match reader.node(&cid).await {
        Ok(Node::Directory { links }) | Ok(Node::File { links, .. }) => links,
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
            Ok(Node::Directory { .. }) => (1, 0),
            Ok(Node::File { size, .. }) => (2, size),
            _ => (2, l.tsize),
        };
        out.push(json!({"Name": l.name, "Hash": l.cid.to_string(), "Size": size, "Type": kind, "Target": ""}));
    }
    HttpResponse::Ok().json(json!({"Objects": [{"Hash": cid.to_string(), "Links": out}]}))
}

/// Every block of the DAG under `root` is here, intact (so a pin can keep it): the gateway's
/// depth-first CAR walk, drained.
async fn check_complete(reg: &Arc<Registry>, root: Cid) -> Result<(), String> {
    let reader = Reader::new(reg.clone(), Audience::Operator);
    let mut blocks = std::pin::pin!(crate::dag::car::whole(reader, root));
    while let Some(block) = blocks.next().await {
        block.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn pin_add(req: &HttpRequest, reg: &Arc<Registry>) -> HttpResponse {
    let mut pinned = Vec::new();
    for a in args(req, "arg") {
        let (root, path) = match parse_path(&a) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let cid = match Reader::new(reg.clone(), Audience::Operator).resolve(root, &path).await {
            Ok(chain) => *chain.last().expect("a chain has a target"),
            Err(e) => return dag_failure(e),
        };
        if let Err(e) = check_complete(reg, cid).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        if let Err(e) = reg.blocks.pin(&cid).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        pinned.push(cid.to_string());
    }
    HttpResponse::Ok().json(json!({"Pins": pinned}))
}

/// What a multipart body delivers: a part's bytes, piece by piece, then its end (with its file
/// name, if it has one).
enum Part {
    Data(Bytes),
    End(Option<String>),
}

/// Feeds the parts of a multipart body to `f`, streaming.
async fn each_part(
    req: &HttpRequest,
    body: web::Payload,
    mut f: impl FnMut(Part) -> Result<(), HttpResponse>,
) -> Result<(), HttpResponse> {
    let mut multipart = Multipart::new(req.headers(), body);
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(|e| bad_request(format!("malformed multipart body: {e}")))?;
        let name = field.content_disposition().and_then(|d| d.get_filename()).map(|n| {
            form_urlencoded::parse(format!("x={n}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
        });
        if field.content_type().is_some_and(|t| t.essence_str() == "application/x-directory") {
            return Err(bad_request("directories are not supported by this node's add (add files one by one)"));
        }
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| bad_request(format!("reading the request: {e}")))?;
            f(Part::Data(chunk))?;
        }
        f(Part::End(name))?;
    }
    Ok(())
}

async fn block_put(req: &HttpRequest, body: web::Payload, reg: &Registry) -> HttpResponse {
    let codec = match arg(req, "cid-codec").or_else(|| arg(req, "format")).as_deref() {
        None | Some("raw") => unixfs::RAW,
        Some("dag-pb") | Some("protobuf") | Some("v0") => unixfs::DAG_PB,
        Some(other) => return bad_request(format!("cid-codec {other:?} is not supported (raw, dag-pb)")),
    };
    if arg(req, "mhtype").is_some_and(|m| m != "sha2-256") {
        return bad_request("only sha2-256 multihashes are supported");
    }
    let mut parts: Vec<Vec<u8>> = vec![Vec::new()];
    let read = each_part(
        req,
        body,
        |part| {
            match part {
                Part::Data(chunk) => {
                    let cur = parts.last_mut().expect("one part at least");
                    if cur.len() + chunk.len() > 2 << 20 {
                        return Err(bad_request("blocks are limited to 2 MiB"));
                    }
                    cur.extend_from_slice(&chunk);
                }
                Part::End(_) => parts.push(Vec::new()),
            }
            Ok(())
        },
    )
    .await;
    if let Err(resp) = read {
        return resp;
    }
    parts.pop();
    let mut out = Vec::new();
    let mut blocks = Vec::new();
    for data in parts {
        if codec == unixfs::DAG_PB && unixfs::decode_node(&data).is_err() {
            return bad_request("the block is not valid dag-pb");
        }
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&data).into();
        let cid = unixfs::cid_v1(codec, &digest);
        out.push(json!({"Key": cid.to_string(), "Size": data.len()}));
        blocks.push((cid, data));
    }
    let pin = flag(req, "pin").unwrap_or(false);
    for (cid, data) in blocks {
        if let Err(e) = reg.blocks.record_inline(vec![(cid, data)], Some(format!("pin {cid}"))).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        if pin {
            if let Err(e) = reg.blocks.pin(&cid).await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
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

/// A UnixFS file being added: the importer, and (unless only hashing) the blocks it made.
struct Adding {
    importer: Importer,
    blocks: Vec<DagBlock>,
    data: Vec<u8>,
    keep: bool,
}

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
    let new_file = || Adding { importer: Importer::with_layout(chunk, max_links), blocks: Vec::new(), data: Vec::new(), keep: !only_hash };
    let mut current = new_file();
    let mut results: Vec<(String, unixfs::Root, crate::car::Blocks)> = Vec::new();
    let read = each_part(
        req,
        body,
        |part| {
            let name = match part {
                Part::Data(chunk) => {
                    current.importer.update(&chunk, &mut current.blocks);
                    if current.keep {
                        // Stored blocks are kept inline, so what is added here is held until it
                        // is recorded; layers belong in the OCI API, which streams to disk.
                        if current.data.len() + chunk.len() > MAX_ADD {
                            return Err(bad_request("files added through the RPC are limited to 256 MiB (only-hash is not); push large content through the OCI API"));
                        }
                        current.data.extend_from_slice(&chunk);
                    }
                    return Ok(());
                }
                Part::End(name) => name,
            };
            let file = std::mem::replace(&mut current, new_file());
            let mut blocks = file.blocks;
            let root = file.importer.finish(&mut blocks);
            let stored = if file.keep {
                blocks
                    .into_iter()
                    .map(|b| match b {
                        DagBlock::Leaf { cid, offset, len } => (cid, file.data[offset as usize..(offset + len) as usize].to_vec()),
                        DagBlock::Node { cid, bytes } => (cid, bytes),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            results.push((name.unwrap_or_default(), root, stored));
            Ok(())
        },
    )
    .await;
    if let Err(resp) = read {
        return resp;
    }
    let mut out = Vec::new();
    for (name, root, blocks) in results {
        if !only_hash {
            let owner = Some(format!("pin {}", root.cid));
            if let Err(e) = reg.blocks.record_inline(blocks, owner).await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
            if pin {
                if let Err(e) = reg.blocks.pin(&root.cid).await {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                }
            }
        }
        let name = if name.is_empty() { root.cid.to_string() } else { name };
        out.push(json!({"Name": name, "Hash": root.cid.to_string(), "Size": root.tsize.to_string()}));
    }
    chunked_json(out)
}

async fn dag_import(req: &HttpRequest, body: web::Payload, reg: &Arc<Registry>) -> HttpResponse {
    let mut car = Vec::new();
    let read = each_part(
        req,
        body,
        |part| {
            if let Part::Data(chunk) = part {
                if car.len() + chunk.len() > 1 << 30 {
                    return Err(bad_request("CARs imported through the RPC are limited to 1 GiB; use af registry import"));
                }
                car.extend_from_slice(&chunk);
            }
            Ok(())
        },
    )
    .await;
    if let Err(resp) = read {
        return resp;
    }
    let (roots, blocks) = match crate::car::read_all(&car) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let pin_roots = flag(req, "pin-roots").unwrap_or(true);
    let owner = roots.first().map(|r| format!("pin {r}"));
    if let Err(e) = reg.blocks.record_inline(blocks, owner).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    let mut out = Vec::new();
    for root in roots {
        let msg = if !pin_roots {
            String::new()
        } else if let Err(e) = check_complete(reg, root).await {
            e
        } else if let Err(e) = reg.blocks.pin(&root).await {
            e.to_string()
        } else {
            String::new()
        };
        out.push(json!({"Root": {"Cid": {"/": root.to_string()}, "PinErrorMsg": msg}}));
    }
    chunked_json(out)
}
