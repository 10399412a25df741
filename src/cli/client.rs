//! `af registry login|logout|list|info|tag|delete`: the client commands, against any registry
//! over the OCI API (none needs a data directory).

use af_registry::client::credentials::{self, Login};
use af_registry::client::engine::{Engine, EngineError};
use af_registry::client::reference::ImageRef;
use af_registry::client::{ClientError, Registry, MANIFEST_TYPES};
use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, Write};

/// Where the client commands talk to.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The registry short references (`myapp:latest`) are on, `host[:port]` [default: the
    /// `registry` of ~/.config/af/client.toml].
    #[arg(long, env = "AF_REGISTRY")]
    pub registry: Option<String>,
    /// Allow plain HTTP to a registry that is not on this machine.
    #[arg(long)]
    pub insecure: bool,
}

impl Target {
    /// The default registry: the flag or AF_REGISTRY, else the client config file's `registry`.
    fn default_registry(&self) -> anyhow::Result<Option<String>> {
        if let Some(r) = &self.registry {
            return Ok(Some(r.clone()));
        }
        let Some(path) = client_config_path() else { return Ok(None) };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ClientConfig {
            registry: Option<String>,
        }
        let config: ClientConfig = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(config.registry)
    }

    fn parse(&self, text: &str) -> anyhow::Result<ImageRef> {
        Ok(ImageRef::parse(text, self.default_registry()?.as_deref())?)
    }

    fn registry(&self, host: &str) -> anyhow::Result<Registry> {
        Ok(Registry::with_kept_login(host, self.insecure)?)
    }

    fn host(&self, given: Option<String>) -> anyhow::Result<String> {
        given.or(self.default_registry()?).context("no registry given: name one, pass --registry HOST[:PORT] or set AF_REGISTRY")
    }
}

fn client_config_path() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))?;
    Some(base.join("af").join("client.toml"))
}

/// `af registry login [REGISTRY]`: checks the login against the registry (its token service,
/// or Basic), then keeps it where Docker does.
pub async fn login(target: Target, registry: Option<String>, username: Option<String>, password_stdin: bool) -> anyhow::Result<()> {
    let host = target.host(registry)?;
    let username = match username {
        Some(u) => u,
        None if password_stdin => anyhow::bail!("--password-stdin needs --username"),
        None => {
            eprint!("Username: ");
            std::io::stderr().flush().ok();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("cannot read the user name")?;
            line.trim().to_string()
        }
    };
    anyhow::ensure!(!username.is_empty(), "a user name is required");
    let secret = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password("Password (or access token): ").context("cannot read the password")?
    };
    anyhow::ensure!(!secret.is_empty(), "a password or access token is required");
    let login = Login { username, secret };
    let registry = Registry::new(&host, Some(login.clone()), target.insecure)?;
    // `/v2/` with the login: the token flow (a token for no scope) or Basic.
    let url = registry.url("/v2/");
    let checked = match registry.send("", |http| http.get(&url)).await {
        Ok(response) => registry.check(response).await.map(drop),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => {}
        Err(ClientError::Registry { status: 401 | 403, message, .. }) => anyhow::bail!("login to {host} refused: {message}"),
        Err(e) => return Err(e.into()),
    }
    credentials::store(&host, &login)?;
    println!("Logged in to {host} as {}.", login.username);
    Ok(())
}

/// `af registry logout [REGISTRY]`.
pub fn logout(target: Target, registry: Option<String>) -> anyhow::Result<()> {
    let host = target.host(registry)?;
    if credentials::erase(&host)? {
        println!("Logged out of {host}.");
    } else {
        println!("Not logged in to {host}.");
    }
    Ok(())
}

/// What `list` and `info` say of one manifest.
struct Summary {
    digest: String,
    media_type: String,
    /// Config and layers (of every platform, for an index).
    size: u64,
    created: Option<String>,
    image_cid: Option<String>,
    platforms: Vec<Value>,
    layers: Vec<Value>,
    manifest: bytes::Bytes,
}

fn is_index(media_type: &str, doc: &Value) -> bool {
    media_type.contains("index") || media_type.contains("manifest.list") || doc.get("manifests").is_some()
}

async fn summarize(registry: &Registry, repository: &str, reference: &str, with_layer_cids: bool) -> anyhow::Result<Summary> {
    let (body, media_type, headers) = registry.manifest(repository, reference, Method::GET).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let digest = header("docker-content-digest").unwrap_or_else(|| format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))));
    let doc: Value = serde_json::from_slice(&body).with_context(|| format!("{repository}@{digest}: the manifest is not JSON"))?;
    let mut summary =
        Summary { digest, media_type: media_type.clone(), size: 0, created: None, image_cid: header("ipfs-image-cid"), platforms: Vec::new(), layers: Vec::new(), manifest: body };
    let images: Vec<(Option<Value>, Value)> = if is_index(&media_type, &doc) {
        let mut children = Vec::new();
        for child in doc["manifests"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(child_digest) = child["digest"].as_str() else { continue };
            let (bytes, _, _) = registry.manifest(repository, child_digest, Method::GET).await?;
            let child_doc: Value = serde_json::from_slice(&bytes).with_context(|| format!("{repository}@{child_digest}: not JSON"))?;
            summary.platforms.push(json!({"digest": child_digest, "platform": child.get("platform").cloned().unwrap_or(Value::Null)}));
            children.push((Some(child.clone()), child_doc));
        }
        children
    } else {
        vec![(None, doc)]
    };
    for (_, image) in &images {
        summary.size += image["config"]["size"].as_u64().unwrap_or(0);
        for layer in image["layers"].as_array().map(Vec::as_slice).unwrap_or_default() {
            summary.size += layer["size"].as_u64().unwrap_or(0);
            let mut entry = json!({"digest": layer["digest"], "size": layer["size"], "mediaType": layer["mediaType"]});
            if with_layer_cids {
                if let Some(d) = layer["digest"].as_str() {
                    entry["cid"] = blob_cid(registry, repository, d).await?.map_or(Value::Null, Value::String);
                }
            }
            summary.layers.push(entry);
        }
        if summary.created.is_none() {
            if let Some(config) = image["config"]["digest"].as_str() {
                summary.created = config_created(registry, repository, config).await?;
            }
        }
    }
    Ok(summary)
}

/// A blob's `Ipfs-Cid` (our registry's HEAD says it; others say nothing).
async fn blob_cid(registry: &Registry, repository: &str, digest: &str) -> anyhow::Result<Option<String>> {
    let url = registry.url(&format!("/v2/{repository}/blobs/{digest}"));
    let response = registry.check(registry.send(&format!("repository:{repository}:pull"), |http| http.head(&url)).await?).await?;
    Ok(response.headers().get("ipfs-cid").and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// The `created` date of an image config.
async fn config_created(registry: &Registry, repository: &str, digest: &str) -> anyhow::Result<Option<String>> {
    let url = registry.url(&format!("/v2/{repository}/blobs/{digest}"));
    let response = registry.check(registry.send(&format!("repository:{repository}:pull"), |http| http.get(&url)).await?).await?;
    // Configs are small; a huge one is not read for a date.
    let Ok(config) = af_registry::client::read_limited(response, 4 << 20).await else { return Ok(None) };
    let config: Value = serde_json::from_slice(&config).unwrap_or(Value::Null);
    Ok(config.get("created").and_then(Value::as_str).map(str::to_string))
}

use af_registry::range::human_size as human;

/// What `af registry list` was given: `REGISTRY`, `REGISTRY/NAMESPACE` or `NAMESPACE`, the
/// registry told apart by Docker's rule (a first part with a dot or a port, or `localhost`),
/// as `login` and image references take it.
fn registry_and_namespace(given: Option<String>) -> (Option<String>, Option<String>) {
    let Some(given) = given.map(|g| g.trim_end_matches('/').to_string()).filter(|g| !g.is_empty()) else { return (None, None) };
    let (first, rest) = match given.split_once('/') {
        Some((f, r)) => (f.to_string(), Some(r.to_string())),
        None => (given.clone(), None),
    };
    if first.contains('.') || first.contains(':') || first == "localhost" {
        (Some(first), rest.filter(|r| !r.is_empty()))
    } else {
        (None, Some(given))
    }
}

/// `af registry list [REGISTRY][/NAMESPACE]`: every repository the caller may read, each tag with
/// its size, creation date and image CID, printed as it is read (the catalog and tag lists page
/// by page).
pub async fn list(target: Target, given: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let (registry, namespace) = registry_and_namespace(given);
    let host = target.host(registry)?;
    let registry = target.registry(&host)?;
    let mut out = Printable(std::io::stdout().lock());
    let mut first = true;
    if as_json {
        write!(out, "[")?;
    } else {
        writeln!(out, "{:<40} {:<20} {:>10} {:<20} IMAGE CID", "REPOSITORY", "TAG", "SIZE", "CREATED")?;
    }
    let mut page = Some("/v2/_catalog?n=100".to_string());
    while let Some(path) = page.take() {
        let (catalog, next) = registry.json_page(&path, "registry:catalog:*").await?;
        page = next;
        for repository in catalog["repositories"].as_array().map(Vec::as_slice).unwrap_or_default().iter().filter_map(Value::as_str) {
            if namespace.as_deref().is_some_and(|ns| !repository.starts_with(&format!("{ns}/"))) {
                continue;
            }
            let scope = format!("repository:{repository}:pull");
            let mut tags_page = Some(format!("/v2/{repository}/tags/list?n=100"));
            while let Some(path) = tags_page.take() {
                let (tags, next) = match registry.json_page(&path, &scope).await {
                    Ok(t) => t,
                    // Listed in the catalog but not readable (or gone since): skipped.
                    Err(ClientError::Registry { status: 401 | 403 | 404, .. }) => break,
                    Err(e) => return Err(e.into()),
                };
                tags_page = next;
                for tag in tags["tags"].as_array().map(Vec::as_slice).unwrap_or_default().iter().filter_map(Value::as_str) {
                    let s = summarize(&registry, repository, tag, false).await.with_context(|| format!("{host}/{repository}:{tag}"))?;
                    if as_json {
                        let row = json!({"repository": repository, "tag": tag, "digest": s.digest, "mediaType": s.media_type, "size": s.size, "created": s.created, "imageCid": s.image_cid});
                        write!(out, "{}{row}", if first { "" } else { "," })?;
                    } else {
                        let created = s.created.as_deref().map(|c| c.get(..19).unwrap_or(c).replace('T', " ")).unwrap_or_else(|| "-".into());
                        writeln!(out, "{repository:<40} {tag:<20} {:>10} {created:<20} {}", human(s.size), s.image_cid.as_deref().unwrap_or("-"))?;
                    }
                    first = false;
                }
            }
        }
    }
    if as_json {
        writeln!(out, "]")?;
    }
    Ok(())
}

/// `af registry info REF`.
pub async fn info(target: Target, reference: String, raw: bool, as_json: bool, gateway_url: Option<String>, cluster: Option<af_registry::cluster::Cluster>) -> anyhow::Result<()> {
    let image = target.parse(&reference)?;
    let registry = target.registry(&image.registry)?;
    let s = summarize(&registry, &image.repository, &image.reference, !raw).await.with_context(|| image.to_string())?;
    if raw {
        std::io::stdout().lock().write_all(&s.manifest)?;
        return Ok(());
    }
    let referrers = referrers(&registry, &image.repository, &s.digest).await?;
    let gateway = gateway_url.map(|g| g.trim_end_matches('/').to_string());
    let gateway_link = s.image_cid.as_ref().map(|cid| match &gateway {
        Some(g) => format!("{g}/ipfs/{cid}/"),
        None => format!("ipfs://{cid}"),
    });
    // Where the cluster keeps the image, and how far its replication got.
    let replication = match (&cluster, &s.image_cid) {
        (Some(cluster), Some(cid)) => {
            let pin = cluster.pin_of(cid).await?;
            let peers = if pin.is_some() { cluster.status(cid).await? } else { Vec::new() };
            let wanted = pin.as_ref().map(|p| p.replication_factor_min.max(0) as usize);
            let pinned = peers.iter().filter(|p| p.status == "pinned").count();
            Some(json!({
                "pinned": pin.is_some(), "replicas": wanted, "complete": wanted.is_some_and(|w| pinned >= w.max(1)),
                "peers": peers.iter().map(|p| json!({"peer": p.peer, "name": p.name, "ipfs": p.ipfs, "status": p.status, "error": p.error})).collect::<Vec<_>>(),
            }))
        }
        _ => None,
    };
    if as_json {
        let doc = json!({
            "reference": image.to_string(), "digest": s.digest, "mediaType": s.media_type, "size": s.size,
            "created": s.created, "imageCid": s.image_cid, "gatewayUrl": gateway_link, "platforms": s.platforms,
            "layers": s.layers, "referrers": referrers, "replication": replication,
            "manifest": serde_json::from_slice::<Value>(&s.manifest).unwrap_or(Value::Null),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut out = Printable(std::io::stdout().lock());
    writeln!(out, "Reference:   {image}")?;
    writeln!(out, "Digest:      {}", s.digest)?;
    writeln!(out, "Media type:  {}", s.media_type)?;
    writeln!(out, "Size:        {} ({} bytes, config and layers)", human(s.size), s.size)?;
    writeln!(out, "Created:     {}", s.created.as_deref().unwrap_or("-"))?;
    writeln!(out, "Image CID:   {}", s.image_cid.as_deref().unwrap_or("-"))?;
    if let Some(link) = &gateway_link {
        writeln!(out, "Gateway:     {link}")?;
    }
    if !s.platforms.is_empty() {
        writeln!(out, "Platforms:")?;
        for p in &s.platforms {
            let platform = &p["platform"];
            let name = [platform["os"].as_str(), platform["architecture"].as_str(), platform["variant"].as_str()].iter().flatten().copied().collect::<Vec<_>>().join("/");
            writeln!(out, "  {:<16} {}", if name.is_empty() { "-" } else { &name }, p["digest"].as_str().unwrap_or_default())?;
        }
    }
    writeln!(out, "Layers:")?;
    for l in &s.layers {
        writeln!(
            out,
            "  {}  {:>10}  {}  {}",
            l["digest"].as_str().unwrap_or_default(),
            human(l["size"].as_u64().unwrap_or(0)),
            l["mediaType"].as_str().unwrap_or_default(),
            l["cid"].as_str().unwrap_or("-")
        )?;
    }
    if !referrers.is_empty() {
        writeln!(out, "Referrers:")?;
        for r in &referrers {
            writeln!(out, "  {}  {}", r["digest"].as_str().unwrap_or_default(), r["artifactType"].as_str().or(r["mediaType"].as_str()).unwrap_or_default())?;
        }
    }
    if let Some(r) = &replication {
        if r["pinned"] == true {
            let pinned = r["peers"].as_array().map(|p| p.iter().filter(|p| p["status"] == "pinned").count()).unwrap_or(0);
            writeln!(out, "Replication: {pinned} of {} nodes{}", r["replicas"], if r["complete"] == true { "" } else { " (incomplete)" })?;
            for p in r["peers"].as_array().into_iter().flatten() {
                let error = p["error"].as_str().filter(|e| !e.is_empty()).map(|e| format!(": {e}")).unwrap_or_default();
                writeln!(out, "  {:<12} {}  {}{error}", p["name"].as_str().unwrap_or_default(), p["ipfs"].as_str().unwrap_or_default(), p["status"].as_str().unwrap_or_default())?;
            }
        } else {
            writeln!(out, "Replication: not pinned in the cluster")?;
        }
    }
    Ok(())
}

/// What refers to `digest` (signatures, SBOMs): the referrers API, when the registry has it.
async fn referrers(registry: &Registry, repository: &str, digest: &str) -> anyhow::Result<Vec<Value>> {
    let path = format!("/v2/{repository}/referrers/{digest}");
    match registry.json_page(&path, &format!("repository:{repository}:pull")).await {
        Ok((index, _)) => Ok(index["manifests"].as_array().cloned().unwrap_or_default()),
        Err(ClientError::Registry { status: 404 | 405, .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// `af registry tag SRC DST`: DST (a tag, in the same registry) points at what SRC names; across
/// repositories its blobs are mounted first, so nothing is downloaded.
pub async fn tag(target: Target, source: String, destination: String) -> anyhow::Result<()> {
    let (src, dst) = (target.parse(&source)?, target.parse(&destination)?);
    anyhow::ensure!(src.registry == dst.registry, "{src} and {dst} are on different registries: use push and pull to copy between them");
    anyhow::ensure!(!dst.is_digest(), "{dst}: the destination must be a tag");
    let registry = target.registry(&src.registry)?;
    let (body, media_type, _) = registry.manifest(&src.repository, &src.reference, Method::GET).await?;
    if src.repository != dst.repository {
        let doc: Value = serde_json::from_slice(&body).with_context(|| format!("{src}: the manifest is not JSON"))?;
        copy_referenced(&registry, &src.repository, &dst.repository, &doc).await?;
    }
    put_manifest(&registry, &dst.repository, &dst.reference, &media_type, body).await?;
    println!("Tagged {dst}.");
    Ok(())
}

/// Everything `doc` references, made present in `to`: blobs mounted from `from`, child
/// manifests copied by digest.
async fn copy_referenced(registry: &Registry, from: &str, to: &str, doc: &Value) -> anyhow::Result<()> {
    if let Some(children) = doc["manifests"].as_array() {
        for child in children {
            let Some(digest) = child["digest"].as_str() else { continue };
            let (bytes, media_type, _) = registry.manifest(from, digest, Method::GET).await?;
            let child_doc: Value = serde_json::from_slice(&bytes).with_context(|| format!("{from}@{digest}: not JSON"))?;
            Box::pin(copy_referenced(registry, from, to, &child_doc)).await?;
            put_manifest(registry, to, digest, &media_type, bytes).await?;
        }
    }
    let blobs = doc["config"]["digest"].as_str().into_iter().chain(doc["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str()));
    for digest in blobs {
        let url = registry.url(&format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"));
        let scope = format!("repository:{to}:pull,push repository:{from}:pull");
        let response = registry.check(registry.send(&scope, |http| http.post(&url)).await?).await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::CREATED,
            "{}: could not mount {digest} from {from} into {to} (the registry offered an upload instead)",
            registry.host
        );
    }
    Ok(())
}

async fn put_manifest(registry: &Registry, repository: &str, reference: &str, media_type: &str, body: bytes::Bytes) -> anyhow::Result<()> {
    let url = registry.url(&format!("/v2/{repository}/manifests/{reference}"));
    let scope = format!("repository:{repository}:pull,push");
    let media_type = if media_type.is_empty() { MANIFEST_TYPES.split(',').next().unwrap_or_default().trim() } else { media_type };
    registry.check(registry.send(&scope, |http| http.put(&url).header("content-type", media_type).body(body.clone())).await?).await?;
    Ok(())
}

/// `af registry delete REF`: a tag (the image stays under its digest and other tags) or a
/// manifest by digest (and every tag on it).
pub async fn delete(target: Target, reference: String) -> anyhow::Result<()> {
    let image = target.parse(&reference)?;
    let registry = target.registry(&image.registry)?;
    let url = registry.url(&format!("/v2/{}/manifests/{}", image.repository, image.reference));
    let scope = format!("repository:{}:delete", image.repository);
    registry.check(registry.send(&scope, |http| http.delete(&url)).await?).await?;
    println!("Deleted {image}.");
    Ok(())
}

/// Where an image is on disk: `oci:DIR[:TAG]` (an OCI image layout, and a tag in it) or
/// `docker-archive:FILE[:REPO:TAG]` (`docker save`'s format, and an image name in it).
enum Local {
    Oci(std::path::PathBuf, Option<String>),
    Archive(std::path::PathBuf, Option<String>),
}

fn local(text: &str, flag: &str) -> anyhow::Result<Local> {
    if let Some(rest) = text.strip_prefix("oci:") {
        // The tag follows the last ':' unless that is part of the path (a '/' after it).
        return Ok(match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => Local::Oci(dir.into(), Some(tag.to_string())),
            _ => Local::Oci(rest.into(), None),
        });
    }
    if let Some(rest) = text.strip_prefix("docker-archive:") {
        // As skopeo reads it: the path ends at the first ':'.
        return Ok(match rest.split_once(':') {
            Some((file, name)) if !name.is_empty() => Local::Archive(file.into(), Some(name.to_string())),
            _ => Local::Archive(rest.trim_end_matches(':').into(), None),
        });
    }
    anyhow::bail!("{flag} {text:?}: give oci:DIR[:TAG] or docker-archive:FILE[:REPO:TAG] (or leave {flag} out for the local engine)")
}

/// How a transfer shows itself on standard error: a bar per blob in flight and one for the
/// total, with rates, on a terminal; a line per blob as it finishes otherwise; nothing when quiet.
enum Shown {
    Quiet,
    Lines,
    Bars { multi: indicatif::MultiProgress, total: indicatif::ProgressBar, blobs: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>> },
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

impl Shown {
    fn for_stderr(quiet: bool) -> std::sync::Arc<dyn af_registry::client::transfer::Progress> {
        use std::io::IsTerminal;
        let shown = match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Shown::Quiet,
            (false, false) => Shown::Lines,
            (false, true) => {
                let multi = indicatif::MultiProgress::new();
                let style = indicatif::ProgressStyle::with_template("{prefix:19} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}")
                    .expect("a valid template")
                    .progress_chars("=> ");
                let total = multi.add(indicatif::ProgressBar::new(0).with_style(style).with_prefix("total"));
                Shown::Bars { multi, total, blobs: Default::default() }
            }
        };
        std::sync::Arc::new(shown)
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        if let Shown::Bars { total, .. } = self {
            total.finish_and_clear();
        }
    }
}

impl af_registry::client::transfer::Progress for Shown {
    fn begin(&self, digest: &str, size: u64) {
        if let Shown::Bars { multi, total, blobs } = self {
            let bar = multi.insert_before(total, indicatif::ProgressBar::new(size).with_style(total.style()).with_prefix(short(digest).to_string()));
            total.inc_length(size);
            blobs.lock().expect("bars lock").insert(digest.to_string(), bar);
        }
    }

    fn advance(&self, digest: &str, bytes: u64) {
        if let Shown::Bars { total, blobs, .. } = self {
            if let Some(bar) = blobs.lock().expect("bars lock").get(digest) {
                bar.inc(bytes);
            }
            total.inc(bytes);
        }
    }

    fn end(&self, digest: &str, size: u64, already: bool) {
        let line = format!("{}  {:>10}  {}", short(digest), human(size), if already { "already there" } else { "done" });
        match self {
            Shown::Quiet => {}
            Shown::Lines => eprintln!("{line}"),
            Shown::Bars { multi, blobs, .. } => {
                if let Some(bar) = blobs.lock().expect("bars lock").remove(digest) {
                    bar.finish_and_clear();
                }
                let _ = multi.println(line);
            }
        }
    }
}

fn summary_line(verb: &str, image: &ImageRef, moved: &af_registry::client::transfer::Moved, started: std::time::Instant) -> String {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    format!(
        "{verb} {image}: {} ({} blobs, {} already there, {} moved at {}/s)",
        moved.digest,
        moved.blobs,
        moved.skipped,
        human(moved.bytes),
        human((moved.bytes as f64 / secs) as u64)
    )
}

/// Whether the reference as typed names a tag or digest (not just a repository).
fn names_tag(text: &str) -> bool {
    text.contains('@') || text.rsplit('/').next().is_some_and(|last| last.contains(':'))
}

/// The engine's name of the image `typed` names: as typed if the engine knows it, else in full
/// (`host:port/repo:tag`, as a `docker tag` for this registry reads), else without the registry
/// (`repo:tag`, as built).
async fn engine_name(engine: &Engine, typed: &str, image: &ImageRef) -> anyhow::Result<String> {
    let sep = if image.is_digest() { '@' } else { ':' };
    for name in [typed.to_string(), image.to_string(), format!("{}{sep}{}", image.repository, image.reference)] {
        if engine.inspect(&name).await?.is_some() {
            return Ok(name);
        }
    }
    Err(EngineError::NoImage(typed.to_string()).into())
}

/// The engine's `name:tag`s of repository `typed` (as typed, under the engines' default
/// prefixes, or in full on the registry), each with its tag.
fn engine_tags(all: &[String], typed: &str, image: &ImageRef) -> Vec<(String, String)> {
    let forms =
        [typed.to_string(), format!("localhost/{typed}"), format!("docker.io/library/{typed}"), format!("docker.io/{typed}"), format!("{}/{}", image.registry, image.repository)];
    all.iter()
        .filter_map(|full| {
            let (repo, tag) = full.rsplit_once(':').filter(|(_, t)| !t.contains('/'))?;
            forms.iter().any(|f| f == repo).then(|| (full.clone(), tag.to_string()))
        })
        .collect()
}

/// `af registry push REF [--from oci:DIR[:TAG] | docker-archive:FILE[:REPO:TAG]] [--all-tags]`.
pub async fn push(target: Target, reference: String, from: Option<String>, all_tags: bool, quiet: bool) -> anyhow::Result<()> {
    let image = target.parse(&reference)?;
    anyhow::ensure!(!all_tags || !names_tag(&reference), "--all-tags pushes every tag of a repository: give {} without a tag", image.repository);
    let from = from.map(|f| local(&f, "--from")).transpose()?;
    let registry = target.registry(&image.registry)?;
    let to = |tag: &str| ImageRef { reference: tag.to_string(), ..image.clone() };
    // (where from, where to) per image pushed.
    let engine = if from.is_none() { Some(Engine::from_env()?) } else { None };
    let jobs: Vec<(Option<String>, ImageRef)> = match (&from, &engine, all_tags) {
        (None, Some(engine), false) => vec![(Some(engine_name(engine, &reference, &image).await?), image.clone())],
        (None, Some(engine), true) => engine_tags(&engine.repo_tags().await?, &reference, &image).into_iter().map(|(name, tag)| (Some(name), to(&tag))).collect(),
        (Some(Local::Oci(_, tag)), _, false) => vec![(tag.clone(), image.clone())],
        (Some(Local::Oci(dir, _)), _, true) => af_registry::client::transfer::layout_tags(dir)?.into_iter().map(|t| (Some(t.clone()), to(&t))).collect(),
        (Some(Local::Archive(_, name)), _, false) => vec![(name.clone(), image.clone())],
        (Some(Local::Archive(file, _)), _, true) => {
            let named = af_registry::client::archive::archive_tags(file)?;
            named.into_iter().filter_map(|n| n.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t.to_string()).map(|t| (Some(n), to(&t)))).collect()
        }
        (None, None, _) => unreachable!("an engine is made when there is no --from"),
    };
    anyhow::ensure!(!jobs.is_empty(), "--all-tags: no tags of {reference} found there");
    for (source, dst) in jobs {
        let started = std::time::Instant::now();
        let shown = Shown::for_stderr(quiet);
        let moved = match (&from, &engine) {
            (None, Some(engine)) => af_registry::client::export::push(&registry, engine, source.as_deref().unwrap_or(&reference), &dst, &shown).await,
            (Some(Local::Oci(dir, _)), _) => af_registry::client::transfer::push(&registry, dir, source.as_deref(), &dst, &shown).await,
            (Some(Local::Archive(file, _)), _) => af_registry::client::archive::push(&registry, file, source.as_deref(), &dst, &shown).await,
            (None, None) => unreachable!("an engine is made when there is no --from"),
        };
        drop(shown);
        let moved = moved?;
        println!("{}", summary_line("Pushed", &dst, &moved, started));
    }
    Ok(())
}

/// `af registry pull REF [--to oci:DIR[:TAG] | docker-archive:FILE[:REPO:TAG]] [--platform os/arch[/variant]]`.
pub async fn pull(target: Target, reference: String, to: Option<String>, platform: Option<String>, quiet: bool, unpack_ratio: u64) -> anyhow::Result<()> {
    let image = target.parse(&reference)?;
    let to = to.map(|t| local(&t, "--to")).transpose()?;
    let registry = target.registry(&image.registry)?;
    let started = std::time::Instant::now();
    let shown = Shown::for_stderr(quiet);
    let archive_name = || if image.is_digest() { format!("{}/{}:latest", image.registry, image.repository) } else { image.to_string() };
    let mut said = None;
    let moved = match &to {
        Some(Local::Oci(dir, tag)) => {
            let tag = tag.clone().or_else(|| (!image.is_digest()).then(|| image.reference.clone()));
            af_registry::client::transfer::pull(&registry, &image, dir, tag.as_deref(), platform.as_deref(), &shown).await
        }
        Some(Local::Archive(file, name)) => {
            let name = name.clone().unwrap_or_else(archive_name);
            af_registry::client::archive::pull(&registry, &image, file, &name, platform.as_deref(), unpack_ratio, &shown).await
        }
        None => {
            let engine = Engine::from_env()?;
            af_registry::client::archive::pull_into_engine(&registry, &engine, &image, &archive_name(), platform.as_deref(), unpack_ratio, &shown).await.map(
                |(moved, engine_said)| {
                    said = Some(engine_said);
                    moved
                },
            )
        }
    };
    drop(shown);
    let moved = moved?;
    println!("{}", summary_line("Pulled", &image, &moved, started));
    if let Some(said) = said.filter(|s| !s.is_empty()) {
        println!("{said}");
    }
    Ok(())
}

/// A terminal writer for what a registry named (repositories, tags, media types, errors): its
/// control characters are shown as `\u{..}`, never sent, so a hostile registry cannot move the
/// cursor, retitle the window or rewrite what the user sees (escape sequences).
struct Printable<W: Write>(W);

impl<W: Write> Write for Printable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            let shown: String = text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { c.escape_unicode().to_string() } else { c.to_string() }).collect();
            self.0.write_all(shown.as_bytes())?;
        } else {
            self.0.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_is_told_from_a_namespace() {
        let split = |s: &str| super::registry_and_namespace(Some(s.to_string()));
        assert_eq!(split("127.0.0.1:5000"), (Some("127.0.0.1:5000".into()), None));
        assert_eq!(split("registry.example/team"), (Some("registry.example".into()), Some("team".into())));
        assert_eq!(split("localhost/"), (Some("localhost".into()), None));
        assert_eq!(split("team"), (None, Some("team".into())));
        assert_eq!(super::registry_and_namespace(None), (None, None));
    }
}
