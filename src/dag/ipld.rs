//! DAG-CBOR and DAG-JSON blocks: their links (for walks, CARs and vouching) and paths through
//! them, as a gateway reads them. Plain JSON and CBOR blocks have no links.

use super::{DagError, Result, DAG_CBOR, DAG_JSON};
use cid::Cid;
use ipld_core::ipld::Ipld;

/// Whether blocks of `codec` are IPLD data this module reads (links and paths).
pub fn is_linking(codec: u64) -> bool {
    codec == DAG_CBOR || codec == DAG_JSON
}

/// The data model value of a DAG-CBOR or DAG-JSON block.
pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<Ipld> {
    let malformed = |detail: String| DagError::Malformed { cid: *cid, detail };
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
