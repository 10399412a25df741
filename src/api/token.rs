//! The token endpoint of the Docker token flow, `/token`: GET with Basic credentials (or none, for
//! public pulls) as Docker and containerd send it, and POST with the OAuth2 form (password and
//! refresh_token grants) as containerd and BuildKit send it.

use super::access::{auth_error, peer};
use super::errors::{ApiError, ApiResult, Code};
use super::{header, query_value, query_values};
use crate::auth::scope::Scope;
use crate::auth::{parse_basic, Auth, AuthError};
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

fn auth_of(req: &HttpRequest) -> ApiResult<Arc<Auth>> {
    req.app_data::<web::Data<Auth>>()
        .map(|d| d.clone().into_inner())
        .filter(|a| a.config.enabled)
        .ok_or_else(|| ApiError::new(Code::RouteUnknown, "this node runs without authentication (--auth none)"))
}

fn issued(token: crate::auth::IssuedToken) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(token)
}

pub async fn get(req: HttpRequest) -> ApiResult<HttpResponse> {
    let auth = auth_of(&req)?;
    let fail = |e: AuthError| auth_error(e, &auth, &req, None);
    let identity = match header(&req, "authorization") {
        None => None,
        Some(value) => {
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(fail(AuthError::Unauthenticated));
            }
            let (user, secret) = parse_basic(rest.trim()).ok_or_else(|| fail(AuthError::BadCredentials))?;
            Some(auth.login(&user, &secret, &peer(&req)).await.map_err(fail)?)
        }
    };
    let scopes = query_values(&req, "scope").iter().flat_map(|s| s.split(' ').filter_map(Scope::parse).collect::<Vec<_>>()).collect();
    let offline = query_value(&req, "offline_token").is_some_and(|v| v == "true");
    Ok(issued(auth.issue(identity.as_ref(), scopes, offline).await.map_err(fail)?))
}

#[derive(serde::Deserialize)]
pub struct TokenForm {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    access_type: Option<String>,
}

pub async fn post(req: HttpRequest, form: web::Form<TokenForm>) -> ApiResult<HttpResponse> {
    let auth = auth_of(&req)?;
    let fail = |e: AuthError| auth_error(e, &auth, &req, None);
    let form = form.into_inner();
    let identity = match form.grant_type.as_str() {
        "password" => {
            let (Some(user), Some(password)) = (&form.username, &form.password) else {
                return Err(ApiError::new(Code::Unsupported, "the password grant needs username and password"));
            };
            auth.login(user, password, &peer(&req)).await.map_err(fail)?
        }
        "refresh_token" => {
            let token = form.refresh_token.as_deref().ok_or_else(|| ApiError::new(Code::Unsupported, "refresh_token is missing"))?;
            auth.refresh_login(token, &peer(&req)).await.map_err(fail)?
        }
        other => return Err(ApiError::new(Code::Unsupported, format!("unsupported grant_type {other:?}"))),
    };
    let scopes = form.scope.as_deref().unwrap_or("").split(' ').filter_map(Scope::parse).collect();
    let offline = form.access_type.as_deref() == Some("offline") && form.grant_type == "password";
    let mut token = auth.issue(Some(&identity), scopes, offline).await.map_err(fail)?;
    if form.grant_type == "refresh_token" {
        token.refresh_token = form.refresh_token;
    }
    Ok(issued(token))
}
