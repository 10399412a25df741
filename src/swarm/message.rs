//! Bitswap's wire message (`message.proto` of the Bitswap spec, 1.0.0 to 1.2.0) and its framing:
//! each message is an unsigned-varint length, then the protobuf.

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message read or written (Kubo's limit): larger ones end the stream.
pub const MAX_MESSAGE: usize = 4 << 20;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// Bitswap 1.0.0: whole blocks, their CIDs implied (CIDv0).
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub blocks: Vec<bytes::Bytes>,
    /// 1.1.0 and later: blocks with their CID prefix.
    #[prost(message, repeated, tag = "3")]
    pub payload: Vec<Block>,
    #[prost(message, repeated, tag = "4")]
    pub block_presences: Vec<BlockPresence>,
    #[prost(int32, tag = "5")]
    pub pending_bytes: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Wantlist {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    /// This wantlist replaces the previous one.
    #[prost(bool, tag = "2")]
    pub full: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The CID's bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub block: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub priority: i32,
    #[prost(bool, tag = "3")]
    pub cancel: bool,
    #[prost(enumeration = "WantType", tag = "4")]
    pub want_type: i32,
    #[prost(bool, tag = "5")]
    pub send_dont_have: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
pub enum WantType {
    Block = 0,
    Have = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    /// CID version, codec, multihash code and digest length, as varints.
    #[prost(bytes = "vec", tag = "1")]
    pub prefix: Vec<u8>,
    /// A slice of the message it came in (decoded) or of the store's copy (sent): a block is
    /// never copied between the socket and the keeper.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockPresence {
    #[prost(bytes = "vec", tag = "1")]
    pub cid: Vec<u8>,
    #[prost(enumeration = "PresenceType", tag = "2")]
    pub r#type: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
pub enum PresenceType {
    Have = 0,
    DontHave = 1,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("a message of {0} bytes, over the {MAX_MESSAGE}-byte limit")]
    TooLarge(u64),
    #[error("a length prefix longer than 10 bytes")]
    BadLength,
    #[error("not a Bitswap message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("not a Bitswap message: a field runs past the message's end")]
    Truncated,
}

/// The most wantlist entries of one message decoded; the rest are skipped undecoded (an empty
/// entry is 2 bytes on the wire and ~50 in memory: decoding them all let a 4 MiB message cost
/// ~100 MB).
pub const MAX_ENTRIES: usize = 1024;
/// The most block presences of one message decoded; the rest are skipped undecoded.
pub const MAX_PRESENCES: usize = 4096;

/// The next message's length, or None at a clean end of stream.
pub async fn read_length<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<usize>, FrameError> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return if i == 0 { Ok(None) } else { Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()) };
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > MAX_MESSAGE as u64 {
                return Err(FrameError::TooLarge(len));
            }
            return Ok(Some(len as usize));
        }
    }
    Err(FrameError::BadLength)
}

/// A message body of `len` bytes (from [`read_length`]), decoded within [`MAX_ENTRIES`] and
/// [`MAX_PRESENCES`]. The buffer is filled in steps of [`READ_STEP`] as bytes arrive (its pages
/// touched only then), so a peer that announces 4 MiB and sends nothing holds nothing, and a
/// large body is never copied to grow it.
pub async fn read_body<S: AsyncRead + Unpin>(stream: &mut S, len: usize) -> Result<Message, FrameError> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        buf.resize((filled + READ_STEP).min(len), 0);
        let mut at = filled;
        while at < buf.len() {
            match stream.read(&mut buf[at..]).await? {
                0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                n => at += n,
            }
        }
    }
    decode(bytes::Bytes::from(buf))
}

/// What a body is read in at a time.
const READ_STEP: usize = 256 << 10;

/// The next message, or None at a clean end of stream.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Message>, FrameError> {
    match read_length(stream).await? {
        Some(len) => Ok(Some(read_body(stream, len).await?)),
        None => Ok(None),
    }
}

/// Decodes a message, counting as it goes: at most [`MAX_ENTRIES`] wantlist entries and
/// [`MAX_PRESENCES`] presences are decoded, the rest skipped (still checked to be well-formed
/// protobuf). Blocks are bounded by the message's own size, and are slices of `body`.
pub fn decode(body: bytes::Bytes) -> Result<Message, FrameError> {
    let mut buf: &[u8] = &body;
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    use prost::Message as _;
    let mut m = Message::default();
    let mut entries = 0usize;
    // A length-delimited field's bytes, checked against what is left.
    fn field<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        let len = prost::encoding::decode_varint(buf)?;
        if len > buf.len() as u64 {
            return Err(FrameError::Truncated);
        }
        let (f, rest) = buf.split_at(len as usize);
        *buf = rest;
        Ok(f)
    }
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        match (tag, wire) {
            (1, WireType::LengthDelimited) => {
                let mut w = field(&mut buf)?;
                let list = m.wantlist.get_or_insert_with(Wantlist::default);
                while !w.is_empty() {
                    let (tag, wire) = decode_key(&mut w)?;
                    match (tag, wire) {
                        (1, WireType::LengthDelimited) => {
                            let e = field(&mut w)?;
                            if entries < MAX_ENTRIES {
                                list.entries.push(Entry::decode(e)?);
                                entries += 1;
                            }
                        }
                        (2, WireType::Varint) => list.full = decode_varint(&mut w)? != 0,
                        (tag, wire) => skip_field(wire, tag, &mut w, DecodeContext::default())?,
                    }
                }
            }
            (2, WireType::LengthDelimited) => m.blocks.push(body.slice_ref(field(&mut buf)?)),
            (3, WireType::LengthDelimited) => m.payload.push(Block::decode(body.slice_ref(field(&mut buf)?))?),
            (4, WireType::LengthDelimited) => {
                let p = field(&mut buf)?;
                if m.block_presences.len() < MAX_PRESENCES {
                    m.block_presences.push(BlockPresence::decode(p)?);
                }
            }
            (5, WireType::Varint) => m.pending_bytes = decode_varint(&mut buf)? as i32,
            (tag, wire) => skip_field(wire, tag, &mut buf, DecodeContext::default())?,
        }
    }
    Ok(m)
}

/// Writes one message, length-prefixed.
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, message: &Message) -> Result<(), FrameError> {
    let len = prost::Message::encoded_len(message);
    if len > MAX_MESSAGE {
        return Err(FrameError::TooLarge(len as u64));
    }
    let frame = prost::Message::encode_length_delimited_to_vec(message);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// The prefix a `Block` carries for `cid`.
pub fn prefix(cid: &cid::Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    crate::varint::encode(&mut out, u64::from(cid.version()));
    crate::varint::encode(&mut out, cid.codec());
    crate::varint::encode(&mut out, cid.hash().code());
    crate::varint::encode(&mut out, u64::from(cid.hash().size()));
    out
}
