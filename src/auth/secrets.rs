//! Secrets at rest and on the wire: argon2 hashes of passwords and tokens, and the token format.
//!
//! A token is `af_<id>_<secret>`: the id (16 hex digits) finds the row, the secret (32 random
//! bytes, base64url) is checked against the row's hash. Only the hash is stored: sha256 for
//! tokens (256 random bits need no slow hash, and checking one then costs nothing an anonymous
//! caller could turn into a flood), argon2id for passwords (and for tokens minted before).

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use base64::Engine;

const PREFIX: &str = "af_";
const ID_LEN: usize = 16;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted (hashing a megabyte would be work for nothing).
pub const MAX_PASSWORD_BYTES: usize = 1024;
const TOKEN_HASH_PREFIX: &str = "sha256$";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the password is shorter than {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
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
    Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| SecretError::Hash(e.to_string()))
}

/// [`hash`] on a blocking thread, for async callers.
pub async fn hash_off_thread(secret: String) -> Result<String, SecretError> {
    tokio::task::spawn_blocking(move || hash(&secret)).await.map_err(|e| SecretError::Hash(e.to_string()))?
}

/// The most memory an argon2 hash we check may ask for (ours ask for 19 MiB).
const MAX_ARGON2_KIB: u32 = 256 * 1024;

/// Checks argon2 hashes with one reused block of memory, so a thread that checks passwords all
/// day holds one hash's memory, not a new one per check (argon2's own `verify_password`
/// allocates it anew each time, and the system allocator does not give large aligned blocks
/// back).
#[derive(Default)]
pub struct Verifier {
    blocks: Vec<argon2::Block>,
}

impl Verifier {
    /// Whether `secret` matches the PHC string `phc`; false for anything malformed.
    pub fn verify(&mut self, secret: &str, phc: &str) -> bool {
        self.check(secret, phc).unwrap_or(false)
    }

    fn check(&mut self, secret: &str, phc: &str) -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm).ok()?;
        let version = match hash.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let expected = hash.hash?;
        let stated = argon2::Params::try_from(&hash).ok()?;
        if stated.m_cost() > MAX_ARGON2_KIB {
            return None;
        }
        let params = argon2::Params::new(stated.m_cost(), stated.t_cost(), stated.p_cost(), Some(expected.len())).ok()?;
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?;
        let n = params.block_count();
        if self.blocks.len() < n {
            self.blocks.resize(n, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(secret.as_bytes(), salt, &mut out, &mut self.blocks[..n]).ok()?;
        let diff = out.iter().zip(expected.as_bytes()).fold(0u8, |d, (a, b)| d | (a ^ b));
        Some(diff == 0)
    }
}

/// Whether `password` may be set: every way of setting one (CLI, `AF_ADMIN_PASSWORD`) asks this.
pub fn check_password(password: &str) -> Result<(), SecretError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(SecretError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(SecretError::TooLong);
    }
    Ok(())
}

/// The stored form of a token's secret: `sha256$<hex>`.
pub fn hash_token(token: &str) -> String {
    format!("{TOKEN_HASH_PREFIX}{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes())))
}

/// Whether `token` matches `stored` when that is a token hash (constant-time); None when it is
/// an argon2 hash, which the caller must check on a blocking thread with [`verify`].
pub fn verify_token(token: &str, stored: &str) -> Option<bool> {
    let expected = stored.strip_prefix(TOKEN_HASH_PREFIX)?;
    let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let diff = actual.bytes().zip(expected.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b));
    Some(diff == 0 && actual.len() == expected.len())
}

/// A short fingerprint of a password hash: it changes whenever the password is set (the salt is
/// new each time), so credentials derived from a password can tell that it changed.
pub fn stamp(phc: &str) -> String {
    hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(phc.as_bytes())[..8])
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
    (rest.as_bytes().get(ID_LEN) == Some(&b'_') && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 40).then_some(id)
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
        let mut v = Verifier::default();
        assert!(v.verify(&token, &phc));
        assert!(!v.verify("af_0000000000000000_wrong-secret-wrong-secret-wrong-secret-xx", &phc));
        assert!(!v.verify(&token, "not a hash"));
        let stored = hash_token(&token);
        assert_eq!(verify_token(&token, &stored), Some(true));
        assert_eq!(verify_token("af_0000000000000000_wrong-secret-wrong-secret-wrong-secret-xx", &stored), Some(false));
        assert_eq!(verify_token(&token, &phc), None, "argon2 hashes are the caller's to check");
    }

    #[test]
    fn the_verifier_agrees_with_argon2_and_reuses_its_memory() {
        let phc = hash("correct horse").unwrap();
        let mut v = Verifier::default();
        assert!(v.verify("correct horse", &phc));
        assert!(!v.verify("wrong horse", &phc));
        assert!(!v.verify("correct horse", "not a hash"));
        // One buffer, allocated by the first check and reused by every other: the memory does not
        // grow with the number of checks (argon2's own verify allocates anew each time).
        let (buffer, len) = (v.blocks.as_ptr(), v.blocks.len());
        assert_eq!(len, 19 * 1024, "argon2id's default 19 MiB");
        for _ in 0..8 {
            assert!(!v.verify("wrong", &phc));
        }
        assert_eq!((v.blocks.as_ptr(), v.blocks.len()), (buffer, len));
    }

    #[test]
    fn password_policy() {
        assert!(matches!(check_password(""), Err(SecretError::TooShort)));
        assert!(matches!(check_password("abc"), Err(SecretError::TooShort)));
        assert!(check_password("eight ch").is_ok());
        assert!(matches!(check_password(&"x".repeat(2000)), Err(SecretError::TooLong)));
    }
}
