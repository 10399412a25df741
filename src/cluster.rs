//! A client of IPFS Cluster's REST API (`--cluster-api`): the registry asks the cluster to keep
//! each tagged image on N nodes, and a node pinning an image asks the cluster what the pin says
//! of it. The cluster decides who holds what; our nodes fetch, verify, serve and report through
//! their Kubo-compatible RPC, which the cluster drives (see `rpc::pins`).
//!
//! The pins the registry makes carry metadata read back here and by the nodes that pin them:
//! `af-repository`, `af-digest` (the manifest), `af-visibility` (`public` or `private`) and
//! `af-node`.

use serde::Deserialize;
use std::collections::HashMap;

pub const META_REPOSITORY: &str = "af-repository";
pub const META_DIGEST: &str = "af-digest";
pub const META_VISIBILITY: &str = "af-visibility";
/// The peer ID of the node whose registry made the pin: it (or a node sharing its metadata)
/// keeps the pin up to date; the nodes holding replicas follow it.
pub const META_NODE: &str = "af-node";
/// The signature, by `af-node`'s swarm key, of what the pin says (see [`Claim`]).
pub const META_SIGNATURE: &str = "af-signature";
/// When the claim was signed (ms since the epoch): a replica applies only claims newer than
/// the last it applied, so a claim replayed from an older pin changes nothing.
pub const META_STAMP: &str = "af-stamp";

/// What a registry's pin says of an image, signed by the node that made it. Any cluster peer
/// can write any pin's metadata, so only this signature tells a node that a registry node (and
/// which one: its peer ID names its Ed25519 key) said it: which repository the image belongs
/// to, and whether it is public. A node follows a claim only into a repository that claims of
/// the same origin created here (`rpc::pins`, `node::replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub cid: String,
    pub repository: String,
    pub digest: String,
    pub public: bool,
    /// The origin node's peer ID (base58).
    pub node: String,
    /// When it was signed, in ms since the epoch.
    pub stamp: i64,
}

impl Claim {
    fn message(&self) -> Vec<u8> {
        let visibility = if self.public { "public" } else { "private" };
        format!("af-registry cluster pin v1\n{}\n{}\n{}\n{}\n{}\n{}", self.cid, self.repository, self.digest, visibility, self.node, self.stamp).into_bytes()
    }

    /// Whether two claims say the same, whenever they were signed.
    pub fn says_same(&self, other: &Claim) -> bool {
        (&self.cid, &self.repository, &self.digest, self.public, &self.node) == (&other.cid, &other.repository, &other.digest, other.public, &other.node)
    }

    /// The signature to put in [`META_SIGNATURE`], by the node's swarm key.
    pub fn sign(&self, key: &libp2p::identity::Keypair) -> String {
        key.sign(&self.message()).map(hex::encode).unwrap_or_default()
    }

    /// The claim `pin` makes, if its metadata is whole and signed by the key of the node it
    /// names; None otherwise (a pin anyone could have written).
    pub fn verified(pin: &Pin) -> Option<Claim> {
        let claim = Claim {
            cid: pin.cid.cid.clone(),
            repository: pin.meta(META_REPOSITORY)?.to_string(),
            digest: pin.meta(META_DIGEST)?.to_string(),
            public: match pin.meta(META_VISIBILITY)? {
                "public" => true,
                "private" => false,
                _ => return None,
            },
            node: pin.meta(META_NODE)?.to_string(),
            stamp: pin.meta(META_STAMP)?.parse().ok()?,
        };
        let signature = hex::decode(pin.meta(META_SIGNATURE)?).ok()?;
        let peer: libp2p::PeerId = claim.node.parse().ok()?;
        // An Ed25519 peer ID is its public key, inlined (identity multihash).
        let hash = peer.as_ref();
        if hash.code() != 0 {
            return None;
        }
        let key = libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()?;
        key.verify(&claim.message(), &signature).then_some(claim)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("IPFS Cluster at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("IPFS Cluster at {url} answered {status}: {message}")]
    Refused { url: String, status: u16, message: String },
    #[error("IPFS Cluster at {url}: unexpected answer: {detail}")]
    Protocol { url: String, detail: String },
}

type Result<T> = std::result::Result<T, ClusterError>;

/// One pin of the cluster's pinset, as `GET /allocations` gives it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Pin {
    pub cid: CidText,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub allocations: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub replication_factor_min: i32,
    #[serde(default)]
    pub replication_factor_max: i32,
}

impl Pin {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref().and_then(|m| m.get(key)).map(String::as_str)
    }
}

/// A CID as the cluster writes it: `"bafy..."` (its REST API), or `{"/": "bafy..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidText {
    pub cid: String,
}

impl<'de> Deserialize<'de> for CidText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Link {
                #[serde(rename = "/")]
                cid: String,
            },
        }
        Ok(match Form::deserialize(d)? {
            Form::Text(cid) | Form::Link { cid } => CidText { cid },
        })
    }
}

/// A cluster peer and the IPFS node (ours, or Kubo) behind it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: String,
    pub name: String,
    pub ipfs: String,
    /// The swarm addresses the IPFS node says it has.
    pub addresses: Vec<String>,
}

/// How one cluster peer holds a CID (`pinned`, `pinning`, `pin_queued`, `pin_error`, ...).
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer: String,
    pub name: String,
    pub ipfs: String,
    pub status: String,
    pub error: String,
}

/// What the registry asks of a pin.
#[derive(Debug, Clone, Default)]
pub struct PinRequest {
    pub name: String,
    /// The replication factor: at least `min_replicas` nodes (the pin fails with fewer peers
    /// to give it to), `replicas` wanted.
    pub min_replicas: u32,
    pub replicas: u32,
    /// Peers (cluster IDs) the pin should go to first.
    pub allocations: Vec<String>,
    pub metadata: Vec<(String, String)>,
}

pub struct Cluster {
    url: String,
    credentials: Option<(String, String)>,
    http: reqwest::Client,
}

impl Cluster {
    /// The cluster whose REST API is at `url` (`http://127.0.0.1:9094`), with Basic
    /// credentials `user:password` if its API wants them.
    pub fn new(url: &str, credentials: Option<&str>) -> Result<Cluster> {
        let url = url.trim_end_matches('/').to_string();
        let credentials = credentials.map(|c| match c.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => (c.to_string(), String::new()),
        });
        let http =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().map_err(|e| ClusterError::Unreachable { url: url.clone(), detail: e.to_string() })?;
        Ok(Cluster { url, credentials, http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send(&self, method: reqwest::Method, path: &str, query: &[(String, String)]) -> Result<bytes::Bytes> {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).query(query);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| ClusterError::Unreachable { url: self.url.clone(), detail: e.to_string() })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ClusterError::Unreachable { url: self.url.clone(), detail: e.to_string() })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().chars().take(300).collect());
            return Err(ClusterError::Refused { url: self.url.clone(), status: status.as_u16(), message });
        }
        Ok(body)
    }

    /// The JSON values of a body that is one value or a stream of them.
    fn values(&self, body: &[u8]) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for v in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
            let v = v.map_err(|e| ClusterError::Protocol { url: self.url.clone(), detail: e.to_string() })?;
            match v {
                serde_json::Value::Array(items) => out.extend(items),
                other => out.push(other),
            }
        }
        Ok(out)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, v: serde_json::Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| ClusterError::Protocol { url: self.url.clone(), detail: e.to_string() })
    }

    /// The cluster's peers, each with the IPFS node behind it.
    pub async fn peers(&self) -> Result<Vec<Peer>> {
        let body = self.send(reqwest::Method::GET, "/peers", &[]).await?;
        Ok(self
            .values(&body)?
            .into_iter()
            .filter(|v| v["error"].as_str().unwrap_or_default().is_empty())
            .map(|v| Peer {
                id: v["id"].as_str().unwrap_or_default().to_string(),
                name: v["peername"].as_str().unwrap_or_default().to_string(),
                ipfs: v["ipfs"]["id"].as_str().unwrap_or_default().to_string(),
                addresses: v["ipfs"]["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect(),
            })
            .collect())
    }

    /// Every pin of the pinset.
    pub async fn pins(&self) -> Result<Vec<Pin>> {
        let body = self.send(reqwest::Method::GET, "/allocations", &[("filter".into(), "pin".into())]).await?;
        self.values(&body)?.into_iter().map(|v| self.parse(v)).collect()
    }

    /// The pin of `cid`, if the pinset has it.
    pub async fn pin_of(&self, cid: &str) -> Result<Option<Pin>> {
        match self.send(reqwest::Method::GET, &format!("/allocations/{cid}"), &[]).await {
            Ok(body) => Ok(Some(self.parse(serde_json::from_slice(&body).map_err(|e| ClusterError::Protocol { url: self.url.clone(), detail: e.to_string() })?)?)),
            Err(ClusterError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Pins `cid` as `request` asks (an existing pin of it takes the new options).
    pub async fn pin(&self, cid: &str, request: &PinRequest) -> Result<()> {
        let max = request.replicas.max(1);
        let min = request.min_replicas.clamp(1, max);
        let mut query = vec![("name".to_string(), request.name.clone()), ("replication-min".into(), min.to_string()), ("replication-max".into(), max.to_string())];
        if !request.allocations.is_empty() {
            query.push(("user-allocations".into(), request.allocations.join(",")));
        }
        query.extend(request.metadata.iter().map(|(k, v)| (format!("meta-{k}"), v.clone())));
        self.send(reqwest::Method::POST, &format!("/pins/{cid}"), &query).await.map(drop)
    }

    /// Removes `cid` from the pinset (not there: nothing to do).
    pub async fn unpin(&self, cid: &str) -> Result<()> {
        match self.send(reqwest::Method::DELETE, &format!("/pins/{cid}"), &[]).await {
            Ok(_) | Err(ClusterError::Refused { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How each peer holds `cid`.
    pub async fn status(&self, cid: &str) -> Result<Vec<PeerStatus>> {
        let body = self.send(reqwest::Method::GET, &format!("/pins/{cid}"), &[]).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ClusterError::Protocol { url: self.url.clone(), detail: e.to_string() })?;
        let mut out: Vec<PeerStatus> = v["peer_map"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(peer, s)| PeerStatus {
                peer: peer.clone(),
                name: s["peername"].as_str().unwrap_or_default().to_string(),
                ipfs: s["ipfs_peer_id"].as_str().unwrap_or_default().to_string(),
                status: s["status"].as_str().unwrap_or_default().to_string(),
                error: s["error"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer.cmp(&b.peer)));
        Ok(out)
    }
}
