//! The one table of API errors. Handlers return an [`ApiError`]; its code, HTTP status and message
//! come from here, and every 4xx/5xx leaves the node as the OCI error body
//! `{"errors":[{"code","message","detail"}]}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An OCI error code with the status and message the spec gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ManifestTooLarge,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    RangeInvalid,
    ChunkOutOfOrder,
    Unauthorized,
    Denied,
    Unsupported,
    MethodNotAllowed,
    RouteUnknown,
    PaginationInvalid,
    TooManyRequests,
    Unavailable,
    InsufficientStorage,
    Internal,
}

impl Code {
    /// (wire code, HTTP status, message): the whole table.
    pub fn describe(self) -> (&'static str, StatusCode, &'static str) {
        use Code::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND, "blob unknown to registry"),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST, "blob upload invalid"),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND, "blob upload unknown to registry"),
            DigestInvalid => ("DIGEST_INVALID", StatusCode::BAD_REQUEST, "provided digest did not match uploaded content"),
            ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST, "manifest references a manifest or blob unknown to registry"),
            ManifestInvalid => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST, "manifest invalid"),
            ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND, "manifest unknown to registry"),
            ManifestTooLarge => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE, "manifest exceeds the size limit"),
            NameInvalid => ("NAME_INVALID", StatusCode::BAD_REQUEST, "invalid repository name"),
            NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND, "repository name not known to registry"),
            SizeInvalid => ("SIZE_INVALID", StatusCode::BAD_REQUEST, "provided length did not match content length"),
            RangeInvalid => ("RANGE_INVALID", StatusCode::RANGE_NOT_SATISFIABLE, "requested range not satisfiable"),
            ChunkOutOfOrder => ("BLOB_UPLOAD_INVALID", StatusCode::RANGE_NOT_SATISFIABLE, "chunk does not start where the upload ends"),
            Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED, "authentication required"),
            Denied => ("DENIED", StatusCode::FORBIDDEN, "requested access to the resource is denied"),
            Unsupported => ("UNSUPPORTED", StatusCode::BAD_REQUEST, "the operation is unsupported"),
            MethodNotAllowed => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED, "the operation is unsupported"),
            RouteUnknown => ("NOT_FOUND", StatusCode::NOT_FOUND, "no such endpoint"),
            PaginationInvalid => ("PAGINATION_NUMBER_INVALID", StatusCode::BAD_REQUEST, "invalid number of results requested"),
            TooManyRequests => ("TOOMANYREQUESTS", StatusCode::TOO_MANY_REQUESTS, "too many requests"),
            Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
            InsufficientStorage => ("UNAVAILABLE", StatusCode::INSUFFICIENT_STORAGE, "the registry's storage is full; retry once space is freed"),
            Internal => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
        }
    }
}

/// An error as the API reports it: a code from the table plus a human detail.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", self.code.describe().0)]
pub struct ApiError {
    pub code: Code,
    pub detail: String,
    /// Extra response headers (e.g. `Content-Range: bytes */N` on a 416).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.describe().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status, message) = self.code.describe();
        if status.is_server_error() {
            tracing::error!(code, detail = %self.detail, "request failed");
        } else {
            tracing::debug!(code, detail = %self.detail, "request rejected");
        }
        let mut resp = HttpResponse::build(status);
        for (k, v) in &self.headers {
            resp.insert_header((*k, v.as_str()));
        }
        resp.json(json!({"errors": [{"code": code, "message": message, "detail": self.detail}]}))
    }
}

impl From<crate::metadata::MetadataError> for ApiError {
    fn from(e: crate::metadata::MetadataError) -> Self {
        match e {
            crate::metadata::MetadataError::Unavailable(_) => ApiError::new(Code::Unavailable, e.to_string()),
            crate::metadata::MetadataError::Full(_) => ApiError::new(Code::InsufficientStorage, e.to_string()),
            _ => ApiError::new(Code::Internal, e.to_string()),
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        ApiError::new(if e.is_full() { Code::InsufficientStorage } else { Code::Internal }, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
