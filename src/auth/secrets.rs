//! Secrets at rest and on the wire: argon2 hashes of passwords and tokens, and the token format.
//!
//! A token is `af_<id>_<secret>`: the id (16 hex digits) finds the row, the secret (32 random
//! bytes, base64url) is checked against the row's argon2 hash. Only the hash is stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;

const PREFIX: &str = "af_";
const ID_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(out)
}

/// An argon2id PHC string for `secret` (tens of milliseconds: run it on a blocking thread).
pub fn hash(secret: &str) -> Result<String, SecretError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// [`hash`] on a blocking thread, for async callers.
pub async fn hash_off_thread(secret: String) -> Result<String, SecretError> {
    tokio::task::spawn_blocking(move || hash(&secret)).await.map_err(|e| SecretError::Hash(e.to_string()))?
}

/// Whether `secret` matches the PHC string `phc` (argon2's comparison is constant-time).
pub fn verify(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// A new token: (id, the full token to show once).
pub fn new_token() -> Result<(String, String), SecretError> {
    let id = hex::encode(random_bytes::<{ ID_LEN / 2 }>()?);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let token = format!("{PREFIX}{id}_{secret}");
    Ok((id, token))
}

/// The id of a token-shaped string, or None if it is not one (then it may be a password).
pub fn token_id(s: &str) -> Option<&str> {
    let rest = s.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN + 1..)?);
    (rest.as_bytes().get(ID_LEN) == Some(&b'_') && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 40)
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_verify() {
        let (id, token) = new_token().unwrap();
        assert_eq!(token_id(&token), Some(id.as_str()));
        assert_eq!(token_id("hunter2"), None);
        assert_eq!(token_id("af_short_x"), None);
        let phc = hash(&token).unwrap();
        assert!(!phc.contains(&token));
        assert!(verify(&token, &phc));
        assert!(!verify("af_0000000000000000_wrong-secret-wrong-secret-wrong-secret-xx", &phc));
        assert!(!verify(&token, "not a hash"));
    }
}
