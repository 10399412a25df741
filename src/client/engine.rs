//! The local container engine, through the Docker Engine API (Docker's daemon, or podman's
//! compatible `podman system service`): where `af registry push` takes an image from and `pull`
//! loads one into. `DOCKER_HOST` names it (`unix:///PATH` or `tcp://HOST:PORT`), as for the
//! docker CLI; the default is Docker's socket. Images move as docker-archive streams
//! (`GET /images/{name}/get`, `POST /images/load`), never written to disk here.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body_util::{combinators::UnsyncBoxBody as BoxBody, BodyDataStream, BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use std::path::PathBuf;

/// The API version asked for: the newest both Docker (since 20.10) and podman 4 speak.
const API: &str = "/v1.41";
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("DOCKER_HOST={0:?} is not unix:///PATH or tcp://HOST:PORT (TLS engines are not supported)")]
    Host(String),
    #[error("cannot reach the engine at {host}: {detail} (is docker, or podman system service, running there? set DOCKER_HOST)")]
    Unreachable { host: String, detail: String },
    #[error("no image {0:?} in the local engine (see docker images)")]
    NoImage(String),
    #[error("the engine at {host} answered {status}: {message}")]
    Refused { host: String, status: u16, message: String },
}

type Result<T> = std::result::Result<T, EngineError>;

enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// A local engine, reached anew for each request (one connection per request keeps a streamed
/// export and the requests made beside it apart).
pub struct Engine {
    host: String,
    endpoint: Endpoint,
}

/// A response's body, as it arrives.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

impl Engine {
    /// The engine `DOCKER_HOST` names, else Docker's default socket.
    pub fn from_env() -> Result<Engine> {
        Engine::at(&std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_HOST.to_string()))
    }

    pub fn at(host: &str) -> Result<Engine> {
        let endpoint = if let Some(path) = host.strip_prefix("unix://") {
            Endpoint::Unix(PathBuf::from(path))
        } else if let Some(addr) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            Endpoint::Tcp(addr.trim_end_matches('/').to_string())
        } else {
            return Err(EngineError::Host(host.to_string()));
        };
        Ok(Engine { host: host.to_string(), endpoint })
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> EngineError {
        EngineError::Unreachable { host: self.host.clone(), detail: detail.to_string() }
    }

    async fn request(&self, method: Method, path: &str, content_type: Option<&str>, body: BoxBody<Bytes, std::io::Error>) -> Result<(StatusCode, ByteStream)> {
        let mut builder = Request::builder().method(method).uri(format!("{API}{path}")).header("host", "docker");
        if let Some(t) = content_type {
            builder = builder.header("content-type", t);
        }
        let request = builder.body(body).map_err(|e| self.unreachable(e))?;
        let response = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| self.unreachable(e))?;
                self.exchange(stream, request).await?
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| self.unreachable(e))?;
                self.exchange(stream, request).await?
            }
        };
        let status = response.status();
        let body = BodyDataStream::new(response.into_body()).map_err(std::io::Error::other);
        Ok((status, Box::pin(body)))
    }

    async fn exchange<S>(&self, stream: S, request: Request<BoxBody<Bytes, std::io::Error>>) -> Result<hyper::Response<hyper::body::Incoming>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "engine connection ended");
            }
        });
        sender.send_request(request).await.map_err(|e| self.unreachable(e))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, ByteStream)> {
        self.request(Method::GET, path, None, Empty::new().map_err(|never| match never {}).boxed_unsync()).await
    }

    /// The error an unsuccessful answer carries (`{"message": ...}` on both engines).
    async fn refused(&self, status: StatusCode, body: ByteStream) -> EngineError {
        let text = collect(body, 64 << 10).await.unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().chars().take(200).collect());
        EngineError::Refused { host: self.host.clone(), status: status.as_u16(), message }
    }

    /// `GET /_ping`: whether the engine answers at all (before work that would be lost).
    pub async fn ping(&self) -> Result<()> {
        let (status, body) = self.get("/_ping").await?;
        if status != StatusCode::OK {
            return Err(self.refused(status, body).await);
        }
        Ok(())
    }

    /// `GET /images/{name}/json`: the image's Id, RepoTags, RepoDigests and RootFS.
    pub async fn inspect(&self, name: &str) -> Result<Option<Value>> {
        let (status, body) = self.get(&format!("/images/{}/json", escape(name))).await?;
        match status {
            StatusCode::OK => {
                let bytes = collect(body, 16 << 20).await.map_err(|e| self.unreachable(e))?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| self.unreachable(format!("image inspect is not JSON: {e}")))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refused(status, body).await),
        }
    }

    /// Every `name:tag` the engine holds.
    pub async fn repo_tags(&self) -> Result<Vec<String>> {
        let (status, body) = self.get("/images/json").await?;
        if status != StatusCode::OK {
            return Err(self.refused(status, body).await);
        }
        let bytes = collect(body, 64 << 20).await.map_err(|e| self.unreachable(e))?;
        let images: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| self.unreachable(format!("the image list is not JSON: {e}")))?;
        Ok(images.iter().flat_map(|i| i["RepoTags"].as_array().into_iter().flatten()).filter_map(|t| t.as_str()).filter(|t| *t != "<none>:<none>").map(str::to_string).collect())
    }

    /// `GET /images/{name}/get`: the image as a docker-archive tar, streamed.
    pub async fn export(&self, name: &str) -> Result<ByteStream> {
        let (status, body) = self.get(&format!("/images/{}/get", escape(name))).await?;
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::NOT_FOUND => Err(EngineError::NoImage(name.to_string())),
            _ => Err(self.refused(status, body).await),
        }
    }

    /// `POST /images/load` of a docker-archive tar streamed from `archive`; what the engine said.
    pub async fn load(&self, archive: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Result<String> {
        let body = BoxBody::new(StreamBody::new(archive.map_ok(Frame::data)));
        let (status, answer) = self.request(Method::POST, "/images/load?quiet=1", Some("application/x-tar"), body).await?;
        if status != StatusCode::OK {
            return Err(self.refused(status, answer).await);
        }
        let text = collect(answer, 1 << 20).await.map_err(|e| self.unreachable(e))?;
        // Docker answers JSON lines, `{"stream": ...}` or `{"error": ...}` (a failed load is still
        // a 200); podman a JSON object with `Names`, or a message.
        let mut said = Vec::new();
        for line in String::from_utf8_lossy(&text).lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::String(line.to_string()));
            if let Some(e) = v["error"].as_str().or(v["errorDetail"]["message"].as_str()) {
                return Err(EngineError::Refused { host: self.host.clone(), status: 200, message: e.to_string() });
            }
            if let Some(s) = v["stream"].as_str() {
                said.push(s.trim().to_string());
            } else if let Some(names) = v["Names"].as_array() {
                said.extend(names.iter().filter_map(|n| n.as_str()).map(|n| format!("Loaded image: {n}")));
            }
        }
        Ok(said.join("; "))
    }
}

/// An image name as one path segment (`/` and `:` are fine in the engines' routes; the rest of
/// what is not a name character is escaped).
fn escape(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'/' | b':' | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A whole (small) body, refused beyond `limit` bytes.
async fn collect(mut body: ByteStream, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.try_next().await? {
        if out.len() + chunk.len() > limit {
            return Err(std::io::Error::other(format!("an answer over {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
