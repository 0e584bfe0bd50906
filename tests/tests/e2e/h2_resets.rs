//! HTTP/2 reset floods over h2c: a client that opens and cancels streams in a burst
//! ("rapid reset", CVE-2023-44487) or makes the gateway reset them by breaking flow control
//! ("MadeYouReset", CVE-2025-8671) gets GOAWAY `ENHANCE_YOUR_CALM` and its connection
//! closed, while a well-behaved HTTP/2 client on another connection is still served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_tests::*;

/// Streams each attacker opens; well past both reset budgets (20 and 100).
const BURST: u32 = 1000;

/// Longest any attack may take to end in GOAWAY.
const BOUND: Duration = Duration::from_secs(20);

/// A gateway serving h2c whose client limits are `limits` (indented YAML lines).
async fn h2c_gateway(limits: &str) -> (Gateway, Mock) {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let server = format!("  h2c: true\n  client:\n    limits:\n{limits}");
    let gw = Gateway::start_with_server(&two_mock_config(&a, &b, ""), &server).await;
    (gw, a)
}

/// A well-behaved HTTP/2 client: a chat call over its own h2c connection.
async fn legitimate_call(gw: &Gateway) {
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .json(&chat_body("model-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_rapid_reset_burst_ends_in_goaway() {
    // Only the pending-reset budget can end this connection.
    let (gw, _a) = h2c_gateway("      h2_max_error_resets: 1000000\n").await;
    legitimate_call(&gw).await;
    // Raw frames in one write, so that every cancel arrives before the gateway takes up
    // its stream, as in the attack (an h2 client library paces itself on the answers).
    let mut burst = preface();
    for i in 0..BURST {
        let stream = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, stream, &REQUEST_BLOCK));
        burst.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    let ended = attack(&gw, &burst).await;
    println!("rapid reset: {ended:?}");
    match ended {
        Ended::GoAway(code, debug) => {
            assert_eq!(code, ENHANCE_YOUR_CALM);
            assert_eq!(debug, "too_many_resets");
        }
        Ended::Reset => {}
        Ended::Closed => panic!("closed without GOAWAY"),
    }
    legitimate_call(&gw).await;
}

/// How the gateway ended an attacker's connection.
#[derive(Debug)]
enum Ended {
    /// GOAWAY with this error code and debug data.
    GoAway(u32, String),
    /// A TCP reset came first: the gateway closed with the attacker's frames still unread,
    /// and the kernel dropped what was in flight, the GOAWAY included.
    Reset,
    /// A clean close without GOAWAY.
    Closed,
}

fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// Sends `burst` on a new connection and reads until the gateway ends it.
async fn attack(gw: &Gateway, burst: &[u8]) -> Ended {
    let mut tcp = TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    // The gateway may close before reading it all.
    let _ = tcp.write_all(burst).await;
    let mut got = Vec::new();
    let reset = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return true,
            }
        }
    })
    .await
    .expect("the attacker's connection stayed open");
    // Walks the frames the gateway sent, for its GOAWAY: error code and debug data.
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        let payload = &got[(at + 9).min(got.len())..(at + 9 + len).min(got.len())];
        if got[at + 3] == GOAWAY && payload.len() >= 8 {
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            return Ended::GoAway(code, String::from_utf8_lossy(&payload[8..]).into_owned());
        }
        at += 9 + len;
    }
    if reset {
        Ended::Reset
    } else {
        Ended::Closed
    }
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_HEADERS: u8 = 0x4;
const END_STREAM_AND_HEADERS: u8 = 0x1 | END_HEADERS;
const CANCEL: u32 = 0x8;
/// HPACK from the static table: GET, http, "/", and :authority "gw" not indexed.
const REQUEST_BLOCK: [u8; 7] = [0x82, 0x86, 0x84, 0x01, 0x02, b'g', b'w'];
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn made_you_reset_ends_in_goaway() {
    // Only the error-reset budget can end this connection.
    let (gw, _a) = h2c_gateway("      h2_max_pending_resets: 1000000\n").await;
    let mut burst = preface();
    for i in 0..BURST {
        let stream = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_STREAM_AND_HEADERS,
            stream,
            &REQUEST_BLOCK,
        ));
        // Overflows the stream's send window: the gateway must reset the stream itself.
        burst.extend(frame(
            WINDOW_UPDATE,
            0,
            stream,
            &0x7fff_ffffu32.to_be_bytes(),
        ));
    }
    let ended = attack(&gw, &burst).await;
    println!("MadeYouReset: {ended:?}");
    match ended {
        Ended::GoAway(code, debug) => {
            assert_eq!(code, ENHANCE_YOUR_CALM);
            assert_eq!(debug, "too_many_internal_resets");
        }
        Ended::Reset => {}
        Ended::Closed => panic!("closed without GOAWAY"),
    }
    legitimate_call(&gw).await;
}
