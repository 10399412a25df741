//! Keeping each tagged image on N nodes through IPFS Cluster (`--cluster-api`): the cluster's
//! pinset is brought to what the registry holds, repository by repository, when the registry
//! says something changed and every [`FULL_PASS`] in any case.
//!
//! Each tag's image CID is pinned with the repository's replication factor (`af registry
//! replicas`, else `--replicas`) and metadata naming its repository, manifest and visibility
//! (nodes that pin it read the visibility: see `rpc::pins`), this node's cluster peer first
//! (it holds every byte already). A private image is allocated to this node and its trusted
//! peers only: an untrusted node could not fetch it anyway, and a trusted one keeps it private. A pin whose tag moved goes after the grace period (a client
//! may still be pulling it); one whose manifest was deleted goes at once.
//!
//! Only the pins this node's registry made (`af-node`: this node or one sharing its metadata)
//! are managed here. The images this node holds because another registry's pin brought them
//! (see `rpc::pins`) are that registry's to manage: their tags are not pinned again from here,
//! and their repository follows the visibility the pin says, so an image made public where it
//! was pushed becomes public on its replicas too.

use crate::cluster::{Claim, Cluster, PinRequest, META_DIGEST, META_NODE, META_REPOSITORY, META_SIGNATURE, META_STAMP, META_VISIBILITY};
use crate::metadata::{Page, Reference};
use crate::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A whole pass over every repository at least this often.
const FULL_PASS: Duration = Duration::from_secs(10);

pub struct Replication {
    pub reg: Arc<Registry>,
    pub cluster: Arc<Cluster>,
    /// `--replicas`.
    pub replicas: u32,
    /// How long a pin whose tag moved stays.
    pub grace: Duration,
    /// This node's IPFS peer ID and its trusted peers': where private images may go.
    pub trusted: HashSet<String>,
    /// This node's IPFS peer ID.
    pub me: String,
    /// This node's swarm key, which signs what its pins say (`cluster::Claim`).
    pub key: libp2p::identity::Keypair,
}

/// One image the registry wants kept.
struct Wanted {
    repository: String,
    tag: String,
    digest: String,
    public: bool,
    replicas: u32,
}

pub fn spawn(replication: Replication) {
    tokio::spawn(replication.run());
}

impl Replication {
    async fn run(self) {
        let mut events = self.reg.subscribe();
        let mut dirty: HashSet<String> = HashSet::new();
        let mut full = true;
        let mut superseded: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(FULL_PASS);
        loop {
            if full || !dirty.is_empty() {
                let only = (!full).then(|| std::mem::take(&mut dirty));
                match self.reconcile(only.as_ref(), &mut superseded).await {
                    Ok(()) => full = false,
                    Err(e) => {
                        tracing::warn!(cluster = %self.cluster.url(), error = %e, "could not bring the cluster's pins up to date; trying again");
                        dirty.extend(only.into_iter().flatten());
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            use crate::events::Event;
            use tokio::sync::broadcast::error::RecvError;
            tokio::select! {
                event = events.recv() => match event {
                    Ok(Event::ImageStored { repository, .. } | Event::Removed { repository, .. } | Event::VisibilityChanged { repository, .. } | Event::ReplicasChanged { repository }) => {
                        dirty.insert(repository);
                    }
                    Ok(Event::ChangedElsewhere | Event::Swept { .. }) | Err(RecvError::Lagged(_)) => full = true,
                    Ok(_) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => full = true,
            }
        }
    }

    /// Whether this node's registry made `pin` (it, or a node sharing its metadata).
    fn is_ours(&self, pin: &crate::cluster::Pin) -> bool {
        pin.meta(META_NODE).is_some_and(|n| n == self.me || self.reg.is_fellow(n))
    }

    /// Brings the cluster's pins of `only` these repositories (None: all) to what they hold.
    async fn reconcile(&self, only: Option<&HashSet<String>>, superseded: &mut HashMap<String, Instant>) -> Result<(), String> {
        let pins: Vec<crate::cluster::Pin> = self.cluster.pins().await.map_err(|e| e.to_string())?;
        let in_scope = |p: &&crate::cluster::Pin| p.meta(META_REPOSITORY).is_some_and(|r| only.is_none_or(|o| o.contains(r)));
        let ours: Vec<&crate::cluster::Pin> = pins.iter().filter(in_scope).filter(|p| self.is_ours(p)).collect();
        // Tags that replicas of other registries' images gave this node: theirs, not ours.
        let pin_given: HashMap<String, HashSet<(String, String)>> =
            self.reg.pin_tags(None).await.map_err(|e| e.to_string())?.into_iter().filter(|(_, t)| !t.conflict).fold(HashMap::new(), |mut m, (root, t)| {
                m.entry(root).or_default().insert((t.repository, t.tag));
                m
            });
        let given: HashSet<&(String, String)> = pin_given.values().flatten().collect();
        self.follow(pins.iter().filter(in_scope).filter(|p| !self.is_ours(p)), &pin_given).await?;
        let mut repositories: Vec<String> = match only {
            Some(o) => o.iter().cloned().collect(),
            None => self.all_repositories().await?,
        };
        repositories.extend(ours.iter().filter_map(|p| p.meta(META_REPOSITORY).map(str::to_string)));
        repositories.sort();
        repositories.dedup();
        let mut wanted: HashMap<String, Wanted> = HashMap::new();
        for repo in &repositories {
            self.wanted_in(repo, &given, &mut wanted).await?;
        }
        let existing: HashMap<&str, &crate::cluster::Pin> = pins.iter().map(|p| (p.cid.cid.as_str(), p)).collect();
        let peers = if wanted.is_empty() { Vec::new() } else { self.cluster.peers().await.map_err(|e| e.to_string())? };
        for (cid, w) in &wanted {
            superseded.remove(cid);
            let replicas = w.replicas;
            let visibility = if w.public { "public" } else { "private" };
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let claim = Claim { cid: cid.clone(), repository: w.repository.clone(), digest: w.digest.clone(), public: w.public, node: self.me.clone(), stamp };
            let mut request = PinRequest {
                name: format!("{}:{}", w.repository, w.tag),
                min_replicas: replicas,
                replicas,
                allocations: Vec::new(),
                metadata: vec![
                    (META_REPOSITORY.into(), w.repository.clone()),
                    (META_DIGEST.into(), w.digest.clone()),
                    (META_VISIBILITY.into(), visibility.into()),
                    (META_NODE.into(), self.me.clone()),
                    (META_STAMP.into(), claim.stamp.to_string()),
                    (META_SIGNATURE.into(), claim.sign(&self.key)),
                ],
            };
            if w.public {
                // This node first: it has every byte already, a replica for free.
                request.allocations = peers.iter().filter(|p| p.ipfs == self.me).map(|p| p.id.clone()).collect();
                // As many as there are peers now; the rest wanted as peers join.
                request.min_replicas = replicas.min(peers.len().max(1) as u32);
            } else {
                request.allocations = peers.iter().filter(|p| self.trusted.contains(&p.ipfs)).map(|p| p.id.clone()).collect();
                request.replicas = replicas.min(request.allocations.len().max(1) as u32);
                request.min_replicas = request.replicas;
            }
            let same = existing.get(cid.as_str()).is_some_and(|p| {
                p.replication_factor_min == request.min_replicas as i32
                    && p.replication_factor_max == request.replicas as i32
                    && p.meta(META_VISIBILITY) == Some(visibility)
                    && p.meta(META_REPOSITORY) == Some(&w.repository)
                    && p.name == request.name
                    && Claim::verified(p).is_some_and(|c| c.says_same(&claim))
            });
            if !same {
                self.cluster.pin(cid, &request).await.map_err(|e| e.to_string())?;
                tracing::info!(cid = %cid, image = %request.name, replicas = request.replicas, %visibility, "pinned in the cluster");
            }
        }
        for pin in ours {
            let cid = pin.cid.cid.as_str();
            if wanted.contains_key(cid) {
                continue;
            }
            let repo = pin.meta(META_REPOSITORY).unwrap_or_default();
            let manifest_here = match pin.meta(META_DIGEST).and_then(|d| d.parse().ok()) {
                Some(d) => self.reg.manifest(repo, &Reference::Digest(d)).await.map_err(|e| e.to_string())?.is_some(),
                None => false,
            };
            let since = *superseded.entry(cid.to_string()).or_insert_with(Instant::now);
            if !manifest_here || since.elapsed() >= self.grace {
                self.cluster.unpin(cid).await.map_err(|e| e.to_string())?;
                superseded.remove(cid);
                tracing::info!(%cid, image = %pin.name, deleted = !manifest_here, "unpinned in the cluster");
            }
        }
        Ok(())
    }

    /// The repositories of replicas held here (their tags given by another registry's pins)
    /// take the visibility those pins say, when the pin is signed by the node whose pins made
    /// the repository here (`cluster::Claim`): no other cluster peer decides who may read it.
    async fn follow<'a>(&self, others: impl Iterator<Item = &'a crate::cluster::Pin>, pin_given: &HashMap<String, HashSet<(String, String)>>) -> Result<(), String> {
        for pin in others {
            let Some(given) = pin_given.get(&pin.cid.cid) else { continue };
            let Some(claim) = Claim::verified(pin) else { continue };
            let repositories: HashSet<&String> = given.iter().map(|(r, _)| r).filter(|r| **r == claim.repository).collect();
            for repo in repositories {
                // Newer than the last claim applied, or a replay (or not this origin's replica).
                let newest = self.reg.advance_replica(repo, &claim.node, claim.stamp).await.map_err(|e| e.to_string())?;
                if !newest {
                    continue;
                }
                if self.reg.visibility(repo).await.map_err(|e| e.to_string())?.is_some_and(|v| v != claim.public) {
                    self.reg.set_visibility(repo, claim.public).await.map_err(|e| e.to_string())?;
                    tracing::info!(repository = %repo, public = claim.public, origin = %claim.node, "a replica follows its image's visibility");
                }
            }
        }
        Ok(())
    }

    async fn all_repositories(&self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut page = Page { last: None, limit: Some(1000) };
        loop {
            let names = self.reg.repositories(&page).await.map_err(|e| e.to_string())?;
            let done = names.len() < 1000;
            page.last = names.last().cloned();
            out.extend(names);
            if done {
                return Ok(out);
            }
        }
    }

    /// Each tag of `repo` with the image CID this node gives it, but those `given` by others'
    /// pins.
    async fn wanted_in(&self, repo: &str, given: &HashSet<&(String, String)>, wanted: &mut HashMap<String, Wanted>) -> Result<(), String> {
        // A replica is its origin's to pin. Its tags are also recorded as pin-given, but only
        // once the import that wrote them is done: a pass in between took them for this node's
        // own, pinned them under this node's claim and unseated the origin's pin.
        if self.reg.replica_of(repo).await.map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        let public = self.reg.visibility(repo).await.map_err(|e| e.to_string())? == Some(true);
        let replicas = match self.reg.replicas(repo).await.map_err(|e| e.to_string())? {
            Some(n) if n > 0 => n,
            _ => self.replicas,
        };
        let mut page = Page { last: None, limit: Some(1000) };
        loop {
            let tags = self.reg.tags(repo, &page).await.map_err(|e| e.to_string())?.unwrap_or_default();
            for tag in &tags {
                if given.contains(&(repo.to_string(), tag.clone())) {
                    continue;
                }
                let Some(m) = self.reg.manifest(repo, &Reference::Tag(tag.clone())).await.map_err(|e| e.to_string())? else { continue };
                let Some(cid) = m.image_cid else { continue };
                wanted.insert(cid, Wanted { repository: repo.to_string(), tag: tag.clone(), digest: m.digest.to_string(), public, replicas });
            }
            if tags.len() < 1000 {
                return Ok(());
            }
            page.last = tags.last().cloned();
        }
    }
}
