//! Bounded, incremental Server-Sent Events codec for the streaming path.
//!
//! [`SseDecoder`] turns upstream bytes, split into chunks anywhere, into [`SseEvent`]s; the
//! events are the same whatever the split. [`encode`] and [`encode_data`] frame events back
//! into bytes. Pure and synchronous: no IO, no async, so a body filter can call it per chunk.
//!
//! Parsing follows the WHATWG "server-sent events" rules (lines end in CRLF, LF or CR; one
//! space after the colon is stripped; `data` lines are joined with `\n`; a blank line
//! dispatches; a UTF-8 BOM opening the stream is skipped), with these choices made for a
//! gateway that relays events rather than a browser that consumes them:
//!
//! - Comment lines (`: ping`, keepalives) are not returned as events; the decoder only
//!   remembers that one arrived, see [`SseDecoder::take_keepalive`].
//! - `id` and `retry` belong to the event whose block carries them; they are not carried over
//!   to later events. A block with neither `data` nor `event` (only `id`, `retry`, unknown
//!   fields) is not dispatched; a block with `event` but no `data` is, with empty data.
//! - Field lines that are not UTF-8 are an error ([`SseError::InvalidUtf8`]), not replaced.
//! - A stream that ends inside an event is reported ([`SseError::Truncated`]) instead of the
//!   event being silently discarded, so a cut upstream is told from a finished one.
//! - One event may hold at most a capped number of bytes ([`DEFAULT_MAX_EVENT_BYTES`]).
//!
//! ```
//! use tollgate_sse::{encode, SseDecoder};
//!
//! let mut decoder = SseDecoder::new();
//! let mut events = Vec::new();
//! decoder.feed(b"event: delta\r\ndata: {\"text\":", &mut events)?;
//! decoder.feed(b"\"hi\"}\r\n\r\n: ping\n\ndata: [DONE]\n\n", &mut events)?;
//! decoder.finish()?;
//! assert_eq!(events[0].event.as_deref(), Some("delta"));
//! assert_eq!(events[1].data, "[DONE]");
//!
//! let mut framed = Vec::new();
//! encode(&events[0], &mut framed);
//! assert_eq!(framed, b"event: delta\ndata: {\"text\":\"hi\"}\n\n");
//! # Ok::<(), tollgate_sse::SseError>(())
//! ```

mod decode;
mod encode;
pub mod eventstream;

pub use decode::SseDecoder;
pub use encode::{encode, encode_data};

/// Default cap on the field-line bytes of one event (field names and values, not line ends).
///
/// A decoder holds at most this much for its event in progress, so the worst-case memory of
/// the streaming path is this times the number of open streams. Chat deltas are well under
/// 4 KiB; the cap is sized for the rare large single events (a final event repeating the whole
/// response, a tool call's arguments sent at once). Routes that stream base64 images in one
/// event need a larger cap through [`SseDecoder::with_max_event_bytes`]; a smaller cap bounds
/// memory more tightly but fails such streams with [`SseError::EventTooLarge`].
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field (the event type), when the block had one; `Some("")` when empty.
    pub event: Option<String>,
    /// The `data` lines joined with `\n`; empty for an `event`-only block.
    pub data: String,
    /// The `id` field of this block; an id containing NUL is ignored, as the spec says.
    pub id: Option<String>,
    /// The `retry` field of this block, when it was all ASCII digits and fits in a `u64`.
    pub retry: Option<u64>,
}

/// Why a stream cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event's field lines went over the decoder's cap.
    #[error("SSE event exceeds the {limit}-byte limit")]
    EventTooLarge {
        /// The cap that was exceeded, in bytes.
        limit: usize,
    },
    /// A field line is not valid UTF-8.
    #[error("SSE field line is not valid UTF-8")]
    InvalidUtf8,
    /// The stream ended in the middle of a line or of an event.
    #[error("SSE stream ended inside an event")]
    Truncated,
}
