//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`: an OCI index of the manifests whose
//! `subject` is `<digest>`, a page at a time: a page holds what starts within [`PAGE_BYTES`] of
//! descriptors (at least one, at most [`PAGE_MAX`] or `n`), and a `Link` header names the next.

use super::errors::{ApiError, ApiResult, Code};
use super::{parse_digest, query_value};
use crate::manifest::OCI_INDEX;
use crate::metadata::ReferrerPage;
use crate::registry::Registry;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

/// Descriptors of about this many bytes make a page (annotations plus 256 each).
pub const PAGE_BYTES: u64 = 1 << 20;
/// The most descriptors in a page.
pub const PAGE_MAX: u32 = 1000;

pub async fn list(req: &HttpRequest, reg: &Registry, name: &str, digest: &str) -> ApiResult<HttpResponse> {
    let subject = parse_digest(digest)?;
    let filter = query_value(req, "artifactType").filter(|f| !f.is_empty());
    let after = query_value(req, "last").map(|l| parse_digest(&l)).transpose()?;
    let max = match query_value(req, "n") {
        None => PAGE_MAX,
        Some(n) => n.parse::<u32>().map_err(|_| ApiError::new(Code::PaginationInvalid, format!("n={n:?} is not a non-negative integer")))?.clamp(1, PAGE_MAX),
    };
    let page = ReferrerPage { after, budget: PAGE_BYTES, max };
    let (referrers, more) = reg.referrers(name, &subject, filter.as_deref(), &page).await?;
    let next = match (more, referrers.last()) {
        (true, Some(last)) => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("n", &max.to_string()).append_pair("last", &last.digest.to_string());
            if let Some(f) = &filter {
                q.append_pair("artifactType", f);
            }
            Some(format!("</v2/{name}/referrers/{subject}?{}>; rel=\"next\"", q.finish()))
        }
        _ => None,
    };
    let manifests: Vec<Value> = referrers
        .into_iter()
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), r.media_type.into());
            d.insert("digest".into(), r.digest.to_string().into());
            d.insert("size".into(), r.size.into());
            if let Some(at) = r.artifact_type {
                d.insert("artifactType".into(), at.into());
            }
            if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<Value>(&a).ok()) {
                d.insert("annotations".into(), a);
            }
            Value::Object(d)
        })
        .collect();
    let mut resp = HttpResponse::Ok();
    resp.content_type(OCI_INDEX);
    if filter.is_some() {
        resp.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    if let Some(link) = next {
        resp.insert_header(("Link", link));
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Ok(resp.body(serde_json::to_vec(&body).expect("json serialises")))
}
