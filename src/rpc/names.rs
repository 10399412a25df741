//! IPNS through the RPC: `routing/put` of a record for any name (validated, kept if newer),
//! `name/publish` for the node's own key, `name/resolve`.

use super::{arg, bad_request, error, flag, Part, Parts, RpcState};
use crate::ipns::{self, Name};
use crate::registry::IpnsPutError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::time::{Duration, SystemTime};

/// `/ipns/<name>` or `<name>`.
fn name_arg(raw: &str) -> Result<Name, HttpResponse> {
    let name = raw.strip_prefix("/ipns/").unwrap_or(raw).trim_end_matches('/');
    Name::parse(name).map(|(n, _)| n).map_err(bad_request)
}

fn put_error(e: IpnsPutError) -> HttpResponse {
    match e {
        IpnsPutError::Registry(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        e => bad_request(e),
    }
}

/// `routing/put?arg=/ipns/<name>` with the record as the request's file.
pub(super) async fn routing_put(req: &HttpRequest, body: web::Payload, state: &RpcState) -> HttpResponse {
    let Some(key) = arg(req, "arg") else { return bad_request("argument \"key\" is required") };
    if !key.starts_with("/ipns/") {
        return bad_request(format!("{key:?}: only /ipns/ records are kept here"));
    }
    let name = match name_arg(&key) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let mut parts = Parts::new(req, body);
    let mut record = Vec::new();
    while let Some(part) = parts.next().await {
        match part {
            Ok(Part::Data(chunk)) => {
                if record.len() + chunk.len() > ipns::MAX_RECORD {
                    return bad_request("an IPNS record is at most 10 KiB");
                }
                record.extend_from_slice(&chunk);
            }
            Ok(Part::End(_)) => break,
            Err(resp) => return resp,
        }
    }
    match state.registry.put_ipns_record(&name, record).await {
        Ok(_) => HttpResponse::Ok().json(json!({"ID": "", "Type": 5, "Responses": null, "Extra": ""})),
        Err(e) => put_error(e),
    }
}

/// `name/publish?arg=<path>[&key=self][&lifetime=48h][&ttl=1h]`: a record for the node's own key.
pub(super) async fn publish(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let Some(raw) = arg(req, "arg") else { return bad_request("argument \"ipfs-path\" is required") };
    if arg(req, "key").is_some_and(|k| k != "self" && k != state.identity.peer_id) {
        return bad_request("only the node's own key (self) publishes here");
    }
    let value = if raw.starts_with("/ipfs/") || raw.starts_with("/ipns/") { raw } else { format!("/ipfs/{raw}") };
    let duration = |key: &str, default: Duration| match arg(req, key) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v).map_err(|e| bad_request(format!("{key} {v:?}: {e}"))),
    };
    let (lifetime, ttl) = match (duration("lifetime", Duration::from_secs(48 * 3600)), duration("ttl", Duration::from_secs(3600))) {
        (Ok(l), Ok(t)) => (l, t),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let mut seed = state.identity.seed;
    let key = match libp2p::identity::Keypair::ed25519_from_bytes(&mut seed) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let name = Name(key.public().to_peer_id());
    let sequence = match state.registry.ipns_record(&name).await {
        Ok(held) => held.map_or(0, |(_, r)| r.sequence + 1),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let record = match ipns::sign(&key, &value, sequence, lifetime, ttl, SystemTime::now()) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match state.registry.put_ipns_record(&name, record).await {
        Ok(_) => HttpResponse::Ok().json(json!({"Name": name.canonical(), "Value": value})),
        Err(e) => put_error(e),
    }
}

/// `name/resolve?arg=/ipns/<name>[&recursive=true]`.
pub(super) async fn resolve(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let Some(raw) = arg(req, "arg") else { return bad_request("argument \"name\" is required") };
    let recursive = flag(req, "recursive").unwrap_or(true);
    let name = match name_arg(&raw) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let rest = raw.strip_prefix("/ipns/").unwrap_or(&raw).trim_end_matches('/').split_once('/').map_or(String::new(), |(_, r)| format!("/{r}"));
    let (value, ttl) = match state.registry.ipns_record(&name).await {
        Ok(Some((_, record))) => (format!("{}{rest}", record.value), record.ttl),
        Ok(None) => return unresolved(&name),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if !recursive {
        return HttpResponse::Ok().json(json!({"Path": value}));
    }
    match state.registry.follow_ipns(value, ttl).await {
        Ok(ipns::Followed::Path(path, _)) => HttpResponse::Ok().json(json!({"Path": path})),
        Ok(ipns::Followed::NoRecord(name)) => unresolved(&name),
        Ok(ipns::Followed::TooDeep(_)) => bad_request(format!("{raw}: more than {} IPNS hops", ipns::MAX_HOPS)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn unresolved(name: &Name) -> HttpResponse {
    bad_request(format!("could not resolve name /ipns/{}: no valid record on this node", name.canonical()))
}
