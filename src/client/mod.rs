//! A client of any OCI Distribution registry (ours first), for the `af registry` client
//! commands: references as users type them, logins shared with Docker, and requests that answer
//! a registry's challenge as Docker does (the token flow, Basic otherwise).

pub mod archive;
pub mod credentials;
pub mod engine;
pub mod export;
pub mod reference;
pub mod transfer;

use credentials::Login;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a manifest GET accepts: every manifest and index type a registry may hold.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("plain HTTP to {0} is refused (it is not this machine): pass --insecure to allow it")]
    Insecure(String),
    #[error("cannot reach {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    /// The registry refused: its OCI error code and message, and what to do about it.
    #[error("{}: {message}{}", code.to_lowercase(), hint(code))]
    Registry { status: u16, code: String, message: String },
    #[error("{registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
}

fn hint(code: &str) -> &'static str {
    match code {
        "UNAUTHORIZED" | "DENIED" => ": run af registry login",
        "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" => ": see af registry list",
        _ => "",
    }
}

/// One registry, with the login kept for it (if any) and the tokens it handed out, per scope.
pub struct Registry {
    pub host: String,
    base: String,
    http: reqwest::Client,
    login: Option<Login>,
    tokens: Mutex<HashMap<String, String>>,
}

impl Registry {
    /// `host[:port]`: HTTPS, or plain HTTP to this machine (any host with `insecure`).
    pub fn new(host: &str, login: Option<Login>, insecure: bool) -> Result<Registry, ClientError> {
        let scheme = if reference::is_loopback(host) || insecure { "http" } else { "https" };
        if scheme == "http" && !reference::is_loopback(host) && !insecure {
            return Err(ClientError::Insecure(host.to_string()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("af-registry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable { registry: host.to_string(), detail: e.to_string() })?;
        Ok(Registry { host: host.to_string(), base: format!("{scheme}://{host}"), http, login, tokens: Mutex::new(HashMap::new()) })
    }

    /// With the login `af registry login` (or `docker login`) kept for this host.
    pub fn with_kept_login(host: &str, insecure: bool) -> Result<Registry, ClientError> {
        Registry::new(host, credentials::get(host)?, insecure)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether `url` is this registry's own origin (scheme, host and port): the only place its
    /// credentials go, besides the token service the registry itself names.
    fn is_own(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&self.base).is_ok_and(|base| base.origin() == url.origin())
    }

    /// Sends the request `build` makes (again, if the registry challenges it) for an operation
    /// needing `scope` (`repository:ns/app:pull`; empty for `/v2/`). Credentials go only to the
    /// registry's own origin: a request to another host (an upload `Location` elsewhere) carries
    /// none, and a challenge is answered only when the registry itself made it, not a host a
    /// redirect led to (which would otherwise be sent the stored password: CVE-2020-15157).
    pub async fn send(&self, scope: &str, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, ClientError> {
        let cached = self.tokens.lock().expect("tokens lock").get(scope).cloned();
        let first = self.execute(build(&self.http), cached.as_deref()).await?;
        if first.status() != StatusCode::UNAUTHORIZED || !self.is_own(first.url()) {
            return Ok(first);
        }
        let challenge = first.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let authorization = match Challenge::parse(&challenge) {
            Some(Challenge::Bearer { realm, service }) => {
                let token = self.token(&realm, service.as_deref(), scope).await?;
                self.tokens.lock().expect("tokens lock").insert(scope.to_string(), token.clone());
                format!("Bearer {token}")
            }
            Some(Challenge::Basic) => match &self.login {
                Some(login) => basic(login),
                None => return Ok(first),
            },
            None => return Ok(first),
        };
        self.execute(build(&self.http), Some(&authorization)).await
    }

    async fn execute(&self, request: RequestBuilder, authorization: Option<&str>) -> Result<Response, ClientError> {
        let unreachable = |e: reqwest::Error| ClientError::Unreachable { registry: self.host.clone(), detail: root_cause(&e) };
        let mut request = request.build().map_err(unreachable)?;
        if let Some(a) = authorization.filter(|_| self.is_own(request.url())) {
            let value = if a.starts_with("Bearer ") || a.starts_with("Basic ") { a.to_string() } else { format!("Bearer {a}") };
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|e| self.protocol(format!("a credential that is no header value: {e}")))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        self.http.execute(request).await.map_err(unreachable)
    }

    /// A token from the registry's token service, for `scope`, with the login if there is one.
    async fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, ClientError> {
        let mut request = self.http.get(realm);
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        if !scope.is_empty() {
            query.push(("scope", scope));
        }
        request = request.query(&query);
        if let Some(login) = &self.login {
            request = request.header(AUTHORIZATION, basic(login));
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable { registry: self.host.clone(), detail: root_cause(&e) })?;
        let response = self.check(response).await?;
        let body = read_limited(response, MAX_ERROR_BODY).await.map_err(|e| self.protocol(format!("token service: {e}")))?;
        let body: serde_json::Value = serde_json::from_slice(&body).map_err(|e| self.protocol(format!("token service: {e}")))?;
        body.get("token").or_else(|| body.get("access_token")).and_then(|t| t.as_str()).map(str::to_string).ok_or_else(|| self.protocol("the token service gave no token".into()))
    }

    /// `response` if it succeeded, else the registry's error (its OCI error JSON when it sent one).
    pub async fn check(&self, response: Response) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_limited(response, MAX_ERROR_BODY).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        // Shown on the user's terminal: no control characters (escape sequences) from a registry.
        let body: String = body.chars().map(|c| if c.is_control() && c != '\n' { ' ' } else { c }).collect();
        let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        let first = parsed.as_ref().and_then(|v| v.get("errors")).and_then(|e| e.get(0));
        let field = |k: &str| first.and_then(|e| e.get(k)).and_then(|v| v.as_str()).map(|v| v.chars().filter(|c| !c.is_control()).take(1000).collect::<String>());
        let code = field("code").unwrap_or_else(|| match status {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED".into(),
            StatusCode::FORBIDDEN => "DENIED".into(),
            StatusCode::NOT_FOUND => "NOT_FOUND".into(),
            _ => format!("HTTP {}", status.as_u16()),
        });
        let message = field("message").unwrap_or_else(|| if body.trim().is_empty() { status.to_string() } else { body.trim().chars().take(200).collect() });
        Err(ClientError::Registry { status: status.as_u16(), code, message })
    }

    pub fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol { registry: self.host.clone(), detail }
    }

    /// GET (or HEAD) a manifest: its bytes, media type and headers.
    pub async fn manifest(&self, repository: &str, reference: &str, method: Method) -> Result<(bytes::Bytes, String, HeaderMap), ClientError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let scope = format!("repository:{repository}:pull");
        let response = self.send(&scope, |http| http.request(method.clone(), &url).header(ACCEPT, MANIFEST_TYPES)).await?;
        let response = self.check(response).await?;
        let headers = response.headers().clone();
        let media_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = read_limited(response, crate::manifest::MAX_MANIFEST_BYTES).await.map_err(|e| self.protocol(format!("{repository}:{reference}: {e}")))?;
        Ok((body, media_type, headers))
    }

    /// A JSON document at `path` needing `scope`, with the next page's path from its `Link`.
    pub async fn json_page(&self, path: &str, scope: &str) -> Result<(serde_json::Value, Option<String>), ClientError> {
        let url = self.url(path);
        let response = self.check(self.send(scope, |http| http.get(&url)).await?).await?;
        let next = response.headers().get("link").and_then(|v| v.to_str().ok()).and_then(next_link);
        let body = read_limited(response, MAX_JSON_PAGE).await.map_err(|e| self.protocol(format!("{path}: {e}")))?;
        let body = serde_json::from_slice(&body).map_err(|e| self.protocol(format!("{path}: {e}")))?;
        Ok((body, next))
    }
}

/// The most a registry's error body, or a token service's answer, is read.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The most one page of a listing (catalog, tags, referrers) is read: as the registry's own
/// referrers pages, about 1 MiB, with room.
const MAX_JSON_PAGE: usize = 4 << 20;

/// A response's body, read as it comes and refused past `limit` bytes (a hostile registry can
/// stream without end: 422 MiB once took the client past 1 GiB).
pub async fn read_limited(mut response: Response, limit: usize) -> Result<bytes::Bytes, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is over {limit} bytes"));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| root_cause(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is over {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn basic(login: &Login) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", login.username, login.secret)))
}

/// The innermost cause of a transport error (the one that says what went wrong).
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The path of an RFC 5988 `Link: <path?n=..&last=..>; rel="next"`.
fn next_link(link: &str) -> Option<String> {
    let (target, params) = link.split_once(';')?;
    params.contains("rel=\"next\"").then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
}

enum Challenge {
    Bearer { realm: String, service: Option<String> },
    Basic,
}

impl Challenge {
    fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut fields = HashMap::new();
        // realm="...",service="...",scope="..." (values quoted, commas inside scope's quotes).
        let mut rest = params.trim();
        while let Some((key, after)) = rest.split_once('=') {
            let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, tail) = match after.strip_prefix('"') {
                Some(quoted) => match quoted.split_once('"') {
                    Some((v, t)) => (v, t),
                    None => (quoted, ""),
                },
                None => after.split_once(',').unwrap_or((after, "")),
            };
            fields.insert(key, value.to_string());
            rest = tail.trim_start_matches(',').trim();
        }
        Some(Challenge::Bearer { realm: fields.remove("realm")?, service: fields.remove("service") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_links_are_read() {
        match Challenge::parse(r#"Bearer realm="https://r.example/token",service="af-registry",scope="repository:a/b:pull,push""#) {
            Some(Challenge::Bearer { realm, service }) => {
                assert_eq!(realm, "https://r.example/token");
                assert_eq!(service.as_deref(), Some("af-registry"));
            }
            _ => panic!("not read as a bearer challenge"),
        }
        assert!(matches!(Challenge::parse("Basic realm=\"x\""), Some(Challenge::Basic)));
        assert!(Challenge::parse("Negotiate").is_none());
        assert_eq!(next_link(r#"</v2/_catalog?n=2&last=b>; rel="next""#).as_deref(), Some("/v2/_catalog?n=2&last=b"));
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}
