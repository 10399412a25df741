//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (new session, monolithic, or mount) and
//! `GET|PATCH|PUT|DELETE /v2/<name>/blobs/uploads/<id>`.

use super::access::Access;
use super::errors::{ApiError, ApiResult, Code};
use super::{header, parse_digest, query_value, valid_name};
use crate::range::parse_content_range;
use crate::registry::{ChunkRange, Registry, RegistryError};
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

pub fn session_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).ok().filter(|u| u.as_hyphenated().to_string() == id).ok_or_else(|| ApiError::new(Code::BlobUploadUnknown, format!("upload {id:?} is unknown")))
}

fn session_location(name: &str, id: Uuid) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>`, in the spec's form without a unit. An empty upload reports `0-0`, as
/// distribution does and clients expect.
fn range_value(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn session_response(status: actix_web::http::StatusCode, name: &str, id: Uuid, len: u64) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Location", session_location(name, id)))
        .insert_header(("Range", range_value(len)))
        .insert_header(("Docker-Upload-UUID", id.to_string()))
        .insert_header(("Content-Length", "0"))
        .finish()
}

fn blob_created(name: &str, digest: &crate::digest::Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("Location", format!("/v2/{name}/blobs/{digest}")))
        .insert_header(("Docker-Content-Digest", digest.to_string()))
        .insert_header(("Content-Length", "0"))
        .finish()
}

/// Whether the request carries a body at all (Content-Length > 0 or a chunked transfer).
fn has_body(req: &HttpRequest) -> bool {
    match header(req, "content-length") {
        Some(n) => n.trim() != "0",
        None => header(req, "transfer-encoding").is_some(),
    }
}

fn chunk_range(req: &HttpRequest) -> ApiResult<Option<ChunkRange>> {
    match header(req, "content-range") {
        None => Ok(None),
        Some(raw) => parse_content_range(raw)
            .map(|(start, end_inclusive)| Some(ChunkRange { start, end_inclusive }))
            .ok_or_else(|| ApiError::new(Code::RangeInvalid, format!("Content-Range {raw:?} is malformed"))),
    }
}

pub async fn post(req: &HttpRequest, body: web::Payload, reg: &Registry, name: &str, access: &Access) -> ApiResult<HttpResponse> {
    if let Some(mount) = query_value(req, "mount") {
        let digest = parse_digest(&mount)?;
        let from = query_value(req, "from");
        let from = from.as_deref().map(valid_name).transpose()?;
        // Only from where the caller may read; otherwise the answer would reveal the blob exists.
        let allowed = match from {
            Some(from) => access.may_pull(from).await?,
            None => access.is_admin(),
        };
        if allowed && reg.mount(name, from, &digest).await?.is_some() {
            return Ok(blob_created(name, &digest));
        }
        // Not mountable: the client falls back to uploading, in the session we open below.
    } else if let Some(d) = query_value(req, "digest") {
        let digest = parse_digest(&d)?;
        reg.put_blob(name, &digest, &access.owner(req), body).await?;
        return Ok(blob_created(name, &digest));
    }
    let id = reg.start_upload(name, &access.owner(req)).await?;
    Ok(session_response(actix_web::http::StatusCode::ACCEPTED, name, id, 0))
}

pub async fn status(reg: &Registry, name: &str, id: Uuid) -> ApiResult<HttpResponse> {
    let len = reg.upload_offset(name, id).await?;
    Ok(session_response(actix_web::http::StatusCode::NO_CONTENT, name, id, len))
}

pub async fn patch(req: &HttpRequest, body: web::Payload, reg: &Registry, name: &str, id: Uuid) -> ApiResult<HttpResponse> {
    let range = chunk_range(req)?;
    match reg.append(name, id, range, body).await {
        Ok(len) => Ok(session_response(actix_web::http::StatusCode::ACCEPTED, name, id, len)),
        Err(e) => Err(with_session_state(e, name, id)),
    }
}

/// A refused chunk still tells the client where the upload stands, so it can resume.
fn with_session_state(e: RegistryError, name: &str, id: Uuid) -> ApiError {
    let offset = match &e {
        RegistryError::ChunkOutOfOrder { offset, .. } => Some(*offset),
        _ => None,
    };
    let err = ApiError::from(e);
    match offset {
        Some(len) => err.with_header("Location", session_location(name, id)).with_header("Range", range_value(len)).with_header("Docker-Upload-UUID", id.to_string()),
        None => err,
    }
}

pub async fn put(req: &HttpRequest, body: web::Payload, reg: &Registry, name: &str, id: Uuid) -> ApiResult<HttpResponse> {
    let digest = query_value(req, "digest").ok_or_else(|| ApiError::new(Code::DigestInvalid, "the digest query parameter is required to complete an upload"))?;
    let digest = parse_digest(&digest)?;
    let range = chunk_range(req)?;
    let body = (has_body(req) || range.is_some()).then_some(body);
    reg.finish_upload(name, id, &digest, range, body).await.map_err(|e| with_session_state(e, name, id))?;
    Ok(blob_created(name, &digest))
}

pub async fn cancel(reg: &Registry, name: &str, id: Uuid) -> ApiResult<HttpResponse> {
    reg.cancel_upload(name, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
