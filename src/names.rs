//! Repository names and tags, validated by the grammar of the OCI distribution spec.
//! A repository name never becomes a file path; it is only ever a key in the metadata store.

/// What names a manifest in a repository: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(crate::digest::Digest),
}

use std::sync::LazyLock;

static NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").expect("static regex"));

static TAG: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("static regex"));

/// Longest repository name accepted; distribution uses the same bound so names fit in a URL.
pub const MAX_NAME_LEN: usize = 255;

pub fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && NAME.is_match(name)
}

/// A user or organisation name: one path component of the repository grammar.
pub fn is_namespace(name: &str) -> bool {
    !name.contains('/') && is_valid_name(name)
}

pub fn is_valid_tag(tag: &str) -> bool {
    TAG.is_match(tag)
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not <repository>:<tag> or <repository>@<digest>")]
pub struct BadImageReference(String);

/// Parses `<repository>:<tag>` or `<repository>@<digest>`, as the command line names images.
pub fn parse_image_reference(s: &str) -> Result<(String, Reference), BadImageReference> {
    let bad = || BadImageReference(s.to_string());
    let (repo, reference) = match s.split_once('@') {
        Some((repo, digest)) => (repo, Reference::Digest(digest.parse().map_err(|_| bad())?)),
        None => {
            let (repo, tag) = s.rsplit_once(':').ok_or_else(bad)?;
            if !is_valid_tag(tag) {
                return Err(bad());
            }
            (repo, Reference::Tag(tag.to_string()))
        }
    };
    if !is_valid_name(repo) {
        return Err(bad());
    }
    Ok((repo.to_string(), reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let (repo, r) = parse_image_reference("a/b:v1").unwrap();
        assert_eq!(repo, "a/b");
        assert!(matches!(r, Reference::Tag(t) if t == "v1"));
        let d = format!("sha256:{}", "a".repeat(64));
        let (_, r) = parse_image_reference(&format!("a@{d}")).unwrap();
        assert!(matches!(r, Reference::Digest(x) if x.to_string() == d));
        for bad in ["a", "A:b", "a:", "a@sha256:12", ":x"] {
            assert!(parse_image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "library/ubuntu", "org/team/app", "a-b__c.d/e--f", "0"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "a___b", "a.-b", "-a", "a b", "a%2fb"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(!is_valid_name(&"a".repeat(256)));
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        assert!(is_valid_tag("latest"));
        assert!(is_valid_tag("_v1.0-RC"));
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(!is_valid_tag(".hidden"));
        assert!(!is_valid_tag("-x"));
        assert!(!is_valid_tag("a/b"));
        assert!(!is_valid_tag("sha256:abc"));
    }
}
