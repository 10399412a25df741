//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use super::errors::{ApiError, ApiResult, Code};
use super::{header, parse_digest, query_values};
use crate::manifest::{MANIFEST_TYPES, MAX_MANIFEST_BYTES};
use crate::metadata::Reference;
use crate::names;
use crate::registry::Registry;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;

/// The CID of the image DAG (an OCI layout as a UnixFS directory) for the reference asked for:
/// by tag, the layout naming that tag; by digest, the untagged one.
pub const IMAGE_CID_HEADER: &str = "Ipfs-Image-Cid";

fn parse_reference(reference: &str) -> ApiResult<Reference> {
    if reference.contains(':') {
        parse_digest(reference).map(Reference::Digest)
    } else if names::is_valid_tag(reference) {
        Ok(Reference::Tag(reference.to_string()))
    } else {
        Err(ApiError::new(Code::ManifestInvalid, format!("{reference:?} is neither a tag nor a digest")))
    }
}

/// Accept negotiation: a client that names manifest types gets only those; one that names none
/// (no header, `*/*`, plain JSON) gets whatever is stored.
fn accepts(req: &HttpRequest, media_type: &str) -> bool {
    let named: Vec<String> = req
        .headers()
        .get_all("accept")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|t| MANIFEST_TYPES.contains(&t.as_str()))
        .collect();
    named.is_empty() || named.iter().any(|t| t == media_type)
}

pub async fn get(req: &HttpRequest, reg: &Registry, name: &str, reference: &str) -> ApiResult<HttpResponse> {
    let reference = parse_reference(reference)?;
    let m = reg.manifest(name, &reference).await?.ok_or_else(|| ApiError::new(Code::ManifestUnknown, format!("manifest unknown in {name}")))?;
    if !accepts(req, &m.media_type) {
        return Err(ApiError::new(Code::ManifestUnknown, format!("the manifest is {}, which the Accept header does not include", m.media_type)));
    }
    let mut resp = HttpResponse::Ok();
    resp.content_type(m.media_type.as_str()).insert_header(("Docker-Content-Digest", m.digest.to_string())).insert_header(("ETag", format!("\"{}\"", m.digest)));
    if let Some(cid) = &m.image_cid {
        resp.insert_header((IMAGE_CID_HEADER, cid.as_str()));
    }
    Ok(resp.body(m.content))
}

pub async fn put(req: &HttpRequest, mut body: web::Payload, reg: &Registry, name: &str, reference: &str) -> ApiResult<HttpResponse> {
    let reference = parse_reference(reference)?;
    let too_large = || ApiError::new(Code::ManifestTooLarge, format!("manifests are limited to {MAX_MANIFEST_BYTES} bytes"));
    if header(req, "content-length").and_then(|n| n.trim().parse::<usize>().ok()).is_some_and(|n| n > MAX_MANIFEST_BYTES) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(Code::ManifestInvalid, format!("reading the manifest: {e}")))?;
        if buf.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    let tags = query_values(req, "tag");
    if let Some(bad) = tags.iter().find(|t| !names::is_valid_tag(t)) {
        return Err(ApiError::new(Code::ManifestInvalid, format!("invalid tag {bad:?}")));
    }
    let stored = reg.put_manifest(name, &reference, header(req, "content-type"), buf.freeze(), tags.clone()).await?;
    let mut resp = HttpResponse::Created();
    resp.insert_header(("Location", format!("/v2/{name}/manifests/{}", stored.digest)))
        .insert_header(("Docker-Content-Digest", stored.digest.to_string()))
        .insert_header(("Content-Length", "0"));
    if let Some(cid) = &stored.image_cid {
        resp.insert_header((IMAGE_CID_HEADER, cid.as_str()));
    }
    if let Some(subject) = &stored.subject {
        resp.insert_header(("OCI-Subject", subject.to_string()));
    }
    for tag in &tags {
        resp.append_header(("OCI-Tag", tag.as_str()));
    }
    Ok(resp.finish())
}

pub async fn delete(reg: &Registry, name: &str, reference: &str) -> ApiResult<HttpResponse> {
    let found = reg.delete(name, &parse_reference(reference)?).await?;
    if found {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::new(Code::ManifestUnknown, format!("{reference} is not in {name}")))
    }
}
