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
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub blocks: Vec<Vec<u8>>,
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
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
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
}

/// The next message, or None at a clean end of stream.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Message>, FrameError> {
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
            let mut buf = vec![0u8; len as usize];
            stream.read_exact(&mut buf).await?;
            return Ok(Some(<Message as prost::Message>::decode(buf.as_slice())?));
        }
    }
    Err(FrameError::BadLength)
}

/// Writes one message, length-prefixed.
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, message: &Message) -> Result<(), FrameError> {
    let body = prost::Message::encode_to_vec(message);
    if body.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge(body.len() as u64));
    }
    let mut frame = Vec::with_capacity(body.len() + 10);
    crate::varint::encode(&mut frame, body.len() as u64);
    frame.extend_from_slice(&body);
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
