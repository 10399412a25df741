//! Logins, kept where Docker keeps them so `docker`, `podman`, `skopeo` and `af` share one:
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), `auths.<host>.auth` (base64
//! of `user:secret`), or the credential helper the file names (`credHelpers.<host>`, else
//! `credsStore`): `docker-credential-<name> get|store|erase`.

use base64::Engine;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("credential helper docker-credential-{helper}: {detail}")]
    Helper { helper: String, detail: String },
    #[error("no home directory: set DOCKER_CONFIG")]
    NoHome,
}

/// A user name and its password or access token.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({:?}, <secret>)", self.username)
    }
}

/// The Docker client configuration file.
pub fn config_path() -> Result<PathBuf, CredentialsError> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or(CredentialsError::NoHome)?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

fn read_config() -> Result<(PathBuf, Map<String, Value>), CredentialsError> {
    let path = config_path()?;
    let err = |detail: String| CredentialsError::File { path: path.display().to_string(), detail };
    let config = match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(err("not a JSON object".into())),
            Err(e) => return Err(err(format!("not valid JSON: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(err(e.to_string())),
    };
    Ok((path, config))
}

/// Replaces the file whole (a temporary file renamed over it), readable by its owner only.
fn write_config(path: &PathBuf, config: &Map<String, Value>) -> Result<(), CredentialsError> {
    let err = |detail: String| CredentialsError::File { path: path.display().to_string(), detail };
    let dir = path.parent().ok_or_else(|| err("no parent directory".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut text = serde_json::to_vec_pretty(config).map_err(|e| err(e.to_string()))?;
    text.push(b'\n');
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e.to_string())
    })
}

/// The helper that keeps `registry`'s credentials, if the file names one.
fn helper_for(config: &Map<String, Value>, registry: &str) -> Option<String> {
    let per_host = config.get("credHelpers").and_then(|h| h.get(registry)).and_then(Value::as_str);
    per_host.or_else(|| config.get("credsStore").and_then(Value::as_str)).filter(|h| !h.is_empty()).map(str::to_string)
}

fn run_helper(helper: &str, action: &str, input: &str) -> Result<String, CredentialsError> {
    let err = |detail: String| CredentialsError::Helper { helper: helper.to_string(), detail };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    child.stdin.take().expect("piped").write_all(input.as_bytes()).map_err(|e| err(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let said = if stdout.is_empty() { String::from_utf8_lossy(&out.stderr).trim().to_string() } else { stdout };
        return Err(err(format!("{action}: {said}")));
    }
    Ok(stdout)
}

/// An exclusive lock on the credentials file, held across a read-modify-write: two logins at
/// once each read the file, added their entry and renamed their copy over it, and one of the
/// two entries was lost (73 of 160 in a test). A lock file beside it, `flock`ed; released when
/// dropped.
struct ConfigLock {
    _file: std::fs::File,
}

impl ConfigLock {
    fn take() -> Result<ConfigLock, CredentialsError> {
        use std::os::fd::AsRawFd;
        let path = config_path()?;
        let err = |detail: String| CredentialsError::File { path: path.display().to_string(), detail };
        let dir = path.parent().ok_or_else(|| err("no parent directory".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".config.json.lock")).map_err(|e| err(e.to_string()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(err(format!("locking: {}", std::io::Error::last_os_error())));
        }
        Ok(ConfigLock { _file: file })
    }
}

/// The login kept for `registry`, if any.
pub fn get(registry: &str) -> Result<Option<Login>, CredentialsError> {
    let (path, config) = read_config()?;
    if let Some(helper) = helper_for(&config, registry) {
        return match run_helper(&helper, "get", registry) {
            Ok(out) => {
                let v: Value = serde_json::from_str(&out).map_err(|e| CredentialsError::Helper { helper: helper.clone(), detail: format!("get: {e}") })?;
                let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                Ok(Some(Login { username: field("Username"), secret: field("Secret") }))
            }
            // Helpers answer "credentials not found" with a failure.
            Err(CredentialsError::Helper { detail, .. }) if detail.contains("not found") => Ok(None),
            Err(e) => Err(e),
        };
    }
    let Some(auth) = config.get("auths").and_then(|a| a.get(registry)).and_then(|e| e.get("auth")).and_then(Value::as_str) else {
        return Ok(None);
    };
    let err = |detail: &str| CredentialsError::File { path: path.display().to_string(), detail: format!("auths.{registry}.auth: {detail}") };
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth).map_err(|_| err("not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| err("not UTF-8"))?;
    let (username, secret) = text.split_once(':').ok_or_else(|| err("not user:secret"))?;
    Ok(Some(Login { username: username.to_string(), secret: secret.to_string() }))
}

/// Keeps `login` for `registry` (through the helper, if the file names one).
pub fn store(registry: &str, login: &Login) -> Result<(), CredentialsError> {
    let _lock = ConfigLock::take()?;
    let (path, mut config) = read_config()?;
    if let Some(helper) = helper_for(&config, registry) {
        let input = json!({"ServerURL": registry, "Username": login.username, "Secret": login.secret}).to_string();
        run_helper(&helper, "store", &input)?;
        // Docker records the host with an empty entry, so `docker` lists it as logged in.
        let auths = config.entry("auths").or_insert_with(|| json!({}));
        if let Some(auths) = auths.as_object_mut() {
            auths.insert(registry.to_string(), json!({}));
        }
        return write_config(&path, &config);
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", login.username, login.secret));
    let auths = config.entry("auths").or_insert_with(|| json!({}));
    let Some(auths) = auths.as_object_mut() else {
        return Err(CredentialsError::File { path: path.display().to_string(), detail: "auths is not an object".into() });
    };
    auths.insert(registry.to_string(), json!({ "auth": auth }));
    write_config(&path, &config)
}

/// Forgets the login for `registry`. False when there was none.
pub fn erase(registry: &str) -> Result<bool, CredentialsError> {
    let _lock = ConfigLock::take()?;
    let (path, mut config) = read_config()?;
    let mut found = false;
    if let Some(helper) = helper_for(&config, registry) {
        match run_helper(&helper, "erase", registry) {
            Ok(_) => found = true,
            Err(CredentialsError::Helper { detail, .. }) if detail.contains("not found") => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        found |= auths.remove(registry).is_some();
    }
    if found {
        write_config(&path, &config)?;
    }
    Ok(found)
}
