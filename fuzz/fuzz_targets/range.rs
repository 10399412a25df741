//! `Range` (blob and gateway GETs) and `Content-Range` (upload chunks).
#![no_main]
use af_registry::range::{parse_content_range, parse_range, RangeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, header) = data.split_at(8);
    // Small lengths are where the edges are; any u64 is allowed too.
    let raw = u64::from_le_bytes(len.try_into().unwrap());
    let len = if raw & 1 == 0 { raw >> 1 } else { (raw >> 1) % 4096 };
    let Ok(header) = std::str::from_utf8(header) else { return };
    if let Ok(RangeRequest::Partial(r)) = parse_range(Some(header), len) {
        assert!(r.start <= r.end && r.end < len, "{header:?} against {len}: {r:?}");
    }
    if let Some((start, end)) = parse_content_range(header) {
        assert!(start <= end && end < u64::MAX);
    }
});
