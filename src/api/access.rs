//! Access control on the `/v2/` routes: who the caller is, what the route needs, and the 401
//! challenge, 403 or 429 when the two do not meet.

use super::errors::{ApiError, ApiResult, Code};
use super::header;
use super::route::Route;
use crate::auth::scope::{Action, Scope};
use crate::auth::{Auth, AuthError, Caller};
use actix_web::http::Method;
use actix_web::HttpRequest;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The caller of a request that passed the route's check.
pub enum Access {
    /// `--auth none`: everything is allowed.
    Open,
    Checked {
        auth: Arc<Auth>,
        caller: Caller,
    },
}

impl Access {
    /// Whether the caller may pull from `repo` (mount sources, catalog entries).
    pub async fn may_pull(&self, repo: &str) -> ApiResult<bool> {
        match self {
            Access::Open => Ok(true),
            // By who the caller is, not by the scopes of its token: a mount's source is not in
            // the scope the upload's challenge asked for.
            Access::Checked { auth, caller } => {
                let identity = caller.identity().filter(|i| !i.user.is_empty());
                match auth.permitted(identity, repo).await {
                    Ok(actions) => Ok(actions.contains(&Action::Pull)),
                    Err(AuthError::Metadata(e)) => Err(e.into()),
                    Err(e) => Err(ApiError::new(Code::Internal, e.to_string())),
                }
            }
        }
    }

    /// Who pays for what the request opens (upload sessions): the user, else the address.
    pub fn owner(&self, req: &HttpRequest) -> String {
        match self {
            Access::Checked { caller, .. } => match caller.identity().filter(|i| !i.user.is_empty()) {
                Some(i) => format!("user:{}", i.user),
                None => format!("address:{}", peer(req)),
            },
            Access::Open => format!("address:{}", peer(req)),
        }
    }

    /// Whether the caller may reach any repository (a mount that names no source).
    pub fn is_admin(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Checked { caller, .. } => caller.identity().is_some_and(|i| i.is_admin),
        }
    }
}

/// The scheme and host the client used, for the challenge's realm. Forwarded headers say it only
/// when a trusted proxy sent them: from anyone else they would let a client move the realm.
pub fn base_url(req: &HttpRequest, trusted_proxies: &[std::net::IpAddr]) -> String {
    let from_proxy = req.peer_addr().is_some_and(|a| trusted_proxies.contains(&a.ip()));
    if from_proxy {
        let info = req.connection_info();
        return format!("{}://{}", info.scheme(), info.host());
    }
    // The Host header goes into a quoted header value: only what a host name or address holds.
    let host = header(req, "host")
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .map(str::to_string)
        .unwrap_or_else(|| req.app_config().host().to_string());
    let scheme = if req.app_config().secure() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Maps an authentication failure to its response; `scope` goes into the challenge.
pub fn auth_error(e: AuthError, auth: &Auth, req: &HttpRequest, scope: Option<&Scope>) -> ApiError {
    let challenge = || auth.challenge(&base_url(req, &auth.config.trusted_proxies), scope);
    match e {
        AuthError::Unauthenticated | AuthError::BadCredentials | AuthError::TokenInvalid => {
            ApiError::new(Code::Unauthorized, e.to_string()).with_header("WWW-Authenticate", challenge())
        }
        AuthError::RateLimited(secs) => ApiError::new(Code::TooManyRequests, e.to_string()).with_header("Retry-After", secs.to_string()),
        AuthError::Denied => ApiError::new(Code::Denied, e.to_string()),
        AuthError::Metadata(m) => m.into(),
        AuthError::Secret(_) | AuthError::Task(_) => ApiError::new(Code::Internal, e.to_string()),
    }
}

/// The client's address, for rate limiting failed logins.
pub fn peer(req: &HttpRequest) -> String {
    req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()
}

/// What `route` with `method` needs: (repository, action), or None for the base and catalog.
fn needs<'a>(route: &Route<'a>, method: &Method) -> Option<(&'a str, Action)> {
    let name = route.name()?;
    let action = match (route, method) {
        (Route::Manifest { .. } | Route::Blob { .. }, &Method::DELETE) => Action::Delete,
        (Route::Manifest { .. }, &Method::PUT) => Action::Push,
        (Route::Manifest { .. } | Route::Blob { .. } | Route::Tags { .. } | Route::Referrers { .. }, _) => Action::Pull,
        _ => Action::Push,
    };
    Some((name, action))
}

/// Checks a request against its route. With auth off, everything passes.
pub async fn check(req: &HttpRequest, auth: Option<&Arc<Auth>>, route: &Route<'_>) -> ApiResult<Access> {
    let Some(auth) = auth.filter(|a| a.config.enabled) else { return Ok(Access::Open) };
    let needed = needs(route, req.method());
    let scope = match (route, needed) {
        (Route::Catalog, _) => Some(Scope::Catalog),
        (_, Some((name, action))) => {
            // Always pull and push (and delete to delete): a token is granted only what the
            // caller is permitted of that, and clients that keep the first token they get for a
            // repository (oras) can then push with the one a HEAD earned.
            let mut actions = BTreeSet::from([Action::Pull, Action::Push]);
            actions.insert(action);
            Some(Scope::Repository { name: name.to_string(), actions })
        }
        _ => None,
    };
    let fail = |e| auth_error(e, auth, req, scope.as_ref());
    let caller = auth.caller(header(req, "authorization"), &peer(req)).await.map_err(fail)?;
    match (route, needed) {
        (Route::Catalog, _) => auth.authorize_catalog(&caller).map_err(fail)?,
        (_, Some((name, action))) => auth.authorize(&caller, name, action).await.map_err(fail)?,
        // The base endpoint: any valid credential (Docker's login probe).
        _ if caller.identity().is_some_and(|i| !i.user.is_empty()) => {}
        _ => return Err(fail(AuthError::Unauthenticated)),
    }
    Ok(Access::Checked { auth: auth.clone(), caller })
}
