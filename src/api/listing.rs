//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n` and `last` (exclusive,
//! lexical) and an RFC 5988 `Link` header to the next page.

use super::access::Access;
use super::errors::{ApiError, ApiResult, Code};
use super::query_value;
use crate::metadata::Page;
use crate::registry::Registry;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

/// Largest page served; bigger `n` values are clamped rather than refused.
const MAX_PAGE: usize = 10_000;

struct Pagination {
    page: Page,
    requested: Option<usize>,
}

fn pagination(req: &HttpRequest) -> ApiResult<Pagination> {
    let requested = match query_value(req, "n") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| ApiError::new(Code::PaginationInvalid, format!("n={n:?} is not a non-negative integer")))?.min(MAX_PAGE)),
    };
    // Ask for one more than requested to learn whether a next page exists.
    let page = Page { last: query_value(req, "last"), limit: requested.map(|n| n + 1) };
    Ok(Pagination { page, requested })
}

/// Trims `items` to the requested size; returns the `Link` value when more remain.
fn paginate(mut items: Vec<String>, p: &Pagination, base: &str) -> (Vec<String>, Option<String>) {
    let Some(n) = p.requested else { return (items, None) };
    if items.len() <= n {
        return (items, None);
    }
    items.truncate(n);
    let link = items.last().map(|last| {
        let q: String = form_urlencoded::Serializer::new(String::new()).append_pair("n", &n.to_string()).append_pair("last", last).finish();
        format!("<{base}?{q}>; rel=\"next\"")
    });
    (items, link)
}

fn respond(body: serde_json::Value, link: Option<String>) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    if let Some(link) = link {
        resp.insert_header(("Link", link));
    }
    resp.json(body)
}

pub async fn tags(req: &HttpRequest, reg: &Registry, name: &str) -> ApiResult<HttpResponse> {
    let p = pagination(req)?;
    let tags = reg.tags(name, &p.page).await?.ok_or_else(|| ApiError::new(Code::NameUnknown, format!("repository {name} is unknown")))?;
    let (tags, link) = paginate(tags, &p, &format!("/v2/{name}/tags/list"));
    Ok(respond(json!({"name": name, "tags": tags}), link))
}

pub async fn catalog(req: &HttpRequest, reg: &Registry, access: &Access) -> ApiResult<HttpResponse> {
    let p = pagination(req)?;
    let repos = match access {
        Access::Open => reg.repositories(&p.page).await?,
        Access::Checked { .. } => {
            // Only what the caller may pull; filtered before the page is cut, so pages stay full.
            let all = reg.repositories(&Page { last: p.page.last.clone(), limit: None }).await?;
            let mut readable = Vec::new();
            for repo in all {
                if p.page.limit.is_some_and(|l| readable.len() >= l) {
                    break;
                }
                if access.may_pull(&repo).await? {
                    readable.push(repo);
                }
            }
            readable
        }
    };
    let (repos, link) = paginate(repos, &p, "/v2/_catalog");
    Ok(respond(json!({"repositories": repos}), link))
}
