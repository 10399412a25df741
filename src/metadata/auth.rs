//! What the metadata store keeps for access control: users, organisations and their members,
//! tokens (hashes only), repository visibility and the token signing key.

use super::MetaResult;
use async_trait::async_trait;

/// A member's role in a namespace, and the reach of a token: each includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Pull.
    Read,
    /// Pull and push.
    Write,
    /// Pull, push and delete.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (read, write or admin)")]
pub struct UnknownRole(String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// Set when the user is created, never reused: a user removed and created again under the
    /// same name is someone else to every credential of the first.
    pub uid: String,
    /// Argon2 PHC string; None for a user that authenticates with tokens only.
    pub password_hash: Option<String>,
    pub is_admin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A personal access token, used as a password.
    Access,
    /// The `refresh_token` of the OAuth2 flow (`offline_token=true`, `access_type=offline`).
    Refresh,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub kind: TokenKind,
    pub secret_hash: String,
    pub scope: Role,
    pub description: Option<String>,
    /// Seconds since the epoch; None: never.
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
    /// What minted a refresh token: `token:<id>` or `password:<stamp>` (see `auth`); it lives
    /// no longer than that.
    pub parent: Option<String>,
}

/// Contract: names passed in are validated namespaces; a user and an organisation never share a
/// name (both own the namespace of that name).
/// What is public: the read-only questions the block service (`exposure`) and the access checks
/// ask of the metadata, and nothing else of it.
#[async_trait]
pub trait Visibility: Send + Sync {
    /// Whether a repository is public; None if it does not exist.
    async fn is_public(&self, repo: &str) -> MetaResult<Option<bool>>;
    /// Whether `cid` is the root of a blob linked to a public repository, or the image CID of a
    /// manifest or tag of one: content the gateway may serve.
    async fn cid_is_public(&self, cid: &str) -> MetaResult<bool>;
    /// Whether a blob is linked to a public repository.
    async fn blob_is_public(&self, digest: &str) -> MetaResult<bool>;
}

#[async_trait]
pub trait AuthStore: Visibility + Send + Sync {
    /// Creates a user; false if the name is taken (by a user or an organisation).
    async fn create_user(&self, name: &str, password_hash: Option<&str>, admin: bool) -> MetaResult<bool>;
    async fn set_password(&self, name: &str, password_hash: &str) -> MetaResult<bool>;
    async fn get_user(&self, name: &str) -> MetaResult<Option<User>>;
    async fn list_users(&self) -> MetaResult<Vec<User>>;
    /// Removes a user with its tokens and memberships.
    async fn remove_user(&self, name: &str) -> MetaResult<bool>;
    /// Creates an organisation; false if the name is taken.
    async fn create_organisation(&self, name: &str) -> MetaResult<bool>;
    /// Sets (Some) or removes (None) a member's role; false if the organisation or user is unknown.
    async fn set_member(&self, organisation: &str, user: &str, role: Option<Role>) -> MetaResult<bool>;
    /// The role `user` has in `namespace`: Admin for its own, its membership role in an
    /// organisation's, else None.
    async fn namespace_role(&self, namespace: &str, user: &str) -> MetaResult<Option<Role>>;
    async fn create_token(&self, token: &TokenRecord) -> MetaResult<()>;
    async fn get_token(&self, id: &str) -> MetaResult<Option<TokenRecord>>;
    /// Access and refresh tokens, of `user` or everyone's.
    async fn list_tokens(&self, user: Option<&str>) -> MetaResult<Vec<TokenRecord>>;
    async fn revoke_token(&self, id: &str) -> MetaResult<bool>;
    /// The token signing key: `candidate` is stored if there is none yet; the stored one returns.
    async fn signing_key(&self, candidate: Vec<u8>) -> MetaResult<Vec<u8>>;
}
