//! Bounded, incremental codec for AWS's event-stream binary framing
//! (`application/vnd.amazon.eventstream`), the body of Bedrock's ConverseStream.
//!
//! Each message on the wire is:
//!
//! ```text
//! [total length u32 BE][headers length u32 BE][prelude CRC32 u32 BE]   (the 12-byte prelude)
//! [headers: name length u8, name, value type u8, value]...
//! [payload]
//! [message CRC32 u32 BE]                                               (over everything before it)
//! ```
//!
//! [`EventStreamDecoder`] turns bytes, split into chunks anywhere, into [`Message`]s; the
//! messages (and the error, if any) are the same whatever the split. Both checksums are
//! verified, a message's length is checked against the cap as soon as its prelude is in,
//! and a message that lies whole inside a chunk is decoded in place without copying.
//! [`encode`] frames a message back into bytes; decoding then re-encoding a valid stream
//! gives back the same bytes, because the format has one encoding per message.
//!
//! ```
//! use tollgate_sse::eventstream::{encode, EventStreamDecoder, HeaderValue, Message};
//!
//! let message = Message::new(br#"{"delta":{"text":"Hi"},"contentBlockIndex":0}"#.to_vec())
//!     .with_header(":event-type", HeaderValue::String("contentBlockDelta".into()))
//!     .with_header(":message-type", HeaderValue::String("event".into()));
//! let mut wire = Vec::new();
//! encode(&message, &mut wire)?;
//!
//! let mut decoder = EventStreamDecoder::new();
//! let mut messages = Vec::new();
//! let (first, second) = wire.split_at(5);
//! decoder.feed(first, &mut messages)?;
//! decoder.feed(second, &mut messages)?;
//! decoder.finish()?;
//! assert_eq!(messages, [message]);
//! assert_eq!(messages[0].header_str(":event-type"), Some("contentBlockDelta"));
//! # Ok::<(), tollgate_sse::eventstream::EventStreamError>(())
//! ```

/// Bytes of the prelude: total length, headers length, prelude CRC.
const PRELUDE_BYTES: usize = 12;

/// Bytes of the trailing message CRC.
const CRC_BYTES: usize = 4;

/// The smallest message: a prelude and a CRC, no headers, no payload.
const MIN_MESSAGE_BYTES: usize = PRELUDE_BYTES + CRC_BYTES;

/// Largest header block accepted or encoded, the format's own limit (128 KiB).
///
/// Decoded headers take more memory than their wire form (a two-byte header becomes a
/// `String` and a [`HeaderValue`]), so this limit, not only the message cap, bounds what
/// one message can cost: at most 64 Ki headers, a few MiB. No AWS service sends more than a
/// handful of headers per message.
pub const MAX_HEADERS_BYTES: usize = 128 * 1024;

/// Default cap on one message's total length (prelude, headers, payload and CRC).
///
/// The format allows payloads up to 16 MiB plus a [`MAX_HEADERS_BYTES`] header block, so
/// this default accepts every message a conforming sender may send. A decoder holds at most
/// one message, and only the bytes that have actually arrived, so this is the worst-case
/// memory of one stream. Bedrock's stream events are a few hundred bytes; a relay that
/// wants a tighter bound per stream passes a smaller cap to
/// [`EventStreamDecoder::with_max_message_bytes`], and a larger message then fails with
/// [`EventStreamError::MessageTooLarge`] as soon as its prelude arrives.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize =
    16 * 1024 * 1024 + MAX_HEADERS_BYTES + MIN_MESSAGE_BYTES;

/// Capacity of the partial-message buffer kept after a message completes.
///
/// Keeping it spares a reallocation for each message cut by a chunk boundary, which is most
/// of them on a real network; dropping anything larger means one big message does not pin
/// its memory for the rest of a long stream.
const RETAINED_BUFFER_CAPACITY: usize = 8 * 1024;

// === messages ===

/// A header value, one variant per wire type (the type byte is in parentheses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// `true` (0) or `false` (1); no value bytes.
    Bool(bool),
    /// A signed byte (2).
    Byte(i8),
    /// A big-endian `i16` (3).
    Short(i16),
    /// A big-endian `i32` (4).
    Int(i32),
    /// A big-endian `i64` (5).
    Long(i64),
    /// Bytes with a `u16` length (6).
    Bytes(Vec<u8>),
    /// UTF-8 text with a `u16` length (7).
    String(String),
    /// Milliseconds since the Unix epoch, big-endian `i64` (8).
    Timestamp(i64),
    /// A 16-byte UUID (9).
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The text of a [`HeaderValue::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One decoded message: its headers in wire order (names may repeat) and its payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Header names and values, in the order they were sent.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload bytes, uninterpreted (Bedrock sends JSON).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with this payload and no headers.
    pub fn new(payload: Vec<u8>) -> Self {
        Self {
            headers: Vec::new(),
            payload,
        }
    }

    /// Appends a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: HeaderValue) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    /// The value of the first header called `name` (names compare exactly).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// The text of the first header called `name`, when it is a string header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }
}

/// Why a stream cannot be decoded, or a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    /// The prelude's CRC does not match its first eight bytes.
    #[error(
        "event-stream prelude checksum mismatch (computed {computed:#010x}, sent {sent:#010x})"
    )]
    PreludeChecksum {
        /// CRC32 of the received length fields.
        computed: u32,
        /// The CRC the sender wrote.
        sent: u32,
    },
    /// The message's CRC does not match its bytes.
    #[error(
        "event-stream message checksum mismatch (computed {computed:#010x}, sent {sent:#010x})"
    )]
    MessageChecksum {
        /// CRC32 of the received message.
        computed: u32,
        /// The CRC the sender wrote.
        sent: u32,
    },
    /// The prelude's lengths cannot describe a message (total below 16 bytes, or headers
    /// longer than the room the total leaves them).
    #[error("event-stream prelude has impossible lengths (total {total}, headers {headers})")]
    InvalidLength {
        /// The total length field.
        total: u32,
        /// The headers length field.
        headers: u32,
    },
    /// A message is longer than the decoder's cap.
    #[error("event-stream message of {length} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge {
        /// The message's total length.
        length: u32,
        /// The cap that was exceeded, in bytes.
        limit: usize,
    },
    /// A header block is longer than [`MAX_HEADERS_BYTES`].
    #[error("event-stream header block of {length} bytes exceeds the {limit}-byte limit")]
    HeadersTooLarge {
        /// The header block's length.
        length: usize,
        /// [`MAX_HEADERS_BYTES`].
        limit: usize,
    },
    /// A header value has a type byte the format does not define.
    #[error("event-stream header value type {0} is unknown")]
    UnknownHeaderType(u8),
    /// A header is cut short by the end of its block, or holds text that is not UTF-8.
    #[error("event-stream header is malformed: {0}")]
    InvalidHeader(&'static str),
    /// The stream ended inside a message.
    #[error("event-stream ended inside a message")]
    Truncated,
    /// A message cannot be put on the wire: a name, value or length does not fit its field.
    #[error("event-stream message cannot be encoded: {0}")]
    Unencodable(&'static str),
}

// === decoder ===

/// Incremental decoder for one stream; holds at most the bytes of one incomplete message.
#[derive(Debug)]
pub struct EventStreamDecoder {
    max_message_bytes: usize,
    /// The start of a message cut by a chunk boundary, prelude included.
    buf: Vec<u8>,
    /// The total length of the buffered message once its prelude is checked, else 0.
    expected: usize,
    failed: Option<EventStreamError>,
}

impl Default for EventStreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStreamDecoder {
    /// A decoder for a new stream, capped at [`DEFAULT_MAX_MESSAGE_BYTES`] per message.
    pub fn new() -> Self {
        Self::with_max_message_bytes(DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A decoder for a new stream whose messages may be at most `max` bytes long, all
    /// framing included.
    pub fn with_max_message_bytes(max: usize) -> Self {
        Self {
            max_message_bytes: max,
            buf: Vec::new(),
            expected: 0,
            failed: None,
        }
    }

    /// Feeds the next bytes of the stream; every message they complete is appended to `out`.
    ///
    /// Fails on a checksum mismatch, impossible lengths, a message over the cap or a
    /// malformed header. Messages completed before the failing one are still appended.
    /// After a failure the decoder has released its buffer and returns the same error from
    /// every later `feed` and `finish`: the framing is lost, so nothing after it can be
    /// trusted.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Message>) -> Result<(), EventStreamError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.push(chunk, out);
        if let Err(err) = &result {
            *self = Self::with_max_message_bytes(self.max_message_bytes);
            self.failed = Some(err.clone());
        }
        result
    }

    /// Ends the stream: `Ok` when it ended between messages, [`EventStreamError::Truncated`]
    /// when it was cut inside one (that message is dropped).
    ///
    /// Afterwards the decoder is ready for a new stream, unless `feed` had failed: then it
    /// keeps returning that error.
    pub fn finish(&mut self) -> Result<(), EventStreamError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let idle = self.is_idle();
        *self = Self::with_max_message_bytes(self.max_message_bytes);
        if idle {
            Ok(())
        } else {
            Err(EventStreamError::Truncated)
        }
    }

    /// True when no part of a message is pending (false after a failure).
    pub fn is_idle(&self) -> bool {
        self.failed.is_none() && self.buf.is_empty()
    }

    fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Message>) -> Result<(), EventStreamError> {
        while !chunk.is_empty() {
            if self.buf.is_empty() {
                // Whole messages inside the chunk are decoded where they lie.
                if let Some(prelude) = chunk.get(..PRELUDE_BYTES) {
                    let total = check_prelude(prelude, self.max_message_bytes)?;
                    if let Some((message, rest)) = chunk.split_at_checked(total) {
                        out.push(decode_message(message)?);
                        chunk = rest;
                        continue;
                    }
                    self.expected = total;
                }
                self.buf.extend_from_slice(chunk);
                return Ok(());
            }
            if self.expected == 0 {
                let (head, rest) = split_upto(chunk, PRELUDE_BYTES - self.buf.len());
                self.buf.extend_from_slice(head);
                chunk = rest;
                match self.buf.get(..PRELUDE_BYTES) {
                    Some(prelude) => {
                        self.expected = check_prelude(prelude, self.max_message_bytes)?;
                    }
                    None => return Ok(()),
                }
            }
            let (body, rest) = split_upto(chunk, self.expected - self.buf.len());
            self.buf.extend_from_slice(body);
            chunk = rest;
            if self.buf.len() == self.expected {
                out.push(decode_message(&self.buf)?);
                self.expected = 0;
                if self.buf.capacity() > RETAINED_BUFFER_CAPACITY {
                    self.buf = Vec::new();
                } else {
                    self.buf.clear();
                }
            }
        }
        Ok(())
    }
}

/// `chunk` cut after at most `n` bytes.
fn split_upto(chunk: &[u8], n: usize) -> (&[u8], &[u8]) {
    chunk.split_at(n.min(chunk.len()))
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_be_bytes(word)
}

/// Checks a 12-byte prelude and returns the message's total length.
fn check_prelude(prelude: &[u8], max_message_bytes: usize) -> Result<usize, EventStreamError> {
    let computed = crc32fast::hash(prelude.get(..8).unwrap_or_default());
    let sent = be_u32(prelude, 8);
    if computed != sent {
        return Err(EventStreamError::PreludeChecksum { computed, sent });
    }
    let total = be_u32(prelude, 0);
    let headers = be_u32(prelude, 4);
    let (total_len, headers_len) = (total as usize, headers as usize);
    if total_len < MIN_MESSAGE_BYTES || headers_len > total_len - MIN_MESSAGE_BYTES {
        return Err(EventStreamError::InvalidLength { total, headers });
    }
    if headers_len > MAX_HEADERS_BYTES {
        return Err(EventStreamError::HeadersTooLarge {
            length: headers_len,
            limit: MAX_HEADERS_BYTES,
        });
    }
    if total_len > max_message_bytes {
        return Err(EventStreamError::MessageTooLarge {
            length: total,
            limit: max_message_bytes,
        });
    }
    Ok(total_len)
}

/// Decodes one whole message whose prelude [`check_prelude`] accepted.
fn decode_message(bytes: &[u8]) -> Result<Message, EventStreamError> {
    let crc_at = bytes.len().saturating_sub(CRC_BYTES);
    let computed = crc32fast::hash(bytes.get(..crc_at).unwrap_or_default());
    let sent = be_u32(bytes, crc_at);
    if computed != sent {
        return Err(EventStreamError::MessageChecksum { computed, sent });
    }
    let headers_end = PRELUDE_BYTES + be_u32(bytes, 4) as usize;
    let headers = bytes.get(PRELUDE_BYTES..headers_end).unwrap_or_default();
    let payload = bytes.get(headers_end..crc_at).unwrap_or_default();
    Ok(Message {
        headers: decode_headers(headers)?,
        payload: payload.to_vec(),
    })
}

/// The next `n` bytes of `block`, or `None` when fewer remain.
fn take<'a>(block: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = block.split_at_checked(n)?;
    *block = rest;
    Some(head)
}

fn take_array<const N: usize>(block: &mut &[u8]) -> Result<[u8; N], EventStreamError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(block, N).ok_or(VALUE_CUT)?);
    Ok(out)
}

const VALUE_CUT: EventStreamError = EventStreamError::InvalidHeader("value cut short");

fn decode_headers(mut block: &[u8]) -> Result<Vec<(String, HeaderValue)>, EventStreamError> {
    let mut headers = Vec::new();
    while let Some(&name_len) = block.first() {
        block = block.get(1..).unwrap_or_default();
        let name = take(&mut block, usize::from(name_len))
            .ok_or(EventStreamError::InvalidHeader("name cut short"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| EventStreamError::InvalidHeader("name is not UTF-8"))?;
        let [kind] = take_array::<1>(&mut block)
            .map_err(|_| EventStreamError::InvalidHeader("value type missing"))?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(take_array(&mut block)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(take_array(&mut block)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(take_array(&mut block)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(take_array(&mut block)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(take_array(&mut block)?);
                let bytes = take(&mut block, usize::from(len)).ok_or(VALUE_CUT)?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| EventStreamError::InvalidHeader("string is not UTF-8"))?;
                    HeaderValue::String(text.to_owned())
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take_array(&mut block)?)),
            9 => HeaderValue::Uuid(take_array(&mut block)?),
            other => return Err(EventStreamError::UnknownHeaderType(other)),
        };
        headers.push((name.to_owned(), value));
    }
    Ok(headers)
}

// === encoder ===

/// Appends `message`, framed, to `out`.
///
/// Fails, leaving `out` as it was, when a header name is over 255 bytes, a string or bytes
/// value over 65 535 bytes, the header block over [`MAX_HEADERS_BYTES`], or the whole
/// message over `u32::MAX` bytes.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), EventStreamError> {
    let start = out.len();
    let result = encode_at(message, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_at(message: &Message, out: &mut Vec<u8>, start: usize) -> Result<(), EventStreamError> {
    for (name, value) in &message.headers {
        let name_len = u8::try_from(name.len())
            .map_err(|_| EventStreamError::Unencodable("header name over 255 bytes"))?;
        out.push(name_len);
        out.extend_from_slice(name.as_bytes());
        encode_value(value, out)?;
    }
    let headers_len = out.len() - start;
    if headers_len > MAX_HEADERS_BYTES {
        return Err(EventStreamError::Unencodable("header block over 128 KiB"));
    }
    let too_long = |_| EventStreamError::Unencodable("message over 4 GiB");
    let total =
        u32::try_from(MIN_MESSAGE_BYTES + headers_len + message.payload.len()).map_err(too_long)?;
    let headers_len = u32::try_from(headers_len).map_err(too_long)?;
    let mut prelude = [0u8; PRELUDE_BYTES];
    prelude[..4].copy_from_slice(&total.to_be_bytes());
    prelude[4..8].copy_from_slice(&headers_len.to_be_bytes());
    let prelude_crc = crc32fast::hash(&prelude[..8]);
    prelude[8..].copy_from_slice(&prelude_crc.to_be_bytes());
    // The header block is at most 128 KiB, so moving it behind the prelude is cheap.
    out.splice(start..start, prelude);
    out.extend_from_slice(&message.payload);
    let message_crc = crc32fast::hash(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&message_crc.to_be_bytes());
    Ok(())
}

fn encode_value(value: &HeaderValue, out: &mut Vec<u8>) -> Result<(), EventStreamError> {
    fn with_len(kind: u8, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), EventStreamError> {
        let len = u16::try_from(bytes.len())
            .map_err(|_| EventStreamError::Unencodable("header value over 65535 bytes"))?;
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    }
    match value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Short(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Long(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Bytes(v) => with_len(6, v, out)?,
        HeaderValue::String(v) => with_len(7, v.as_bytes(), out)?,
        HeaderValue::Timestamp(v) => {
            out.push(8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Uuid(v) => {
            out.push(9);
            out.extend_from_slice(v);
        }
    }
    Ok(())
}
