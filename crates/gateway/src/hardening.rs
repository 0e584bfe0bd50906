//! Defences against hostile and broken clients, applied before the gateway acts on a
//! request.
//!
//! Pingora parses HTTP/1 leniently: it accepts bare-LF line endings, folds nothing but
//! passes obs-fold lines on, and when a request carries both `Content-Length` and
//! `Transfer-Encoding` it silently drops the former. An intermediary in front of the
//! gateway may frame such a request differently, which is how requests get smuggled. So
//! [`screen`] reads the raw header section and refuses every ambiguous form with 400 (and
//! too many or too large headers with 431), and [`close_after`] closes the connection after
//! any malformed request, so nothing pipelined behind it is ever read as a request.
//!
//! The body is read here too ([`read_body`]): capped in size, bounded by a total deadline
//! (Pingora's read timeout is per read, so a client trickling a byte at a time would hold
//! the connection for ever), and checked for UTF-8 and JSON nesting depth before serde
//! parses it. A `gzip` or `deflate` body is inflated first ([`inflate`]), never past the
//! body cap nor past `max_inflate_ratio` times its compressed size, so a compression bomb
//! costs the gateway no more memory or time than an uncompressed body of the cap's size.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tollgate_config::ClientLimitsConfig;
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_providers::Dialect;

use crate::metrics::Metrics;
use crate::proxy::{respond_json, RequestCtx};

/// Answers the request when its head must be refused; returns whether it did. Runs before
/// anything else looks at the request.
pub(crate) async fn screen(
    session: &mut Session,
    ctx: &mut RequestCtx,
    limits: &ClientLimitsConfig,
) -> bool {
    apply_connection_limits(session, limits);
    let Some((status, err)) = check_head(session, limits) else {
        return false;
    };
    // The connection may not be in sync any more: never read another request from it.
    session.set_keepalive(None);
    if session.req_header().uri.path().ends_with("/messages") {
        ctx.dialect = Dialect::Anthropic;
    }
    ctx.error = Some(err.kind.label());
    let body = match ctx.dialect {
        Dialect::OpenAi => err.openai_body(),
        Dialect::Anthropic => err.anthropic_body(),
    };
    respond_json(session, ctx, status, Bytes::from(body), &[]).await;
    true
}

/// Bounds the wait for the next request on a kept-alive connection (Pingora's default is
/// for ever) and the time a write to a client that does not read may take.
fn apply_connection_limits(session: &mut Session, limits: &ClientLimitsConfig) {
    let downstream = session.as_downstream_mut();
    // Only shortens keep-alive: a connection the client or HTTP/1.0 closes stays closed.
    if downstream.get_keepalive().is_some() {
        downstream.set_keepalive(Some(limits.idle_timeout.as_secs().max(1)));
    }
    downstream.set_write_timeout(Some(limits.write_timeout));
    downstream.set_min_send_rate(limits.min_send_rate);
}

/// After an error answer: a request the gateway could not read as meant closes its
/// connection, since whatever follows it on the connection cannot be trusted.
pub(crate) fn close_after(session: &mut Session, err: &GatewayError) {
    if matches!(
        err.kind,
        ErrorKind::InvalidRequest | ErrorKind::PayloadTooLarge
    ) {
        session.set_keepalive(None);
    }
}

/// The status and error a request head is refused with, if it is.
fn check_head(session: &Session, limits: &ClientLimitsConfig) -> Option<(u16, GatewayError)> {
    let header = session.req_header();
    let count = header.headers.len();
    if count > limits.max_headers {
        return Some((
            431,
            invalid(
                format!(
                    "the request has {count} header fields, more than the limit of {}",
                    limits.max_headers
                ),
                "too_many_headers",
            ),
        ));
    }
    if let Some(http1) = session.as_downstream().as_http1() {
        let raw = http1.get_headers_raw_bytes();
        if raw.len() > limits.max_header_bytes {
            return Some((431, header_too_large(raw.len(), limits)));
        }
        if let Some(problem) = framing_problem(&raw) {
            return Some((400, invalid(problem.message(), "malformed_request")));
        }
    } else {
        let size: usize = header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if size > limits.max_header_bytes {
            return Some((431, header_too_large(size, limits)));
        }
    }
    match body_coding(header) {
        Ok(_) => None,
        Err(other) => Some((
            415,
            invalid(
                format!(
                    "Content-Encoding '{other}' is not accepted; send the body uncompressed, \
                     gzip or deflate"
                ),
                "unsupported_content_encoding",
            ),
        )),
    }
}

fn invalid(message: String, code: &'static str) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidRequest, message).with_code(code)
}

fn header_too_large(size: usize, limits: &ClientLimitsConfig) -> GatewayError {
    invalid(
        format!(
            "the request header section is {size} bytes, more than the limit of {}",
            limits.max_header_bytes
        ),
        "headers_too_large",
    )
}

// === framing ===

/// A header-section form that HTTP/1 parsers disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingProblem {
    /// A line ends in LF without CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A line continues the previous one (obs-fold, RFC 9112 section 5.2).
    ObsFold,
    /// A control character (NUL, DEL, ...) outside line endings and tabs.
    ControlByte,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 section 6.1).
    LengthAndTransferEncoding,
    /// More than one `Content-Length` value.
    RepeatedContentLength,
}

impl FramingProblem {
    fn message(self) -> String {
        let what = match self {
            FramingProblem::BareLf => "a header line ends without CR",
            FramingProblem::BareCr => "a header line holds a bare CR",
            FramingProblem::ObsFold => "a header line is folded (obs-fold)",
            FramingProblem::ControlByte => "a header holds a control character",
            FramingProblem::LengthAndTransferEncoding => {
                "the request has both Content-Length and Transfer-Encoding"
            }
            FramingProblem::RepeatedContentLength => {
                "the request has several Content-Length values"
            }
        };
        format!("malformed request: {what}")
    }
}

/// The first ambiguity in a raw HTTP/1 request head (request line, headers and the blank
/// line that ends them), if any.
pub(crate) fn framing_problem(raw: &[u8]) -> Option<FramingProblem> {
    for (i, &byte) in raw.iter().enumerate() {
        match byte {
            b'\n' if i == 0 || raw[i - 1] != b'\r' => return Some(FramingProblem::BareLf),
            b'\r' if raw.get(i + 1) != Some(&b'\n') => return Some(FramingProblem::BareCr),
            b'\r' | b'\n' | b'\t' => {}
            0..=0x1f | 0x7f => return Some(FramingProblem::ControlByte),
            _ => {}
        }
    }
    let mut content_lengths = 0;
    let mut transfer_encoding = false;
    // The first line is the request line; the section ends with an empty line.
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Some(FramingProblem::ObsFold);
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(line);
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = &line[name.len().min(line.len())..];
            content_lengths += 1 + value.iter().filter(|&&b| b == b',').count();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        }
    }
    if content_lengths > 0 && transfer_encoding {
        return Some(FramingProblem::LengthAndTransferEncoding);
    }
    if content_lengths > 1 {
        return Some(FramingProblem::RepeatedContentLength);
    }
    None
}

// === body ===

/// Reads the whole request body, refusing more than `cap` bytes (before reading any when
/// the client declared a larger Content-Length) and a body that takes longer than
/// `limits.body_timeout` in all; inflates a compressed one within the same cap; then
/// checks it is UTF-8 JSON no deeper than `limits.max_json_depth`.
pub(crate) async fn read_body(
    session: &mut Session,
    cap: usize,
    limits: &ClientLimitsConfig,
) -> Result<Bytes, GatewayError> {
    let body = match tokio::time::timeout(limits.body_timeout, read_capped(session, cap)).await {
        Ok(body) => body?,
        Err(_) => {
            session.set_keepalive(None);
            return Err(body_timeout(limits.body_timeout));
        }
    };
    // The head was screened: an encoding other than these never gets here.
    let coding = body_coding(session.req_header()).unwrap_or(BodyCoding::Identity);
    let body = if coding == BodyCoding::Identity {
        body
    } else {
        let ratio = limits.max_inflate_ratio;
        // Inflating up to the cap is CPU work of tens of milliseconds: off the proxy's
        // worker threads.
        let inflated = tokio::task::spawn_blocking(move || inflate(&body, coding, cap, ratio))
            .await
            .map_err(|_| {
                GatewayError::new(
                    ErrorKind::Internal,
                    "the request body could not be inflated",
                )
            })
            .and_then(|r| r);
        if inflated.is_err() {
            session.set_keepalive(None);
        }
        inflated?
    };
    check_json_text(&body, limits.max_json_depth)?;
    Ok(body)
}

// === content codings ===

/// How a request body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyCoding {
    Identity,
    Gzip,
    /// RFC 9110's `deflate` is the zlib format; raw deflate streams, which some clients
    /// send under the same name, are accepted too.
    Deflate,
}

/// The body's coding, or the (lowercased) `Content-Encoding` that is not accepted. One
/// coding only: a stack such as `gzip, gzip` would multiply the inflation ratio.
fn body_coding(header: &pingora_http::RequestHeader) -> Result<BodyCoding, String> {
    let mut values = header
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter();
    let Some(first) = values.next() else {
        return Ok(BodyCoding::Identity);
    };
    let value = String::from_utf8_lossy(first.as_bytes())
        .trim()
        .to_ascii_lowercase();
    if values.next().is_some() {
        return Err(format!("{value}, ..."));
    }
    match value.as_str() {
        "" | "identity" => Ok(BodyCoding::Identity),
        "gzip" | "x-gzip" => Ok(BodyCoding::Gzip),
        "deflate" => Ok(BodyCoding::Deflate),
        _ => Err(value),
    }
}

/// Inflates `compressed` to at most `cap` bytes and at most `max_ratio` times its size,
/// whichever is less: 413 past either, without inflating more than one byte beyond it;
/// 400 for a body that is not valid in its coding.
pub(crate) fn inflate(
    compressed: &[u8],
    coding: BodyCoding,
    cap: usize,
    max_ratio: usize,
) -> Result<Bytes, GatewayError> {
    use std::io::Read;

    let by_ratio = compressed.len().saturating_mul(max_ratio);
    let limit = cap.min(by_ratio);
    let mut decoder: Box<dyn Read + '_> = match coding {
        BodyCoding::Identity => return Ok(Bytes::copy_from_slice(compressed)),
        BodyCoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        BodyCoding::Deflate if is_zlib(compressed) => {
            Box::new(flate2::read::ZlibDecoder::new(compressed))
        }
        BodyCoding::Deflate => Box::new(flate2::read::DeflateDecoder::new(compressed)),
    };
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let read = decoder
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut out);
    if let Err(err) = read {
        let name = if coding == BodyCoding::Gzip {
            "gzip"
        } else {
            "deflate"
        };
        return Err(invalid(
            format!("the request body is not valid {name}: {err}"),
            "invalid_content_encoding",
        ));
    }
    if out.len() <= limit {
        return Ok(Bytes::from(out));
    }
    let (message, code) = if limit == cap {
        (
            format!("the inflated request body is larger than the limit of {cap} bytes"),
            "request_too_large",
        )
    } else {
        (
            format!("the request body inflates to more than {max_ratio} times its compressed size"),
            "inflate_ratio_exceeded",
        )
    };
    Err(GatewayError::new(ErrorKind::PayloadTooLarge, message).with_code(code))
}

/// Whether a `deflate` body starts with a zlib header (RFC 1950: method 8, check bits).
fn is_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn body_timeout(limit: Duration) -> GatewayError {
    invalid(
        format!(
            "the request body did not arrive within {}",
            humantime::format_duration(limit)
        ),
        "request_body_timeout",
    )
}

async fn read_capped(session: &mut Session, cap: usize) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the limit of {cap} bytes"),
        )
        .with_code("request_too_large")
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > cap) {
        session.set_keepalive(None);
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(cap));
    loop {
        let chunk = session.read_request_body().await.map_err(|e| {
            GatewayError::invalid_request(format!(
                "could not read the request body: {}",
                e.etype().as_str()
            ))
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > cap {
            session.set_keepalive(None);
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Refuses a body that is not UTF-8, or whose JSON arrays and objects nest deeper than
/// `max_depth`: serde's own limit (128) is reached only after it has recursed that far,
/// and deep documents cost every later stage (guardrails, translation) more.
pub(crate) fn check_json_text(body: &[u8], max_depth: usize) -> Result<(), GatewayError> {
    if let Err(err) = std::str::from_utf8(body) {
        return Err(invalid(
            format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                err.valid_up_to()
            ),
            "invalid_utf8",
        ));
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(invalid(
                        format!("the request JSON nests deeper than {max_depth} levels"),
                        "json_too_deep",
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// === request-head deadline ===

/// Serves `A` (the proxy) with every client connection wrapped in a [`HeadDeadlineStream`],
/// so a request head must arrive whole within `limit` of its first byte, and counted in
/// the open-connections gauge while it lasts. With `per_address`, a connection from an
/// address that already holds that many is closed on arrival.
pub(crate) struct HeadDeadline<A> {
    inner: Arc<A>,
    limit: Duration,
    metrics: Arc<Metrics>,
    per_address: Option<AddressSlots>,
}

impl<A> HeadDeadline<A> {
    pub(crate) fn new(inner: A, limits: &ClientLimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(inner),
            limit: limits.header_timeout,
            metrics,
            per_address: limits
                .max_connections_per_address
                .map(|max| AddressSlots::new(max.get())),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _slot = match &self.per_address {
            Some(slots) => {
                let ip = stream
                    .get_socket_digest()
                    .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
                match ip.map(|ip| slots.take(ip)) {
                    Some(None) => {
                        self.metrics.connection_refused();
                        return None;
                    }
                    Some(Some(slot)) => Some(slot),
                    // Not an IP connection (a Unix socket): nothing to count it against.
                    None => None,
                }
            }
            None => None,
        };
        let _open = self.metrics.connection_opened();
        let wrapped: Stream = Box::new(HeadDeadlineStream::new(stream, self.limit));
        self.inner.process_new(wrapped, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Connections open now per client address, each at most `max`.
#[derive(Clone)]
struct AddressSlots {
    open: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

impl AddressSlots {
    fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max,
        }
    }

    /// One more connection from `ip`, held until the slot is dropped; `None` when `ip`
    /// already holds `max`.
    fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: self.clone(),
            ip,
        })
    }
}

struct AddressSlot {
    slots: AddressSlots,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            // Forgets the address with its last connection, so the map holds only the
            // addresses connected now.
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Where a connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadState {
    /// Waiting for the first byte of a request head (bounded by Pingora's read and
    /// keep-alive timeouts).
    Idle,
    /// Inside a request head: the deadline runs.
    InHead,
    /// Past the head (the body and the answer have their own limits).
    Past,
    /// HTTP/2: no HTTP/1 heads to watch.
    Off,
    /// The deadline passed: every further read fails.
    Expired,
}

/// A client connection whose request heads must each complete within `limit` of their
/// first byte: Pingora's header read timeout is per read, so without this a client
/// sending a byte every few seconds would hold the connection for ever.
#[derive(Debug)]
pub(crate) struct HeadDeadlineStream {
    inner: Stream,
    limit: Duration,
    state: HeadState,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The last bytes read while in a head, for a terminator split across reads.
    tail: Vec<u8>,
}

/// The end of an HTTP/1 request head.
const HEAD_END: &[u8] = b"\r\n\r\n";
/// What a request head reads as once its deadline has passed: invalid at any point of a
/// head, so Pingora refuses it as malformed.
const HEAD_EXPIRED: &[u8] = b"\0";
/// How an HTTP/2 connection starts (RFC 9113 section 3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

impl HeadDeadlineStream {
    fn new(inner: Stream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            state: HeadState::Idle,
            timer: Box::pin(tokio::time::sleep(limit)),
            tail: Vec::with_capacity(HEAD_END.len() * 2),
        }
    }

    /// Advances the state over bytes just read.
    fn observe(&mut self, new: &[u8]) {
        if new.is_empty() {
            return;
        }
        if self.state == HeadState::Idle {
            if new.starts_with(H2_PREFACE_START) {
                self.state = HeadState::Off;
                return;
            }
            self.state = HeadState::InHead;
            self.tail.clear();
            let deadline = tokio::time::Instant::now() + self.limit;
            self.timer.as_mut().reset(deadline);
        }
        if self.state != HeadState::InHead {
            return;
        }
        let keep = HEAD_END.len() - 1;
        let head = &new[..new.len().min(keep)];
        self.tail.extend_from_slice(head);
        let ended = self.tail.windows(HEAD_END.len()).any(|w| w == HEAD_END)
            || new.windows(HEAD_END.len()).any(|w| w == HEAD_END);
        if ended {
            self.state = HeadState::Past;
            return;
        }
        self.tail.clear();
        self.tail
            .extend_from_slice(&new[new.len().saturating_sub(keep)..]);
    }

    /// After bytes went out: a final answer ends the request, so the next byte read
    /// starts a new head. Interim `1xx` answers (100 Continue) do not.
    fn wrote(&mut self, buf: &[u8]) {
        if self.state == HeadState::Past && !buf.starts_with(b"HTTP/1.1 1") {
            self.state = HeadState::Idle;
        }
    }
}

impl AsyncRead for HeadDeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.state == HeadState::InHead && this.timer.as_mut().poll(cx).is_ready() {
            this.state = HeadState::Expired;
            // Pingora logs any error reading a request head at ERROR, one line per slow
            // client, except a malformed head, which it answers with 400 and logs at debug
            // before closing. So the deadline hands it a byte no request head may hold
            // anywhere (httparse refuses NUL in the method, target, version, field names
            // and values, and in place of a line feed) rather than an I/O error.
            if buf.remaining() > 0 {
                buf.put_slice(HEAD_EXPIRED);
                return Poll::Ready(Ok(()));
            }
        }
        if this.state == HeadState::Expired {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request head did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let was = this.state;
            this.observe(&buf.filled()[before..]);
            if was == HeadState::Idle && this.state == HeadState::InHead {
                // Registers the new deadline with this task.
                let _ = this.timer.as_mut().poll(cx);
            }
        }
        polled
    }
}

impl AsyncWrite for HeadDeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.wrote(&buf[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(first)) = (&polled, bufs.first()) {
            if *n > 0 {
                this.wrote(first);
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadlineStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadDeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadlineStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadlineStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadlineStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadDeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeadDeadlineStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_slots_and_gets_them_back() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let first = slots.take(a).expect("first slot");
        let second = slots.take(a).expect("second slot");
        assert!(
            slots.take(a).is_none(),
            "a third connection from one address"
        );
        assert!(slots.take(b).is_some(), "another address has its own slots");
        drop(first);
        let third = slots.take(a).expect("a slot freed by a closed connection");
        drop((second, third));
        assert!(
            slots.open.lock().is_empty(),
            "addresses without connections are forgotten"
        );
    }

    fn head(lines: &str) -> Vec<u8> {
        format!("POST /v1/chat/completions HTTP/1.1\r\n{lines}\r\n").into_bytes()
    }

    #[test]
    fn plain_heads_pass() {
        assert_eq!(
            framing_problem(&head("Host: a\r\nContent-Length: 5\r\nX-A: b\tc\r\n")),
            None
        );
        assert_eq!(
            framing_problem(&head("Host: a\r\nTransfer-Encoding: chunked\r\n")),
            None
        );
    }

    #[test]
    fn ambiguous_heads_are_named() {
        let cases: [(&[u8], FramingProblem); 8] = [
            (b"POST / HTTP/1.1\nHost: a\r\n\r\n", FramingProblem::BareLf),
            (
                b"POST / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
                FramingProblem::BareCr,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
                FramingProblem::ObsFold,
            ),
            (
                b"POST / HTTP/1.1\r\nX: a\0\r\n\r\n",
                FramingProblem::ControlByte,
            ),
            (
                b"POST / HTTP/1.1\r\nX: \x7f\r\n\r\n",
                FramingProblem::ControlByte,
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-length: 3\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
                FramingProblem::LengthAndTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                FramingProblem::RepeatedContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
                FramingProblem::RepeatedContentLength,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(framing_problem(raw), Some(want), "{}", raw.escape_ascii());
        }
    }

    #[test]
    fn json_depth_is_counted_outside_strings() {
        assert!(check_json_text(br#"{"a":[[1]]}"#, 3).is_ok());
        assert!(check_json_text(br#"{"a":[[[1]]]}"#, 3).is_err());
        assert!(check_json_text(br#"{"a":"[[[[[[\"{{{{"}"#, 1).is_ok());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            check_json_text(deep.as_bytes(), 64).unwrap_err().code,
            Some("json_too_deep")
        );
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let err = check_json_text(b"{\"a\":\"\xff\"}", 64).unwrap_err();
        assert_eq!(err.code, Some("invalid_utf8"));
        assert!(err.message.contains("offset 6"), "{}", err.message);
    }

    fn compress(coding: BodyCoding, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let level = flate2::Compression::best();
        match coding {
            BodyCoding::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            BodyCoding::Deflate => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            BodyCoding::Identity => data.to_vec(),
        }
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_inflate() {
        let json = br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
        for coding in [BodyCoding::Gzip, BodyCoding::Deflate, BodyCoding::Identity] {
            let body = compress(coding, json);
            assert_eq!(&inflate(&body, coding, 1 << 20, 100).unwrap()[..], json);
        }
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut raw, json).unwrap();
        let raw = raw.finish().unwrap();
        assert!(!is_zlib(&raw));
        assert_eq!(
            &inflate(&raw, BodyCoding::Deflate, 1 << 20, 100).unwrap()[..],
            json
        );
        // Concatenated gzip members are one body.
        let mut two = compress(BodyCoding::Gzip, b"{\"a\":");
        two.extend(compress(BodyCoding::Gzip, b"1}"));
        assert_eq!(
            &inflate(&two, BodyCoding::Gzip, 1024, 100).unwrap()[..],
            b"{\"a\":1}"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_cap_and_the_ratio() {
        let zeros = vec![b' '; 8 << 20];
        let bomb = compress(BodyCoding::Gzip, &zeros);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        // The cap is the tighter bound.
        let err = inflate(&bomb, BodyCoding::Gzip, 1 << 20, 10_000).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PayloadTooLarge);
        assert_eq!(err.code, Some("request_too_large"));
        // The ratio is.
        let err = inflate(&bomb, BodyCoding::Gzip, 32 << 20, 100).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PayloadTooLarge);
        assert_eq!(err.code, Some("inflate_ratio_exceeded"));
        // Exactly at the cap passes.
        let exact = compress(BodyCoding::Deflate, &zeros[..4096]);
        assert_eq!(
            inflate(&exact, BodyCoding::Deflate, 4096, 10_000)
                .unwrap()
                .len(),
            4096
        );
        assert!(inflate(&exact, BodyCoding::Deflate, 4095, 10_000).is_err());
    }

    #[test]
    fn corrupt_bodies_are_invalid_requests() {
        let mut body = compress(BodyCoding::Gzip, br#"{"a":"some text to compress"}"#);
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
        body.truncate(body.len() - 4);
        for (coding, bytes) in [
            (BodyCoding::Gzip, &body[..]),
            (BodyCoding::Gzip, &b"{\"not\":\"gzip\"}"[..]),
            (BodyCoding::Deflate, &b"\xff\xff\xff\xff"[..]),
        ] {
            let err = inflate(bytes, coding, 1 << 20, 100).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest);
            assert_eq!(
                err.code,
                Some("invalid_content_encoding"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn only_one_known_coding_is_accepted() {
        let with = |values: &[&str]| {
            let mut h = pingora_http::RequestHeader::build("POST", b"/", None).unwrap();
            for v in values {
                h.append_header("content-encoding", *v).unwrap();
            }
            body_coding(&h)
        };
        assert_eq!(with(&[]), Ok(BodyCoding::Identity));
        assert_eq!(with(&["identity"]), Ok(BodyCoding::Identity));
        assert_eq!(with(&[" GZIP "]), Ok(BodyCoding::Gzip));
        assert_eq!(with(&["x-gzip"]), Ok(BodyCoding::Gzip));
        assert_eq!(with(&["Deflate"]), Ok(BodyCoding::Deflate));
        assert_eq!(with(&["br"]), Err("br".to_owned()));
        assert_eq!(with(&["gzip, gzip"]), Err("gzip, gzip".to_owned()));
        assert!(with(&["gzip", "gzip"]).is_err());
    }
}
