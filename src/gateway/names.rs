//! `/ipns/<name>/...`: a name resolved through the IPNS record this node holds for it (put
//! through the RPC, or published by the node), then answered as the `/ipfs/` path it points at,
//! through the same exposure as any other request; `?format=ipns-record` answers the record.

use super::{content_path, disposition, query, serve, text, Naming, Shown};
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
    match resolver.resolve(domain).await {
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
    mut value: String,
    mut ttl: std::time::Duration,
    rest: Option<&str>,
    shown_path: String,
) -> HttpResponse {
    let reg = policy.registry();
    for _ in 0..MAX_HOPS {
        let Some(next) = value.strip_prefix("/ipns/") else { break };
        let (next_name, next_rest) = next.split_once('/').map_or((next, ""), |(n, r)| (n, r));
        let Ok((next_name, _)) = Name::parse(next_name) else {
            return text(StatusCode::BAD_GATEWAY, format!("{value}: only IPNS keys are followed from a name"));
        };
        let Ok(Some((_, next_record))) = reg.ipns_record(&next_name).await else { return unresolved(&next_name) };
        value = format!("{}/{next_rest}", next_record.value.trim_end_matches('/'));
        ttl = ttl.min(next_record.ttl);
    }
    let Some(content) = value.strip_prefix("/ipfs/") else {
        return text(StatusCode::BAD_GATEWAY, format!("{value}: more than {MAX_HOPS} names to follow"));
    };
    let (root, mut segments) = match content_path(content) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match content_path(&format!("{root}/{}", rest.unwrap_or(""))) {
        Ok((_, more)) => segments.extend(more),
        Err(resp) => return resp,
    }
    let shown = Shown { path: Some(shown_path), cache: format!("public, max-age={}", ttl.as_secs()) };
    serve(req, policy, swarm, root, segments, shown).await
}
