//! The pin commands in the shapes Kubo gives them and IPFS Cluster's `ipfshttp` connector reads:
//! `pin/add` (with `progress=true`, a stream of `{"Progress": n}` while the DAG is fetched),
//! `pin/ls` (`stream=true`: NDJSON; one CID not pinned: an error ending in "not pinned"),
//! `pin/rm` (not pinned: "not pinned or pinned indirectly") and `pin/update`.
//!
//! A pin says every block of the DAG is here: `pin/add` walks the whole DAG (fetching from peers
//! what the node lacks, each block verified before it is kept), flushes what it fetched, and only
//! then records the pin.

use super::{arg, args, audience, bad_request, dag_failure, error, fetching_reader_for, flag, parse_path, streamed_lines, RpcState};
use crate::blockstore::Owner;
use crate::dag::{DagError, Reader};
use crate::swarm::keeper::Keeper;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use actix_web::HttpResponse;
use bytes::Bytes;
use cid::Cid;
use serde_json::json;
use std::time::{Duration, Instant};

/// Kubo's error for unpinning what is not pinned, which Cluster matches word for word.
pub const NOT_PINNED: &str = "not pinned or pinned indirectly";
/// How often `pin/add?progress=true` reports while blocks arrive (Kubo: twice a second).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The CIDs `arg` names, each path resolved (fetching from peers what the node lacks without
/// keeping it: what a block is kept as is the pin's to decide, see [`pin_one`]).
async fn targets(req: &HttpRequest, state: &RpcState) -> Result<Vec<Cid>, HttpResponse> {
    let mut out = Vec::new();
    let reader = super::passing_reader(req, state);
    for a in args(req, "arg") {
        let (root, path) = parse_path(&a)?;
        if path.is_empty() {
            // Found here or at a peer, or a clear "not found" now rather than a cut stream later.
            reader.block(&root).await.map_err(dag_failure)?;
            out.push(root);
            continue;
        }
        let chain = reader.resolve(root, &path).await.map_err(dag_failure)?;
        out.push(*chain.last().expect("a chain has a target"));
    }
    if out.is_empty() {
        return Err(bad_request("argument \"ipfs-path\" is required"));
    }
    Ok(out)
}

/// One pin's walk: every block of `cid`'s DAG read (fetched where missing), counted into
/// `progress`.
struct Walk {
    reader: std::sync::Arc<Reader>,
    /// Blocks still to visit, the next last.
    stack: Vec<Cid>,
    seen: std::collections::HashSet<Cid>,
    keeper: Option<Keeper>,
}

impl Walk {
    fn new(reader: std::sync::Arc<Reader>, keeper: Option<Keeper>, cid: Cid) -> Walk {
        Walk { reader, stack: vec![cid], seen: Default::default(), keeper }
    }

    /// The next block reached (fetched and kept if the node lacked it): Some(Ok) while there
    /// are more. A raw leaf links nothing, so it is only made sure of, not read back: reading
    /// every leaf of a fetched layer back from the index (and hashing it again) cost a fleet
    /// pulling one layer a tenth of its CPU.
    async fn step(&mut self) -> Option<Result<(), String>> {
        loop {
            let cid = self.stack.pop()?;
            if !self.seen.insert(cid) {
                continue;
            }
            if cid.codec() == crate::unixfs::RAW {
                return Some(self.reader.holds(&cid).await.map_err(|e| e.to_string()));
            }
            let links = match self.reader.block(&cid).await {
                Ok(bytes) => crate::dag::block_links(&cid, &bytes),
                Err(e) => Err(e),
            };
            return Some(match links {
                Ok(links) => {
                    self.stack.extend(links.into_iter().rev());
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
        }
    }

    /// The fetched blocks committed: the DAG is here for good.
    async fn finish(self) -> Result<(), String> {
        match &self.keeper {
            Some(k) => k.flush().await,
            None => Ok(()),
        }
    }
}

/// `pin/add?arg=...[&progress=true]`.
pub(super) async fn add(req: &HttpRequest, state: &actix_web::web::Data<RpcState>, gc: crate::storage::GcLock) -> HttpResponse {
    let cids = match targets(req, state).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if flag(req, "recursive") == Some(false) {
        return add_direct(req, state, &cids).await;
    }
    if !flag(req, "progress").unwrap_or(false) {
        let mut progress = 0u64;
        for cid in &cids {
            if let Err(e) = pin_one(req, state, *cid, &mut progress, |_| {}).await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
        }
        drop(gc);
        return HttpResponse::Ok().json(json!({"Pins": cids.iter().map(Cid::to_string).collect::<Vec<_>>()}));
    }
    // Streamed: a line whenever blocks arrived in the last half second, the pins at the end. A
    // failure after the first line cuts the response short (no final chunk), which a client
    // reading to the end sees as an error rather than a finished pin.
    let (lines, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let state = state.clone();
    let req = req.clone();
    actix_web::rt::spawn(async move {
        let _gc = gc;
        let mut progress = 0u64;
        let mut last = Instant::now();
        for cid in &cids {
            let sent = |n: u64| {
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    let _ = lines.try_send(Ok(Bytes::from(format!("{}\n", json!({"Progress": n})))));
                }
            };
            if let Err(e) = pin_one(&req, &state, *cid, &mut progress, sent).await {
                tracing::warn!(%cid, error = %e, "pin/add failed");
                let _ = lines.send(Ok(Bytes::from(format!("{}\n", json!({"Message": e, "Code": 0, "Type": "error"}))))).await;
                let _ = lines.send(Err(std::io::Error::other(e))).await;
                return;
            }
        }
        let pins: Vec<String> = cids.iter().map(Cid::to_string).collect();
        let _ = lines.send(Ok(Bytes::from(format!("{}\n", json!({"Pins": pins, "Progress": progress}))))).await;
    });
    streamed_lines(rx)
}

/// `pin/add?recursive=false`: each root block kept (fetched if need be) and pinned alone.
async fn add_direct(req: &HttpRequest, state: &RpcState, cids: &[Cid]) -> HttpResponse {
    for cid in cids {
        let fetch = state.policy.fetching(cid);
        let (reader, keeper) = fetching_reader_for(req, state, Owner::Pin(cid.to_string()), Some(fetch.underway.clone()));
        if let Err(e) = reader.block(cid).await {
            return dag_failure(e);
        }
        if let Some(k) = keeper {
            if let Err(e) = k.flush().await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
        }
        if let Err(e) = state.registry.pin_block_with(cid, false, fetch.underway.came_from_trusted()).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    }
    HttpResponse::Ok().json(json!({"Pins": cids.iter().map(Cid::to_string).collect::<Vec<_>>()}))
}

/// Whether `cid` is an OCI image layout's root (its `oci-layout` and `index.json` found, from
/// peers if need be). A block that could not be had is an error, not a "no": taken for a plain
/// DAG, an image whose peers were slow would be held unserved for good, its pin done.
async fn is_image_layout(reader: &Reader, cid: Cid) -> Result<bool, String> {
    for entry in ["oci-layout", "index.json"] {
        match reader.resolve(cid, &[entry.to_string()]).await {
            Ok(_) => {}
            Err(e @ (DagError::Missing(_) | DagError::Registry(_))) => return Err(e.to_string()),
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// The cluster's pin of `cid`; None without a cluster or such a pin (the operator's own
/// `pin/add`).
async fn pin_in_cluster(state: &RpcState, cid: Cid) -> Result<Option<crate::cluster::Pin>, String> {
    let Some(cluster) = &state.cluster else { return Ok(None) };
    cluster.pin_of(&cid.to_string()).await.map_err(|e| format!("cannot tell who asked for the pin: {e}"))
}

/// Cluster peers a pin's holders are looked for among: its allocations and its origin.
const HOLDERS: usize = 8;

/// Connects to the nodes behind the cluster peers `pin` is allocated to and to the node whose
/// claim it carries (`origin`), at the addresses the cluster gives for them. Cluster's connector
/// connects the nodes only when it starts; a private block is announced nowhere, so without a
/// connection a replica could never find its origin (after an idle connection closed, a restart,
/// or when the nodes were not yet up at the cluster's start). Best effort: the walk that follows
/// fails as before if no holder answers.
async fn connect_holders(state: &RpcState, pin: &crate::cluster::Pin, origin: Option<&str>) {
    let Some(cluster) = &state.cluster else { return };
    let Ok(peers) = cluster.peers().await else { return };
    let allocated = pin.allocations.as_deref().unwrap_or_default();
    let holders = peers.iter().filter(|p| allocated.contains(&p.id) || origin == Some(p.ipfs.as_str()));
    for p in holders.take(HOLDERS) {
        let Ok(peer) = p.ipfs.parse::<libp2p::PeerId>() else { continue };
        if peer == state.swarm.peer_id {
            continue;
        }
        let addrs = p.addresses.iter().filter_map(|a| a.parse().ok()).take(crate::swarm::ADDRESSES_PER_PEER).collect();
        if !state.swarm.dial_any(peer, addrs).await {
            tracing::debug!(%peer, cid = %pin.cid.cid, "a holder of a cluster pin did not answer");
        }
    }
}

/// Pins `cid` once its whole DAG is here, telling `progress` the blocks walked so far.
///
/// A cluster pin may make the node hold bytes; it never changes who may read what exists here,
/// nor writes into a repository it did not make (SECURITY.md). So an image layout's DAG
/// becomes an image the registry serves (its manifests and tags, blobs recorded by their
/// roots) only:
/// - for the operator's own `pin/add` (no cluster pin names the CID): in the repository its
///   layout names, as it is, or new and private;
/// - for a cluster pin signed by a registry node (`cluster::Claim`): in a repository that
///   node's pins made here, or make now with the visibility the claim says.
///
/// Anything else a cluster pins is held, not served: its blocks are kept as an image's, which
/// only the operator and trusted peers see. A plain DAG's pin is public while it stands, as on
/// Kubo, unless its pin says `af-visibility=private`.
async fn pin_one(req: &HttpRequest, state: &RpcState, cid: Cid, progress: &mut u64, mut told: impl FnMut(u64)) -> Result<(), String> {
    // What the image's layout says is read through, not kept: its blocks are kept by the walk,
    // as the image's or as the pin's once its visibility is known.
    let probe = super::passing_reader(req, state);
    let pin = pin_in_cluster(state, cid).await?;
    let claim = pin.as_ref().and_then(crate::cluster::Claim::verified).filter(|c| c.cid == cid.to_string());
    if let Some(pin) = &pin {
        connect_holders(state, pin, claim.as_ref().map(|c| c.node.as_str())).await;
    }
    let mut public = pin.as_ref().and_then(|p| p.meta(crate::cluster::META_VISIBILITY)).is_none_or(|v| v == "public");
    if is_image_layout(&probe, cid).await? {
        use crate::car::{CarError, PinOrigin};
        let own = claim.as_ref().is_some_and(|c| c.node == state.swarm.peer_id.to_string() || state.registry.is_fellow(&c.node));
        let origin = match (&pin, &claim) {
            // This registry's own image, pinned here by its own replication: already served.
            _ if own => None,
            (None, _) => Some(PinOrigin::Operator),
            (Some(_), Some(claim)) => Some(PinOrigin::Node(claim)),
            (Some(_), None) => None,
        };
        public = false;
        match origin {
            Some(origin) => match crate::car::import_pinned(&state.registry, probe, cid, origin).await {
                Ok((summary, is_public, tags)) => {
                    tracing::info!(pin = %cid, repository = %summary.repository, public = is_public, manifests = summary.manifests, tags = tags.len(), "a pinned image is served");
                    state.registry.record_pin_tags(&cid, tags).await.map_err(|e| e.to_string())?;
                    public = is_public;
                }
                Err(e @ (CarError::Registry(_) | CarError::Metadata(_) | CarError::Task(_))) => return Err(e.to_string()),
                Err(e) => tracing::warn!(pin = %cid, error = %e, "pinned image held, not served"),
            },
            None if own => {}
            None => tracing::warn!(pin = %cid, "a cluster pin of an image that no registry node signed: held, not served"),
        }
    }
    let owner = if public { Owner::Pin(cid.to_string()) } else { Owner::Image(cid.to_string()) };
    // Registered until the pin is recorded: its blocks may be passed on meanwhile (see
    // `exposure::Underway`).
    let fetch = state.policy.fetching(&cid);
    let (reader, keeper) = fetching_reader_for(req, state, owner, Some(fetch.underway.clone()));
    let mut walk = Walk::new(reader, keeper, cid);
    while let Some(step) = walk.step().await {
        step?;
        *progress += 1;
        told(*progress);
    }
    walk.finish().await?;
    state.registry.pin_block_with(&cid, true, fetch.underway.came_from_trusted()).await.map_err(|e| e.to_string())
}

/// `pin/ls[?arg=...][&type=all|recursive|direct|indirect][&stream=true]`. The blocks under
/// recursive pins are indirect (listed only when asked for by CID).
pub(super) async fn ls(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let kind = arg(req, "type").unwrap_or_else(|| "all".into());
    if !["all", "recursive", "direct", "indirect"].contains(&kind.as_str()) {
        return bad_request(format!("invalid type '{kind}', must be one of {{direct, indirect, recursive, all}}"));
    }
    let pins = match state.policy.pins().await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let direct_pins = match state.policy.direct_pins().await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let reader = Reader::new(&state.policy, audience(req, state).await);
    let visible = |cid: Cid| {
        let reader = reader.clone();
        async move {
            if reader.sees_all() {
                return Ok(true);
            }
            match reader.block(&cid).await {
                Ok(_) => Ok(true),
                Err(DagError::Registry(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e)),
                Err(_) => Ok(false),
            }
        }
    };
    let recursive = kind == "all" || kind == "recursive";
    let direct = kind == "all" || kind == "direct";
    let mut kinds: Vec<(String, &str)> = Vec::new();
    if recursive {
        kinds.extend(pins.into_iter().map(|p| (p, "recursive")));
    }
    if direct {
        kinds.extend(direct_pins.into_iter().map(|p| (p, "direct")));
    }
    let mut listed: Vec<(String, &str)> = Vec::new();
    let asked = args(req, "arg");
    if asked.is_empty() {
        for (pin, kind) in kinds {
            let Ok(cid) = pin.parse::<Cid>() else { continue };
            match visible(cid).await {
                Ok(true) => listed.push((pin, kind)),
                Ok(false) => {}
                Err(resp) => return resp,
            }
        }
    } else {
        for a in asked {
            let (cid, path) = match parse_path(&a) {
                Ok(p) => p,
                Err(resp) => return resp,
            };
            let pinned = kinds.iter().find(|(p, _)| path.is_empty() && *p == cid.to_string()).map(|(_, k)| *k);
            match (pinned, visible(cid).await) {
                (Some(kind), Ok(true)) => listed.push((cid.to_string(), kind)),
                (_, Err(resp)) => return resp,
                _ => return bad_request(format!("path '{a}' is not pinned")),
            }
        }
    }
    // A pin's name tells what it did to tags: the image it serves, and any tag it left alone.
    let mut names: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    match state.registry.pin_tags(None).await {
        Ok(all) => {
            for (root, t) in all {
                let said =
                    if t.conflict { format!("tag conflict: {}:{} stays where it was, not on {}", t.repository, t.tag, t.digest) } else { format!("{}:{}", t.repository, t.tag) };
                names.entry(root).or_default().push(said);
            }
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    let name = |cid: &str| names.get(cid).map(|n| n.join("; ")).unwrap_or_default();
    if flag(req, "stream").unwrap_or(false) {
        let body: String = listed.iter().map(|(cid, t)| format!("{}\n", json!({"Cid": cid, "Type": t, "Name": name(cid)}))).collect();
        return HttpResponse::Ok().insert_header(("X-Chunked-Output", "1")).content_type("application/json").body(body);
    }
    let keys: serde_json::Map<String, serde_json::Value> = listed
        .into_iter()
        .map(|(cid, t)| {
            let n = name(&cid);
            (cid, json!({"Type": t, "Name": n}))
        })
        .collect();
    HttpResponse::Ok().json(json!({"Keys": keys}))
}

/// `pin/rm?arg=...`.
pub(super) async fn rm(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let mut removed = Vec::new();
    for a in args(req, "arg") {
        let cid = match parse_path(&a) {
            Ok((cid, path)) if path.is_empty() => cid,
            Ok(_) => return bad_request(NOT_PINNED),
            Err(resp) => return resp,
        };
        let unpinned = state.registry.unpin_block(&cid).await;
        // A pin that failed half-way may have given tags: they go whether or not it was pinned.
        if let Err(e) = state.registry.release_pin_tags(&cid).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        match unpinned {
            Ok(true) => removed.push(cid.to_string()),
            Ok(false) => return bad_request(NOT_PINNED),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    if removed.is_empty() {
        return bad_request("argument \"ipfs-path\" is required");
    }
    HttpResponse::Ok().json(json!({"Pins": removed}))
}

/// `pin/update?arg=FROM&arg=TO[&unpin=false]`: TO pinned (only the blocks FROM's DAG lacks
/// are fetched: the walk finds the rest here), then FROM unpinned unless `unpin=false`.
pub(super) async fn update(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let cids = match targets(req, state).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let [from, to] = cids.as_slice() else {
        return bad_request("pin/update takes two paths: the pinned one and the new one");
    };
    match state.policy.pins().await {
        Ok(pins) if pins.contains(&from.to_string()) => {}
        Ok(_) => return bad_request("'from' cid was not recursively pinned already"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    if let Err(e) = pin_one(req, state, *to, &mut 0, |_| {}).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    if flag(req, "unpin").unwrap_or(true) && from != to {
        if let Err(e) = state.registry.unpin_block(from).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        if let Err(e) = state.registry.release_pin_tags(from).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    }
    HttpResponse::Ok().json(json!({"Pins": [from.to_string(), to.to_string()]}))
}
