//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`.

use super::errors::{ApiError, ApiResult, Code};
use super::{header, parse_digest};
use crate::range::{parse_range, RangeRequest};
use crate::registry::Registry;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

/// The root CID of the blob's UnixFS DAG: what to ask the IPFS network or gateway for.
pub const ROOT_CID_HEADER: &str = "Ipfs-Cid";

pub async fn get(req: &HttpRequest, reg: &Registry, name: &str, digest: &str) -> ApiResult<HttpResponse> {
    let digest = parse_digest(digest)?;
    let head = req.method() == actix_web::http::Method::HEAD;
    // A HEAD reads nothing: a blob this node lacks is not fetched for it.
    let opened =
        if head { reg.stat_blob(name, &digest).await.map(|(len, info)| (None, len, info)) } else { reg.open_blob(name, &digest).await.map(|(b, len, info)| (Some(b), len, info)) };
    let (bytes, len, info) = match opened {
        Ok(found) => found,
        // Another node holds the bytes and this one does not fetch (offline): send the client
        // there (same path, same credentials: every node accepts every node's tokens).
        Err(crate::registry::RegistryError::Elsewhere { url, .. }) => {
            let location = format!("{}{}", url.trim_end_matches('/'), req.uri());
            return Ok(HttpResponse::TemporaryRedirect().insert_header(("Location", location)).finish());
        }
        Err(e) => return Err(e.into()),
    };
    let range = parse_range(header(req, "range"), len).map_err(|e| ApiError::new(Code::RangeInvalid, e.to_string()).with_header("Content-Range", format!("bytes */{len}")))?;
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
    };
    let mut resp = HttpResponse::build(status);
    resp.insert_header(("Docker-Content-Digest", digest.to_string()))
        .insert_header(("ETag", format!("\"{digest}\"")))
        .insert_header(("Accept-Ranges", "bytes"))
        .insert_header((ROOT_CID_HEADER, info.root_cid))
        .content_type("application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        resp.insert_header(("Content-Range", format!("bytes {}-{}/{}", start, start + count - 1, len)));
    }
    match bytes {
        // Bytes from peers: the status waits for the first of them, so a fetch that cannot
        // start is a clear error rather than a response cut short.
        Some(bytes @ crate::storage::BlobBytes::Arriving(_)) => {
            use futures_util::StreamExt;
            let mut body = bytes.range(start, count);
            let first = body.next().await;
            if let Some(Err(e)) = &first {
                return Err(ApiError::new(Code::Unavailable, format!("blob {digest} is not on this node and no peer provided it: {e}")));
            }
            Ok(resp.no_chunking(count).streaming(futures_util::stream::iter(first).chain(body)))
        }
        Some(bytes) => Ok(resp.no_chunking(count).streaming(bytes.range(start, count))),
        // Headers only; actix keeps the Content-Length of the body it does not send.
        None => Ok(resp.no_chunking(count).streaming(futures_util::stream::empty::<std::io::Result<bytes::Bytes>>())),
    }
}

pub async fn delete(reg: &Registry, name: &str, digest: &str) -> ApiResult<HttpResponse> {
    let digest = parse_digest(digest)?;
    if reg.unlink_blob(name, &digest).await? {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::new(Code::BlobUnknown, format!("blob {digest} is not in {name}")))
    }
}
