//! The `Range` request header for blob GETs (single byte ranges) and the `Content-Range` header of
//! chunked uploads (`<start>-<end>`, no unit, as the distribution spec writes it).

/// A byte range resolved against a blob's length: `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole blob (absent header, or several ranges, which HTTP lets a
    /// server answer with the full representation).
    Full,
    Partial(ByteRange),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("Range header {0:?} is malformed")]
    Malformed(String),
    #[error("Range {0:?} cannot be satisfied by a blob of {1} bytes")]
    Unsatisfiable(String, u64),
}

/// Parses a `Range` header value against a representation of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> Result<RangeRequest, RangeError> {
    let Some(raw) = header else { return Ok(RangeRequest::Full) };
    let malformed = || RangeError::Malformed(raw.to_string());
    let spec = raw.trim().strip_prefix("bytes=").ok_or_else(malformed)?;
    if spec.contains(',') {
        return Ok(RangeRequest::Full);
    }
    let (a, b) = spec.trim().split_once('-').ok_or_else(malformed)?;
    let num = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse().map_err(|_| malformed())
    };
    let unsatisfiable = || RangeError::Unsatisfiable(raw.to_string(), len);
    let range = if a.is_empty() {
        // bytes=-N: the last N bytes.
        let n = num(b)?;
        if n == 0 || len == 0 {
            return Err(unsatisfiable());
        }
        ByteRange { start: len.saturating_sub(n), end: len - 1 }
    } else {
        let start = num(a)?;
        let end = if b.is_empty() { u64::MAX } else { num(b)? };
        if end < start {
            return Err(malformed());
        }
        if start >= len {
            return Err(unsatisfiable());
        }
        ByteRange { start, end: end.min(len - 1) }
    };
    Ok(RangeRequest::Partial(range))
}

/// Parses an upload chunk's `Content-Range: <start>-<end>` (a `bytes=` or `bytes ` prefix is
/// tolerated, as some clients send one).
pub fn parse_content_range(raw: &str) -> Option<(u64, u64)> {
    let s = raw.trim();
    let s = s.strip_prefix("bytes=").or_else(|| s.strip_prefix("bytes ")).unwrap_or(s);
    let s = s.split('/').next()?;
    let (a, b) = s.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = b.trim().parse().ok()?;
    // The chunk's length, end - start + 1, must be a number too.
    (end >= start && end < u64::MAX).then_some((start, end))
}

/// `bytes` for people: `300 B`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(h: &str, len: u64) -> Result<RangeRequest, RangeError> {
        parse_range(Some(h), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range(None, 10), Ok(RangeRequest::Full));
        assert_eq!(p("bytes=0-4", 10), Ok(RangeRequest::Partial(ByteRange { start: 0, end: 4 })));
        assert_eq!(p("bytes=5-", 10), Ok(RangeRequest::Partial(ByteRange { start: 5, end: 9 })));
        assert_eq!(p("bytes=5-100", 10), Ok(RangeRequest::Partial(ByteRange { start: 5, end: 9 })));
        assert_eq!(p("bytes=-3", 10), Ok(RangeRequest::Partial(ByteRange { start: 7, end: 9 })));
        assert_eq!(p("bytes=-30", 10), Ok(RangeRequest::Partial(ByteRange { start: 0, end: 9 })));
        assert_eq!(p("bytes=0-1,3-4", 10), Ok(RangeRequest::Full));
    }

    #[test]
    fn bad_ranges() {
        assert!(matches!(p("bytes=10-", 10), Err(RangeError::Unsatisfiable(..))));
        assert!(matches!(p("bytes=-0", 10), Err(RangeError::Unsatisfiable(..))));
        assert!(matches!(p("bytes=0-0", 0), Err(RangeError::Unsatisfiable(..))));
        for bad in ["0-4", "bytes=4-1", "bytes=a-b", "bytes=-", "items=0-1", "bytes=+1-2"] {
            assert!(matches!(p(bad, 10), Err(RangeError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes=100-199"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("x"), None);
        assert_eq!(parse_content_range("0-18446744073709551615"), None, "a length past 2^64 is refused, not wrapped");
        assert_eq!(parse_content_range("0-18446744073709551614"), Some((0, u64::MAX - 1)));
    }
}
