//! Fuzz target for the SSE decoder: any bytes, cut into chunks at points derived from the
//! input's first bytes, must decode without panicking to exactly what the uncut input gives,
//! and the decoded events must survive re-framing unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_sse::{encode, SseDecoder, SseError, SseEvent, DEFAULT_MAX_EVENT_BYTES};

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    events: Vec<SseEvent>,
    keepalive: bool,
    end: Result<(), SseError>,
}

fn decode<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, cap: usize) -> Decoded {
    let mut decoder = SseDecoder::with_max_event_bytes(cap);
    let mut events = Vec::new();
    let mut keepalive = false;
    for chunk in chunks {
        let fed = decoder.feed(chunk, &mut events);
        keepalive |= decoder.take_keepalive();
        if let Err(err) = fed {
            return Decoded {
                events,
                keepalive,
                end: Err(err),
            };
        }
    }
    let end = decoder.finish();
    Decoded {
        events,
        keepalive,
        end,
    }
}

/// Chunk lengths from a small xorshift generator seeded by the input's first bytes, so a
/// plain transcript in the corpus is both the stream and its own cutting pattern.
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
    let small_cap = 8 + (seed >> 32) as usize % 256;
    for cap in [DEFAULT_MAX_EVENT_BYTES, small_cap] {
        let whole = decode([input], cap);
        assert_eq!(decode(chunks(input, seed), cap), whole, "cap {cap}");
        assert_eq!(
            decode(input.chunks(1), cap),
            whole,
            "byte by byte, cap {cap}"
        );

        let mut framed = Vec::new();
        for event in &whole.events {
            encode(event, &mut framed);
        }
        let again = decode([framed.as_slice()], usize::MAX);
        assert_eq!(again.events, whole.events);
        assert_eq!(again.end, Ok(()));
    }
});
