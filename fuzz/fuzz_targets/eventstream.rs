//! Fuzz target for the AWS event-stream decoder: any bytes, cut into chunks at points
//! derived from the input's first bytes, must decode without panicking to exactly what the
//! uncut input gives, and the decoded messages must re-encode to the bytes they came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_sse::eventstream::{
    encode, EventStreamDecoder, EventStreamError, Message, DEFAULT_MAX_MESSAGE_BYTES,
};

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    messages: Vec<Message>,
    end: Result<(), EventStreamError>,
}

fn decode<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, cap: usize) -> Decoded {
    let mut decoder = EventStreamDecoder::with_max_message_bytes(cap);
    let mut messages = Vec::new();
    for chunk in chunks {
        if let Err(err) = decoder.feed(chunk, &mut messages) {
            return Decoded {
                messages,
                end: Err(err),
            };
        }
    }
    let end = decoder.finish();
    Decoded { messages, end }
}

/// Chunk lengths from a small xorshift generator seeded by the input's first bytes, so a
/// captured stream in the corpus is both the stream and its own cutting pattern.
fn chunks(input: &[u8], seed: u64) -> Vec<&[u8]> {
    let max_len = 1 + (seed % 97) as usize;
    let mut state = seed | 1;
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (1 + (state % max_len as u64) as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let seed = input
        .iter()
        .take(8)
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let small_cap = 16 + (seed >> 32) as usize % 256;
    for cap in [DEFAULT_MAX_MESSAGE_BYTES, small_cap] {
        let whole = decode([input], cap);
        assert_eq!(decode(chunks(input, seed), cap), whole, "cap {cap}");
        assert_eq!(
            decode(input.chunks(1), cap),
            whole,
            "byte by byte, cap {cap}"
        );

        // The format has one encoding per message: what was decoded is a prefix of the input.
        let mut framed = Vec::new();
        for message in &whole.messages {
            assert_eq!(encode(message, &mut framed), Ok(()));
        }
        assert!(input.starts_with(&framed));
    }
});
