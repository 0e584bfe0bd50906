//! The AWS event-stream codec: AWS's published test vectors, a hand-built Bedrock frame,
//! round trips, split invariance and corruption detection as properties, the caps, and a
//! replay of the fuzz seed corpus.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;
use tollgate_sse::eventstream::{
    encode, EventStreamDecoder, EventStreamError, HeaderValue, Message, DEFAULT_MAX_MESSAGE_BYTES,
    MAX_HEADERS_BYTES,
};

/// Everything a stream decodes to: its messages and how it ended (the first error from
/// `feed`, else the result of `finish`).
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    messages: Vec<Message>,
    end: Result<(), EventStreamError>,
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, cap: usize) -> Decoded {
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
    Decoded {
        messages,
        end: decoder.finish(),
    }
}

fn decode(bytes: &[u8]) -> Decoded {
    decode_chunks([bytes], DEFAULT_MAX_MESSAGE_BYTES)
}

fn frame(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        encode(message, &mut out).unwrap();
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Cuts `bytes` at the given offsets (any order; duplicates give empty chunks).
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

/// Checks that the `points` cut, one byte per chunk and (for small inputs) every single cut
/// give what the uncut stream gives; returns that.
fn assert_split_invariant(bytes: &[u8], points: &[usize], cap: usize) -> Decoded {
    let whole = decode_chunks([bytes], cap);
    assert_eq!(decode_chunks(split_at_points(bytes, points), cap), whole);
    assert_eq!(decode_chunks(bytes.chunks(1), cap), whole);
    if bytes.len() <= 1024 {
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode_chunks([a, b], cap), whole, "cut at {cut}");
        }
    }
    whole
}

// === AWS's published test vectors ===

const PAYLOAD: &[u8] = b"{'foo':'bar'}";

#[test]
fn aws_vector_empty_message() {
    let wire = hex("00000010 00000000 05c248eb 7d98c8ff");
    let decoded = decode(&wire);
    assert_eq!(decoded.end, Ok(()));
    assert_eq!(decoded.messages, [Message::default()]);
    assert_eq!(frame(&decoded.messages), wire);
}

#[test]
fn aws_vector_payload_without_headers() {
    let wire = hex("0000001d 00000000 fd528c5a 7b27666f6f273a27626172277d c3653936");
    let decoded = decode(&wire);
    assert_eq!(decoded.end, Ok(()));
    assert_eq!(decoded.messages, [Message::new(PAYLOAD.to_vec())]);
    assert_eq!(frame(&decoded.messages), wire);
}

#[test]
fn aws_vector_int32_header() {
    let wire = hex(concat!(
        "0000002b 0000000e 348bec7b",
        "08 6576656e742d6964 04 0000a00c",
        "7b27666f6f273a27626172277d d3890285",
    ));
    let decoded = decode(&wire);
    assert_eq!(decoded.end, Ok(()));
    let expected = Message::new(PAYLOAD.to_vec()).with_header("event-id", HeaderValue::Int(0xa00c));
    assert_eq!(decoded.messages, [expected]);
    assert_eq!(frame(&decoded.messages), wire);
}

#[test]
fn aws_vector_one_string_header() {
    let wire = hex(concat!(
        "0000003d 00000020 07fd8396",
        "0c 636f6e74656e742d74797065 07 0010 6170706c69636174696f6e2f6a736f6e",
        "7b27666f6f273a27626172277d 8d9c08b1",
    ));
    let decoded = decode(&wire);
    assert_eq!(decoded.end, Ok(()));
    assert_eq!(decoded.messages.len(), 1);
    let message = &decoded.messages[0];
    assert_eq!(message.header_str("content-type"), Some("application/json"));
    assert_eq!(message.payload, PAYLOAD);
    assert_eq!(frame(&decoded.messages), wire);
}

#[test]
fn aws_vectors_that_must_fail() {
    let one_str_header = concat!(
        "0000003d 00000020 07fd8396",
        "0c 636f6e74656e742d74797065 07 0010 6170706c69636174696f6e2f6a736f6e",
        "7b27666f6f273a27626172277d 8d9c08b1",
    );
    // corrupted_headers: one byte of the header name changed.
    let corrupted_headers = hex(&one_str_header.replace("636f6e74656e742d", "636f6e74656e742b"));
    assert!(matches!(
        decode(&corrupted_headers).end,
        Err(EventStreamError::MessageChecksum { .. })
    ));
    // corrupted_header_len: the headers length field changed, the prelude CRC kept.
    let corrupted_header_len = hex(&one_str_header.replacen("00000020", "00000120", 1));
    assert!(matches!(
        decode(&corrupted_header_len).end,
        Err(EventStreamError::PreludeChecksum { .. })
    ));
    // corrupted_length: the total length field changed.
    let corrupted_length = hex("0100001d 00000000 fd528c5a 7b27666f6f273a27626172277d c3653936");
    let decoded = decode(&corrupted_length);
    assert_eq!(
        decoded.end,
        Err(EventStreamError::PreludeChecksum {
            computed: crc32(&corrupted_length[..8]),
            sent: 0xfd52_8c5a,
        })
    );
    // corrupted_payload: one payload byte changed.
    let corrupted_payload = hex("0000001d 00000000 fd528c5a 7b27666f6f273a27626172278d c3653936");
    assert!(matches!(
        decode(&corrupted_payload).end,
        Err(EventStreamError::MessageChecksum {
            sent: 0xc365_3936,
            ..
        })
    ));
}

/// Bitwise CRC-32 (IEEE), independent of the codec's, to check its checksums.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// === a hand-built frame ===

#[test]
fn bedrock_delta_frame_laid_out_by_hand() {
    let payload = br#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abc"}"#;
    let mut headers = Vec::new();
    for (name, value) in [
        (":event-type", "contentBlockDelta"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ] {
        headers.push(name.len() as u8);
        headers.extend_from_slice(name.as_bytes());
        headers.push(7);
        headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + headers.len() + payload.len() + 4;
    let mut wire = Vec::new();
    wire.extend_from_slice(&(total as u32).to_be_bytes());
    wire.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    wire.extend_from_slice(&crc32(&wire[..8]).to_be_bytes());
    wire.extend_from_slice(&headers);
    wire.extend_from_slice(payload);
    wire.extend_from_slice(&crc32(&wire).to_be_bytes());

    let decoded = decode(&wire);
    assert_eq!(decoded.end, Ok(()));
    let message = &decoded.messages[0];
    assert_eq!(message.header_str(":event-type"), Some("contentBlockDelta"));
    assert_eq!(
        message.header_str(":content-type"),
        Some("application/json")
    );
    assert_eq!(message.header_str(":message-type"), Some("event"));
    assert_eq!(message.header_str(":exception-type"), None);
    assert_eq!(message.payload, payload);

    let built = Message::new(payload.to_vec())
        .with_header(
            ":event-type",
            HeaderValue::String("contentBlockDelta".into()),
        )
        .with_header(
            ":content-type",
            HeaderValue::String("application/json".into()),
        )
        .with_header(":message-type", HeaderValue::String("event".into()));
    assert_eq!(frame(&[built]), wire);
}

#[test]
fn every_header_type_round_trips_with_its_wire_bytes() {
    let message = Message::new(b"x".to_vec())
        .with_header("t", HeaderValue::Bool(true))
        .with_header("f", HeaderValue::Bool(false))
        .with_header("b", HeaderValue::Byte(-2))
        .with_header("s", HeaderValue::Short(-300))
        .with_header("i", HeaderValue::Int(70_000))
        .with_header("l", HeaderValue::Long(-5_000_000_000))
        .with_header("y", HeaderValue::Bytes(vec![0, 255]))
        .with_header("z", HeaderValue::String("é".into()))
        .with_header("d", HeaderValue::Timestamp(1_700_000_000_123))
        .with_header("u", HeaderValue::Uuid([7; 16]));
    let wire = frame(std::slice::from_ref(&message));
    let mut expected_headers = hex(concat!(
        "01 74 00",
        "01 66 01",
        "01 62 02 fe",
        "01 73 03 fed4",
        "01 69 04 00011170",
        "01 6c 05 fffffffed5fa0e00",
        "01 79 06 0002 00ff",
        "01 7a 07 0002 c3a9",
        "01 64 08 0000018bcfe5687b",
        "01 75 09",
    ));
    expected_headers.extend_from_slice(&[7; 16]);
    assert_eq!(&wire[12..12 + expected_headers.len()], expected_headers);
    assert_eq!(
        u32::from_be_bytes(wire[4..8].try_into().unwrap()) as usize,
        expected_headers.len()
    );
    let decoded = decode(&wire);
    assert_eq!(decoded.end, Ok(()));
    assert_eq!(decoded.messages, [message]);
    assert_eq!(
        decoded.messages[0].header("i"),
        Some(&HeaderValue::Int(70_000))
    );
    assert_eq!(decoded.messages[0].header_str("i"), None);
}

#[test]
fn repeated_header_names_keep_their_order() {
    let message = Message::default()
        .with_header("a", HeaderValue::String("1".into()))
        .with_header("a", HeaderValue::String("2".into()));
    let decoded = decode(&frame(std::slice::from_ref(&message)));
    assert_eq!(decoded.messages, [message]);
    assert_eq!(decoded.messages[0].header_str("a"), Some("1"));
}

// === errors and caps ===

#[test]
fn truncated_stream_is_reported_and_decoder_resets() {
    let wire = frame(&[
        Message::new(b"hello".to_vec()),
        Message::new(b"world".to_vec()),
    ]);
    for cut in [1, 11, 12, 20, wire.len() - 1] {
        let mut decoder = EventStreamDecoder::new();
        let mut messages = Vec::new();
        decoder.feed(&wire[..cut], &mut messages).unwrap();
        assert!(!decoder.is_idle());
        assert_eq!(
            decoder.finish(),
            Err(EventStreamError::Truncated),
            "cut {cut}"
        );
        // The decoder is ready for a fresh stream.
        assert!(decoder.is_idle());
        let mut again = Vec::new();
        decoder.feed(&wire, &mut again).unwrap();
        assert_eq!(decoder.finish(), Ok(()));
        assert_eq!(again.len(), 2);
    }
}

#[test]
fn oversized_message_fails_on_its_prelude() {
    let big = Message::new(vec![b'x'; 1000]);
    let wire = frame(&[Message::new(b"ok".to_vec()), big]);
    let first_len = 18;
    let mut decoder = EventStreamDecoder::with_max_message_bytes(100);
    let mut messages = Vec::new();
    // The first message and only the prelude of the second: enough to refuse it.
    let err = decoder
        .feed(&wire[..first_len + 12], &mut messages)
        .unwrap_err();
    assert_eq!(
        err,
        EventStreamError::MessageTooLarge {
            length: 1016,
            limit: 100
        }
    );
    assert_eq!(messages, [Message::new(b"ok".to_vec())]);
    // A failed decoder keeps failing, and holds nothing.
    assert!(!decoder.is_idle());
    assert_eq!(decoder.feed(b"", &mut messages), Err(err.clone()));
    assert_eq!(decoder.finish(), Err(err));
}

#[test]
fn impossible_lengths_are_rejected() {
    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&headers.to_be_bytes());
        p.extend_from_slice(&crc32(&p).to_be_bytes());
        p
    }
    assert_eq!(
        decode(&prelude(15, 0)).end,
        Err(EventStreamError::InvalidLength {
            total: 15,
            headers: 0
        })
    );
    assert_eq!(
        decode(&prelude(20, 5)).end,
        Err(EventStreamError::InvalidLength {
            total: 20,
            headers: 5
        })
    );
    let headers = MAX_HEADERS_BYTES as u32 + 1;
    assert_eq!(
        decode(&prelude(headers + 16, headers)).end,
        Err(EventStreamError::HeadersTooLarge {
            length: MAX_HEADERS_BYTES + 1,
            limit: MAX_HEADERS_BYTES
        })
    );
}

#[test]
fn malformed_headers_are_rejected() {
    fn with_header_block(block: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        wire.extend_from_slice(&((16 + block.len()) as u32).to_be_bytes());
        wire.extend_from_slice(&(block.len() as u32).to_be_bytes());
        wire.extend_from_slice(&crc32(&wire).to_be_bytes());
        wire.extend_from_slice(block);
        wire.extend_from_slice(&crc32(&wire).to_be_bytes());
        wire
    }
    let cases: [(&[u8], EventStreamError); 6] = [
        (b"\x05ab", EventStreamError::InvalidHeader("name cut short")),
        (
            b"\x01a",
            EventStreamError::InvalidHeader("value type missing"),
        ),
        (b"\x01a\x0a", EventStreamError::UnknownHeaderType(10)),
        (
            b"\x01a\x04\x00\x01",
            EventStreamError::InvalidHeader("value cut short"),
        ),
        (
            b"\x01a\x07\x00\x02\xff\xfe",
            EventStreamError::InvalidHeader("string is not UTF-8"),
        ),
        (
            b"\x01\xff\x00",
            EventStreamError::InvalidHeader("name is not UTF-8"),
        ),
    ];
    for (block, err) in cases {
        assert_eq!(decode(&with_header_block(block)).end, Err(err), "{block:?}");
    }
}

#[test]
fn unencodable_messages_leave_the_output_alone() {
    let cases = [
        Message::default().with_header("n".repeat(256), HeaderValue::Bool(true)),
        Message::default().with_header("v", HeaderValue::String("v".repeat(65_536))),
        Message::default().with_header("v", HeaderValue::Bytes(vec![0; 65_536])),
        (0..3).fold(Message::default(), |m, i| {
            m.with_header(format!("h{i}"), HeaderValue::Bytes(vec![0; 60_000]))
        }),
    ];
    for message in cases {
        let mut out = b"kept".to_vec();
        assert!(matches!(
            encode(&message, &mut out),
            Err(EventStreamError::Unencodable(_))
        ));
        assert_eq!(out, b"kept");
    }
}

// === properties ===

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        any::<bool>().prop_map(HeaderValue::Bool),
        any::<i8>().prop_map(HeaderValue::Byte),
        any::<i16>().prop_map(HeaderValue::Short),
        any::<i32>().prop_map(HeaderValue::Int),
        any::<i64>().prop_map(HeaderValue::Long),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(HeaderValue::Bytes),
        ".{0,20}".prop_map(HeaderValue::String),
        any::<i64>().prop_map(HeaderValue::Timestamp),
        any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        proptest::collection::vec((".{0,12}", header_value()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(headers, payload)| Message { headers, payload })
}

proptest! {
    #[test]
    fn encoded_messages_decode_the_same_however_split(
        messages in proptest::collection::vec(message(), 0..5),
        points in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let wire = frame(&messages);
        let decoded = assert_split_invariant(&wire, &points, DEFAULT_MAX_MESSAGE_BYTES);
        prop_assert_eq!(decoded.end, Ok(()));
        prop_assert_eq!(frame(&decoded.messages), wire);
        prop_assert_eq!(decoded.messages, messages);
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_however_split(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        points in proptest::collection::vec(any::<usize>(), 0..8),
        cap in 16usize..200,
    ) {
        for cap in [DEFAULT_MAX_MESSAGE_BYTES, cap] {
            assert_split_invariant(&bytes, &points, cap);
        }
    }

    #[test]
    fn valid_prefix_then_garbage_keeps_the_prefix(
        messages in proptest::collection::vec(message(), 1..4),
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
        points in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = frame(&messages);
        wire.extend_from_slice(&garbage);
        let decoded = assert_split_invariant(&wire, &points, DEFAULT_MAX_MESSAGE_BYTES);
        prop_assert!(decoded.messages.len() >= messages.len());
        prop_assert_eq!(&decoded.messages[..messages.len()], &messages[..]);
    }

    #[test]
    fn any_changed_byte_is_detected(
        message in message(),
        at in any::<usize>(),
        xor in 1u8..,
    ) {
        let mut wire = frame(std::slice::from_ref(&message));
        let at = at % wire.len();
        wire[at] ^= xor;
        let decoded = decode_chunks([wire.as_slice()], DEFAULT_MAX_MESSAGE_BYTES);
        // The prelude CRC guards the lengths; a changed length can at most make the decoder
        // wait for bytes that never come. Never a wrong message.
        prop_assert!(decoded.end.is_err(), "{:?}", decoded);
        prop_assert!(decoded.messages.is_empty());
    }
}

// === fuzz seeds ===

#[test]
fn fuzz_seed_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/eventstream");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for cap in [DEFAULT_MAX_MESSAGE_BYTES, 64] {
            let decoded = assert_split_invariant(&bytes, &[7, 64, 65], cap);
            assert!(bytes.starts_with(&frame(&decoded.messages)));
        }
        seeds += 1;
    }
    assert!(seeds >= 3, "seed corpus missing from {}", dir.display());
}
