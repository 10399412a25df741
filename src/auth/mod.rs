//! Who may do what: credentials, the Docker token flow's JWTs, and permissions.
//!
//! A request carries nothing (anonymous), Basic credentials (a password or an access token as the
//! password) or a Bearer JWT this node or a sibling issued at `/token`. Permissions come from the
//! namespace (first path segment): a user is admin of its own, organisation members have their
//! role; admins may do anything; public repositories may be pulled by anyone. A token created
//! with a narrower scope caps what its holder may do. JWTs carry the access granted when they were
//! issued, and every use re-checks that their user and source token still exist, unexpired and
//! unrevoked, so a revocation takes effect at once on every node sharing the database.

pub mod limiter;
pub mod scope;
pub mod secrets;

use crate::metadata::{MetadataError, MetadataStore, Role, TokenKind, TokenRecord};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use scope::{Action, Scope};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an issued JWT is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// How long a successful check of a secret is remembered (revocation is still checked each time).
const VERIFIED_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid username, password or token")]
    BadCredentials,
    #[error("the token is expired, revoked or malformed")]
    TokenInvalid,
    #[error("too many failed logins; retry in {0} s")]
    RateLimited(u64),
    #[error("requested access to the resource is denied")]
    Denied,
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("auth task failed: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, AuthError>;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// False: `--auth none`, an open registry.
    pub enabled: bool,
    /// The node's public base URL for the challenge's realm; None: from each request's Host.
    pub public_url: Option<String>,
    /// The `service` of challenges and tokens.
    pub service: String,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub is_admin: bool,
    /// What the credential may reach at most: a token's scope, Admin for a password.
    pub cap: Role,
    /// The access or refresh token the credential came from.
    pub token_id: Option<String>,
}

/// Who a request is from.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// Basic credentials, checked.
    Basic(Identity),
    /// A JWT, checked, with the access it grants.
    Bearer { identity: Identity, access: Vec<Scope> },
}

impl Caller {
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Anonymous => None,
            Caller::Basic(i) | Caller::Bearer { identity: i, .. } => Some(i),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessEntry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<AccessEntry>,
    /// The token the credential came from (revocation is checked on every use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tid: Option<String>,
    /// The credential's cap (`read`, `write`, `admin`).
    cap: String,
}

/// What `/token` answers.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
    /// The granted scopes, space-separated (OAuth2's form).
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

pub struct Auth {
    meta: Arc<dyn MetadataStore>,
    pub config: AuthConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    limiter: limiter::Limiter,
    /// sha256(user, secret) → who it proved to be and when.
    verified: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    /// Checked against when a user is unknown, so that a wrong name costs what a wrong password does.
    dummy_hash: String,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let (h, m, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AuthError::Task(e.to_string()))
}

impl Auth {
    pub async fn new(meta: Arc<dyn MetadataStore>, config: AuthConfig) -> Result<Self> {
        let key = meta.signing_key(secrets::random_bytes::<32>()?.to_vec()).await?;
        let dummy_hash = secrets::hash_off_thread("no such user".into()).await?;
        Ok(Auth {
            meta,
            config,
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            limiter: limiter::Limiter::default(),
            verified: Mutex::new(HashMap::new()),
            dummy_hash,
        })
    }

    /// Resolves the `Authorization` header of a request from `address`.
    pub async fn caller(&self, authorization: Option<&str>, address: &str) -> Result<Caller> {
        let Some(value) = authorization else { return Ok(Caller::Anonymous) };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, secret) = parse_basic(rest.trim()).ok_or(AuthError::BadCredentials)?;
            return Ok(Caller::Basic(self.login(&user, &secret, address).await?));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let (identity, access) = self.verify_jwt(rest.trim()).await?;
            return Ok(Caller::Bearer { identity, access });
        }
        Err(AuthError::Unauthenticated)
    }

    /// Checks a user's password or access token.
    pub async fn login(&self, user: &str, secret: &str, address: &str) -> Result<Identity> {
        if let Some(wait) = self.limiter.blocked(Some(user), address) {
            return Err(AuthError::RateLimited(wait));
        }
        let key: [u8; 32] = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(secret.as_bytes());
            h.finalize().into()
        };
        let cached = self.verified.lock().expect("verified lock").get(&key).cloned();
        if let Some((identity, at)) = cached {
            if at.elapsed() < VERIFIED_TTL {
                return self.recheck(&identity).await;
            }
        }
        match self.check_secret(user, secret).await? {
            Some(identity) => {
                self.limiter.succeeded(user);
                let mut verified = self.verified.lock().expect("verified lock");
                if verified.len() > 10_000 {
                    verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
                }
                verified.insert(key, (identity.clone(), Instant::now()));
                Ok(identity)
            }
            None => {
                self.limiter.failed(Some(user), address);
                Err(AuthError::BadCredentials)
            }
        }
    }

    async fn check_secret(&self, user: &str, secret: &str) -> Result<Option<Identity>> {
        let secret_owned = secret.to_string();
        if let Some(id) = secrets::token_id(secret) {
            let token = self.meta.get_token(id).await?;
            let usable = token.filter(|t| t.kind == TokenKind::Access && t.user == user && live(t));
            let phc = usable.as_ref().map(|t| t.secret_hash.clone()).unwrap_or_else(|| self.dummy_hash.clone());
            let ok = blocking(move || secrets::verify(&secret_owned, &phc)).await?;
            let Some(t) = usable.filter(|_| ok) else { return Ok(None) };
            let Some(u) = self.meta.get_user(user).await? else { return Ok(None) };
            return Ok(Some(Identity { user: u.name, is_admin: u.is_admin, cap: t.scope, token_id: Some(t.id) }));
        }
        let found = self.meta.get_user(user).await?;
        let phc = found.as_ref().and_then(|u| u.password_hash.clone());
        let has_password = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = blocking(move || secrets::verify(&secret_owned, &phc)).await?;
        Ok(found
            .filter(|_| ok && has_password)
            .map(|u| Identity { user: u.name, is_admin: u.is_admin, cap: Role::Admin, token_id: None }))
    }

    /// The identity as the database sees it now: the user must exist, its token be live.
    async fn recheck(&self, identity: &Identity) -> Result<Identity> {
        let user = self.meta.get_user(&identity.user).await?.ok_or(AuthError::TokenInvalid)?;
        if let Some(id) = &identity.token_id {
            let token = self.meta.get_token(id).await?.ok_or(AuthError::TokenInvalid)?;
            if !live(&token) || token.user != identity.user {
                return Err(AuthError::TokenInvalid);
            }
        }
        Ok(Identity { is_admin: user.is_admin, ..identity.clone() })
    }

    /// A refresh token of the OAuth2 flow, checked.
    pub async fn refresh_login(&self, refresh_token: &str, address: &str) -> Result<Identity> {
        if let Some(wait) = self.limiter.blocked(None, address) {
            return Err(AuthError::RateLimited(wait));
        }
        let token = match secrets::token_id(refresh_token) {
            Some(id) => self.meta.get_token(id).await?,
            None => None,
        };
        let usable = token.filter(|t| t.kind == TokenKind::Refresh && live(t));
        let phc = usable.as_ref().map(|t| t.secret_hash.clone()).unwrap_or_else(|| self.dummy_hash.clone());
        let secret = refresh_token.to_string();
        let ok = blocking(move || secrets::verify(&secret, &phc)).await?;
        match usable.filter(|_| ok) {
            Some(t) => {
                let identity = Identity { user: t.user.clone(), is_admin: false, cap: t.scope, token_id: Some(t.id) };
                self.recheck(&identity).await
            }
            None => {
                self.limiter.failed(None, address);
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// What `identity` (None: anonymous) may do in `repo`.
    pub async fn permitted(&self, identity: Option<&Identity>, repo: &str) -> Result<BTreeSet<Action>> {
        let mut actions = BTreeSet::new();
        if let Some(id) = identity {
            if id.is_admin {
                actions.extend(Action::of_role(Role::Admin));
            } else {
                let namespace = repo.split('/').next().unwrap_or(repo);
                if let Some(role) = self.meta.namespace_role(namespace, &id.user).await? {
                    actions.extend(Action::of_role(role));
                }
            }
            actions.retain(|a| Action::of_role(id.cap).contains(a));
        }
        if self.meta.is_public(repo).await? == Some(true) {
            actions.insert(Action::Pull);
        }
        Ok(actions)
    }

    /// Whether `caller` may do `action` in `repo`: Ok, or the error to answer with.
    pub async fn authorize(&self, caller: &Caller, repo: &str, action: Action) -> Result<()> {
        let granted_by_jwt = |access: &[Scope]| {
            access.iter().any(|s| matches!(s, Scope::Repository { name, actions } if name == repo && actions.contains(&action)))
        };
        match caller {
            Caller::Bearer { access, .. } if granted_by_jwt(access) => return Ok(()),
            _ => {}
        }
        let permitted = self.permitted(caller.identity(), repo).await?;
        match caller {
            _ if permitted.contains(&action) && !matches!(caller, Caller::Bearer { .. }) => Ok(()),
            // Public content needs no particular token.
            Caller::Bearer { .. } if action == Action::Pull && self.meta.is_public(repo).await? == Some(true) => Ok(()),
            // Allowed, but not by this token: the client should fetch one with this scope.
            Caller::Bearer { .. } if permitted.contains(&action) => Err(AuthError::Unauthenticated),
            Caller::Anonymous => Err(AuthError::Unauthenticated),
            Caller::Bearer { identity, .. } if identity.user.is_empty() => Err(AuthError::Unauthenticated),
            _ => Err(AuthError::Denied),
        }
    }

    /// Whether `caller` may list the catalog (it then sees only what it may pull).
    pub fn authorize_catalog(&self, caller: &Caller) -> Result<()> {
        match caller {
            Caller::Anonymous => Err(AuthError::Unauthenticated),
            Caller::Basic(_) => Ok(()),
            Caller::Bearer { access, .. } if access.contains(&Scope::Catalog) => Ok(()),
            Caller::Bearer { .. } => Err(AuthError::Unauthenticated),
        }
    }

    /// Issues a JWT for `requested` scopes, granting the part `identity` is permitted; with
    /// `offline`, also a refresh token (authenticated callers only).
    pub async fn issue(&self, identity: Option<&Identity>, requested: Vec<Scope>, offline: bool) -> Result<IssuedToken> {
        let mut granted = Vec::new();
        for scope in requested {
            match scope {
                Scope::Repository { name, actions } => {
                    if !crate::names::is_valid_name(&name) {
                        continue;
                    }
                    let permitted = self.permitted(identity, &name).await?;
                    let actions: BTreeSet<Action> = actions.intersection(&permitted).copied().collect();
                    if !actions.is_empty() {
                        granted.push(Scope::Repository { name, actions });
                    }
                }
                Scope::Catalog if identity.is_some() => granted.push(Scope::Catalog),
                Scope::Catalog => {}
            }
        }
        let now = now_secs();
        let claims = Claims {
            iss: self.config.service.clone(),
            sub: identity.map(|i| i.user.clone()).unwrap_or_default(),
            aud: self.config.service.clone(),
            exp: now + TOKEN_TTL.as_secs(),
            nbf: now.saturating_sub(5),
            iat: now,
            jti: hex::encode(secrets::random_bytes::<16>()?),
            access: granted
                .iter()
                .map(|s| match s {
                    Scope::Repository { name, actions } => AccessEntry {
                        kind: "repository".into(),
                        name: name.clone(),
                        actions: actions.iter().map(|a| a.as_str().to_string()).collect(),
                    },
                    Scope::Catalog => AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] },
                })
                .collect(),
            tid: identity.and_then(|i| i.token_id.clone()),
            cap: identity.map(|i| i.cap).unwrap_or(Role::Read).as_str().to_string(),
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Task(format!("signing: {e}")))?;
        let refresh_token = match identity {
            Some(i) if offline => Some(self.refresh_token_for(i).await?),
            _ => None,
        };
        Ok(IssuedToken {
            token: jwt.clone(),
            access_token: jwt,
            expires_in: TOKEN_TTL.as_secs(),
            issued_at: rfc3339(now),
            scope: granted.iter().map(Scope::to_challenge).collect::<Vec<_>>().join(" "),
            refresh_token,
        })
    }

    async fn refresh_token_for(&self, identity: &Identity) -> Result<String> {
        // A refresh token refreshes itself; other credentials get a new one.
        let description = Some("refresh token".to_string());
        Ok(mint_token(self.meta.as_ref(), &identity.user, TokenKind::Refresh, identity.cap, description, None).await?.1)
    }

    async fn verify_jwt(&self, jwt: &str) -> Result<(Identity, Vec<Scope>)> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&self.config.service]);
        validation.set_issuer(&[&self.config.service]);
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation)
            .map_err(|_| AuthError::TokenInvalid)?
            .claims;
        let access = claims
            .access
            .iter()
            .filter_map(|a| Scope::parse(&format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))))
            .collect();
        if claims.sub.is_empty() {
            // An anonymous token: it grants public pulls only, which need no identity.
            return Ok((Identity { user: String::new(), is_admin: false, cap: Role::Read, token_id: None }, access));
        }
        let cap = claims.cap.parse().map_err(|_| AuthError::TokenInvalid)?;
        let identity = Identity { user: claims.sub, is_admin: false, cap, token_id: claims.tid };
        Ok((self.recheck(&identity).await?, access))
    }

    /// The `WWW-Authenticate` value for a request to `base_url` needing `scope`.
    pub fn challenge(&self, base_url: &str, scope: Option<&Scope>) -> String {
        let realm = format!("{}/token", self.config.public_url.as_deref().unwrap_or(base_url).trim_end_matches('/'));
        let mut v = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.config.service);
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{}\"", s.to_challenge()));
        }
        v
    }
}

/// Creates and stores a token for `user` (only its argon2 hash is kept); returns (id, the token
/// to show once).
pub async fn mint_token(
    meta: &dyn MetadataStore,
    user: &str,
    kind: TokenKind,
    scope: Role,
    description: Option<String>,
    expires_at: Option<i64>,
) -> Result<(String, String)> {
    let (id, token) = secrets::new_token()?;
    let secret_hash = secrets::hash_off_thread(token.clone()).await?;
    let record = TokenRecord {
        id: id.clone(),
        user: user.to_string(),
        kind,
        secret_hash,
        scope,
        description,
        expires_at,
        revoked: false,
        created_at: now_secs() as i64,
    };
    meta.create_token(&record).await?;
    Ok((id, token))
}

fn live(t: &TokenRecord) -> bool {
    !t.revoked && t.expires_at.is_none_or(|e| e > now_secs() as i64)
}

/// `user:secret` from a Basic credential.
pub fn parse_basic(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_824_000), "2026-11-28T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(parse_basic("dTpwOmFzcw=="), Some(("u".into(), "p:ass".into())));
        assert_eq!(parse_basic("!!"), None);
    }
}
