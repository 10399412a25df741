//! One log line and the request metrics for every request, on every listener: method, path
//! (never the query string, which may carry arguments, nor any header, which may carry
//! credentials), status and the time until the response began (a download's body streams on
//! after it); body bytes in and out are counted as they pass.

use crate::metrics::METRICS;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use bytes::Bytes;
use futures_util::TryStreamExt;
use prometheus::IntCounter;
use std::pin::Pin;
use std::task::{Context, Poll};

pub async fn api(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    observe("api", req, next).await
}

pub async fn gateway(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    observe("gateway", req, next).await
}

pub async fn rpc(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    observe("rpc", req, next).await
}

async fn observe(listener: &'static str, req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.path().to_string());
    let route = route(listener, &path);
    let received = METRICS.received.with_label_values(&[listener]);
    let (http, payload) = req.into_parts();
    let counted: Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>>>> =
        Box::pin(payload.inspect_ok(move |chunk| received.inc_by(chunk.len() as u64)));
    let req = ServiceRequest::from_parts(http, Payload::from(counted));
    let res = next.call(req).await;
    let ms = (started.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    tracing::info!(listener, %method, path, status, ms, "request");
    METRICS.requests.with_label_values(&[listener, &route, method_label(&method), &status.to_string()]).inc();
    METRICS.duration.with_label_values(&[listener, &route]).observe(started.elapsed().as_secs_f64());
    let sent = METRICS.sent.with_label_values(&[listener]);
    res.map(|r| r.map_body(|_, body| BoxBody::new(Counted { body: body.boxed(), sent })))
}

/// A method as a metric label: one of HTTP's own, or `other`. Labels come only from a closed
/// set: every made-up method was a new series, kept forever (30,000 requests made 30,014).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|m| *m == method.as_str()).unwrap_or("other")
}

/// A response body that counts its bytes as they go out.
struct Counted {
    body: BoxBody,
    sent: IntCounter,
}

impl MessageBody for Counted {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.sent.inc_by(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

/// The route template of a request `path` on `listener` (`api`, `gateway`, `rpc`).
pub fn route(listener: &str, path: &str) -> String {
    match listener {
        "api" => api_route(path),
        "gateway" => match path.split('/').nth(1) {
            Some("ipfs") => "/ipfs/<cid>".into(),
            Some("ipns") => "/ipns/<name>".into(),
            _ => "other".into(),
        },
        "rpc" => match path.strip_prefix("/api/v0/") {
            // Commands are a closed set: an unknown one is not a label value of its own.
            Some(cmd) if crate::rpc::is_command(cmd) => format!("/api/v0/{cmd}"),
            Some(_) => "/api/v0/<unknown>".into(),
            None => "other".into(),
        },
        _ => "other".into(),
    }
}

fn api_route(path: &str) -> String {
    match path {
        "/v2" | "/v2/" => return "/v2/".into(),
        "/v2/_catalog" => return "/v2/_catalog".into(),
        "/token" => return "/token".into(),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return "other".into() };
    for (marker, template) in [
        ("/blobs/uploads/", "/v2/<name>/blobs/uploads/<id>"),
        ("/blobs/", "/v2/<name>/blobs/<digest>"),
        ("/manifests/", "/v2/<name>/manifests/<reference>"),
        ("/referrers/", "/v2/<name>/referrers/<digest>"),
    ] {
        if let Some(i) = rest.find(marker) {
            if marker == "/blobs/uploads/" && rest[i + marker.len()..].is_empty() {
                return "/v2/<name>/blobs/uploads/".into();
            }
            return template.into();
        }
    }
    if rest.ends_with("/blobs/uploads") {
        return "/v2/<name>/blobs/uploads/".into();
    }
    if rest.ends_with("/tags/list") {
        return "/v2/<name>/tags/list".into();
    }
    "other".into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_templates() {
        use super::route;
        assert_eq!(route("api", "/v2/"), "/v2/");
        assert_eq!(route("api", "/v2/a/b/blobs/sha256:00"), "/v2/<name>/blobs/<digest>");
        assert_eq!(route("api", "/v2/a/blobs/uploads/"), "/v2/<name>/blobs/uploads/");
        assert_eq!(route("api", "/v2/a/blobs/uploads/1234"), "/v2/<name>/blobs/uploads/<id>");
        assert_eq!(route("api", "/v2/a/manifests/latest"), "/v2/<name>/manifests/<reference>");
        assert_eq!(route("api", "/v2/a/tags/list"), "/v2/<name>/tags/list");
        assert_eq!(route("api", "/etc/passwd"), "other");
        assert_eq!(route("gateway", "/ipfs/bafy/x"), "/ipfs/<cid>");
        assert_eq!(route("rpc", "/api/v0/id"), "/api/v0/id");
        assert_eq!(route("rpc", "/api/v0/made-up-thing"), "/api/v0/<unknown>");
    }
}
