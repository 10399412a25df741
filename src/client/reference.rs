//! Image references as a user types them: `myapp:latest` (on the default registry),
//! `host:port/ns/app:tag`, `...@sha256:<hex>`, as Docker reads them.

use crate::names;

/// What a reference names: a registry host, a repository in it, and a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, as in Docker's config and the URL.
    pub registry: String,
    pub repository: String,
    /// A tag (`latest` when neither is given) or a digest (`sha256:...`).
    pub reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("{0:?} is not an image reference ([host[:port]/]repository[:tag|@digest])")]
    Malformed(String),
    #[error("{0:?} names no registry and none is set: pass --registry HOST[:PORT] or set AF_REGISTRY")]
    NoRegistry(String),
}

impl ImageRef {
    /// Reads `text`; a reference without a registry host is on `default`.
    pub fn parse(text: &str, default: Option<&str>) -> Result<ImageRef, RefError> {
        let bad = || RefError::Malformed(text.to_string());
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        // Docker's rule: the first component is a host if it has a dot or a port, or is localhost.
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (first.to_string(), rest),
            _ => (default.ok_or_else(|| RefError::NoRegistry(text.to_string()))?.to_string(), name),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        if registry.is_empty() || !names::is_valid_name(repository) {
            return Err(bad());
        }
        let reference = match (tag, digest) {
            (_, Some(d)) if d.parse::<crate::digest::Digest>().is_ok() => d.to_string(),
            (_, Some(_)) => return Err(bad()),
            (Some(t), None) if names::is_valid_tag(t) => t.to_string(),
            (Some(_), None) => return Err(bad()),
            (None, None) => "latest".to_string(),
        };
        Ok(ImageRef { registry, repository: repository.to_string(), reference })
    }

    pub fn is_digest(&self) -> bool {
        self.reference.contains(':')
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.is_digest() { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.registry, self.repository, self.reference)
    }
}

/// Whether `host[:port]` is this machine (plain HTTP is allowed to it without `--insecure`).
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_as_docker_reads_them() {
        let r = ImageRef::parse("myapp:latest", Some("reg.example:5000")).unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.reference.as_str()), ("reg.example:5000", "myapp", "latest"));
        let r = ImageRef::parse("team/app", Some("d")).unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.reference.as_str()), ("d", "team/app", "latest"));
        let r = ImageRef::parse("127.0.0.1:5000/ns/app:v1", None).unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.reference.as_str()), ("127.0.0.1:5000", "ns/app", "v1"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost/ns/app@{d}"), None).unwrap();
        assert_eq!(r.reference, d);
        assert_eq!(r.to_string(), format!("localhost/ns/app@{d}"));
        assert!(matches!(ImageRef::parse("app", None), Err(RefError::NoRegistry(_))));
        for bad in ["Bad/Name", "ns/app:", "ns/app@sha256:zz", "ns//app", "ns/app:t!"] {
            assert!(matches!(ImageRef::parse(bad, Some("d")), Err(RefError::Malformed(_))), "{bad}");
        }
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:443"));
    }
}
