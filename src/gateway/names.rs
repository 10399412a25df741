//! `/ipns/<name>/...`: a name resolved through the IPNS record this node holds for it (put
//! through the RPC, or published by the node), then answered as the `/ipfs/` path it points at,
//! through the same exposure as any other request; `?format=ipns-record` answers the record.

use super::{content_path, disposition, query, serve, text, Shown};
use crate::exposure::Policy;
use crate::ipns::Name;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

pub const RECORD_TYPE: &str = "application/vnd.ipfs.ipns-record";
/// Names followed from one to the next (`/ipns/` values) at most.
const MAX_HOPS: usize = 32;

fn wants_record(req: &HttpRequest) -> bool {
    if let Some(f) = query(req, "format") {
        return f == "ipns-record";
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.split(',').any(|i| i.split(';').next().unwrap_or("").trim() == RECORD_TYPE)
}

fn unresolved(name: &Name) -> HttpResponse {
    text(StatusCode::BAD_GATEWAY, format!("could not resolve /ipns/{}: this node holds no valid IPNS record for it", name.canonical()))
}

pub(super) async fn handle(req: HttpRequest, policy: web::Data<Policy>, swarm: Option<crate::swarm::Handle>, tail: &str) -> HttpResponse {
    let (name_text, rest) = tail.split_once('/').map(|(a, b)| (a, Some(b))).unwrap_or((tail, None));
    let Ok((name, canonical)) = Name::parse(name_text) else {
        return text(StatusCode::BAD_REQUEST, format!("{name_text:?} is not an IPNS name this gateway resolves (a libp2p key)"));
    };
    if !canonical {
        // One spelling per name, so caches and origins agree: CIDv1, libp2p-key, base36.
        let mut location = format!("/ipns/{}", name.canonical());
        if let Some(rest) = rest {
            location = format!("{location}/{rest}");
        }
        if !req.query_string().is_empty() {
            location = format!("{location}?{}", req.query_string());
        }
        return HttpResponse::Found().insert_header(("Location", location)).finish();
    }
    let reg = policy.registry();
    let held = match reg.ipns_record(&name).await {
        Ok(h) => h,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some((bytes, record)) = held else { return unresolved(&name) };
    if wants_record(&req) {
        let max_age = record.ttl.as_secs();
        return HttpResponse::Ok()
            .content_type(RECORD_TYPE)
            .insert_header(("Content-Disposition", disposition(&req, &format!("{}.ipns-record", name.canonical()), true)))
            .insert_header(("Cache-Control", format!("public, max-age={max_age}")))
            .insert_header(("Etag", format!("\"{}\"", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)))))
            .insert_header(("X-Ipfs-Path", req.path()))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Vary", "Accept"))
            .body(bytes);
    }
    // The value, through further names if it names one; the shortest TTL on the way holds.
    let (mut value, mut ttl) = (record.value, record.ttl);
    for _ in 0..MAX_HOPS {
        let Some(next) = value.strip_prefix("/ipns/") else { break };
        let (next_name, next_rest) = next.split_once('/').map_or((next, ""), |(n, r)| (n, r));
        let Ok((next_name, _)) = Name::parse(next_name) else { return unresolved(&name) };
        let Ok(Some((_, next_record))) = reg.ipns_record(&next_name).await else { return unresolved(&next_name) };
        value = format!("{}/{next_rest}", next_record.value.trim_end_matches('/'));
        ttl = ttl.min(next_record.ttl);
    }
    let Some(content) = value.strip_prefix("/ipfs/") else { return unresolved(&name) };
    let (root, mut segments) = match content_path(content) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match content_path(&format!("{root}/{}", rest.unwrap_or(""))) {
        Ok((_, more)) => segments.extend(more),
        Err(resp) => return resp,
    }
    let shown = Shown { path: Some(req.path().to_string()), cache: format!("public, max-age={}", ttl.as_secs()) };
    serve(req, policy, swarm, root, segments, shown).await
}
