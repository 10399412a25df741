//! The node's peer identity: an Ed25519 key kept in the data directory (`identity.key`, the
//! 32-byte seed, mode 0600), and the libp2p peer ID it gives (`12D3KooW...`), as `id` reports it
//! and as the swarm will use it.

use base64::Engine;
use std::io::Write;
use std::path::Path;

pub struct Identity {
    pub peer_id: String,
    /// The Ed25519 seed (the swarm's key).
    pub seed: [u8; 32],
    /// The libp2p `PublicKey` protobuf, base64 (what Kubo's `id` prints).
    pub public_key: String,
}

#[derive(Debug, thiserror::Error)]
#[error("node identity {path}: {detail}")]
pub struct IdentityError {
    path: String,
    detail: String,
}

pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
    let path = data_dir.join("identity.key");
    let err = |detail: String| IdentityError { path: path.display().to_string(), detail };
    let seed: [u8; 32] = match std::fs::read(&path) {
        Ok(bytes) => bytes.try_into().map_err(|_| err("not a 32-byte Ed25519 seed".into()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| err(format!("no randomness: {e}")))?;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode_0600().open(&path).map_err(|e| err(e.to_string()))?;
            f.write_all(&seed).and_then(|_| f.sync_all()).map_err(|e| err(e.to_string()))?;
            seed
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    // libp2p's PublicKey message: Type = Ed25519 (1), Data = the key.
    let mut proto = vec![0x08, 0x01, 0x12, 0x20];
    proto.extend_from_slice(&public);
    // Keys this small are inlined in the peer ID with the identity multihash.
    let mut mh = vec![0x00, proto.len() as u8];
    mh.extend_from_slice(&proto);
    let peer_id = cid::multibase::encode(cid::multibase::Base::Base58Btc, &mh)[1..].to_string();
    Ok(Identity { peer_id, seed, public_key: base64::engine::general_purpose::STANDARD.encode(&proto) })
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_ids_look_like_libp2p_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::load_or_create(dir.path()).unwrap();
        assert!(a.peer_id.starts_with("12D3KooW"), "{}", a.peer_id);
        assert_eq!(super::load_or_create(dir.path()).unwrap().peer_id, a.peer_id);
    }
}
