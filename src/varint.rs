//! Unsigned LEB128 varints, as protobuf, multiformats and CAR use them: the one encoder and
//! decoders of the crate.

/// Appends `v`.
pub fn encode(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a varint longer than 10 bytes")]
pub struct TooLong;

/// The varint at the start of `buf` and its length; None if `buf` ends inside it.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, TooLong> {
    let mut value = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 10 {
        Err(TooLong)
    } else {
        Ok(None)
    }
}

/// The next varint of `input`: None at a clean end, an error at an end inside it.
pub fn read(input: &mut impl std::io::Read) -> std::io::Result<Option<u64>> {
    let mut buf = [0u8; 10];
    for i in 0..buf.len() {
        if input.read(&mut buf[i..i + 1])? == 0 {
            return if i == 0 { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        if let Some((v, _)) = decode(&buf[..=i]).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))? {
            return Ok(Some(v));
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, TooLong))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_edges() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            encode(&mut out, v);
            assert_eq!(decode(&out), Ok(Some((v, out.len()))));
            assert_eq!(read(&mut out.as_slice()).unwrap(), Some(v));
            assert_eq!(decode(&out[..out.len() - 1]), Ok(None), "cut short");
        }
        let mut v = Vec::new();
        encode(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        assert_eq!(decode(&[0xff; 11]), Err(TooLong));
        assert_eq!(read(&mut [].as_slice()).unwrap(), None);
        assert!(read(&mut [0x80u8].as_slice()).is_err());
    }
}
