//! Mapping a `/v2/...` path to the resource it names. Repository names contain slashes, so the
//! resource is recognised from the end of the path and what precedes it is the name.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Tags { name: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Route<'a> {
    /// The repository the route names, if any.
    pub fn name(&self) -> Option<&'a str> {
        match *self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

/// Parses the part of the path after `/v2/`. `None` when it names no resource.
pub fn parse(rest: &str) -> Option<Route<'_>> {
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let split = |suffix: &str| -> Option<&str> { rest.strip_suffix(suffix).filter(|n| !n.is_empty()) };
    if let Some(name) = split("/blobs/uploads/").or_else(|| split("/blobs/uploads")) {
        return Some(Route::UploadStart { name });
    }
    if let Some(name) = split("/tags/list") {
        return Some(Route::Tags { name });
    }
    let (head, last) = rest.rsplit_once('/')?;
    if last.is_empty() {
        return None;
    }
    let (name, kind) = head.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    match kind {
        "manifests" => Some(Route::Manifest { name, reference: last }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        "referrers" => Some(Route::Referrers { name, digest: last }),
        "uploads" => {
            let name = name.strip_suffix("/blobs").filter(|n| !n.is_empty())?;
            Some(Route::Upload { name, id: last })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_every_resource() {
        assert_eq!(parse(""), Some(Route::Base));
        assert_eq!(parse("_catalog"), Some(Route::Catalog));
        assert_eq!(parse("a/b/manifests/latest"), Some(Route::Manifest { name: "a/b", reference: "latest" }));
        assert_eq!(parse("a/blobs/sha256:00"), Some(Route::Blob { name: "a", digest: "sha256:00" }));
        assert_eq!(parse("org/team/app/blobs/uploads/"), Some(Route::UploadStart { name: "org/team/app" }));
        assert_eq!(parse("a/blobs/uploads/123"), Some(Route::Upload { name: "a", id: "123" }));
        assert_eq!(parse("a/tags/list"), Some(Route::Tags { name: "a" }));
        assert_eq!(parse("a/referrers/sha256:1"), Some(Route::Referrers { name: "a", digest: "sha256:1" }));
        // Resource words are valid name components too.
        assert_eq!(parse("manifests/blobs/manifests/x"), Some(Route::Manifest { name: "manifests/blobs", reference: "x" }));
    }

    #[test]
    fn rejects_paths_without_a_resource() {
        for p in ["a", "a/b", "manifests/x", "/manifests/x", "a/manifests/", "a/unknown/x", "blobs/uploads/x"] {
            assert_eq!(parse(p), None, "{p}");
        }
    }
}
