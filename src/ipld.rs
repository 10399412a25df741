//! IPLD blocks, a ground layer beside `unixfs`: the codecs, the links of any block (for walks,
//! CARs, vouching and the GC's mark), and paths through DAG-CBOR and DAG-JSON values, as a
//! gateway reads them. Plain JSON and CBOR blocks have no links.

use cid::Cid;
use ipld_core::ipld::Ipld;

pub const DAG_CBOR: u64 = 0x71;
pub const DAG_JSON: u64 = 0x0129;
pub const JSON: u64 = 0x0200;
pub const CBOR: u64 = 0x51;
pub const LIBP2P_KEY: u64 = 0x72;

/// A block that does not decode as its codec says.
#[derive(Debug, thiserror::Error)]
#[error("block {cid}: {detail}")]
pub struct Malformed {
    pub cid: Cid,
    pub detail: String,
}

pub type Result<T> = std::result::Result<T, Malformed>;

/// Whether a block of `codec` can link to others: what a walk must read to follow them.
pub fn links_possible(codec: u64) -> bool {
    codec == crate::unixfs::DAG_PB || is_linking(codec)
}

/// The CIDs a block links to, whatever its codec (none for raw, JSON and CBOR blocks).
pub fn block_links(cid: &Cid, bytes: &[u8]) -> Result<Vec<Cid>> {
    match cid.codec() {
        crate::unixfs::DAG_PB => Ok(crate::unixfs::decode_node(bytes).map_err(|e| Malformed { cid: *cid, detail: e.to_string() })?.links.into_iter().map(|l| l.cid).collect()),
        c if is_linking(c) => Ok(links(&decode(cid, bytes)?)),
        _ => Ok(Vec::new()),
    }
}

/// Whether blocks of `codec` are IPLD data this module reads (links and paths).
pub fn is_linking(codec: u64) -> bool {
    codec == DAG_CBOR || codec == DAG_JSON
}

/// The data model value of a DAG-CBOR or DAG-JSON block.
pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<Ipld> {
    let malformed = |detail: String| Malformed { cid: *cid, detail };
    match cid.codec() {
        DAG_CBOR => serde_ipld_dagcbor::from_slice(bytes).map_err(|e| malformed(format!("not DAG-CBOR: {e}"))),
        DAG_JSON => serde_ipld_dagjson::from_slice(bytes).map_err(|e| malformed(format!("not DAG-JSON: {e}"))),
        other => Err(malformed(format!("codec 0x{other:x} is neither DAG-CBOR nor DAG-JSON"))),
    }
}

/// Every link in `value`, in document order (maps by their sorted keys, as both codecs store
/// them).
pub fn links(value: &Ipld) -> Vec<Cid> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Ipld::Link(cid) => out.push(*cid),
            Ipld::List(items) => stack.extend(items.iter().rev()),
            Ipld::Map(map) => stack.extend(map.values().rev()),
            _ => {}
        }
    }
    out
}

/// Where a path inside one block leads.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// To a link, after `used` segments: the rest of the path continues in that block.
    Link { cid: Cid, used: usize },
    /// To a value inside this block that is not a link (the gateway cannot serve part of a block).
    Value,
    /// Nowhere: a segment names nothing.
    Absent,
}

/// Follows `segments` through `value` (map keys, list indices) until a link or their end.
pub fn step(value: &Ipld, segments: &[String]) -> Step {
    let mut here = value;
    for (i, segment) in segments.iter().enumerate() {
        let next = match here {
            Ipld::Map(map) => map.get(segment.as_str()),
            Ipld::List(items) => segment.parse::<usize>().ok().and_then(|n| items.get(n)),
            _ => None,
        };
        match next {
            Some(Ipld::Link(cid)) => return Step::Link { cid: *cid, used: i + 1 },
            Some(v) => here = v,
            None => return Step::Absent,
        }
    }
    match here {
        Ipld::Link(cid) => Step::Link { cid: *cid, used: 0 },
        _ => Step::Value,
    }
}

/// `value` as indented DAG-JSON, for people (the gateway's HTML view).
pub fn to_pretty_json(value: &Ipld) -> String {
    let compact = serde_ipld_dagjson::to_vec(value).unwrap_or_default();
    match serde_json::from_slice::<serde_json::Value>(&compact) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&compact).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stop_at_links_and_values() {
        let target: Cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".parse().unwrap();
        let json = format!(r#"{{"a":{{"b":[1,{{"/":"{target}"}}]}},"s":"x"}}"#);
        let cid = Cid::new_v1(DAG_JSON, cid::multihash::Multihash::wrap(0, b"x").unwrap());
        let v = decode(&cid, json.as_bytes()).unwrap();
        assert_eq!(links(&v), vec![target]);
        let seg = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(step(&v, &seg(&["a", "b", "1", "more"])), Step::Link { cid: target, used: 3 });
        assert_eq!(step(&v, &seg(&["s"])), Step::Value);
        assert_eq!(step(&v, &seg(&["nope"])), Step::Absent);
        assert_eq!(step(&v, &seg(&["a", "b", "7"])), Step::Absent);
        // The same value in DAG-CBOR has the same links.
        let cbor = serde_ipld_dagcbor::to_vec(&v).unwrap();
        let cbor_cid = Cid::new_v1(DAG_CBOR, cid::multihash::Multihash::wrap(0, b"x").unwrap());
        assert_eq!(links(&decode(&cbor_cid, &cbor).unwrap()), vec![target]);
    }
}
