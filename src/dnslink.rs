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

pub struct DnsLink {
    resolver: TokioResolver,
    /// Lookups under way: anyone can make the gateway look up any name (a Host header is
    /// enough), so a flood of names no cache holds waits on nothing past this many.
    lookups: tokio::sync::Semaphore,
}

/// DNSLink lookups in flight at once, past which more are refused (not queued).
const MAX_LOOKUPS: usize = 64;

/// The longest time a DNSLink answer is cached by a client of ours (`Cache-Control`).
const MAX_TTL: Duration = Duration::from_secs(3600);

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
        Ok(DnsLink { resolver: builder.build().map_err(|e| err(&e))?, lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS) })
    }

    /// The path `domain`'s DNSLink points at, and how long it may be cached; None when it has none.
    pub async fn resolve(&self, domain: &str) -> Result<Option<(String, Duration)>, DnsLinkError> {
        if !is_domain(domain) {
            return Err(DnsLinkError::NotADomain(domain.to_string()));
        }
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
