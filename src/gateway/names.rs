//! `/ipns/<name>/...`: a name resolved through the IPNS record this node holds for it (put
//! through the RPC, or published by the node), then answered as the `/ipfs/` path it points at,
//! through the same exposure as any other request; `?format=ipns-record` answers the record.

use super::{content_path, disposition, query, serve, text, Naming, Shown};
use crate::exposure::Policy;
use crate::ipns::Name;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

pub const RECORD_TYPE: &str = "application/vnd.ipfs.ipns-record";

fn wants_record(req: &HttpRequest) -> bool {
    if let Some(f) = query(req, "format") {
        return f == "ipns-record";
    }
    super::accepts(req, RECORD_TYPE)
}

fn unresolved(name: &Name) -> HttpResponse {
    text(StatusCode::BAD_GATEWAY, format!("could not resolve /ipns/{}: this node holds no valid IPNS record for it", name.canonical()))
}

pub(super) async fn handle(req: HttpRequest, policy: web::Data<Policy>, swarm: Option<crate::swarm::Handle>, naming: &Naming, tail: &str) -> HttpResponse {
    let (name_text, rest) = tail.split_once('/').map(|(a, b)| (a, Some(b))).unwrap_or((tail, None));
    let Ok((name, canonical)) = Name::parse(name_text) else {
        return dnslink(req, policy, swarm, naming, name_text, rest).await;
    };
    if !canonical {
        // One spelling per name, so caches and origins agree: CIDv1, libp2p-key, base36.
        let mut location = format!("/ipns/{}", name.canonical());
        if let Some(rest) = rest {
            location = format!("{location}/{rest}");
        }
        return HttpResponse::Found().insert_header(("Location", super::hosts::with_query(&req, location))).finish();
    }
    let reg = policy.registry();
    let held = match reg.ipns_record(&name).await {
        Ok(h) => h,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some((bytes, record)) = held else { return unresolved(&name) };
    if wants_record(&req) {
        let max_age = record.ttl.min(crate::dnslink::MAX_TTL).as_secs();
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
    let shown_path = req.path().to_string();
    follow(req, policy, swarm, record.value, record.ttl, rest, shown_path).await
}

/// `/ipns/<domain>/...`: the path the domain's DNSLink names.
async fn dnslink(req: HttpRequest, policy: web::Data<Policy>, swarm: Option<crate::swarm::Handle>, naming: &Naming, domain: &str, rest: Option<&str>) -> HttpResponse {
    if !crate::dnslink::is_domain(domain) {
        return text(StatusCode::BAD_REQUEST, format!("{domain:?} is neither an IPNS key nor a DNS name"));
    }
    let Some(resolver) = &naming.dnslink else {
        return text(StatusCode::NOT_FOUND, format!("{domain}: DNSLink is not resolved by this gateway (no DNS resolver)"));
    };
    match resolver.resolve(domain, req.peer_addr().map(|a| a.ip())).await {
        Ok(Some((value, ttl))) => {
            // As the browser sees it: on a DNSLink host, its own path; else /ipns/<domain>/...
            let shown = format!("/ipns/{domain}{}", if rest.is_some() || req.path().ends_with('/') { format!("/{}", rest.unwrap_or("")) } else { String::new() });
            follow(req, policy, swarm, value, ttl, rest, shown).await
        }
        Ok(None) => text(StatusCode::NOT_FOUND, format!("{domain} has no DNSLink record (_dnslink.{domain} TXT dnslink=/ipfs/...)")),
        Err(e @ crate::dnslink::DnsLinkError::Busy) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("resolving {domain}: {e}")),
    }
}

/// Serves `value` (an `/ipfs/` path, or an `/ipns/` one followed through the records held)
/// joined with `rest`; the shortest TTL on the way is the cache lifetime.
async fn follow(
    req: HttpRequest,
    policy: web::Data<Policy>,
    swarm: Option<crate::swarm::Handle>,
    value: String,
    ttl: std::time::Duration,
    rest: Option<&str>,
    shown_path: String,
) -> HttpResponse {
    let (value, ttl) = match policy.registry().follow_ipns(value, ttl).await {
        Ok(crate::ipns::Followed::Path(value, ttl)) => (value, ttl),
        Ok(crate::ipns::Followed::NoRecord(name)) => return unresolved(&name),
        Ok(crate::ipns::Followed::TooDeep(value)) => return text(StatusCode::BAD_GATEWAY, format!("{value}: more than {} names to follow", crate::ipns::MAX_HOPS)),
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some(content) = value.strip_prefix("/ipfs/") else {
        return text(StatusCode::BAD_GATEWAY, format!("{value}: only IPNS keys are followed from a name"));
    };
    let (root, mut segments) = match content_path(content) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match content_path(&format!("{root}/{}", rest.unwrap_or(""))) {
        Ok((_, more)) => segments.extend(more),
        Err(resp) => return resp,
    }
    // A record's TTL is its publisher's word (584 years was seen): capped as DNSLink's is.
    let shown = Shown { path: Some(shown_path), cache: format!("public, max-age={}", ttl.min(crate::dnslink::MAX_TTL).as_secs()) };
    serve(req, policy, swarm, root, segments, shown).await
}
