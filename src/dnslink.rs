//! DNSLink: `/ipns/<domain>` and Host names resolved through `_dnslink.<domain>` TXT records
//! (`dnslink=/ipfs/<cid>/...` or `dnslink=/ipns/<name>/...`), through the system's resolvers or
//! one configured DNS server (`--dns-resolver`). Answers are cached for their DNS TTL by the
//! resolver, so a flood of requests for one name costs one query.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DnsLinkError {
    #[error("{0:?} is not a DNS name")]
    NotADomain(String),
    #[error("the DNS resolver: {0}")]
    Resolver(String),
    #[error("too many DNSLink lookups at once; try again")]
    Busy,
}

/// A name's answer: its link and how long it may be cached, or none.
type Answer = Option<(String, Duration)>;

/// What is known of a name, until the instant kept beside it.
#[derive(Clone)]
enum Known {
    Link(String),
    NoLink,
    /// The lookup failed (a silent or broken server): asked again only after [`FAILED_TTL`].
    Failed(String),
}

pub struct DnsLink {
    resolver: TokioResolver,
    /// Lookups under way: anyone can make the gateway look up any name (a Host header is
    /// enough), so a flood of names no cache holds waits on nothing past this many.
    lookups: tokio::sync::Semaphore,
    /// Answers, asked before any slot is taken: a flood of lookups of silent names once made
    /// an already-known name answer 503.
    answers: quick_cache::sync::Cache<String, (Known, std::time::Instant)>,
    /// Names being looked up: a second request for one waits for that lookup (one slot a
    /// name), and lookups in flight per client address.
    in_flight: std::sync::Mutex<InFlight>,
}

#[derive(Default)]
struct InFlight {
    names: std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>,
    clients: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// DNSLink lookups in flight at once, past which more are refused (not queued).
const MAX_LOOKUPS: usize = 64;
/// Lookups in flight for one client address.
const LOOKUPS_PER_CLIENT: usize = 8;
/// Names whose answers are kept.
const ANSWERS: usize = 16 << 10;
/// How long a name without a DNSLink, or whose lookup failed, is answered from memory.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
const FAILED_TTL: Duration = Duration::from_secs(10);

/// The longest time a DNSLink answer, or an IPNS record's value, is cached by a client of
/// ours (`Cache-Control`).
pub const MAX_TTL: Duration = Duration::from_secs(3600);

impl DnsLink {
    /// Through `server`, or the system's resolvers.
    pub fn new(server: Option<SocketAddr>) -> Result<DnsLink, DnsLinkError> {
        let err = |e: &dyn std::fmt::Display| DnsLinkError::Resolver(e.to_string());
        let mut builder = match server {
            Some(addr) => {
                let connection = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                let ns = NameServerConfig::new(addr.ip(), true, vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())]);
                TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], vec![ns]), TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio().map_err(|e| err(&e))?,
        };
        // A gateway request waits on the lookup: a dead server costs 2 x 2 s, not the default 2 x 5 s.
        builder.options_mut().timeout = Duration::from_secs(2);
        builder.options_mut().attempts = 2;
        Ok(DnsLink {
            resolver: builder.build().map_err(|e| err(&e))?,
            lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
            answers: quick_cache::sync::Cache::new(ANSWERS),
            in_flight: Default::default(),
        })
    }

    fn known(&self, name: &str) -> Option<Result<Answer, DnsLinkError>> {
        let (known, until) = self.answers.get(name)?;
        let now = std::time::Instant::now();
        if now >= until {
            return None;
        }
        Some(match known {
            // The TTL left, not the one first given.
            Known::Link(path) => Ok(Some((path, until - now))),
            Known::NoLink => Ok(None),
            Known::Failed(e) => Err(DnsLinkError::Resolver(e)),
        })
    }

    /// The path `domain`'s DNSLink points at, and how long it may be cached; None when it has
    /// none. Answered from memory while the answer's TTL lasts; otherwise one lookup a name
    /// at a time (others asking wait for it), at most [`LOOKUPS_PER_CLIENT`] for `client` and
    /// [`MAX_LOOKUPS`] in all.
    pub async fn resolve(&self, domain: &str, client: Option<std::net::IpAddr>) -> Result<Answer, DnsLinkError> {
        if !is_domain(domain) {
            return Err(DnsLinkError::NotADomain(domain.to_string()));
        }
        let name = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(known) = self.known(&name) {
            return known;
        }
        let turn = self.in_flight.lock().expect("dnslink lock").names.entry(name.clone()).or_default().clone();
        let _turn = turn.lock().await;
        // The lookup this one waited for may have answered.
        if let Some(known) = self.known(&name) {
            return known;
        }
        let _client = match client {
            Some(ip) => Some(ClientSlot::take(self, ip)?),
            None => None,
        };
        let result = self.look_up(&name).await;
        let now = std::time::Instant::now();
        match &result {
            Ok(Some((path, ttl))) => self.answers.insert(name.clone(), (Known::Link(path.clone()), now + *ttl)),
            Ok(None) => self.answers.insert(name.clone(), (Known::NoLink, now + NEGATIVE_TTL)),
            Err(DnsLinkError::Resolver(e)) => self.answers.insert(name.clone(), (Known::Failed(e.clone()), now + FAILED_TTL)),
            Err(_) => {}
        }
        let mut in_flight = self.in_flight.lock().expect("dnslink lock");
        if in_flight.names.get(&name).is_some_and(|t| std::sync::Arc::ptr_eq(t, &turn) && std::sync::Arc::strong_count(t) <= 2) {
            in_flight.names.remove(&name);
        }
        result
    }

    async fn look_up(&self, domain: &str) -> Result<Answer, DnsLinkError> {
        let _permit = self.lookups.try_acquire().map_err(|_| DnsLinkError::Busy)?;
        let query = format!("_dnslink.{}.", domain.trim_end_matches('.'));
        let lookup = match self.resolver.lookup(query.as_str(), RecordType::TXT).await {
            Ok(l) => l,
            // No such name, or no TXT records: no DNSLink.
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(None),
            Err(e) => return Err(DnsLinkError::Resolver(e.to_string())),
        };
        let mut links: Vec<(String, u32)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    let text: String = txt.txt_data.iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect();
                    let path = text.strip_prefix("dnslink=")?.trim().to_string();
                    (path.starts_with("/ipfs/") || path.starts_with("/ipns/")).then_some((path, r.ttl))
                }
                _ => None,
            })
            .collect();
        // Several records: the first in lexical order, so every resolver of the name agrees.
        links.sort();
        Ok(links.into_iter().next().map(|(path, ttl)| (path, Duration::from_secs(ttl.into()).min(MAX_TTL))))
    }
}

/// A client's hold on one of its lookup slots.
struct ClientSlot<'a> {
    dns: &'a DnsLink,
    ip: std::net::IpAddr,
}

impl<'a> ClientSlot<'a> {
    fn take(dns: &'a DnsLink, ip: std::net::IpAddr) -> Result<Self, DnsLinkError> {
        let mut in_flight = dns.in_flight.lock().expect("dnslink lock");
        let n = in_flight.clients.entry(ip).or_default();
        if *n >= LOOKUPS_PER_CLIENT {
            return Err(DnsLinkError::Busy);
        }
        *n += 1;
        Ok(ClientSlot { dns, ip })
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.dns.in_flight.lock().expect("dnslink lock");
        if let Some(n) = in_flight.clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                in_flight.clients.remove(&self.ip);
            }
        }
    }
}

/// A DNS name with at least one dot: labels of letters, digits and hyphens, 63 bytes at most
/// each, 253 in all.
pub fn is_domain(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && s.parse::<std::net::IpAddr>().is_err()
}

#[cfg(test)]
mod tests {
    #[test]
    fn domains() {
        assert!(super::is_domain("en.wikipedia-on-ipfs.org"));
        assert!(!super::is_domain("localhost"));
        assert!(!super::is_domain("127.0.0.1"));
        assert!(!super::is_domain("a..b"));
        assert!(!super::is_domain("bafy/x.y"));
    }
}
