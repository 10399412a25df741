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

use crate::metadata::{AuthStore, MetadataError, Role, TokenKind, TokenRecord};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use scope::{Action, Scope};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an issued JWT is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// How long a successful check of a password is remembered (whether the user, its uid and its
/// password are still the same is checked each time).
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Argon2 checks at once.
const SLOW_CHECKS: usize = 2;
/// Argon2 checks that may wait for one of those; more are refused with 429.
const SLOW_QUEUE: usize = 64;

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
    /// Proxies whose forwarded headers are believed (see `api::access::base_url`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// The user's uid when the credential was checked: a user removed and created again under
    /// the same name has another, and the credential is worthless.
    pub uid: String,
    pub is_admin: bool,
    /// What the credential may reach at most: a token's scope, Admin for a password.
    pub cap: Role,
    /// The access or refresh token the credential came from.
    pub token_id: Option<String>,
    /// For a credential that came from a password: the stamp of its hash then; a password
    /// change ends it.
    pub stamp: Option<String>,
}

/// Who a request is from.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// Basic credentials, checked.
    Basic(Identity),
    /// A JWT, checked, with the access it grants.
    Bearer {
        identity: Identity,
        access: Vec<Scope>,
    },
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
    /// The user's uid.
    #[serde(default)]
    uid: String,
    /// The password stamp, for a JWT issued against a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pst: Option<String>,
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
    meta: Arc<dyn AuthStore>,
    pub config: AuthConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    limiter: limiter::Limiter,
    /// Argon2 checks run on [`SLOW_CHECKS`] threads of their own (each check takes ~19 MiB, and
    /// the allocator keeps a freed block per thread, so a pool shared with other work would end
    /// up holding one per thread it ever had); [`SLOW_QUEUE`] more may wait, the rest are told to
    /// come back.
    slow: std::sync::mpsc::SyncSender<SlowCheck>,
    slow_waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// sha256(user, secret) → who it proved to be and when.
    verified: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    /// Checked against when a user is unknown, so that a wrong name costs what a wrong password does.
    dummy_hash: String,
}

fn now_secs() -> u64 {
    crate::clock::unix_now().max(0) as u64
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

/// One argon2 check for the checkers' threads.
struct SlowCheck {
    secret: String,
    phc: String,
    reply: tokio::sync::oneshot::Sender<bool>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts the threads that run argon2 checks; the queue holds [`SLOW_QUEUE`] checks.
fn slow_checkers() -> Result<std::sync::mpsc::SyncSender<SlowCheck>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<SlowCheck>(SLOW_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..SLOW_CHECKS {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                let mut verifier = secrets::Verifier::default();
                loop {
                    let next = rx.lock().expect("checks lock").recv();
                    let Ok(check) = next else { return };
                    check.waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    let ok = verifier.verify(&check.secret, &check.phc);
                    let _ = check.reply.send(ok);
                }
            })
            .map_err(|e| AuthError::Task(format!("starting the password checkers: {e}")))?;
    }
    Ok(tx)
}

impl Auth {
    pub async fn new(meta: Arc<dyn AuthStore>, config: AuthConfig) -> Result<Self> {
        let key = meta.signing_key(secrets::random_bytes::<32>()?.to_vec()).await?;
        let dummy_hash = secrets::hash_off_thread("no such user".into()).await?;
        Ok(Auth {
            meta,
            config,
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            limiter: limiter::Limiter::default(),
            slow: slow_checkers()?,
            slow_waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            verified: Mutex::new(HashMap::new()),
            dummy_hash,
        })
    }

    /// Resolves the `Authorization` header of a request from `address`.
    pub async fn caller(&self, authorization: Option<&str>, address: &str) -> Result<Caller> {
        let Some(value) = authorization else { return Ok(Caller::Anonymous) };
        match parse_authorization(value)? {
            Some(Credential::Basic { user, secret }) => Ok(Caller::Basic(self.login(&user, &secret, address).await?)),
            Some(Credential::Bearer(jwt)) => {
                let (identity, access) = self.verify_jwt(jwt).await?;
                Ok(Caller::Bearer { identity, access })
            }
            None => Err(AuthError::Unauthenticated),
        }
    }

    /// Checks a user's password or access token.
    pub async fn login(&self, user: &str, secret: &str, address: &str) -> Result<Identity> {
        if let Some(id) = secrets::token_id(secret) {
            // Tokens are not rate limited: they cannot be guessed and cost a hash to check.
            return self.token_login(user, id, secret).await;
        }
        if secret.len() > secrets::MAX_PASSWORD_BYTES {
            return Err(AuthError::BadCredentials);
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
        if let Some((identity, _)) = cached.filter(|(_, at)| at.elapsed() < VERIFIED_TTL) {
            // Still the same user with the same password? Otherwise check it afresh.
            if let Ok(identity) = self.recheck(&identity).await {
                return Ok(identity);
            }
        }
        // Counted before the expensive check, so concurrent guesses all count.
        self.limiter.attempt(user, address).map_err(AuthError::RateLimited)?;
        match self.check_password(user, secret).await? {
            Some(identity) => {
                self.limiter.succeeded(user, address);
                let mut verified = self.verified.lock().expect("verified lock");
                if verified.len() > 10_000 {
                    verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
                }
                verified.insert(key, (identity.clone(), Instant::now()));
                Ok(identity)
            }
            None => Err(AuthError::BadCredentials),
        }
    }

    /// Runs an argon2 check on the checkers' threads, at most [`SLOW_CHECKS`] at once.
    async fn slow_verify(&self, secret: &str, phc: String) -> Result<bool> {
        use std::sync::atomic::Ordering;
        if self.slow_waiting.fetch_add(1, Ordering::SeqCst) >= SLOW_QUEUE {
            self.slow_waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(AuthError::RateLimited(1));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let check = SlowCheck { secret: secret.to_string(), phc, reply, waiting: self.slow_waiting.clone() };
        if let Err(e) = self.slow.try_send(check) {
            let check = match e {
                std::sync::mpsc::TrySendError::Full(c) | std::sync::mpsc::TrySendError::Disconnected(c) => c,
            };
            check.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(AuthError::RateLimited(1));
        }
        answer.await.map_err(|e| AuthError::Task(e.to_string()))
    }

    /// Whether `secret` is the token whose stored hash is `stored`.
    async fn token_matches(&self, secret: &str, stored: &str) -> Result<bool> {
        match secrets::verify_token(secret, stored) {
            Some(ok) => Ok(ok),
            None => self.slow_verify(secret, stored.to_string()).await,
        }
    }

    async fn token_login(&self, user: &str, id: &str, secret: &str) -> Result<Identity> {
        let token = self.meta.get_token(id).await?;
        let Some(t) = token.filter(|t| t.kind == TokenKind::Access && t.user == user && live(t)) else {
            return Err(AuthError::BadCredentials);
        };
        if !self.token_matches(secret, &t.secret_hash).await? {
            return Err(AuthError::BadCredentials);
        }
        let u = self.meta.get_user(user).await?.ok_or(AuthError::BadCredentials)?;
        Ok(Identity { user: u.name, uid: u.uid, is_admin: u.is_admin, cap: t.scope, token_id: Some(t.id), stamp: None })
    }

    async fn check_password(&self, user: &str, secret: &str) -> Result<Option<Identity>> {
        let found = self.meta.get_user(user).await?;
        let phc = found.as_ref().and_then(|u| u.password_hash.clone());
        // A wrong name costs what a wrong password does.
        let ok = self.slow_verify(secret, phc.clone().unwrap_or_else(|| self.dummy_hash.clone())).await?;
        Ok(match (found, phc) {
            (Some(u), Some(phc)) if ok => Some(Identity { user: u.name, uid: u.uid, is_admin: u.is_admin, cap: Role::Admin, token_id: None, stamp: Some(secrets::stamp(&phc)) }),
            _ => None,
        })
    }

    /// The identity as the database sees it now: the same user (by uid), the same password if it
    /// came from one, its token (and whatever minted that token) live.
    async fn recheck(&self, identity: &Identity) -> Result<Identity> {
        let user = self.meta.get_user(&identity.user).await?.ok_or(AuthError::TokenInvalid)?;
        if user.uid != identity.uid {
            return Err(AuthError::TokenInvalid);
        }
        if let Some(stamp) = &identity.stamp {
            if user.password_hash.as_deref().map(secrets::stamp).as_ref() != Some(stamp) {
                return Err(AuthError::TokenInvalid);
            }
        }
        if let Some(id) = &identity.token_id {
            let token = self.meta.get_token(id).await?.ok_or(AuthError::TokenInvalid)?;
            if !live(&token) || token.user != identity.user || !self.parent_live(&token, &user).await? {
                return Err(AuthError::TokenInvalid);
            }
        }
        Ok(Identity { is_admin: user.is_admin, ..identity.clone() })
    }

    /// Whether what minted `token` still stands: an access token has no parent; a refresh token
    /// lives while the access token or the password that minted it does.
    async fn parent_live(&self, token: &TokenRecord, user: &crate::metadata::User) -> Result<bool> {
        match (token.kind, token.parent.as_deref()) {
            (TokenKind::Access, _) => Ok(true),
            (TokenKind::Refresh, Some(parent)) => match parent.split_once(':') {
                Some(("token", id)) => Ok(self.meta.get_token(id).await?.is_some_and(|p| live(&p) && p.user == token.user)),
                Some(("password", stamp)) => Ok(user.password_hash.as_deref().map(secrets::stamp).as_deref() == Some(stamp)),
                _ => Ok(false),
            },
            (TokenKind::Refresh, None) => Ok(false),
        }
    }

    /// A refresh token of the OAuth2 flow, checked.
    pub async fn refresh_login(&self, refresh_token: &str, _address: &str) -> Result<Identity> {
        let token = match secrets::token_id(refresh_token) {
            Some(id) => self.meta.get_token(id).await?,
            None => None,
        };
        let Some(t) = token.filter(|t| t.kind == TokenKind::Refresh && live(t)) else {
            return Err(AuthError::BadCredentials);
        };
        if !self.token_matches(refresh_token, &t.secret_hash).await? {
            return Err(AuthError::BadCredentials);
        }
        let user = self.meta.get_user(&t.user).await?.ok_or(AuthError::BadCredentials)?;
        let identity = Identity { user: t.user.clone(), uid: user.uid, is_admin: false, cap: t.scope, token_id: Some(t.id), stamp: None };
        self.recheck(&identity).await.map_err(|_| AuthError::BadCredentials)
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
        let granted_by_jwt = |access: &[Scope]| access.iter().any(|s| matches!(s, Scope::Repository { name, actions } if name == repo && actions.contains(&action)));
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
    /// Whether `caller` holds the operator's rights (an RPC bound beyond loopback): an
    /// administrator's password or Admin-capped access token given directly, or a JWT whose
    /// scope grants `registry:operator:*`. A JWT asked for anything else (a repository's pull)
    /// is not the operator, whoever holds it.
    pub fn is_operator(caller: &Caller) -> bool {
        let admin = |i: &Identity| i.is_admin && i.cap == Role::Admin;
        match caller {
            Caller::Anonymous => false,
            Caller::Basic(i) => admin(i),
            Caller::Bearer { identity, access } => admin(identity) && access.contains(&Scope::Operator),
        }
    }

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
                Scope::Operator if identity.is_some_and(|i| i.is_admin && i.cap == Role::Admin) => granted.push(Scope::Operator),
                Scope::Operator => {}
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
                    Scope::Repository { name, actions } => {
                        AccessEntry { kind: "repository".into(), name: name.clone(), actions: actions.iter().map(|a| a.as_str().to_string()).collect() }
                    }
                    Scope::Catalog => AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] },
                    Scope::Operator => AccessEntry { kind: "registry".into(), name: "operator".into(), actions: vec!["*".into()] },
                })
                .collect(),
            tid: identity.and_then(|i| i.token_id.clone()),
            cap: identity.map(|i| i.cap).unwrap_or(Role::Read).as_str().to_string(),
            uid: identity.map(|i| i.uid.clone()).unwrap_or_default(),
            pst: identity.and_then(|i| i.stamp.clone()),
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| AuthError::Task(format!("signing: {e}")))?;
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

    /// A refresh token that lives no longer than the credential minting it: an access token
    /// (its expiry, and its revocation) or a password (until it changes).
    async fn refresh_token_for(&self, identity: &Identity) -> Result<String> {
        let (parent, expires_at, description) = match (&identity.token_id, &identity.stamp) {
            (Some(id), _) => {
                let t = self.meta.get_token(id).await?.ok_or(AuthError::TokenInvalid)?;
                if t.kind != TokenKind::Access {
                    // A refresh token refreshes itself; it does not mint another.
                    return Err(AuthError::Denied);
                }
                (format!("token:{id}"), t.expires_at, format!("refresh token of token {id}"))
            }
            (None, Some(stamp)) => (format!("password:{stamp}"), None, "refresh token of a password login".to_string()),
            (None, None) => return Err(AuthError::Denied),
        };
        let minted = mint_token(self.meta.as_ref(), &identity.user, TokenKind::Refresh, identity.cap, Some(description), expires_at, Some(parent)).await?;
        Ok(minted.1)
    }

    async fn verify_jwt(&self, jwt: &str) -> Result<(Identity, Vec<Scope>)> {
        let (identity, access) = decode_jwt(jwt, &self.decoding, &self.config.service)?;
        match identity {
            // An anonymous token: it grants public pulls only, which need no identity.
            None => Ok((Identity { user: String::new(), uid: String::new(), is_admin: false, cap: Role::Read, token_id: None, stamp: None }, access)),
            Some(identity) => Ok((self.recheck(&identity).await?, access)),
        }
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

/// Creates and stores a token for `user` (only its hash is kept); returns (id, the token to show
/// once). `parent`: what minted a refresh token (see [`TokenRecord::parent`]).
pub async fn mint_token(
    meta: &dyn AuthStore,
    user: &str,
    kind: TokenKind,
    scope: Role,
    description: Option<String>,
    expires_at: Option<i64>,
    parent: Option<String>,
) -> Result<(String, String)> {
    let (id, token) = secrets::new_token()?;
    let secret_hash = secrets::hash_token(&token);
    let record = TokenRecord { id: id.clone(), user: user.to_string(), kind, secret_hash, scope, description, expires_at, revoked: false, created_at: now_secs() as i64, parent };
    meta.create_token(&record).await?;
    Ok((id, token))
}

fn live(t: &TokenRecord) -> bool {
    !t.revoked && t.expires_at.is_none_or(|e| e > now_secs() as i64)
}

/// What an `Authorization` header carries, before anything is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Basic { user: String, secret: String },
    Bearer(&'a str),
}

/// Reads an `Authorization` header value; `None` for a scheme this node does not take.
/// A Basic credential that does not decode is an error.
pub fn parse_authorization(value: &str) -> Result<Option<Credential<'_>>> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, secret) = parse_basic(rest.trim()).ok_or(AuthError::BadCredentials)?;
        return Ok(Some(Credential::Basic { user, secret }));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(Credential::Bearer(rest.trim())));
    }
    Ok(None)
}

/// Checks a JWT's signature, issuer, audience and times, and reads its claims: the identity it
/// names (None for an anonymous token) as it was when issued (still to be rechecked) and the
/// scopes it grants.
pub fn decode_jwt(jwt: &str, key: &DecodingKey, service: &str) -> Result<(Option<Identity>, Vec<Scope>)> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[service]);
    validation.set_issuer(&[service]);
    validation.leeway = 5;
    let claims = jsonwebtoken::decode::<Claims>(jwt, key, &validation).map_err(|_| AuthError::TokenInvalid)?.claims;
    let access = claims.access.iter().filter_map(|a| Scope::parse(&format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))).collect();
    if claims.sub.is_empty() {
        return Ok((None, access));
    }
    let cap = claims.cap.parse().map_err(|_| AuthError::TokenInvalid)?;
    Ok((Some(Identity { user: claims.sub, uid: claims.uid, is_admin: false, cap, token_id: claims.tid, stamp: claims.pst }), access))
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
