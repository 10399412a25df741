//! The OCI Distribution API (`/v2/...`) over actix-web.
//!
//! One dispatcher recognises the resource from the path ([`route`]) and calls the handler module
//! for it; handlers translate HTTP to calls on the [`Registry`] core and back, and report every
//! failure through the one error table in [`errors`]. This module never touches files or SQL.

pub mod access;
mod blobs;
pub mod errors;
mod listing;
mod manifests;

pub mod home;
mod referrers;
pub mod route;
mod token;
mod uploads;

use crate::digest::Digest;
use crate::names;
use crate::registry::{Registry, RegistryError};
use actix_web::http::Method;
use actix_web::{middleware, web, HttpRequest, HttpResponse};
use errors::{ApiError, ApiResult, Code};
use route::Route;
use std::sync::Arc;

pub const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Installs the API on an actix `App`. The app must also be wrapped in [`version_header`], so that
/// every response, errors and unknown paths included, names the API version.
pub fn configure(registry: Arc<Registry>, auth: Option<Arc<crate::auth::Auth>>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(registry));
        if let Some(auth) = auth {
            cfg.app_data(web::Data::from(auth));
        }
        cfg.route("/", web::get().to(home::page))
            .route("/token", web::get().to(token::get))
            .route("/token", web::post().to(token::post))
            .service(web::scope("/v2").default_service(web::to(dispatch)))
            .default_service(web::to(|req: HttpRequest| async move { Err::<HttpResponse, _>(ApiError::new(Code::RouteUnknown, format!("no endpoint at {}", req.path()))) }));
    }
}

async fn dispatch(req: HttpRequest, body: web::Payload, reg: web::Data<Registry>) -> ApiResult<HttpResponse> {
    let path = req.path().to_string();
    let rest = path.strip_prefix("/v2/").or_else(|| path.strip_prefix("/v2")).unwrap_or("");
    let route = route::parse(rest).ok_or_else(|| ApiError::new(Code::RouteUnknown, format!("no endpoint at {path}")))?;
    // The name is checked before anything else, whatever the method.
    if let Some(name) = route.name() {
        valid_name(name)?;
    }
    let auth = req.app_data::<web::Data<crate::auth::Auth>>().map(|a| a.clone().into_inner());
    let access = access::check(&req, auth.as_ref(), &route).await?;
    let m = req.method().clone();
    let reg = reg.get_ref();
    match route {
        Route::Base if is_read(&m) => Ok(HttpResponse::Ok().json(serde_json::json!({}))),
        Route::Catalog if is_read(&m) => listing::catalog(&req, reg, &access).await,
        Route::Tags { name } if is_read(&m) => listing::tags(&req, reg, name).await,
        Route::Manifest { name, reference } => match m {
            Method::GET | Method::HEAD => manifests::get(&req, reg, name, reference).await,
            Method::PUT => manifests::put(&req, body, reg, name, reference).await,
            Method::DELETE => manifests::delete(reg, name, reference).await,
            _ => Err(not_allowed(&m)),
        },
        Route::Blob { name, digest } => match m {
            Method::GET | Method::HEAD => blobs::get(&req, reg, name, digest).await,
            Method::DELETE => blobs::delete(reg, name, digest).await,
            _ => Err(not_allowed(&m)),
        },
        Route::UploadStart { name } if m == Method::POST => uploads::post(&req, body, reg, name, &access).await,
        Route::Upload { name, id } => {
            let id = uploads::session_id(id)?;
            match m {
                Method::GET => uploads::status(reg, name, id).await,
                Method::PATCH => uploads::patch(&req, body, reg, name, id).await,
                Method::PUT => uploads::put(&req, body, reg, name, id).await,
                Method::DELETE => uploads::cancel(reg, name, id).await,
                _ => Err(not_allowed(&m)),
            }
        }
        Route::Referrers { name, digest } if is_read(&m) => referrers::list(&req, reg, name, digest).await,
        _ => Err(not_allowed(&m)),
    }
}

pub fn version_header() -> middleware::DefaultHeaders {
    middleware::DefaultHeaders::new().add(API_VERSION_HEADER)
}

fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

fn not_allowed(m: &Method) -> ApiError {
    ApiError::new(Code::MethodNotAllowed, format!("method {m} is not allowed here"))
}

fn valid_name(name: &str) -> ApiResult<&str> {
    if names::is_valid_name(name) {
        Ok(name)
    } else {
        Err(ApiError::new(Code::NameInvalid, format!("invalid repository name {name:?}")))
    }
}

fn parse_digest(s: &str) -> ApiResult<Digest> {
    s.parse().map_err(|e: crate::digest::DigestError| ApiError::new(Code::DigestInvalid, e.to_string()))
}

/// Every value of query parameter `key`, decoded.
fn query_values(req: &HttpRequest, key: &str) -> Vec<String> {
    form_urlencoded::parse(req.query_string().as_bytes()).filter(|(k, _)| k == key).map(|(_, v)| v.into_owned()).collect()
}

fn query_value(req: &HttpRequest, key: &str) -> Option<String> {
    query_values(req, key).into_iter().next()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let e = match e {
            RegistryError::Metadata(m) => return m.into(),
            other => other,
        };
        let code = match &e {
            RegistryError::UploadUnknown(_) => Code::BlobUploadUnknown,
            RegistryError::ChunkOutOfOrder { .. } => Code::ChunkOutOfOrder,
            RegistryError::ChunkLength { .. } => Code::SizeInvalid,
            RegistryError::DigestMismatch { .. } => Code::DigestInvalid,
            RegistryError::ManifestDigest { .. } => Code::DigestInvalid,
            RegistryError::Body(_) => Code::BlobUploadInvalid,
            RegistryError::TooManyUploads { .. } => Code::TooManyRequests,
            RegistryError::BlobUnknown(_) | RegistryError::NoHolder(_) => Code::BlobUnknown,
            RegistryError::Elsewhere { .. } => Code::Internal,
            RegistryError::Manifest(_) => Code::ManifestInvalid,
            RegistryError::ManifestReference(_) => Code::ManifestBlobUnknown,
            // A session another node opened: its data is there, not here.
            RegistryError::Storage(crate::storage::StorageError::UploadMissing(_)) => Code::BlobUploadUnknown,
            RegistryError::Storage(s) if s.is_full() => Code::InsufficientStorage,
            RegistryError::BlockIndex(b) if b.is_full() => Code::InsufficientStorage,
            RegistryError::Storage(_) | RegistryError::BlockIndex(_) | RegistryError::BlockCorrupt { .. } => Code::Internal,
            RegistryError::Metadata(_) => Code::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}
