//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`: an OCI index of the manifests whose
//! `subject` is `<digest>`.

use super::errors::ApiResult;
use super::{parse_digest, query_value};
use crate::manifest::OCI_INDEX;
use crate::registry::Registry;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

pub async fn list(req: &HttpRequest, reg: &Registry, name: &str, digest: &str) -> ApiResult<HttpResponse> {
    let subject = parse_digest(digest)?;
    let filter = query_value(req, "artifactType").filter(|f| !f.is_empty());
    let referrers = reg.meta.referrers(name, &subject).await?;
    let manifests: Vec<Value> = referrers
        .into_iter()
        .filter(|r| filter.as_ref().is_none_or(|f| r.artifact_type.as_ref() == Some(f)))
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
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Ok(resp.body(serde_json::to_vec(&body).expect("json serialises")))
}
