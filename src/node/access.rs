//! One log line per request, on every listener: method, path (never the query string, which may
//! carry arguments, nor any header, which may carry credentials), status and the time until the
//! response began (a download's body streams on after it).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

pub async fn log(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let listener = req.app_config().local_addr();
    let (method, path) = (req.method().clone(), req.path().to_string());
    let res = next.call(req).await;
    let ms = (started.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    match &res {
        Ok(r) => tracing::info!(%listener, %method, path, status = r.status().as_u16(), ms, "request"),
        Err(e) => tracing::info!(%listener, %method, path, status = e.as_response_error().status_code().as_u16(), ms, "request"),
    }
    res
}
