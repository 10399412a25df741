//! `GET /` on the API listener: a page of the public images, for people. Server-rendered HTML
//! (no JavaScript; readable on a phone): each public repository with its tags, sizes, created
//! dates, image CIDs linked to the gateway, and the `docker pull` line; a search box filters
//! by name. Only public repositories are ever read here, whoever asks; the work per request is
//! bounded (a page of repositories, a few tags each), since anyone can ask.

use crate::metadata::Page;
use crate::names::Reference;
use crate::registry::Registry;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use std::fmt::Write;
use std::sync::Arc;

/// Repositories per page, tags shown per repository, repositories looked at per request.
const REPOS: usize = 20;
const TAGS: usize = 10;
const SCAN: usize = 1000;

/// Where the gateway is, for links to image CIDs.
#[derive(Clone)]
pub struct Links {
    /// The gateway's public URL, if the operator gave one.
    pub gateway_url: Option<String>,
    /// Otherwise: the gateway's port on the host the page was asked from.
    pub gateway_port: u16,
    /// `--trusted-proxy`: the only peers whose forwarded host the page believes.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// What the page shows of a manifest, by its digest: parsing a manifest and its config costs up
/// to milliseconds a tag (4 MiB manifests), and anyone may ask for the page.
struct Parsed {
    size: Option<u64>,
    created: Option<String>,
    platforms: usize,
}

static PARSED: std::sync::LazyLock<quick_cache::sync::Cache<(String, String), Arc<Parsed>>> = std::sync::LazyLock::new(|| quick_cache::sync::Cache::new(4096));

#[derive(serde::Deserialize)]
pub struct Query {
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

use crate::range::human_size as human;

struct Row {
    tag: String,
    size: Option<u64>,
    created: Option<String>,
    image_cid: Option<String>,
    platforms: usize,
}

/// What the page says of `repo:tag`.
async fn row(reg: &Registry, repo: &str, tag: &str) -> Option<Row> {
    let m = reg.manifest(repo, &Reference::Tag(tag.to_string())).await.ok()??;
    let key = (repo.to_string(), m.digest.to_string());
    let parsed = match PARSED.get(&key) {
        Some(p) => p,
        None => {
            let p = Arc::new(parse(reg, repo, &m.content).await?);
            PARSED.insert(key, p.clone());
            p
        }
    };
    Some(Row { tag: tag.to_string(), size: parsed.size, created: parsed.created.clone(), image_cid: m.image_cid, platforms: parsed.platforms })
}

async fn parse(reg: &Registry, repo: &str, content: &[u8]) -> Option<Parsed> {
    let doc: Value = serde_json::from_slice(content).ok()?;
    let platforms = doc["manifests"].as_array().map_or(0, Vec::len);
    let size = doc["config"]["size"].as_u64().map(|c| c + doc["layers"].as_array().into_iter().flatten().filter_map(|l| l["size"].as_u64()).sum::<u64>());
    // The config as this (public) repository holds it: a blob linked elsewhere only (a sparse
    // manifest's) is not read. A config within one chunk is one block, its root.
    let config = match doc["config"]["digest"].as_str().and_then(|d| d.parse::<crate::digest::Digest>().ok()) {
        Some(digest) => reg.blob_info(repo, &digest).await.ok().flatten(),
        None => None,
    };
    let created = match config {
        Some(info) if info.size <= 1 << 20 => {
            let bytes = reg.get_block(&info.root_cid.parse().ok()?).await.ok()??;
            serde_json::from_slice::<Value>(&bytes).ok().and_then(|c| c["created"].as_str().map(|c| c.get(..19).unwrap_or(c).replace('T', " ")))
        }
        _ => None,
    };
    Some(Parsed { size, created, platforms })
}

pub async fn page(req: HttpRequest, query: web::Query<Query>, reg: web::Data<Registry>) -> HttpResponse {
    let links = req.app_data::<web::Data<Links>>().map(|l| l.get_ref().clone());
    // The host the page names in `docker pull` and links: forwarded headers only from a
    // trusted proxy (anyone's would make the page show their host).
    let base = super::access::base_url(&req, links.as_ref().map_or(&[][..], |l| &l.trusted_proxies));
    let (scheme, host) = base.split_once("://").map(|(s, h)| (s.to_string(), h.to_string())).unwrap_or_default();
    let gateway = match links {
        Some(Links { gateway_url: Some(url), .. }) => url.trim_end_matches('/').to_string(),
        Some(Links { gateway_port, .. }) => {
            let name = host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host.as_str(), |(h, _)| h);
            format!("{scheme}://{name}:{gateway_port}")
        }
        None => String::new(),
    };
    let needle = query.q.trim().to_lowercase();
    let mut repos = Vec::new();
    let mut last = (!query.after.is_empty()).then(|| query.after.clone());
    let mut scanned = 0;
    let mut more = false;
    'scan: while scanned < SCAN {
        let page = match reg.public_repositories(&Page { last: last.clone(), limit: Some(100) }).await {
            Ok(p) => p,
            Err(e) => return HttpResponse::ServiceUnavailable().content_type("text/plain; charset=utf-8").body(format!("the registry cannot list images right now: {e}")),
        };
        if page.is_empty() {
            break;
        }
        for name in page {
            scanned += 1;
            last = Some(name.clone());
            if needle.is_empty() || name.to_lowercase().contains(&needle) {
                if repos.len() == REPOS {
                    more = true;
                    break 'scan;
                }
                repos.push(name);
            }
        }
    }
    more |= scanned >= SCAN;
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Public images on {host}</title><style>
body{{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#222}}
h1{{font-size:1.4rem}} h2{{font-size:1.1rem;margin:1.5rem 0 .3rem;word-break:break-all}}
form{{display:flex;gap:.5rem}} input[type=search]{{flex:1;padding:.4rem;font-size:1rem}}
table{{border-collapse:collapse;width:100%;font-size:.9rem}} td,th{{text-align:left;padding:.25rem .4rem;border-bottom:1px solid #ddd;vertical-align:top}}
code{{font-size:.85rem;word-break:break-all}} .cid{{word-break:break-all}}
@media (max-width:40rem){{td.created,th.created{{display:none}}}}
</style></head><body><h1>Public images on {host}</h1>
<form method="get" action="/"><input type="search" name="q" value="{q}" placeholder="Search repositories" aria-label="Search repositories"><button type="submit">Search</button></form>
"#,
        host = esc(&host),
        q = esc(query.q.trim()),
    );
    if repos.is_empty() {
        html.push_str("<p>No public images");
        if !needle.is_empty() {
            let _ = write!(html, " match “{}”", esc(query.q.trim()));
        }
        html.push_str(".</p>");
    }
    for repo in &repos {
        let tags = reg.tags(repo, &Page { last: None, limit: Some(TAGS + 1) }).await.ok().flatten().unwrap_or_default();
        let _ = write!(html, "<section><h2>{}</h2>", esc(repo));
        let Some(first) = tags.first() else {
            html.push_str("<p>No tags.</p></section>");
            continue;
        };
        let _ = write!(html, "<p><code>docker pull {}/{}:{}</code></p>", esc(&host), esc(repo), esc(first));
        html.push_str(r#"<table><tr><th>Tag</th><th>Size</th><th class="created">Created</th><th>Image CID</th></tr>"#);
        for tag in tags.iter().take(TAGS) {
            let Some(r) = row(&reg, repo, tag).await else { continue };
            let size = match (r.size, r.platforms) {
                (Some(s), _) => human(s),
                (None, n) if n > 0 => format!("{n} platforms"),
                _ => "-".into(),
            };
            let cid = match &r.image_cid {
                Some(c) if !gateway.is_empty() => format!(r#"<a class="cid" href="{}/ipfs/{}/">{}</a>"#, esc(&gateway), esc(c), esc(c)),
                Some(c) => format!(r#"<span class="cid">{}</span>"#, esc(c)),
                None => "-".into(),
            };
            let _ = write!(html, r#"<tr><td>{}</td><td>{size}</td><td class="created">{}</td><td>{cid}</td></tr>"#, esc(&r.tag), esc(r.created.as_deref().unwrap_or("-")));
        }
        html.push_str("</table>");
        if tags.len() > TAGS {
            let _ = write!(html, "<p>More tags: <code>GET /v2/{}/tags/list</code></p>", esc(repo));
        }
        html.push_str("</section>");
    }
    if more {
        let next: String = form_urlencoded::Serializer::new(String::new()).append_pair("q", query.q.trim()).append_pair("after", last.as_deref().unwrap_or_default()).finish();
        let _ = write!(html, r#"<p><a href="/?{}">More</a></p>"#, esc(&next));
    }
    html.push_str("</body></html>");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"))
        // It changes with every push and names the host it was asked from.
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("Vary", "Host"))
        .body(html)
}
