//! The IPFS HTTP gateway (`--gateway`, port 8080): `/ipfs/<cid>[/<path>]`, as a path gateway
//! (UnixFS files and directories for browsers and curl) and as a trustless gateway (verifiable
//! raw blocks and CARs for Helia, Kubo and other gateways).
//!
//! Only public content leaves the node: every block a response contains or a path passes
//! through is read through a `dag::Reader` for `Audience::Anyone`; a block that may not leave is
//! answered exactly as an absent one (404, or a CAR or file that stops there).

// Handlers answer early with a finished response; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod hosts;
mod names;
mod sniff;
mod tar;

pub use hosts::Naming;

use crate::dag::car::{self, DagScope, Params};
use crate::dag::{self, DagError, Node, Reader};
use crate::exposure::Audience;
use crate::exposure::Policy;
use crate::range::{parse_range, RangeRequest};
use crate::registry::Registry;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use cid::Cid;
use std::sync::Arc;

const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// A directory page: a week, then revalidated (its HTML may change with a new version).
const LISTING_CACHE: &str = "public, max-age=604800, stale-while-revalidate=2678400";
pub const RAW_TYPE: &str = "application/vnd.ipld.raw";
pub const CAR_TYPE: &str = "application/vnd.ipld.car";

/// Installs the gateway. With `swarm`, public content the registry knows but the node lacks
/// is fetched from peers for the request (see `Exposure::admit_absent`); without (`--offline`),
/// only what the node holds is served.
pub fn configure(policy: Arc<Policy>, swarm: Option<crate::swarm::Handle>, naming: Arc<Naming>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // One service matched by prefix by hand: a `{tail:.*}` route is a regex run on every
        // request, a tenth of a raw block GET's time.
        cfg.app_data(web::Data::from(policy)).app_data(web::Data::new(swarm)).app_data(web::Data::from(naming)).default_service(web::to(
            |req: HttpRequest, policy: web::Data<Policy>, swarm: web::Data<Option<crate::swarm::Handle>>, naming: web::Data<Naming>| async move {
                use actix_web::http::Method;
                let method = req.method().clone();
                let mut resp = match hosts::route(&req, &naming).await {
                    hosts::Route::Content(_) if method == Method::OPTIONS => HttpResponse::Ok().finish(),
                    hosts::Route::Content(path) if method == Method::GET || method == Method::HEAD => handle(req, policy, swarm.get_ref().clone(), naming, path).await,
                    hosts::Route::Content(_) => text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed here: the gateway is read-only")),
                    hosts::Route::Redirect(location) => HttpResponse::MovedPermanently().insert_header(("Location", location)).finish(),
                    hosts::Route::NotFound(why) => text(StatusCode::NOT_FOUND, why),
                    hosts::Route::BadRequest(why) => text(StatusCode::BAD_REQUEST, why),
                };
                cors(resp.headers_mut());
                resp
            },
        ));
    }
}

/// Every answer may be read by scripts of any origin: the gateway serves public content only,
/// takes no credentials and sets no cookies, so another origin learns nothing it could not
/// fetch itself.
fn cors(headers: &mut actix_web::http::header::HeaderMap) {
    use actix_web::http::header::{HeaderName, HeaderValue};
    for (name, value) in [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, HEAD, OPTIONS"),
        ("access-control-allow-headers", "Content-Type, Range, User-Agent, X-Requested-With"),
        ("access-control-expose-headers", "Content-Range, Content-Length, X-Ipfs-Path, X-Ipfs-Roots, X-Chunked-Output, X-Stream-Output"),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
}

/// Whether the request's `If-None-Match` names `etag` (strong or weak) or `*`.
fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    let Some(v) = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    v.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// `Cache-Control: only-if-cached`: answer from what the node holds, never from peers.
fn only_if_cached(req: &HttpRequest) -> bool {
    req.headers().get_all(header::CACHE_CONTROL).filter_map(|v| v.to_str().ok()).any(|v| v.split(',').any(|d| d.trim() == "only-if-cached"))
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(body.into())
}

/// What the client asked the response to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Nothing in particular: UnixFS as files and directories, data blocks as they are.
    UnixFs,
    Raw,
    Car,
    Tar,
    Data(Data),
}

/// The data formats a block of a JSON or CBOR codec is served as (never converted: IPIP-524).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    DagJson,
    DagCbor,
    Json,
    Cbor,
}

impl Data {
    fn of_codec(codec: u64) -> Option<Data> {
        Some(match codec {
            dag::DAG_JSON => Data::DagJson,
            dag::DAG_CBOR => Data::DagCbor,
            dag::JSON => Data::Json,
            dag::CBOR => Data::Cbor,
            _ => return None,
        })
    }

    fn named(name: &str) -> Option<Data> {
        Some(match name {
            "dag-json" => Data::DagJson,
            "dag-cbor" => Data::DagCbor,
            "json" => Data::Json,
            "cbor" => Data::Cbor,
            _ => return None,
        })
    }

    fn media_type(self) -> &'static str {
        match self {
            Data::DagJson => "application/vnd.ipld.dag-json",
            Data::DagCbor => "application/vnd.ipld.dag-cbor",
            Data::Json => "application/json",
            Data::Cbor => "application/cbor",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Data::DagJson => "dag-json",
            Data::DagCbor => "dag-cbor",
            Data::Json => "json",
            Data::Cbor => "cbor",
        }
    }

    fn is_json(self) -> bool {
        matches!(self, Data::DagJson | Data::Json)
    }

    /// The file extension of a download: `json` or `cbor`.
    fn extension(self) -> &'static str {
        if self.is_json() {
            "json"
        } else {
            "cbor"
        }
    }
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
            "tar" => Ok(Format::Tar),
            "ipns-record" => Err(text(StatusCode::NOT_ACCEPTABLE, "an IPNS record is served for /ipns/<name> only")),
            other => match Data::named(other) {
                Some(d) => Ok(Format::Data(d)),
                None => Err(text(StatusCode::NOT_ACCEPTABLE, format!("format {other:?} is not supported here"))),
            },
        };
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for item in accept.split(',') {
        let mt = item.split(';').next().unwrap_or("").trim();
        match mt {
            RAW_TYPE => return Ok(Format::Raw),
            CAR_TYPE => return Ok(Format::Car),
            "application/vnd.ipld.dag-json" => return Ok(Format::Data(Data::DagJson)),
            "application/vnd.ipld.dag-cbor" => return Ok(Format::Data(Data::DagCbor)),
            "application/json" => return Ok(Format::Data(Data::Json)),
            "application/cbor" => return Ok(Format::Data(Data::Cbor)),
            "application/x-tar" => return Ok(Format::Tar),
            names::RECORD_TYPE => return Err(text(StatusCode::NOT_ACCEPTABLE, "an IPNS record is served for /ipns/<name> only")),
            _ => {}
        }
    }
    Ok(Format::UnixFs)
}

/// Whether a browser asked (`Accept: text/html`): data blocks are then shown as a page.
fn wants_html(req: &HttpRequest) -> bool {
    accepts(req, "text/html")
}

/// Whether the request's `Accept` names media type `mt`.
fn accepts(req: &HttpRequest, mt: &str) -> bool {
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.split(',').any(|i| i.split(';').next().unwrap_or("").trim() == mt)
}

/// What the response is, once the target is known.
enum Answer {
    Raw,
    Car,
    Tar,
    /// A JSON or CBOR block, as it is, in this format.
    Block(Data),
    /// A page showing a JSON or CBOR block to a person.
    BlockPage,
    /// UnixFS; a file's type forced by `?format=json|cbor` or `Accept`.
    UnixFs(Option<Data>),
}

/// Formats are served, never converted: a block of a JSON codec goes out as (DAG-)JSON only,
/// of a CBOR codec as (DAG-)CBOR only, and UnixFS never as DAG-JSON or DAG-CBOR (406).
fn answer(req: &HttpRequest, format: Format, target: &Cid) -> Result<Answer, HttpResponse> {
    let block = Data::of_codec(target.codec());
    Ok(match (format, block) {
        (Format::Raw, _) => Answer::Raw,
        (Format::Car, _) => Answer::Car,
        (Format::Tar, _) => Answer::Tar,
        (Format::Data(want), Some(is)) if want.is_json() == is.is_json() => Answer::Block(want),
        (Format::Data(want @ (Data::Json | Data::Cbor)), None) => Answer::UnixFs(Some(want)),
        (Format::Data(want), _) => {
            return Err(text(StatusCode::NOT_ACCEPTABLE, format!("{target} (codec 0x{:x}) cannot be served as {}: formats are not converted", target.codec(), want.name())))
        }
        (Format::UnixFs, Some(_)) if wants_html(req) => Answer::BlockPage,
        (Format::UnixFs, Some(is)) => Answer::Block(is),
        (Format::UnixFs, None) => Answer::UnixFs(None),
    })
}

fn dag_error(e: DagError) -> HttpResponse {
    match e {
        DagError::Missing(_) | DagError::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        DagError::Unsupported(_) => text(StatusCode::NOT_IMPLEMENTED, e.to_string()),
        // The client wrote that block itself, inside its CID.
        DagError::Malformed { cid, .. } if dag::is_identity(&cid) => text(StatusCode::BAD_REQUEST, e.to_string()),
        DagError::Malformed { .. } | DagError::TooMuchWork(_) => text(StatusCode::BAD_GATEWAY, e.to_string()),
        // The metadata cannot say whether a block may leave: unavailable, not absent.
        DagError::Registry(crate::registry::RegistryError::Metadata(m)) => text(StatusCode::SERVICE_UNAVAILABLE, m.to_string()),
        DagError::Registry(r) => {
            tracing::error!(error = %r, "gateway read failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, r.to_string())
        }
    }
}

/// How a response names what it serves, and for how long it may be cached.
struct Shown {
    /// `X-Ipfs-Path`: the path as asked (`/ipns/...`), or the `/ipfs/` path re-encoded.
    path: Option<String>,
    cache: String,
}

/// `/ipfs/<cid>/<segments...>` (after `/ipfs/`): the root and the decoded segments.
pub fn content_path(tail: &str) -> Result<(Cid, Vec<String>), HttpResponse> {
    let (cid_text, rest) = tail.split_once('/').map(|(a, b)| (a, Some(b))).unwrap_or((tail, None));
    let Ok(root) = Cid::try_from(cid_text) else {
        return Err(text(StatusCode::BAD_REQUEST, format!("invalid path \"/ipfs/{tail}\": {cid_text:?} is not a CID")));
    };
    let mut segments = Vec::new();
    for s in rest.unwrap_or("").split('/').filter(|s| !s.is_empty()) {
        match percent_decode(s) {
            Some(s) if s != "." && s != ".." => segments.push(s),
            _ => return Err(text(StatusCode::BAD_REQUEST, format!("invalid path segment {s:?}"))),
        }
    }
    Ok((root, segments))
}

/// Answers for content `path` (`/ipfs/...` or `/ipns/...`, whatever the URL said).
async fn handle(req: HttpRequest, policy: web::Data<Policy>, swarm: Option<crate::swarm::Handle>, naming: web::Data<Naming>, path: String) -> HttpResponse {
    if let Some(tail) = path.strip_prefix("/ipns/") {
        return names::handle(req, policy, swarm, &naming, tail).await;
    }
    let (root, segments) = match content_path(&path["/ipfs/".len()..]) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    serve(req, policy, swarm, root, segments, Shown { path: None, cache: IMMUTABLE.to_string() }).await
}

/// Answers for the DAG at `root`/`segments`, whichever way the request named it.
async fn serve(req: HttpRequest, policy: web::Data<Policy>, swarm: Option<crate::swarm::Handle>, root: Cid, segments: Vec<String>, shown: Shown) -> HttpResponse {
    let tail = format!("{root}/{}", segments.join("/"));
    let format = match format(&req) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let policy = policy.into_inner();
    let cached_only = only_if_cached(&req);
    let reader = match swarm {
        Some(swarm) if !cached_only => Reader::fetching(&policy, Audience::Anyone, crate::swarm::fetch::OnDemand::new(swarm)),
        _ => Reader::new(&policy, Audience::Anyone),
    };
    let (chain, proof) = match reader.resolve_with_proof(root, &segments).await {
        Ok(c) => c,
        Err(DagError::Missing(_) | DagError::NotFound(_)) if cached_only => {
            return text(StatusCode::PRECONDITION_FAILED, format!("/ipfs/{tail} is not on this node (only-if-cached)"))
        }
        Err(e) => return dag_error(e),
    };
    let target = *chain.last().expect("resolve returns the root at least");
    let ipfs_path = shown.path.unwrap_or_else(|| {
        let mut p = std::iter::once(format!("/ipfs/{root}")).chain(segments.iter().map(|s| encode_segment(s))).collect::<Vec<_>>().join("/");
        if req.path().ends_with('/') {
            p.push('/');
        }
        p
    });
    let roots = chain.iter().map(Cid::to_string).collect::<Vec<_>>().join(",");
    let answer = match answer(&req, format, &target) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let etag = match answer {
        Answer::Raw => format!("\"{target}.raw\""),
        Answer::Car => format!("\"{target}.car\""),
        // The same tree may be archived with other headers by another version: weak.
        Answer::Tar => format!("W/\"{target}.x-tar\""),
        Answer::Block(d) => format!("\"{target}.{}\"", d.name()),
        Answer::BlockPage => format!("\"DagIndex-{}_CID-{target}\"", sniff::LISTING_VERSION),
        Answer::UnixFs(_) => format!("\"{target}\""),
    };
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header(("X-Ipfs-Path", ipfs_path.as_str()))
        .insert_header(("X-Ipfs-Roots", roots.as_str()))
        .insert_header(("Etag", etag.as_str()))
        .insert_header(("Cache-Control", shown.cache.as_str()))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    if chain.iter().any(dag::is_identity) {
        // Whoever wrote the URL wrote these bytes: they must not run as this origin's page.
        builder.insert_header(("Content-Security-Policy", "sandbox"));
    }
    if etag_matches(&req, &etag) {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    let head = req.method() == actix_web::http::Method::HEAD;
    match answer {
        Answer::Raw => match reader.block(&target).await {
            Ok(bytes) => {
                builder.content_type(RAW_TYPE).insert_header(("Content-Disposition", disposition(&req, &format!("{target}.bin"), true))).insert_header(("Vary", "Accept"));
                whole_block(&req, builder, bytes, head)
            }
            Err(e) => dag_error(e),
        },
        Answer::Block(data) => match reader.block(&target).await {
            Ok(bytes) => {
                // JSON is shown in a browser; CBOR is binary, so a download.
                builder
                    .content_type(data.media_type())
                    .insert_header(("Content-Disposition", disposition(&req, &format!("{target}.{}", data.extension()), !data.is_json())))
                    .insert_header(("Vary", "Accept"));
                whole_block(&req, builder, bytes, head)
            }
            Err(e) => dag_error(e),
        },
        Answer::BlockPage => match reader.block(&target).await {
            Ok(bytes) => {
                builder.content_type("text/html; charset=utf-8").insert_header(("Cache-Control", LISTING_CACHE)).insert_header(("Vary", "Accept"));
                let page = sniff::block_page(&target, &bytes);
                if head {
                    builder.finish()
                } else {
                    builder.body(page)
                }
            }
            Err(e) => dag_error(e),
        },
        Answer::Car => match car_params(&req) {
            Ok(params) => {
                builder
                    .content_type(format!("{CAR_TYPE}; version=1; order=dfs; dups={}", if params.dups { "y" } else { "n" }))
                    .insert_header(("Content-Disposition", disposition(&req, &format!("{target}.car"), true)))
                    .insert_header(("Vary", "Accept"))
                    // Streamed as it is read: no length to resume at, so no ranges.
                    .insert_header(("Accept-Ranges", "none"));
                if head {
                    return builder.finish();
                }
                // The path's blocks, sub-shards of sharded directories included, then the target's.
                builder.streaming(car::stream(reader, root, proof, params))
            }
            Err(resp) => resp,
        },
        Answer::Tar => {
            builder
                .content_type("application/x-tar")
                .insert_header(("Content-Disposition", disposition(&req, &format!("{target}.tar"), true)))
                .insert_header(("Accept-Ranges", "none"));
            if head {
                return builder.finish();
            }
            tar_response(builder, tar::stream(policy.registry().clone(), reader, target)).await
        }
        Answer::UnixFs(forced) => unixfs(&req, policy.registry(), reader, (target, &segments, &ipfs_path), builder, head, forced.map(Data::media_type)).await,
    }
}

/// Bytes of an archive held back before answering: a tree that cannot be archived (a bad name,
/// a missing block) is usually found out early, and then the status says so.
const TAR_FIRST: usize = 64 << 10;

async fn tar_response(mut builder: actix_web::HttpResponseBuilder, mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, tar::TarError>>) -> HttpResponse {
    let mut first = Vec::new();
    let mut held = 0;
    while held < TAR_FIRST {
        match rx.recv().await {
            Some(Ok(b)) => {
                held += b.len();
                first.push(b);
            }
            Some(Err(tar::TarError::Dag(e))) => return dag_error(e),
            Some(Err(e @ tar::TarError::BadName(_))) => return text(StatusCode::BAD_REQUEST, e.to_string()),
            Some(Err(e)) => return text(StatusCode::BAD_GATEWAY, e.to_string()),
            None => break,
        }
    }
    let rest = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item.map_err(std::io::Error::other), rx)) });
    builder.streaming(futures_util::StreamExt::chain(futures_util::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>)), rest))
}

/// One whole block as the body (or the part a `Range` asks for).
fn whole_block(req: &HttpRequest, mut builder: actix_web::HttpResponseBuilder, mut bytes: Bytes, head: bool) -> HttpResponse {
    builder.insert_header(("Accept-Ranges", "bytes"));
    let size = bytes.len() as u64;
    match parse_range(req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()), size) {
        Ok(RangeRequest::Full) => {}
        Ok(RangeRequest::Partial(r)) => {
            builder.status(StatusCode::PARTIAL_CONTENT).insert_header(("Content-Range", format!("bytes {}-{}/{size}", r.start, r.end)));
            bytes = bytes.slice(r.start as usize..r.end as usize + 1);
        }
        Err(e) => return unsatisfiable(size, e),
    }
    if head {
        builder.no_chunking(bytes.len() as u64).streaming(no_body())
    } else {
        builder.body(bytes)
    }
}

/// The CAR parameters of a request (`dag-scope`, `entity-bytes`, `car-dups`, `Accept` parameters).
fn car_params(req: &HttpRequest) -> Result<Params, HttpResponse> {
    let bad = |m: String| text(StatusCode::BAD_REQUEST, m);
    let q = |k: &str| query(req, k);
    let accept = req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    let accept_param = |name: &str| -> Option<String> {
        accept.split(',').find(|i| i.trim().starts_with(CAR_TYPE)).and_then(|i| i.split(';').skip(1).find_map(|p| p.trim().strip_prefix(&format!("{name}=")).map(str::to_string)))
    };
    if let Some(v) = accept_param("version") {
        if v != "1" {
            return Err(text(StatusCode::NOT_ACCEPTABLE, format!("CAR version {v} is not supported; version=1 is")));
        }
    }
    let order = q("car-order").or_else(|| accept_param("order"));
    if let Some(o) = order.filter(|o| o != "dfs" && o != "unk") {
        return Err(text(StatusCode::NOT_ACCEPTABLE, format!("CAR order {o:?} is not supported; dfs is")));
    }
    let dups = match q("car-dups").or_else(|| accept_param("dups")).as_deref() {
        None | Some("n") => false,
        Some("y") => true,
        Some(other) => return Err(bad(format!("car-dups={other:?} is neither y nor n"))),
    };
    let scope = match q("dag-scope").as_deref() {
        None | Some("all") => DagScope::All,
        Some("entity") => DagScope::Entity,
        Some("block") => DagScope::Block,
        Some(other) => return Err(bad(format!("dag-scope={other:?} is not all, entity or block"))),
    };
    let entity_bytes = match q("entity-bytes") {
        None => None,
        Some(v) => {
            let parse = || -> Option<(i64, Option<i64>)> {
                let (a, b) = v.split_once(':')?;
                let from = a.parse().ok()?;
                let to = if b == "*" { None } else { Some(b.parse().ok()?) };
                Some((from, to))
            };
            Some(parse().ok_or_else(|| bad(format!("entity-bytes={v:?} is not from:to")))?)
        }
    };
    Ok(Params { scope, entity_bytes, dups, skip_identity: true })
}

/// A HEAD response's body: none, while the Content-Length says what GET would send (actix keeps
/// the length of a streamed body it does not send).
fn no_body() -> futures_util::stream::Empty<Result<Bytes, std::io::Error>> {
    futures_util::stream::empty()
}

fn unsatisfiable(size: u64, e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::RangeNotSatisfiable().insert_header(("Content-Range", format!("bytes */{size}"))).content_type("text/plain; charset=utf-8").body(e.to_string())
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

/// A path segment as it goes back into a header or a URL: percent-encoded outside the characters
/// a path segment may hold as they are.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn unixfs(
    req: &HttpRequest,
    reg: &Registry,
    reader: Arc<Reader>,
    (target, segments, content_path_shown): (Cid, &[String], &str),
    mut builder: actix_web::HttpResponseBuilder,
    head: bool,
    forced_type: Option<&'static str>,
) -> HttpResponse {
    let node = match reader.node(&target).await {
        Ok(n) => n,
        Err(e) => return dag_error(e),
    };
    // (the file, its name, its size when the node already read says it)
    let (file, name, known_size) = match node {
        dir @ (Node::Directory { .. } | Node::Shard { .. }) => {
            let links = match reader.entries(dir).await {
                Ok(l) => l,
                Err(e) => return dag_error(e),
            };
            if !req.path().ends_with('/') {
                let location = hosts::with_query(req, format!("{}/", req.path()));
                return HttpResponse::MovedPermanently().insert_header(("Location", location)).finish();
            }
            match links.iter().find(|l| l.name == "index.html") {
                Some(index) => (index.cid, "index.html".to_string(), None),
                None => {
                    // The page changes with this program, not only with the directory.
                    let etag = format!("\"DirIndex-{}_CID-{target}\"", sniff::LISTING_VERSION);
                    builder.insert_header(("Etag", etag.as_str())).insert_header(("Cache-Control", LISTING_CACHE));
                    if etag_matches(req, &etag) {
                        return builder.status(StatusCode::NOT_MODIFIED).finish();
                    }
                    let origin = req.extensions().get::<sniff::Origin>().cloned().unwrap_or_default();
                    let html = sniff::listing(req.path(), (&origin, content_path_shown), &target, &links);
                    builder.content_type("text/html; charset=utf-8");
                    return if head { builder.finish() } else { builder.body(html) };
                }
            }
        }
        Node::Raw(b) => (target, segments.last().cloned().unwrap_or_default(), Some(b.len() as u64)),
        Node::File { size, .. } => (target, segments.last().cloned().unwrap_or_default(), Some(size)),
        Node::Symlink(to) => {
            builder.content_type("inode/symlink");
            return if head { builder.no_chunking(to.len() as u64).streaming(no_body()) } else { builder.body(to) };
        }
        Node::Ipld(_) | Node::Other => return text(StatusCode::NOT_IMPLEMENTED, format!("{target} is neither a UnixFS file nor a plain directory")),
    };
    let size = match known_size {
        Some(size) => Ok(Some(size)),
        None => reader.file_size(&file).await,
    };
    let size = match size {
        Ok(Some(size)) => size,
        Ok(None) => return text(StatusCode::NOT_IMPLEMENTED, format!("{file} is not a UnixFS file")),
        Err(e) => return dag_error(e),
    };
    let range = match parse_range(req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()), size) {
        Ok(r) => r,
        Err(e) => return unsatisfiable(size, e),
    };
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end + 1),
    };
    // A whole blob's DAG: its bytes are the blob file, verified when it was pushed; served as the
    // OCI API serves it rather than leaf by leaf. (Trustless clients verify what they get.)
    let blob_file = reg.blob_file_by_root(&file, size).await.ok().flatten();
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
        None => match dag::file_head(reader.clone(), file, size.min(512)).await {
            Ok(b) => b,
            Err(e) => return text(StatusCode::BAD_GATEWAY, e.to_string()),
        },
    };
    let shown_name = query(req, "filename").unwrap_or(name);
    builder.status(status).content_type(forced_type.unwrap_or_else(|| sniff::content_type(&shown_name, &head_bytes))).insert_header(("Accept-Ranges", "bytes"));
    if query(req, "filename").is_some() || query(req, "download").is_some() {
        builder.insert_header(("Content-Disposition", disposition(req, &shown_name, false)));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder.insert_header(("Content-Range", format!("bytes {start}-{}/{size}", end - 1)));
    }
    if head {
        return builder.no_chunking(end - start).streaming(no_body());
    }
    builder.no_chunking(end - start).streaming(file_bytes(blob_file, reader, file, start, end))
}

type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Bytes `start..end` of the file at `cid`, whose root the caller's reader admitted: from
/// `blob_file` when it is a whole blob's (verified when it was pushed, read as the OCI API reads
/// it), else leaf by leaf, each verified.
fn file_bytes(blob_file: Option<std::fs::File>, reader: Arc<Reader>, cid: Cid, start: u64, end: u64) -> ByteStream {
    match blob_file {
        Some(blob) => Box::pin(crate::storage::read_range(blob, start, end - start)),
        None => Box::pin(dag::file_stream(reader, cid, start, end)),
    }
}
