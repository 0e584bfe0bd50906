//! Events must not depend on where the stream is cut into chunks: property tests over
//! encoded event lists and arbitrary bytes, and a replay of the fuzz seed corpus.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use tollgate_sse::{encode, SseDecoder, SseError, SseEvent, DEFAULT_MAX_EVENT_BYTES};

/// Everything a stream decodes to: its events, whether a keepalive was seen, and how it ended
/// (the first error from `feed`, else the result of `finish`).
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    events: Vec<SseEvent>,
    keepalive: bool,
    end: Result<(), SseError>,
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, cap: usize) -> Decoded {
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
    Decoded {
        events,
        keepalive,
        end: decoder.finish(),
    }
}

/// Cuts `bytes` at the given offsets (any order, duplicates give empty chunks).
fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        chunks.push(&bytes[start..point]);
        start = point;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// Checks that every way of cutting `bytes` gives what the uncut stream gives: the `points`
/// cut, then (for small inputs) one byte per chunk and every single cut. Returns the result.
fn assert_split_invariant(bytes: &[u8], points: &[usize], cap: usize) -> Decoded {
    let whole = decode_chunks([bytes], cap);
    assert_eq!(decode_chunks(split_at_points(bytes, points), cap), whole);
    if bytes.len() <= 2048 {
        assert_eq!(decode_chunks(bytes.chunks(1), cap), whole, "byte by byte");
        for at in 0..=bytes.len() {
            let (head, tail) = bytes.split_at(at);
            assert_eq!(decode_chunks([head, tail], cap), whole, "cut at {at}");
        }
    }
    whole
}

/// Re-framing decoded events and decoding them again gives the same events.
fn assert_reframes(events: &[SseEvent]) {
    let mut bytes = Vec::new();
    for event in events {
        encode(event, &mut bytes);
    }
    let again = decode_chunks([bytes.as_slice()], usize::MAX);
    assert_eq!(again.events, events);
    assert_eq!(again.end, Ok(()));
}

/// What an event reads as after a trip through SSE: data line breaks become `\n`, line breaks
/// in one-line fields become spaces, an id with NUL is dropped.
fn as_decoded(event: &SseEvent) -> SseEvent {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    SseEvent {
        event: event.event.as_deref().map(one_line),
        data: event.data.replace("\r\n", "\n").replace('\r', "\n"),
        id: event
            .id
            .as_deref()
            .filter(|id| !id.contains('\0'))
            .map(one_line),
        retry: event.retry,
    }
}

#[derive(Debug, Clone, Copy)]
enum LineEnd {
    Lf,
    CrLf,
    Cr,
}

/// Re-ends each line of LF-framed `bytes` with the chosen endings (cycled), and puts a
/// comment line before the lines whose `comments` flag is set.
fn with_line_ends(bytes: &[u8], ends: &[LineEnd], comments: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let mut last_was_cr = false;
    let mut push_line = |out: &mut Vec<u8>, line: &[u8], end: LineEnd| {
        // CR then an LF-ended empty line would read as one CRLF: the blank line would vanish.
        let end = match end {
            LineEnd::Lf if last_was_cr && line.is_empty() => LineEnd::CrLf,
            end => end,
        };
        out.extend_from_slice(line);
        out.extend_from_slice(match end {
            LineEnd::Lf => b"\n",
            LineEnd::CrLf => b"\r\n",
            LineEnd::Cr => b"\r",
        });
        last_was_cr = matches!(end, LineEnd::Cr);
    };
    let Some(framed) = bytes.strip_suffix(b"\n") else {
        return out;
    };
    for (i, line) in framed.split(|&b| b == b'\n').enumerate() {
        let end = ends[i % ends.len()];
        if comments.get(i).copied().unwrap_or(false) {
            push_line(&mut out, b": keepalive", end);
        }
        push_line(&mut out, line, end);
    }
    out
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,24}", "[ab: \r\n]{0,16}", "\\PC{0,8}"]
}

fn sse_event() -> impl Strategy<Value = SseEvent> {
    (
        prop::option::of(text()),
        text(),
        prop::option::of(text()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(event, data, id, retry)| SseEvent {
            event,
            data,
            id,
            retry,
        })
}

fn line_end() -> impl Strategy<Value = LineEnd> {
    prop_oneof![Just(LineEnd::Lf), Just(LineEnd::CrLf), Just(LineEnd::Cr)]
}

proptest! {
    #[test]
    fn encoded_events_decode_back_whatever_the_split(
        events in prop::collection::vec(sse_event(), 0..6),
        ends in prop::collection::vec(line_end(), 1..4),
        comments in prop::collection::vec(any::<bool>(), 0..16),
        bom in any::<bool>(),
        points in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut framed = Vec::new();
        for event in &events {
            encode(event, &mut framed);
        }
        let mut bytes = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        bytes.extend(with_line_ends(&framed, &ends, &comments));
        let points: Vec<usize> = points.iter().map(|p| p.index(bytes.len() + 1)).collect();

        let decoded = assert_split_invariant(&bytes, &points, DEFAULT_MAX_EVENT_BYTES);
        let expected: Vec<SseEvent> = events.iter().map(as_decoded).collect();
        prop_assert_eq!(decoded.events, expected);
        prop_assert_eq!(decoded.end, Ok(()));
    }

    #[test]
    fn arbitrary_bytes_decode_alike_whatever_the_split(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"data:event:id:retry: \r\n\xEF\xBB\xBF\xFFab".to_vec()),
                1 => any::<u8>(),
            ],
            0..200,
        ),
        cap in prop_oneof![Just(DEFAULT_MAX_EVENT_BYTES), 0..40usize],
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let decoded = assert_split_invariant(&bytes, &points, cap);
        assert_reframes(&decoded.events);
    }
}

#[test]
fn fuzz_seed_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sse_decoder");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for cap in [DEFAULT_MAX_EVENT_BYTES, 64] {
            let decoded = assert_split_invariant(&bytes, &[7, 64, 65], cap);
            assert_reframes(&decoded.events);
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "seed corpus missing from {}", dir.display());
}
