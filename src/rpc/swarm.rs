//! The swarm as Kubo's RPC shows it: `swarm/*` (peers, their addresses, connecting),
//! `routing/findprovs` and `routing/provide` (the DHT), `bitswap/stat` and `bitswap/ledger`.

use super::*;

pub(super) async fn peers(state: &RpcState) -> HttpResponse {
    match state.swarm.peers().await {
        Ok(peers) => HttpResponse::Ok().json(json!({"Peers": peers
            .iter()
            .map(|(peer, addr)| json!({"Addr": addr.to_string(), "Peer": peer.to_string(), "Latency": "", "Muxer": "", "Direction": 0, "Streams": null}))
            .collect::<Vec<_>>()})),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Kubo's `swarm addrs`: the addresses the routing table keeps, by peer.
pub(super) async fn addrs(state: &RpcState) -> HttpResponse {
    match state.swarm.known_addresses().await {
        Ok(known) => {
            let addrs: serde_json::Map<String, serde_json::Value> =
                known.into_iter().map(|(peer, addrs)| (peer.to_string(), json!(addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()))).collect();
            HttpResponse::Ok().json(json!({"Addrs": addrs}))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub(super) async fn connect(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let mut out = Vec::new();
    for a in args(req, "arg") {
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

pub(super) async fn disconnect(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let mut out = Vec::new();
    for a in args(req, "arg") {
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

pub(super) async fn find_providers(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let cid = match arg(req, "arg").map(|a| parse_path(&a)) {
        Some(Ok((cid, _))) => cid,
        Some(Err(resp)) => return resp,
        None => return bad_request("argument \"key\" is required"),
    };
    let n = match arg(req, "num-providers").map(|v| v.parse::<usize>()) {
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

pub(super) async fn provide(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let mut lines = String::new();
    for a in args(req, "arg") {
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

pub(super) fn ledger(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let Some(peer) = arg(req, "arg").and_then(|a| a.parse::<libp2p::PeerId>().ok()) else {
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

pub(super) async fn bitswap_stat(state: &RpcState) -> HttpResponse {
    let stats = &state.swarm.bitswap.stats;
    let peers = state.swarm.peers().await.unwrap_or_default();
    let count = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    HttpResponse::Ok().json(json!({
        "ProvideBufLen": 0,
        "Wantlist": [],
        "Peers": peers.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>(),
        "BlocksReceived": count(&stats.blocks_received),
        "DataReceived": count(&stats.data_received),
        "DupBlksReceived": count(&stats.duplicates),
        "DupDataReceived": count(&stats.duplicate_data),
        "MessagesReceived": count(&stats.messages_received),
        "BlocksSent": count(&stats.blocks_sent),
        "DataSent": count(&stats.data_sent),
    }))
}
