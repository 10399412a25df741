//! IPNS records (the IPNS record spec, as Kubo and boxo read them): names, validation and
//! signing. A record is accepted only with a valid V2 signature by the name's key over its
//! DAG-CBOR data, V1 fields (when present) equal to that data, and a validity still ahead; a
//! V1-only record is refused, as boxo refuses it.

use cid::Cid;
use ipld_core::ipld::Ipld;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use prost::Message;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The largest record accepted (the spec's limit).
pub const MAX_RECORD: usize = 10 << 10;
/// Multicodec of a CID naming a key.
pub const LIBP2P_KEY: u64 = 0x72;
const SIGNATURE_PREFIX: &[u8] = b"ipns-signature:";

#[derive(Debug, thiserror::Error)]
pub enum IpnsError {
    #[error("{0:?} is not an IPNS name (a libp2p key as a CID or a peer ID)")]
    BadName(String),
    #[error("invalid IPNS record: {0}")]
    Invalid(String),
    #[error("the IPNS record expired at {0}")]
    Expired(String),
}

/// The record's protobuf (`IpnsEntry`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpnsEntry {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub value: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub signature_v1: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "3")]
    pub validity_type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub validity: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "5")]
    pub sequence: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    pub ttl: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub pub_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub signature_v2: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    pub data: Option<Vec<u8>>,
}

/// A name: the peer ID of the key that signs its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name(pub PeerId);

impl Name {
    /// A name as a path writes it; the bool says whether it was written the canonical way
    /// (CIDv1, libp2p-key, base36), which a gateway redirects to otherwise.
    pub fn parse(s: &str) -> Result<(Name, bool), IpnsError> {
        let bad = || IpnsError::BadName(s.to_string());
        if let Ok(cid) = Cid::try_from(s) {
            if cid.version() == cid::Version::V1 && cid.codec() == LIBP2P_KEY {
                let peer = PeerId::from_bytes(&cid.hash().to_bytes()).map_err(|_| bad())?;
                let name = Name(peer);
                let canonical = name.canonical() == s;
                return Ok((name, canonical));
            }
        }
        let peer: PeerId = s.parse().map_err(|_| bad())?;
        Ok((Name(peer), false))
    }

    /// `k51...`: CIDv1, libp2p-key, base36.
    pub fn canonical(&self) -> String {
        let mh = cid::multihash::Multihash::<64>::from_bytes(&self.0.to_bytes()).expect("a peer ID is a multihash");
        Cid::new_v1(LIBP2P_KEY, mh).to_string_of_base(cid::multibase::Base::Base36Lower).expect("base36 encodes any CID")
    }
}

/// Names followed from one to the next (`/ipns/` values) at most, as Kubo's default depth.
pub const MAX_HOPS: usize = 32;

/// Where following a value through names ended.
#[derive(Debug)]
pub enum Followed {
    /// At a path that names no key: `/ipfs/...`, or `/ipns/<domain>/...`; with the shortest TTL.
    Path(String, Duration),
    /// At a key this node holds no valid record for.
    NoRecord(Name),
    /// Still at a name after [`MAX_HOPS`].
    TooDeep(String),
}

/// What a valid record says.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The path it points at (`/ipfs/...` or `/ipns/...`).
    pub value: String,
    pub validity: SystemTime,
    pub sequence: u64,
    pub ttl: Duration,
}

impl Record {
    /// Whether `self` replaces `other` for the same name: a higher sequence, or the same with a
    /// later validity.
    pub fn supersedes(&self, other: &Record) -> bool {
        (self.sequence, self.validity) > (other.sequence, other.validity)
    }
}

/// Checks `bytes` as a record of `name` at time `now`.
pub fn validate(name: &Name, bytes: &[u8], now: SystemTime) -> Result<Record, IpnsError> {
    let invalid = |m: &str| IpnsError::Invalid(m.to_string());
    if bytes.len() > MAX_RECORD {
        return Err(invalid("larger than 10 KiB"));
    }
    let entry = IpnsEntry::decode(bytes).map_err(|e| IpnsError::Invalid(format!("not an IPNS record: {e}")))?;
    let (Some(signature), Some(data)) = (&entry.signature_v2, &entry.data) else {
        return Err(invalid("no V2 signature (V1-only records are not accepted)"));
    };
    let key = public_key(name, entry.pub_key.as_deref())?;
    let mut signed = SIGNATURE_PREFIX.to_vec();
    signed.extend_from_slice(data);
    if !key.verify(&signed, signature) {
        return Err(invalid("the V2 signature does not verify with the name's key"));
    }
    let fields: Ipld = serde_ipld_dagcbor::from_slice(data).map_err(|e| IpnsError::Invalid(format!("its data is not DAG-CBOR: {e}")))?;
    let Ipld::Map(fields) = fields else { return Err(invalid("its data is not a map")) };
    let bytes_field = |k: &str| match fields.get(k) {
        Some(Ipld::Bytes(b)) => Ok(b.clone()),
        _ => Err(IpnsError::Invalid(format!("its data has no {k} bytes"))),
    };
    let int_field = |k: &str| match fields.get(k) {
        Some(Ipld::Integer(i)) if *i >= 0 => u64::try_from(*i).map_err(|_| IpnsError::Invalid(format!("{k} is out of range"))),
        _ => Err(IpnsError::Invalid(format!("its data has no {k} integer"))),
    };
    let (value, validity, validity_type, sequence, ttl) = (bytes_field("Value")?, bytes_field("Validity")?, int_field("ValidityType")?, int_field("Sequence")?, int_field("TTL")?);
    // V1 fields, where present, must say what the signed data says.
    let differs = entry.value.as_ref().is_some_and(|v| *v != value)
        || entry.validity.as_ref().is_some_and(|v| *v != validity)
        || entry.validity_type.is_some_and(|v| v as u64 != validity_type)
        || entry.sequence.is_some_and(|v| v != sequence)
        || entry.ttl.is_some_and(|v| v != ttl);
    if differs {
        return Err(invalid("its V1 fields differ from its signed V2 data"));
    }
    if validity_type != 0 {
        return Err(invalid("its validity type is not EOL"));
    }
    let validity_text = std::str::from_utf8(&validity).map_err(|_| invalid("its validity is not text"))?;
    let validity_at = humantime::parse_rfc3339_weak(validity_text.trim_end_matches('Z').split('+').next().unwrap_or(validity_text))
        .or_else(|_| humantime::parse_rfc3339(validity_text))
        .map_err(|e| IpnsError::Invalid(format!("its validity {validity_text:?} is not an RFC 3339 time: {e}")))?;
    if validity_at <= now {
        return Err(IpnsError::Expired(validity_text.to_string()));
    }
    let value = String::from_utf8(value).map_err(|_| invalid("its value is not text"))?;
    if !(value.starts_with("/ipfs/") || value.starts_with("/ipns/")) {
        return Err(IpnsError::Invalid(format!("its value {value:?} is not an /ipfs/ or /ipns/ path")));
    }
    Ok(Record { value, validity: validity_at, sequence, ttl: Duration::from_nanos(ttl) })
}

/// The key that signs `name`'s records: inlined in the name (Ed25519), or carried by the record
/// and matching the name (RSA and other long keys).
fn public_key(name: &Name, carried: Option<&[u8]>) -> Result<PublicKey, IpnsError> {
    if let Some(bytes) = carried {
        let key = PublicKey::try_decode_protobuf(bytes).map_err(|e| IpnsError::Invalid(format!("its public key: {e}")))?;
        if PeerId::from_public_key(&key) != name.0 {
            return Err(IpnsError::Invalid("its public key is not the name's".into()));
        }
        return Ok(key);
    }
    let mh = cid::multihash::Multihash::<64>::from_bytes(&name.0.to_bytes()).map_err(|e| IpnsError::Invalid(e.to_string()))?;
    if mh.code() != 0 {
        return Err(IpnsError::Invalid("the name does not hold its key and the record carries none".into()));
    }
    PublicKey::try_decode_protobuf(mh.digest()).map_err(|e| IpnsError::Invalid(format!("the name's key: {e}")))
}

/// A record pointing `key`'s name at `value`, valid for `lifetime` from `now`, V1 and V2 signed
/// (as Kubo's `name publish` makes them).
pub fn sign(key: &Keypair, value: &str, sequence: u64, lifetime: Duration, ttl: Duration, now: SystemTime) -> Result<Vec<u8>, IpnsError> {
    let validity = humantime::format_rfc3339_nanos(now + lifetime).to_string().into_bytes();
    let ttl_ns = u64::try_from(ttl.as_nanos()).map_err(|_| IpnsError::Invalid("the TTL is too long".into()))?;
    let data = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::from([
        ("Value".to_string(), Ipld::Bytes(value.as_bytes().to_vec())),
        ("Validity".to_string(), Ipld::Bytes(validity.clone())),
        ("ValidityType".to_string(), Ipld::Integer(0)),
        ("Sequence".to_string(), Ipld::Integer(sequence.into())),
        ("TTL".to_string(), Ipld::Integer(ttl_ns.into())),
    ])))
    .map_err(|e| IpnsError::Invalid(e.to_string()))?;
    let signing = |msg: &[u8]| key.sign(msg).map_err(|e| IpnsError::Invalid(format!("signing: {e}")));
    let mut v2 = SIGNATURE_PREFIX.to_vec();
    v2.extend_from_slice(&data);
    let mut v1 = value.as_bytes().to_vec();
    v1.extend_from_slice(&validity);
    v1.extend_from_slice(b"EOL");
    let entry = IpnsEntry {
        value: Some(value.as_bytes().to_vec()),
        signature_v1: Some(signing(&v1)?),
        validity_type: Some(0),
        validity: Some(validity),
        sequence: Some(sequence),
        ttl: Some(ttl_ns),
        pub_key: None,
        signature_v2: Some(signing(&v2)?),
        data: Some(data),
    };
    Ok(entry.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_records_validate_and_tampering_is_caught() {
        let key = Keypair::generate_ed25519();
        let name = Name(key.public().to_peer_id());
        let now = SystemTime::now();
        let record = sign(&key, "/ipfs/bafkqaaa", 3, Duration::from_secs(3600), Duration::from_secs(60), now).unwrap();
        let r = validate(&name, &record, now).unwrap();
        assert_eq!((r.value.as_str(), r.sequence, r.ttl), ("/ipfs/bafkqaaa", 3, Duration::from_secs(60)));
        // Expired an hour later.
        assert!(matches!(validate(&name, &record, now + Duration::from_secs(3601)), Err(IpnsError::Expired(_))));
        // Another name's key.
        let other = Name(Keypair::generate_ed25519().public().to_peer_id());
        assert!(validate(&other, &record, now).is_err());
        // A V1 value changed after signing.
        let mut entry = IpnsEntry::decode(&record[..]).unwrap();
        entry.value = Some(b"/ipfs/bafkqabc".to_vec());
        assert!(validate(&name, &entry.encode_to_vec(), now).is_err());
        // V1 only.
        let mut entry = IpnsEntry::decode(&record[..]).unwrap();
        entry.signature_v2 = None;
        assert!(validate(&name, &entry.encode_to_vec(), now).is_err());
        // Names: canonical form and the peer ID form of the same key.
        let (parsed, canonical) = Name::parse(&name.canonical()).unwrap();
        assert!(canonical && parsed == name);
        let (parsed, canonical) = Name::parse(&name.0.to_string()).unwrap();
        assert!(!canonical && parsed == name);
        assert!(Name::parse("example.com").is_err());
    }
}
