//! The IPFS HTTP gateway (`--gateway`, port 8080): `/ipfs/<cid>[/<path>]`, as a path gateway
//! (UnixFS files and directories for browsers and curl) and as a trustless gateway (verifiable
//! raw blocks and CARs for Helia, Kubo and other gateways).
//!
//! Only content of public repositories leaves the node: a root that no public blob or image
//! accounts for is answered 404, exactly as if it were absent.

// Handlers answer early with a finished response; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod car;
pub mod dag;
mod sniff;

use crate::api::range::{parse_range, RangeRequest};
use crate::registry::Registry;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use cid::Cid;
use dag::{DagError, Node, Piece};
use std::sync::Arc;

const IMMUTABLE: &str = "public, max-age=29030400, immutable";
pub const RAW_TYPE: &str = "application/vnd.ipld.raw";
pub const CAR_TYPE: &str = "application/vnd.ipld.car";

pub fn configure(registry: Arc<Registry>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(registry))
            .route("/ipfs/{tail:.*}", web::get().to(handle))
            .route("/ipfs/{tail:.*}", web::head().to(handle))
            .default_service(web::to(|| async { text(StatusCode::NOT_FOUND, "404 page not found") }));
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(body.into())
}

/// What the client asked the response to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    UnixFs,
    Raw,
    Car,
}

fn query(req: &HttpRequest, key: &str) -> Option<String> {
    form_urlencoded::parse(req.query_string().as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// `?format=` wins over `Accept`; anything else that names a format we cannot give is 406.
fn format(req: &HttpRequest) -> Result<Format, HttpResponse> {
    if let Some(f) = query(req, "format") {
        return match f.as_str() {
            "raw" => Ok(Format::Raw),
            "car" => Ok(Format::Car),
            other => Err(text(StatusCode::NOT_ACCEPTABLE, format!("format {other:?} is not supported here"))),
        };
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for item in accept.split(',') {
        let mt = item.split(';').next().unwrap_or("").trim();
        match mt {
            RAW_TYPE => return Ok(Format::Raw),
            CAR_TYPE => return Ok(Format::Car),
            "application/vnd.ipld.dag-json" | "application/vnd.ipld.dag-cbor" | "application/json" | "application/cbor"
            | "application/x-tar" | "application/vnd.ipfs.ipns-record" => {
                return Err(text(StatusCode::NOT_ACCEPTABLE, format!("{mt} is not supported here")))
            }
            _ => {}
        }
    }
    Ok(Format::UnixFs)
}

fn dag_error(e: DagError) -> HttpResponse {
    match e {
        DagError::Missing(_) | DagError::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        DagError::Malformed { .. } => text(StatusCode::BAD_GATEWAY, e.to_string()),
        DagError::Registry(r) => {
            tracing::error!(error = %r, "gateway read failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, r.to_string())
        }
    }
}

async fn handle(req: HttpRequest, reg: web::Data<Registry>) -> HttpResponse {
    let tail = req.match_info().query("tail").to_string();
    let (cid_text, rest) = tail.split_once('/').map(|(a, b)| (a, Some(b))).unwrap_or((tail.as_str(), None));
    let Ok(root) = Cid::try_from(cid_text) else {
        return text(StatusCode::BAD_REQUEST, format!("invalid path \"/ipfs/{tail}\": {cid_text:?} is not a CID"));
    };
    let mut segments = Vec::new();
    for s in rest.unwrap_or("").split('/').filter(|s| !s.is_empty()) {
        match percent_decode(s) {
            Some(s) if s != "." && s != ".." => segments.push(s),
            _ => return text(StatusCode::BAD_REQUEST, format!("invalid path segment {s:?}")),
        }
    }
    let format = match format(&req) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let shared = reg.clone().into_inner();
    let reg = reg.get_ref();
    // Whatever is not public is absent: the same 404 either way.
    let public = match dag::well_known(&root) {
        Some(_) => true,
        None => match reg.is_public_block(&root).await {
            Ok(p) => p,
            // The metadata cannot say: unavailable, not absent.
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
    };
    if !public {
        return text(StatusCode::NOT_FOUND, format!("{root} is not on this node"));
    }
    let chain = match dag::resolve(reg, root, &segments).await {
        Ok(c) => c,
        Err(e) => return dag_error(e),
    };
    let target = *chain.last().expect("resolve returns the root at least");
    let ipfs_path = format!("/ipfs/{tail}");
    let roots = chain.iter().map(Cid::to_string).collect::<Vec<_>>().join(",");
    let etag = match format {
        Format::Raw => format!("\"{target}.raw\""),
        Format::Car => format!("\"{target}.car\""),
        Format::UnixFs => format!("\"{target}\""),
    };
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header(("X-Ipfs-Path", ipfs_path.as_str()))
        .insert_header(("X-Ipfs-Roots", roots.as_str()))
        .insert_header(("Etag", etag.as_str()))
        .insert_header(("Cache-Control", IMMUTABLE))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Access-Control-Allow-Origin", "*"));
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*" || t.trim() == format!("W/{etag}"))) {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    let head = req.method() == actix_web::http::Method::HEAD;
    match format {
        Format::Raw => match dag::block(reg, &target).await {
            Ok(bytes) => {
                builder
                    .content_type(RAW_TYPE)
                    .insert_header(("Content-Disposition", disposition(&req, &format!("{target}.bin"), true)))
                    .insert_header(("Vary", "Accept"));
                if head {
                    builder.no_chunking(bytes.len() as u64).streaming(no_body())
                } else {
                    builder.body(bytes)
                }
            }
            Err(e) => dag_error(e),
        },
        Format::Car => match car::Params::from_request(&req) {
            Ok(params) => {
                builder
                    .content_type(format!("{CAR_TYPE}; version=1; order=dfs; dups={}", if params.dups { "y" } else { "n" }))
                    .insert_header(("Content-Disposition", disposition(&req, &format!("{target}.car"), true)))
                    .insert_header(("Vary", "Accept"))
                    .insert_header(("X-Content-Type-Options", "nosniff"));
                if head {
                    return builder.finish();
                }
                builder.streaming(car::stream(shared, root, chain, params))
            }
            Err(resp) => resp,
        },
        Format::UnixFs => unixfs(&req, shared, target, &segments, builder, head).await,
    }
}

/// A HEAD response's body: none, while the Content-Length says what GET would send (actix keeps
/// the length of a streamed body it does not send).
fn no_body() -> futures_util::stream::Empty<Result<Bytes, std::io::Error>> {
    futures_util::stream::empty()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Content-Disposition`: `?filename=` names the file; `?download=true` (or a binary format)
/// makes it an attachment.
fn disposition(req: &HttpRequest, default_name: &str, attachment: bool) -> String {
    let name = query(req, "filename").unwrap_or_else(|| default_name.to_string());
    let kind = if attachment || query(req, "download").as_deref() == Some("true") { "attachment" } else { "inline" };
    let ascii: String = name.chars().map(|c| if c.is_ascii() && c != '"' && !c.is_ascii_control() { c } else { '_' }).collect();
    let encoded: String = form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20");
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

async fn unixfs(
    req: &HttpRequest,
    shared: Arc<Registry>,
    target: Cid,
    segments: &[String],
    mut builder: actix_web::HttpResponseBuilder,
    head: bool,
) -> HttpResponse {
    let reg = shared.as_ref();
    let node = match dag::node(reg, &target).await {
        Ok(n) => n,
        Err(e) => return dag_error(e),
    };
    // (the file, its name, its size when the node already read says it)
    let (file, name, known_size) = match node {
        Node::Directory { links } => {
            if !req.path().ends_with('/') {
                let mut location = format!("{}/", req.path());
                if !req.query_string().is_empty() {
                    location = format!("{location}?{}", req.query_string());
                }
                return HttpResponse::MovedPermanently().insert_header(("Location", location)).finish();
            }
            match links.iter().find(|l| l.name == "index.html") {
                Some(index) => (index.cid, "index.html".to_string(), None),
                None => {
                    let html = sniff::listing(req.path(), &target, &links);
                    builder.content_type("text/html; charset=utf-8").insert_header(("Etag", format!("\"DirIndex-{target}\"")));
                    return if head { builder.finish() } else { builder.body(html) };
                }
            }
        }
        Node::Raw(b) => (target, segments.last().cloned().unwrap_or_default(), Some(b.len() as u64)),
        Node::File { size, .. } => (target, segments.last().cloned().unwrap_or_default(), Some(size)),
        Node::Other => return text(StatusCode::NOT_IMPLEMENTED, format!("{target} is neither a UnixFS file nor a plain directory")),
    };
    let size = match known_size {
        Some(size) => Ok(Some(size)),
        None => dag::file_size(reg, &file).await,
    };
    let size = match size {
        Ok(Some(size)) => size,
        Ok(None) => return text(StatusCode::NOT_IMPLEMENTED, format!("{file} is not a UnixFS file")),
        Err(e) => return dag_error(e),
    };
    let range = match parse_range(req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()), size) {
        Ok(r) => r,
        Err(e) => {
            return HttpResponse::RangeNotSatisfiable()
                .insert_header(("Content-Range", format!("bytes */{size}")))
                .content_type("text/plain; charset=utf-8")
                .body(e.to_string())
        }
    };
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end + 1),
    };
    // A whole blob's DAG: its bytes are the blob file, verified when it was pushed; served as the
    // OCI API serves it rather than leaf by leaf. (Trustless clients verify what they get.)
    let blob_file = match reg.meta.blob_by_root(&file.to_string()).await {
        Ok(Some(digest)) => reg.blobs.open_blob(&digest).ok().flatten().filter(|(_, len)| *len == size).map(|(f, _)| f),
        _ => None,
    };
    // The type from the name, else from the first bytes.
    let head_bytes = match &blob_file {
        Some(f) => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; size.min(512) as usize];
            match f.read_exact_at(&mut buf, 0) {
                Ok(()) => Bytes::from(buf),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {file}: {e}")),
            }
        }
        None => match dag::plan_range(reg, file, 0, size.min(512)).await {
            Ok(pieces) => match read_pieces(reg, pieces).await {
                Ok(b) => b,
                Err(e) => return dag_error(e),
            },
            Err(e) => return dag_error(e),
        },
    };
    let shown_name = query(req, "filename").unwrap_or(name);
    builder
        .status(status)
        .content_type(sniff::content_type(&shown_name, &head_bytes))
        .insert_header(("Accept-Ranges", "bytes"));
    if query(req, "filename").is_some() || query(req, "download").is_some() {
        builder.insert_header(("Content-Disposition", disposition(req, &shown_name, false)));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder.insert_header(("Content-Range", format!("bytes {start}-{}/{size}", end - 1)));
    }
    if head {
        return builder.no_chunking(end - start).streaming(no_body());
    }
    if let Some(blob) = blob_file {
        return builder.no_chunking(end - start).streaming(crate::storage::read_range(blob, start, end - start));
    }
    let pieces = match dag::plan_range(reg, file, start, end).await {
        Ok(p) => p,
        Err(e) => return dag_error(e),
    };
    builder.no_chunking(end - start).streaming(piece_stream(shared.clone(), pieces))
}

async fn read_pieces(reg: &Registry, pieces: Vec<Piece>) -> dag::Result<Bytes> {
    let mut out = Vec::new();
    for p in pieces {
        out.extend_from_slice(&read_piece(reg, p).await?);
    }
    Ok(Bytes::from(out))
}

async fn read_piece(reg: &Registry, piece: Piece) -> dag::Result<Bytes> {
    match piece {
        Piece::Inline(b) => Ok(b),
        Piece::Leaf { cid, skip, len } => {
            let block = dag::block(reg, &cid).await?;
            let end = (skip + len).min(block.len() as u64) as usize;
            Ok(block.slice((skip as usize).min(end)..end))
        }
    }
}

/// The whole DAG under `root` as a CAR stream (the RPC's `dag/export`).
pub fn car_stream(reg: Arc<Registry>, root: Cid) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    car::stream(reg, root, vec![root], car::Params { scope: car::DagScope::All, entity_bytes: None, dups: false })
}

/// File bytes, one leaf at a time (each verified as it is read).
pub fn pieces_stream(reg: Arc<Registry>, pieces: Vec<Piece>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    piece_stream(reg, pieces)
}

/// File bytes, one leaf at a time (each verified as it is read).
fn piece_stream(
    reg: Arc<Registry>,
    pieces: Vec<Piece>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((reg, pieces.into_iter()), |(reg, mut pieces)| async move {
        let piece = pieces.next()?;
        let item = read_piece(&reg, piece).await.map_err(std::io::Error::other);
        Some((item, (reg, pieces)))
    })
}
