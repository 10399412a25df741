//! Multihashes, a ground layer: the hashes Kubo accepts for blocks, by code and name, and the
//! check of a block's bytes against its CID (the one place a block is verified, whether it came
//! from disk, a CAR or a peer).

use cid::Cid;

/// Why bytes are not the block a CID names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("unsupported multihash 0x{0:x}")]
    UnsupportedHash(u64),
    #[error("its bytes do not match its hash")]
    Differs,
}

/// Checks `data` against `cid`'s multihash: the one place a block is verified, whether it came
/// from disk, a CAR or (soon) a peer.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), Mismatch> {
    verify_multihash(cid.hash(), data)
}

/// [`verify`] by the multihash alone (the codec does not matter to the hash).
pub fn verify_multihash(mh: &cid::multihash::Multihash<64>, data: &[u8]) -> Result<(), Mismatch> {
    if hash_with(mh.code(), mh.digest().len(), data)? == mh.digest() {
        Ok(())
    } else {
        Err(Mismatch::Differs)
    }
}

/// The multihash codes Kubo names for `block/put --mhtype`, with their default digest length.
pub fn multihash_named(name: &str) -> Option<(u64, usize)> {
    Some(match name {
        "identity" => (0x00, 0),
        "sha2-256" => (crate::unixfs::SHA2_256, 32),
        "sha2-512" => (0x13, 64),
        "sha3-512" => (0x14, 64),
        "sha3-384" => (0x15, 48),
        "sha3-256" => (0x16, 32),
        "sha3-224" => (0x17, 28),
        "keccak-224" => (0x1a, 28),
        "keccak-256" => (0x1b, 32),
        "keccak-384" => (0x1c, 48),
        "keccak-512" => (0x1d, 64),
        "blake3" => (0x1e, 32),
        "blake2b-256" => (0xb220, 32),
        "blake2b-384" => (0xb230, 48),
        "blake2b-512" => (0xb240, 64),
        "blake2s-256" => (0xb260, 32),
        _ => return None,
    })
}

/// `data`'s digest by multihash `code`, `len` bytes long. The hashes are those Kubo accepts for
/// blocks (boxo's `verifcid`): SHA-2, SHA-3, Keccak, BLAKE2b/2s, BLAKE3 and identity; digests
/// shorter than 20 bytes are refused as too weak (identity aside).
pub fn hash_with(code: u64, len: usize, data: &[u8]) -> Result<Vec<u8>, Mismatch> {
    use sha2::Digest as _;
    if code == 0x00 {
        return Ok(data.to_vec());
    }
    let unsupported = || Mismatch::UnsupportedHash(code);
    if len < 20 {
        return Err(unsupported());
    }
    let fixed = |out: &[u8]| if out.len() == len { Ok(out.to_vec()) } else { Err(unsupported()) };
    match code {
        crate::unixfs::SHA2_256 => fixed(&sha2::Sha256::digest(data)),
        0x13 => fixed(&sha2::Sha512::digest(data)),
        0x14 => fixed(&sha3::Sha3_512::digest(data)),
        0x15 => fixed(&sha3::Sha3_384::digest(data)),
        0x16 => fixed(&sha3::Sha3_256::digest(data)),
        0x17 => fixed(&sha3::Sha3_224::digest(data)),
        0x1a => fixed(&sha3::Keccak224::digest(data)),
        0x1b => fixed(&sha3::Keccak256::digest(data)),
        0x1c => fixed(&sha3::Keccak384::digest(data)),
        0x1d => fixed(&sha3::Keccak512::digest(data)),
        // BLAKE3 is an extendable output: any length is the first bytes of one stream.
        0x1e if len <= 64 => {
            let mut out = vec![0u8; len];
            blake3::Hasher::new().update(data).finalize_xof().fill(&mut out);
            Ok(out)
        }
        // blake2b-N carries its length in the code; 256 bits and up, as Kubo.
        0xb220..=0xb240 if len == (code - 0xb200) as usize => {
            use blake2::digest::{Update, VariableOutput};
            let mut h = blake2::Blake2bVar::new(len).map_err(|_| unsupported())?;
            h.update(data);
            let mut out = vec![0u8; len];
            h.finalize_variable(&mut out).map_err(|_| unsupported())?;
            Ok(out)
        }
        0xb260 => fixed(&blake2::Blake2s256::digest(data)),
        _ => Err(unsupported()),
    }
}
