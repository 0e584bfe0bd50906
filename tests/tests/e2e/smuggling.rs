//! Request smuggling and malformed HTTP/1: a corpus of raw requests generated here, each
//! sent over its own TCP connection. Most cases hide a complete, authenticated request
//! (marked `SMUGGLED-`) where a parser that misframes the case would read it as the next
//! request; once the case is answered, a follow-up request (`Connection: close`) rides
//! the same connection. Every case must be rejected with a 4xx, have its connection
//! closed, or be served with framing that smuggles nothing; the upstream must never see a
//! smuggled request, and after a rejected case the connection must answer nothing more.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_tests::*;

/// How long one case may take from connect to the gateway closing the connection.
const CASE_DEADLINE: Duration = Duration::from_secs(10);
/// Cases in flight at once.
const PARALLEL: usize = 16;
/// The marker every smuggled request carries in its prompt.
const MARKER: &str = "SMUGGLED-";
/// The marker of the follow-up request (as long as `MARKER`, so lengths stay right).
const FOLLOW_UP: &str = "FOLLOWUP-";
/// How long to wait for the answer to a case before sending the follow-up anyway.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The body of the front request: a chat call the gateway would serve.
const FRONT: &str = r#"{"model":"model-a","messages":[{"role":"user","content":"front"}]}"#;

struct Case {
    name: String,
    bytes: Vec<u8>,
}

/// A well-formed, authenticated chat request whose prompt carries `MARKER` and `id`.
fn smuggled(id: usize) -> Vec<u8> {
    let body =
        format!(r#"{{"model":"model-a","messages":[{{"role":"user","content":"{MARKER}{id}"}}]}}"#);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A front request: `request_line`, the auth and content-type headers, then `headers`
/// (raw lines, each ending with CRLF unless the case says otherwise), then `body`.
fn front(request_line: &[u8], headers: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(request_line);
    out.extend_from_slice(b"\r\nHost: gw\r\n");
    out.extend_from_slice(format!("Authorization: Bearer {TEST_KEY}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Type: application/json\r\n");
    out.extend_from_slice(headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

const POST: &[u8] = b"POST /v1/chat/completions HTTP/1.1";

/// Transfer-Encoding header lines, plain and obfuscated, without their final CRLF.
fn te_variants() -> Vec<(&'static str, Vec<u8>)> {
    let v: Vec<(&str, &[u8])> = vec![
        ("te-plain", b"Transfer-Encoding: chunked"),
        ("te-capital", b"Transfer-Encoding: Chunked"),
        ("te-upper", b"Transfer-Encoding: CHUNKED"),
        ("te-mixed-case", b"transfer-encoding: cHuNkEd"),
        ("te-name-upper", b"TRANSFER-ENCODING: chunked"),
        ("te-no-space", b"Transfer-Encoding:chunked"),
        ("te-two-spaces", b"Transfer-Encoding:  chunked"),
        ("te-trailing-space", b"Transfer-Encoding: chunked "),
        ("te-tab", b"Transfer-Encoding:\tchunked"),
        ("te-vtab", b"Transfer-Encoding: \x0bchunked"),
        ("te-formfeed", b"Transfer-Encoding: \x0cchunked"),
        ("te-prefixed", b"Transfer-Encoding: xchunked"),
        ("te-truncated", b"Transfer-Encoding: chunk"),
        (
            "te-chunked-identity",
            b"Transfer-Encoding: chunked, identity",
        ),
        (
            "te-identity-chunked",
            b"Transfer-Encoding: identity, chunked",
        ),
        ("te-gzip-chunked", b"Transfer-Encoding: gzip, chunked"),
        ("te-chunked-twice", b"Transfer-Encoding: chunked, chunked"),
        ("te-quoted", b"Transfer-Encoding: \"chunked\""),
        ("te-param", b"Transfer-Encoding: chunked;q=1"),
        ("te-identity", b"Transfer-Encoding: identity"),
        ("te-leading-comma", b"Transfer-Encoding: ,chunked"),
        ("te-trailing-comma", b"Transfer-Encoding: chunked,"),
        (
            "te-dup-chunked-identity",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        ),
        (
            "te-dup-identity-chunked",
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
        ),
        ("te-space-before-colon", b"Transfer-Encoding : chunked"),
        ("te-underscore", b"Transfer_Encoding: chunked"),
        (
            "te-obs-fold-name",
            b"X-Pad: x\r\n Transfer-Encoding: chunked",
        ),
        (
            "te-obs-fold-tab",
            b"X-Pad: x\r\n\tTransfer-Encoding: chunked",
        ),
        ("te-obs-fold-value", b"Transfer-Encoding:\r\n chunked"),
        ("te-nul-after", b"Transfer-Encoding: chunked\x00"),
        ("te-nul-inside", b"Transfer-Encoding: ch\x00unked"),
        ("te-nul-name", b"Transfer-Encoding\x00: chunked"),
        ("te-bare-cr", b"Transfer-Encoding: chunked\r"),
        ("te-cr-inside", b"Transfer-Encoding: ch\runked"),
        ("te-non-ascii", b"Transfer-Encoding: \xffchunked"),
        ("te-lf-only", b"Transfer-Encoding: chunked\n"),
    ];
    v.into_iter().map(|(n, b)| (n, b.to_vec())).collect()
}

/// CL.TE, TE.CL and TE-only layouts for every Transfer-Encoding variant, on HTTP/1.1,
/// and the main ones on HTTP/1.0.
fn transfer_encoding_cases(out: &mut Vec<(String, Vec<u8>)>) {
    for (name, te) in te_variants() {
        // CL.TE: Content-Length covers an empty chunked body and the smuggled request.
        let hidden = smuggled(out.len());
        let mut body = b"0\r\n\r\n".to_vec();
        body.extend_from_slice(&hidden);
        let cl = format!("Content-Length: {}\r\n", body.len()).into_bytes();
        let te_line = [te.as_slice(), b"\r\n"].concat();
        out.push((
            format!("cl-te/{name}"),
            front(POST, &[cl.as_slice(), &te_line].concat(), &body),
        ));
        out.push((
            format!("te-cl/{name}"),
            front(POST, &[te_line.as_slice(), &cl].concat(), &body),
        ));
        // TE.CL: a chunk holds the smuggled request; Content-Length stops before it.
        let hidden = smuggled(out.len());
        let mut body = format!("{:x}\r\n", hidden.len()).into_bytes();
        body.extend_from_slice(&hidden);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let cl = b"Content-Length: 4\r\n".to_vec();
        out.push((
            format!("te-short-cl/{name}"),
            front(POST, &[te_line.as_slice(), &cl].concat(), &body),
        ));
        // TE alone, the chunk holding the front body, on HTTP/1.0 (which has no chunked
        // framing: RFC 9112 section 6.1 says to treat it as faulty).
        let mut body = format!("{:x}\r\n{FRONT}\r\n0\r\n\r\n", FRONT.len()).into_bytes();
        body.extend_from_slice(&smuggled(out.len()));
        out.push((
            format!("http10-te/{name}"),
            front(
                b"POST /v1/chat/completions HTTP/1.0",
                &[te_line.as_slice(), b"Connection: keep-alive\r\n"].concat(),
                &body,
            ),
        ));
    }
}

/// Header lines from the front body's length and the length with the smuggled request.
type HeaderOf = Box<dyn Fn(usize, usize) -> String>;

/// Content-Length variants: the front body is followed by a smuggled request, and each
/// value is ambiguous, malformed, or stops the body before the smuggled request.
fn content_length_cases(out: &mut Vec<(String, Vec<u8>)>) {
    let variants: Vec<(&str, HeaderOf)> = vec![
        (
            "dup-short-long",
            Box::new(|s, l| format!("Content-Length: {s}\r\nContent-Length: {l}\r\n")),
        ),
        (
            "dup-long-short",
            Box::new(|s, l| format!("Content-Length: {l}\r\nContent-Length: {s}\r\n")),
        ),
        (
            "list-short-long",
            Box::new(|s, l| format!("Content-Length: {s}, {l}\r\n")),
        ),
        (
            "list-long-short",
            Box::new(|s, l| format!("Content-Length: {l}, {s}\r\n")),
        ),
        (
            "dup-identical",
            Box::new(|s, _| format!("Content-Length: {s}\r\nContent-Length: {s}\r\n")),
        ),
        (
            "list-identical",
            Box::new(|s, _| format!("Content-Length: {s}, {s}\r\n")),
        ),
        ("plus", Box::new(|s, _| format!("Content-Length: +{s}\r\n"))),
        (
            "minus",
            Box::new(|s, _| format!("Content-Length: -{s}\r\n")),
        ),
        (
            "hex",
            Box::new(|s, _| format!("Content-Length: 0x{s:x}\r\n")),
        ),
        (
            "decimal-point",
            Box::new(|s, _| format!("Content-Length: {s}.0\r\n")),
        ),
        (
            "exponent",
            Box::new(|_, _| "Content-Length: 1e2\r\n".into()),
        ),
        (
            "suffix",
            Box::new(|s, _| format!("Content-Length: {s}a\r\n")),
        ),
        (
            "inner-space",
            Box::new(|s, l| format!("Content-Length: {s} {l}\r\n")),
        ),
        ("empty", Box::new(|_, _| "Content-Length: \r\n".into())),
        (
            "overflow",
            Box::new(|_, _| "Content-Length: 99999999999999999999999999\r\n".into()),
        ),
        (
            "u64-max",
            Box::new(|_, _| format!("Content-Length: {}\r\n", u64::MAX)),
        ),
        ("nul", Box::new(|s, _| format!("Content-Length: {s}\0\r\n"))),
        (
            "vtab",
            Box::new(|s, _| format!("Content-Length:\x0b{s}\r\n")),
        ),
        (
            "space-before-colon",
            Box::new(|s, _| format!("Content-Length : {s}\r\n")),
        ),
        (
            "obs-fold-value",
            Box::new(|s, _| format!("Content-Length:\r\n {s}\r\n")),
        ),
        (
            "obs-fold-second",
            Box::new(|s, l| format!("Content-Length: {s}\r\n Content-Length: {l}\r\n")),
        ),
        ("lf-only", Box::new(|s, _| format!("Content-Length: {s}\n"))),
        (
            "bare-cr",
            Box::new(|s, _| format!("Content-Length: {s}\rX-Pad: x\r\n")),
        ),
        (
            "non-ascii-digit",
            Box::new(|_, _| "Content-Length: ٥\r\n".into()),
        ),
    ];
    for (name, header) in variants {
        let hidden = smuggled(out.len());
        let mut body = FRONT.as_bytes().to_vec();
        body.extend_from_slice(&hidden);
        let headers = header(FRONT.len(), body.len());
        out.push((format!("cl/{name}"), front(POST, headers.as_bytes(), &body)));
    }
}

/// Chunked bodies whose framing is malformed; the front body sits in the chunk.
fn chunk_cases(out: &mut Vec<(String, Vec<u8>)>) {
    let f = FRONT;
    let h = format!("{:x}", FRONT.len());
    let variants: Vec<(&str, String)> = vec![
        ("lf-after-size", format!("{h}\n{f}\r\n0\r\n\r\n")),
        ("lf-after-data", format!("{h}\r\n{f}\n0\r\n\r\n")),
        ("lf-after-last", format!("{h}\r\n{f}\r\n0\n\n")),
        ("lf-only", format!("{h}\n{f}\n0\n\n")),
        ("lf-in-extension", format!("{h};a\nb\r\n{f}\r\n0\r\n\r\n")),
        (
            "lf-in-quoted-ext",
            format!("{h};a=\"\n\"\r\n{f}\r\n0\r\n\r\n"),
        ),
        ("lf-in-last-ext", format!("{h}\r\n{f}\r\n0;a\n\r\n\r\n")),
        ("cr-in-extension", format!("{h};a\rb\r\n{f}\r\n0\r\n\r\n")),
        ("nul-in-extension", format!("{h};a\0b\r\n{f}\r\n0\r\n\r\n")),
        ("bare-cr-after-size", format!("{h}\r{f}\r\n0\r\n\r\n")),
        ("cr-cr-lf", format!("{h}\r\r\n{f}\r\n0\r\n\r\n")),
        ("hex-prefix", format!("0x{h}\r\n{f}\r\n0\r\n\r\n")),
        ("plus", format!("+{h}\r\n{f}\r\n0\r\n\r\n")),
        ("minus", format!("-{h}\r\n{f}\r\n0\r\n\r\n")),
        ("leading-space", format!(" {h}\r\n{f}\r\n0\r\n\r\n")),
        (
            "underscore",
            format!("{}_{}\r\n{f}\r\n0\r\n\r\n", &h[..1], &h[1..]),
        ),
        ("not-hex", format!("zz\r\n{f}\r\n0\r\n\r\n")),
        ("empty-size", format!("\r\n{f}\r\n0\r\n\r\n")),
        ("overflow-17", format!("1{h:0>16}\r\n{f}\r\n0\r\n\r\n")),
        ("u64-max", format!("FFFFFFFFFFFFFFFF\r\n{f}\r\n0\r\n\r\n")),
        (
            "huge",
            format!("FFFFFFFFFFFFFFFFFFFFFFFF\r\n{f}\r\n0\r\n\r\n"),
        ),
        ("data-overrun", format!("{h}\r\n{f}XX\r\n0\r\n\r\n")),
        ("missing-data-crlf", format!("{h}\r\n{f}0\r\n\r\n")),
        ("nul-in-size", format!("{h}\0\r\n{f}\r\n0\r\n\r\n")),
        ("nul-in-last", format!("{h}\r\n{f}\r\n0\0\r\n\r\n")),
        (
            "trailer-lf-only",
            format!("{h}\r\n{f}\r\n0\r\nX-T: a\n\r\n"),
        ),
        (
            "trailer-obs-fold",
            format!("{h}\r\n{f}\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
        ),
        (
            "trailer-no-colon",
            format!("{h}\r\n{f}\r\n0\r\nbad trailer\r\n\r\n"),
        ),
        (
            "trailer-nul",
            format!("{h}\r\n{f}\r\n0\r\nX-T: a\0\r\n\r\n"),
        ),
        (
            "huge-extension",
            format!("{h};{}\r\n{f}\r\n0\r\n\r\n", "a".repeat(64 * 1024)),
        ),
    ];
    for (name, chunked) in variants {
        let mut body = chunked.into_bytes();
        body.extend_from_slice(&smuggled(out.len()));
        out.push((
            format!("chunk/{name}"),
            front(POST, b"Transfer-Encoding: chunked\r\n", &body),
        ));
    }
}

/// Request lines, header sections and header sizes that are malformed.
fn head_cases(out: &mut Vec<(String, Vec<u8>)>) {
    let request_lines: Vec<(&str, &[u8])> = vec![
        ("version-1.2", b"POST /v1/chat/completions HTTP/1.2"),
        ("version-2.0", b"POST /v1/chat/completions HTTP/2.0"),
        ("version-0.9", b"POST /v1/chat/completions HTTP/0.9"),
        ("version-lower", b"POST /v1/chat/completions http/1.1"),
        ("version-short", b"POST /v1/chat/completions HTTP/1"),
        ("version-11", b"POST /v1/chat/completions HTTP/11"),
        ("version-suffix", b"POST /v1/chat/completions HTTP/1.1x"),
        ("version-missing", b"POST /v1/chat/completions"),
        (
            "version-extra-token",
            b"POST /v1/chat/completions HTTP/1.1 x",
        ),
        ("method-space", b"PO ST /v1/chat/completions HTTP/1.1"),
        ("method-nul", b"POST\0 /v1/chat/completions HTTP/1.1"),
        ("method-tab", b"PO\tST /v1/chat/completions HTTP/1.1"),
        ("method-empty", b" /v1/chat/completions HTTP/1.1"),
        ("method-lowercase", b"post /v1/chat/completions HTTP/1.1"),
        ("method-unknown", b"SMUGGLE /v1/chat/completions HTTP/1.1"),
        (
            "method-non-ascii",
            b"P\xc3\x96ST /v1/chat/completions HTTP/1.1",
        ),
        ("double-space", b"POST  /v1/chat/completions HTTP/1.1"),
        ("trailing-space", b"POST /v1/chat/completions HTTP/1.1 "),
        ("nul-in-path", b"POST /v1/chat\0/completions HTTP/1.1"),
        ("cr-in-path", b"POST /v1/chat\r/completions HTTP/1.1"),
        ("space-in-path", b"POST /v1/chat /completions HTTP/1.1"),
        ("tab-separator", b"POST\t/v1/chat/completions\tHTTP/1.1"),
        ("lf-only", b"POST /v1/chat/completions HTTP/1.1\n"),
        ("leading-space", b" POST /v1/chat/completions HTTP/1.1"),
        (
            "absolute-other-host",
            b"POST http://evil.example/v1/chat/completions HTTP/1.1",
        ),
        ("asterisk", b"POST * HTTP/1.1"),
    ];
    for (name, line) in request_lines {
        let hidden = smuggled(out.len());
        let mut body = FRONT.as_bytes().to_vec();
        body.extend_from_slice(&hidden);
        let cl = format!("Content-Length: {}\r\n", body.len());
        out.push((format!("line/{name}"), front(line, cl.as_bytes(), &body)));
    }

    let cl = |n: usize| format!("Content-Length: {n}\r\n");
    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("header-nul-value", b"X-A: a\0b\r\n".to_vec()),
        ("header-nul-name", b"X-\0A: b\r\n".to_vec()),
        ("header-bare-cr", b"X-A: a\rb\r\n".to_vec()),
        ("header-obs-fold", b"X-A: a\r\n b\r\n".to_vec()),
        ("header-obs-fold-tab", b"X-A: a\r\n\tb\r\n".to_vec()),
        ("header-no-colon", b"X-A a\r\n".to_vec()),
        ("header-empty-name", b": a\r\n".to_vec()),
        ("header-space-in-name", b"X A: a\r\n".to_vec()),
        ("header-lf-only", b"X-A: a\n".to_vec()),
        ("header-del", b"X-A: a\x7fb\r\n".to_vec()),
        ("header-escape", b"X-A: a\x1bb\r\n".to_vec()),
        ("header-name-non-ascii", b"X-\xc3\x96: a\r\n".to_vec()),
        (
            "header-oversize-value",
            format!("X-A: {}\r\n", "a".repeat(2 * 1024 * 1024)).into_bytes(),
        ),
        (
            "header-too-many",
            (0..2000)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
                .into_bytes(),
        ),
        ("host-duplicate", b"Host: other.example\r\n".to_vec()),
        ("host-with-space", b"Host : gw\r\n".to_vec()),
    ];
    for (name, extra) in headers {
        let hidden = smuggled(out.len());
        let mut body = FRONT.as_bytes().to_vec();
        body.extend_from_slice(&hidden);
        let head = [extra.as_slice(), cl(body.len()).as_bytes()].concat();
        out.push((format!("head/{name}"), front(POST, &head, &body)));
    }
}

/// The whole corpus.
fn corpus() -> Vec<Case> {
    let mut raw = Vec::new();
    transfer_encoding_cases(&mut raw);
    content_length_cases(&mut raw);
    chunk_cases(&mut raw);
    head_cases(&mut raw);
    raw.into_iter()
        .map(|(name, bytes)| Case { name, bytes })
        .collect()
}

/// The request sent on the same connection once the case has been answered: served only
/// if the case was, since a rejected request closes its connection. Unlike the smuggled
/// requests it is marked `FOLLOWUP-`.
fn follow_up(id: usize) -> Vec<u8> {
    let mut bytes = smuggled(id);
    let at = bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER.as_bytes())
        .unwrap();
    bytes.splice(at..at + MARKER.len(), FOLLOW_UP.bytes());
    // It asks to close, so a connection still in sync ends promptly after it.
    let host = b"Host: gw\r\n";
    let at = bytes.windows(host.len()).position(|w| w == host).unwrap() + host.len();
    bytes.splice(at..at, b"Connection: close\r\n".iter().copied());
    bytes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The gateway answered the case with a 4xx and went no further.
    Rejected,
    /// The gateway closed the connection without an answer.
    Closed,
    /// The gateway served the case; the framing it chose smuggled nothing.
    Accepted,
    /// The connection was still open at the deadline.
    Held,
}

/// The status codes of the responses in `bytes`, in order (each framed by its
/// Content-Length, as every answer of the gateway is).
fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut found = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
        let Some(code) = head
            .strip_prefix("http/1.1 ")
            .or_else(|| head.strip_prefix("http/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|c| c.parse().ok())
        else {
            break;
        };
        found.push(code);
        bytes = &bytes[(end + 4 + content_length(&head)).min(bytes.len())..];
    }
    found
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `got` holds a whole response (head and Content-Length body).
fn answered(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    got.len() >= end + 4 + content_length(&head)
}

/// Reads into `got` until `done(got)`, the connection closes (`true`), or `until`.
async fn read_until(
    stream: &mut TcpStream,
    got: &mut Vec<u8>,
    until: Instant,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    while !done(got) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return false,
        }
    }
    false
}

/// Sends the case, waits for its answer, then sends the follow-up on the same connection
/// and reads until the gateway closes it.
async fn run_case(addr: &str, id: usize, case: &Case) -> (Outcome, Vec<u16>) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may close while we write (a rejected head); that is an answer too.
    let _ = stream.write_all(&case.bytes).await;
    let mut got = Vec::new();
    let mut closed = read_until(&mut stream, &mut got, started + ANSWER_WAIT, answered).await;
    if !closed {
        let _ = stream.write_all(&follow_up(id)).await;
        closed = read_until(&mut stream, &mut got, started + CASE_DEADLINE, |_| false).await;
    }
    let codes = statuses(&got);
    let outcome = match codes.first() {
        _ if !closed => Outcome::Held,
        None => Outcome::Closed,
        Some(code) if (400..500).contains(code) => Outcome::Rejected,
        Some(_) => Outcome::Accepted,
    };
    (outcome, codes)
}

#[tokio::test]
async fn smuggling_corpus_is_rejected_and_never_reaches_the_upstream() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, "")).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let cases = corpus();
    assert!(cases.len() >= 200, "only {} cases", cases.len());

    let results: Vec<(usize, Outcome, Vec<u16>)> = futures::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| {
            let addr = addr.clone();
            async move {
                let (outcome, codes) = run_case(&addr, i, case).await;
                (i, outcome, codes)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;

    // A control: a well-formed request gets its follow-up answered, so the
    // harness does see requests that ride a connection.
    let control = Case {
        name: "control".into(),
        bytes: front(
            POST,
            format!("Content-Length: {}\r\n", FRONT.len()).as_bytes(),
            FRONT.as_bytes(),
        ),
    };
    let control_id = cases.len();
    let (outcome, codes) = run_case(&addr, control_id, &control).await;
    assert_eq!((outcome, codes), (Outcome::Accepted, vec![200, 200]));

    let bodies: Vec<String> = a
        .requests()
        .await
        .into_iter()
        .chain(b.requests().await)
        .map(|r| r["body"].to_string())
        .collect();
    let seen: Vec<&String> = bodies.iter().filter(|b| b.contains(MARKER)).collect();
    // Follow-ups served, by case id: only after an accepted case.
    let followed: Vec<usize> = bodies
        .iter()
        .filter_map(|b| {
            let at = b.find(FOLLOW_UP)? + FOLLOW_UP.len();
            let digits: String = b[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    assert!(
        followed.contains(&control_id),
        "the control's follow-up was not served"
    );
    let followed: Vec<usize> = followed
        .into_iter()
        .filter(|&id| id != control_id)
        .collect();
    let count = |o: Outcome| results.iter().filter(|r| r.1 == o).count();
    let (rejected, closed, accepted, held) = (
        count(Outcome::Rejected),
        count(Outcome::Closed),
        count(Outcome::Accepted),
        count(Outcome::Held),
    );
    // After a rejected case, nothing more is answered on its connection.
    let rejected_then_served: Vec<&str> = results
        .iter()
        .filter(|r| r.1 != Outcome::Accepted && (r.2.len() > 1 || followed.contains(&r.0)))
        .map(|r| cases[r.0].name.as_str())
        .collect();
    println!("smuggling corpus: {} cases", cases.len());
    println!("| outcome | cases |");
    println!("|---|---|");
    println!("| rejected with 4xx | {rejected} |");
    println!("| closed without an answer | {closed} |");
    println!("| accepted and framed correctly | {accepted} |");
    println!("| held open past {CASE_DEADLINE:?} | {held} |");
    println!("| smuggled requests seen upstream | {} |", seen.len());
    println!(
        "| follow-ups served after an accepted case | {} |",
        followed.len()
    );
    for (i, outcome, codes) in &results {
        if *outcome != Outcome::Rejected && *outcome != Outcome::Closed {
            println!("  {:<40} {outcome:?} {codes:?}", cases[*i].name);
        }
    }
    assert!(
        seen.is_empty(),
        "smuggled requests reached the upstream: {seen:?}"
    );
    assert_eq!(held, 0, "connections held open");
    assert!(
        rejected_then_served.is_empty(),
        "connections answered past a rejected request: {rejected_then_served:?}"
    );
}
