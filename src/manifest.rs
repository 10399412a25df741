//! Understanding a manifest just enough to store it: its media type, what it references, its
//! subject and artifact type. The bytes themselves are never re-serialised.

use crate::digest::Digest;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type this registry stores.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

/// Largest manifest accepted, as the spec suggests registries allow at least.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedType(String),
    #[error("manifest media type {field:?} does not match Content-Type {header:?}")]
    TypeMismatch { field: String, header: String },
    #[error("manifest media type is not given by its mediaType field or Content-Type")]
    UnknownType,
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest field {0} is missing or malformed")]
    Field(&'static str),
    #[error("descriptor digest {0:?} is invalid")]
    Digest(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub media_type: String,
    /// Blobs that must exist in the repository: the config and distributable layers.
    pub blobs: Vec<Digest>,
    /// Manifests an index references.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    /// The `annotations` object, as compact JSON.
    pub annotations: Option<String>,
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Layers the spec allows to be absent from the registry: non-distributable ("foreign") ones.
fn is_non_distributable(d: &Descriptor) -> bool {
    d.media_type
        .as_deref()
        .is_some_and(|mt| mt.starts_with("application/vnd.oci.image.layer.nondistributable.") || mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
}

fn digest_of(d: &Descriptor, field: &'static str) -> Result<Digest, ManifestError> {
    if d.size < 0 {
        return Err(ManifestError::Field(field));
    }
    d.digest.parse().map_err(|_| ManifestError::Digest(d.digest.clone()))
}

/// Parses a manifest pushed with `content_type` (the request's Content-Type, if any).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ManifestError::Json("not a JSON object".into()));
    }
    let raw: Raw = serde_json::from_value(value).map_err(|e| ManifestError::Json(e.to_string()))?;
    // Content-Type may carry parameters; only the type itself matters.
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()).filter(|c| !c.is_empty());
    let media_type = match (&raw.media_type, &header) {
        (Some(field), Some(h)) if MANIFEST_TYPES.contains(&h.as_str()) && field != h => return Err(ManifestError::TypeMismatch { field: field.clone(), header: h.clone() }),
        (Some(field), _) => field.clone(),
        (None, Some(h)) if MANIFEST_TYPES.contains(&h.as_str()) => h.clone(),
        // An OCI manifest may omit mediaType; its shape says which it is.
        (None, _) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, _) if raw.config.is_some() => OCI_MANIFEST.to_string(),
        (None, Some(h)) => return Err(ManifestError::UnsupportedType(h.clone())),
        (None, None) => return Err(ManifestError::UnknownType),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ManifestError::UnsupportedType(media_type));
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let subject = raw.subject.as_ref().map(|s| digest_of(s, "subject")).transpose()?;
    let annotations = raw.annotations.as_ref().filter(|a| !a.is_empty()).map(|a| serde_json::to_string(a).expect("string map serialises"));
    let mut parsed = ParsedManifest { media_type: media_type.clone(), blobs: Vec::new(), manifests: Vec::new(), subject, artifact_type: raw.artifact_type.clone(), annotations };
    if is_index(&media_type) {
        let children = raw.manifests.ok_or(ManifestError::Field("manifests"))?;
        for child in &children {
            parsed.manifests.push(digest_of(child, "manifests")?);
        }
    } else {
        let config = raw.config.ok_or(ManifestError::Field("config"))?;
        parsed.blobs.push(digest_of(&config, "config")?);
        if parsed.artifact_type.is_none() && media_type == OCI_MANIFEST {
            parsed.artifact_type = config.media_type.clone();
        }
        let layers = raw.layers.ok_or(ManifestError::Field("layers"))?;
        for layer in &layers {
            let d = digest_of(layer, "layers")?;
            if !is_non_distributable(layer) {
                parsed.blobs.push(d);
            }
        }
    }
    parsed.blobs.sort();
    parsed.blobs.dedup();
    parsed.manifests.sort();
    parsed.manifests.dedup();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifest_references_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}},"annotations":{{"a":"b"}}}}"#
        );
        let p = parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.subject.unwrap().to_string(), D2);
        assert_eq!(p.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert_eq!(p.annotations.as_deref(), Some(r#"{"a":"b"}"#));
    }

    #[test]
    fn non_distributable_layers_need_not_exist() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{D2}","size":3,"urls":["https://example.com/l"]}}]}}"#
        );
        let p = parse(None, body.as_bytes()).unwrap();
        assert_eq!(p.media_type, OCI_MANIFEST);
        assert_eq!(p.blobs.len(), 1);
    }

    #[test]
    fn index_references_manifests() {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}]}}"#);
        let p = parse(Some(OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(p.manifests.len(), 1);
        assert!(p.blobs.is_empty());
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(matches!(parse(None, b"not json"), Err(ManifestError::Json(_))));
        assert!(matches!(parse(None, b"[]"), Err(ManifestError::Json(_))));
        assert_eq!(parse(None, br#"{"schemaVersion":2}"#), Err(ManifestError::UnknownType));
        assert!(matches!(parse(Some("application/vnd.docker.distribution.manifest.v1+prettyjws"), br#"{"schemaVersion":1}"#), Err(ManifestError::UnsupportedType(_))));
        let mismatch = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(matches!(parse(Some(OCI_MANIFEST), mismatch.as_bytes()), Err(ManifestError::TypeMismatch { .. })));
        let v1 = format!(r#"{{"schemaVersion":1,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert_eq!(parse(None, v1.as_bytes()), Err(ManifestError::SchemaVersion));
        let no_layers = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{D1}","size":1}}}}"#);
        assert_eq!(parse(None, no_layers.as_bytes()), Err(ManifestError::Field("layers")));
        let bad_digest = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"sha256:zz","size":1}}]}}"#);
        assert!(matches!(parse(None, bad_digest.as_bytes()), Err(ManifestError::Digest(_))));
    }
}
