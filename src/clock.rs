//! The node's one clock: seconds since the Unix epoch, as every timestamp it stores is.

/// Now, in seconds since 1970 (0 if the system clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
