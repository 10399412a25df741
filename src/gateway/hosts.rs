//! Which content a request's Host and path name: the path gateway (`/ipfs/...`, `/ipns/...` on
//! any host), the subdomain gateway (`<cid>.ipfs.<domain>`, `<name>.ipns.<domain>` with
//! `--gateway-domain`, each content root its own origin, so one site's scripts cannot read
//! another's storage), and DNSLink hosts (a domain whose `_dnslink` TXT record points at content,
//! served at its root).

use super::sniff::Origin;
use crate::dnslink::{is_domain, DnsLink};
use crate::ipns::Name;
use actix_web::{HttpMessage, HttpRequest};
use cid::Cid;

/// How the gateway names things beyond `/ipfs/` paths.
#[derive(Default)]
pub struct Naming {
    pub dnslink: Option<DnsLink>,
    /// `--gateway-domain`, lowercase.
    pub domain: Option<String>,
    /// `--trusted-proxy`: the only peers whose `X-Forwarded-Host` and `X-Forwarded-Proto` count.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

pub enum Route {
    /// Serve this content path (`/ipfs/...` or `/ipns/...`).
    Content(String),
    /// The same content under its canonical URL.
    Redirect(String),
    /// Nothing here.
    NotFound(String),
    /// A request no content could answer, and why.
    BadRequest(String),
}

fn too_long(cid: &Cid, domain: &str) -> String {
    format!("CID incompatible with DNS label length limit of 63: {cid} cannot be served as <cid>.ipfs.{domain}; use a shorter hash, or another gateway's /ipfs/ path")
}

/// Whether `req` came from a `--trusted-proxy`, whose forwarded headers count.
fn from_proxy(req: &HttpRequest, naming: &Naming) -> bool {
    req.peer_addr().is_some_and(|a| naming.trusted_proxies.contains(&a.ip()))
}

/// The Host a request was sent to (or `X-Forwarded-Host`, from a trusted proxy in front),
/// lowercase, without its port. Anyone else's forwarded host is ignored: a CDN that keys its
/// cache by Host would otherwise keep the page an attacker picked for the bare domain.
fn host_of(req: &HttpRequest, naming: &Naming) -> String {
    let forwarded = from_proxy(req, naming)
        .then(|| req.headers().get("x-forwarded-host").and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(|v| v.trim().to_string()))
        .flatten();
    let host =
        forwarded.or_else(|| req.headers().get("host").and_then(|v| v.to_str().ok()).map(str::to_string)).or_else(|| req.uri().host().map(str::to_string)).unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host.as_str(), |(h, _)| h).to_string(),
    };
    host.to_ascii_lowercase()
}

/// `url` with the request's query string, if it has one.
pub(super) fn with_query(req: &HttpRequest, url: String) -> String {
    if req.query_string().is_empty() {
        url
    } else {
        format!("{url}?{}", req.query_string())
    }
}

/// A CID as a DNS label: CIDv1 in base32 (case-insensitive, as host names are).
fn cid_label(cid: &Cid) -> Option<String> {
    let v1 = Cid::new_v1(cid.codec(), *cid.hash());
    let label = v1.to_string_of_base(cid::multibase::Base::Base32Lower).ok()?;
    (label.len() <= 63).then_some(label)
}

/// A DNSLink name inlined in one DNS label: `.` as `-`, `-` as `--` (`en-wikipedia--on--ipfs-org`).
fn inline_domain(domain: &str) -> String {
    domain.replace('-', "--").replace('.', "-")
}

fn uninline_domain(label: &str) -> String {
    label.replace("--", "\u{0}").replace('-', ".").replace('\u{0}', "-")
}

/// An IPNS name as a DNS label: a key as base36 CIDv1, a domain inlined.
fn ipns_label(name: &str) -> String {
    match Name::parse(name) {
        Ok((n, _)) => n.canonical(),
        Err(_) => inline_domain(name),
    }
}

pub async fn route(req: &HttpRequest, naming: &Naming) -> Route {
    let host = host_of(req, naming);
    let path = req.path();
    let forwarded_proto = from_proxy(req, naming).then(|| req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok())).flatten();
    let scheme = match forwarded_proto {
        Some(p @ ("http" | "https")) => p.to_string(),
        // Not `connection_info()`: it believes anyone's `X-Forwarded-Proto` and `Forwarded`.
        _ => if req.app_config().secure() { "https" } else { "http" }.to_string(),
    };
    // `ipfs://` and `ipns://` links a browser hands over (`registerProtocolHandler`).
    if path == "/ipfs/" || path == "/ipns/" {
        let uri = super::query(req, "uri").unwrap_or_default();
        for ns in ["ipfs", "ipns"] {
            if let Some(rest) = uri.strip_prefix(&format!("{ns}://")).filter(|r| !r.is_empty()) {
                return Route::Redirect(format!("/{ns}/{rest}"));
            }
        }
    }
    if let Some(domain) = &naming.domain {
        if let Some(prefix) = host.strip_suffix(domain.as_str()).and_then(|p| p.strip_suffix('.')) {
            if let Some(label) = prefix.strip_suffix(".ipfs") {
                let Ok(cid) = Cid::try_from(label) else { return Route::BadRequest(format!("{label:?} is not a CID (a CIDv0 cannot be a DNS label: use its CIDv1)")) };
                return match cid_label(&cid) {
                    Some(canonical) if canonical == label => {
                        req.extensions_mut().insert(Origin::Subdomain(domain.clone()));
                        Route::Content(format!("/ipfs/{label}{path}"))
                    }
                    Some(canonical) => Route::Redirect(with_query(req, format!("{scheme}://{canonical}.ipfs.{domain}{path}"))),
                    None => Route::BadRequest(too_long(&cid, domain)),
                };
            }
            if let Some(label) = prefix.strip_suffix(".ipns") {
                // A key written as a CID of another codec: the same key, named as one.
                if let Some(peer) = Cid::try_from(label).ok().filter(|c| c.codec() != crate::ipns::LIBP2P_KEY).and_then(|c| libp2p::PeerId::from_bytes(&c.hash().to_bytes()).ok()) {
                    let canonical = Name(peer).canonical();
                    return Route::Redirect(with_query(req, format!("{scheme}://{canonical}.ipns.{domain}{path}")));
                }
                if let Ok((name, canonical)) = Name::parse(label) {
                    let canonical_label = name.canonical();
                    return if canonical || canonical_label == label {
                        req.extensions_mut().insert(Origin::Subdomain(domain.clone()));
                        Route::Content(format!("/ipns/{label}{path}"))
                    } else {
                        Route::Redirect(with_query(req, format!("{scheme}://{canonical_label}.ipns.{domain}{path}")))
                    };
                }
                let dns = if label.contains('.') { label.to_string() } else { uninline_domain(label) };
                return Route::Content(format!("/ipns/{dns}{path}"));
            }
        }
        // The bare domain: content moves to its own origin.
        if host == *domain {
            for ns in ["ipfs", "ipns"] {
                let Some(tail) = path.strip_prefix(&format!("/{ns}/")) else { continue };
                let (id, rest) = tail.split_once('/').map_or((tail, String::new()), |(i, r)| (i, format!("/{r}")));
                let label = if ns == "ipfs" {
                    let Ok(cid) = Cid::try_from(id) else { return Route::BadRequest(format!("invalid path \"{path}\": {id:?} is not a CID")) };
                    match cid_label(&cid) {
                        Some(l) => l,
                        None => return Route::BadRequest(too_long(&cid, domain)),
                    }
                } else {
                    // Only a name or a domain becomes a label: anything else (`2130706433\`)
                    // would send the browser wherever a URL parser reads it.
                    if Name::parse(id).is_err() && !is_domain(id) {
                        return Route::BadRequest(format!("invalid path \"{path}\": {id:?} is neither an IPNS name nor a domain"));
                    }
                    ipns_label(id)
                };
                return Route::Redirect(with_query(req, format!("{scheme}://{label}.{ns}.{domain}{}", if rest.is_empty() { "/" } else { &rest })));
            }
        }
    }
    // A domain of someone's pointing here: its DNSLink, if it has one, is its site, every path
    // of it (as on Kubo).
    if is_domain(&host) && naming.domain.as_deref() != Some(host.as_str()) {
        if let Some(dnslink) = &naming.dnslink {
            if let Ok(Some(_)) = dnslink.resolve(&host, req.peer_addr().map(|a| a.ip())).await {
                req.extensions_mut().insert(Origin::DnsLink(host.clone()));
                return Route::Content(format!("/ipns/{host}{path}"));
            }
        }
    }
    if path.starts_with("/ipfs/") || path.starts_with("/ipns/") {
        return Route::Content(path.to_string());
    }
    Route::NotFound("404 page not found".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn inlined_domains_round_trip() {
        for d in ["en.wikipedia-on-ipfs.org", "a-b.c--d.example"] {
            assert_eq!(super::uninline_domain(&super::inline_domain(d)), d);
        }
        assert_eq!(super::inline_domain("en.wikipedia-on-ipfs.org"), "en-wikipedia--on--ipfs-org");
    }
}
