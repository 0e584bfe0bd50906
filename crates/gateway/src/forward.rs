//! Drives one request's attempt plan against upstreams: picks endpoint and key, sends the
//! translated request with Pingora's connector, and relays the answer. Failures are
//! retried or failed over only while no byte has reached the client; a stream that breaks
//! after that ends with a well-formed error event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::ErrorType;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use serde_json::{Map, Value};
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_providers::openai::{self, ChatRequest, EmbeddingsRequest, StreamPayload};
use tollgate_providers::{classify_upstream_error, Operation, UpstreamErrorClass, UpstreamRequest};
use tollgate_routing::{
    AttemptRecord, Attempts, EndpointPick, Failure, Plan, ProviderPool, TimeoutKind,
};
use tollgate_sse::{SseDecoder, SseEvent};

use crate::proxy::{respond_error, retry_after_secs, Gateway, RequestCtx};
use crate::snapshot::Snapshot;

/// Largest upstream error body read to classify and relay it; providers' error bodies are
/// a few hundred bytes, and a bigger one is cut rather than buffered.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Largest non-streamed upstream response body. Completions are rarely over a few MiB;
/// embeddings of large batches can reach tens of MiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Stream events held back before the first generated output (role-only chunks and
/// similar), so an error that arrives before any output can still fail over. Past this
/// many bytes the gateway commits to the attempt and starts relaying.
const MAX_HELD_BACK_BYTES: usize = 64 * 1024;

/// Longest wait for a pooled upstream connection to idle before it is closed.
const UPSTREAM_IDLE_KEEPALIVE: Duration = Duration::from_secs(60);

pub enum ParsedBody {
    Chat(ChatRequest),
    Embeddings(EmbeddingsRequest),
}

impl ParsedBody {
    pub fn model(&self) -> &str {
        match self {
            ParsedBody::Chat(r) => r.model(),
            ParsedBody::Embeddings(r) => r.model(),
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            ParsedBody::Chat(r) => r.stream(),
            ParsedBody::Embeddings(_) => false,
        }
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        match self {
            ParsedBody::Chat(r) => r.metadata(),
            ParsedBody::Embeddings(r) => r.metadata(),
        }
    }

    pub fn prompt_text(&self, out: &mut String) {
        match self {
            ParsedBody::Chat(r) => r.prompt_text(out),
            ParsedBody::Embeddings(r) => r.prompt_text(out),
        }
    }

    fn upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        match self {
            ParsedBody::Chat(r) => r.to_upstream_body(upstream_model),
            ParsedBody::Embeddings(r) => r.to_upstream_body(upstream_model),
        }
    }
}

/// How one attempt ended.
enum Attempt {
    /// The response was relayed to the client (completely, or a stream ended with an error
    /// event after it had started): the request is over.
    Answered,
    /// The upstream answered with a client error (4xx other than 429): relayed as is.
    Rejected { status: u16, body: Bytes },
    /// Nothing reached the client; the plan may try again.
    Failed(Failure),
    /// The client went away.
    ClientGone,
}

pub struct Exchange<'a> {
    pub gateway: &'a Gateway,
    pub snapshot: &'a Arc<Snapshot>,
    pub op: Operation,
    pub body: &'a ParsedBody,
    pub plan: &'a Plan,
}

impl Exchange<'_> {
    pub async fn run(
        self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let plan = self.plan;
        let deadline = Instant::now() + plan.timeouts.total;
        let mut attempts = Attempts::new(plan);
        let mut last: Option<Failure> = None;
        let mut avoid: Vec<(usize, usize)> = Vec::new();
        loop {
            // The thread-local RNG must not live across an await point.
            let next = attempts.next(last.as_ref(), &mut rand::rng());
            let Some(next) = next else { break };
            if Instant::now() + next.wait >= deadline {
                last = Some(Failure::Timeout(TimeoutKind::Total));
                break;
            }
            if !next.wait.is_zero() {
                tokio::time::sleep(next.wait).await;
            }
            let candidate = &plan.candidates[next.candidate];
            ctx.model = Some(candidate.model.clone());
            ctx.attempts += 1;
            let Some(pool) = self.snapshot.upstreams.provider(&candidate.provider) else {
                last = Some(Failure::Other);
                continue;
            };
            let now = Instant::now();
            let avoid_here: Vec<usize> = avoid
                .iter()
                .filter(|(c, _)| *c == next.candidate)
                .map(|(_, e)| *e)
                .collect();
            let Some(endpoint) = pool.pick_endpoint(&avoid_here, now) else {
                let failure = Failure::Connect;
                attempts.record(AttemptRecord {
                    candidate: next.candidate,
                    endpoint: None,
                    failure: Some(failure.clone()),
                });
                last = Some(failure);
                continue;
            };
            let key = match pool.pick_key(now) {
                Ok(key) => key,
                Err(until) => {
                    let failure = Failure::Status {
                        code: 429,
                        retry_after: Some(until.saturating_duration_since(now)),
                    };
                    attempts.record(AttemptRecord {
                        candidate: next.candidate,
                        endpoint: Some(endpoint.index),
                        failure: Some(failure.clone()),
                    });
                    last = Some(failure);
                    continue;
                }
            };
            let headers = self
                .snapshot
                .provider_headers
                .get(&*candidate.provider)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let request = openai::upstream_request(
                self.op,
                &endpoint.path_prefix,
                key.as_ref().map(|k| &*k.secret),
                headers,
                self.body.upstream_body(&candidate.upstream_model),
            );
            let guard = pool.start(endpoint.index);
            let started = Instant::now();
            let outcome = self
                .attempt(session, ctx, pool, &endpoint, request, deadline, started)
                .await;
            drop(guard);
            let now = Instant::now();
            match outcome {
                Attempt::Answered => {
                    self.gateway.metrics.attempt(&candidate.provider, None);
                    ctx.fallback = next.candidate > 0;
                    attempts.record(AttemptRecord {
                        candidate: next.candidate,
                        endpoint: Some(endpoint.index),
                        failure: None,
                    });
                    return Ok(());
                }
                Attempt::ClientGone => {
                    ctx.error = Some("client_gone");
                    return Ok(());
                }
                Attempt::Rejected { status, body } => {
                    let failure = Failure::Status {
                        code: status,
                        retry_after: None,
                    };
                    self.gateway
                        .metrics
                        .attempt(&candidate.provider, Some(&failure));
                    relay_rejection(session, ctx, status, body).await;
                    return Ok(());
                }
                Attempt::Failed(failure) => {
                    self.gateway
                        .metrics
                        .attempt(&candidate.provider, Some(&failure));
                    match &failure {
                        Failure::Status {
                            code: 429,
                            retry_after,
                        } => {
                            if let Some(key) = &key {
                                let wait = retry_after.unwrap_or(DEFAULT_KEY_COOLDOWN);
                                pool.cool_key(key.index, now + wait);
                            }
                        }
                        Failure::ContextTooLong | Failure::Other => {}
                        _ => pool.record_failure(endpoint.index, now),
                    }
                    avoid.push((next.candidate, endpoint.index));
                    attempts.record(AttemptRecord {
                        candidate: next.candidate,
                        endpoint: Some(endpoint.index),
                        failure: Some(failure.clone()),
                    });
                    tracing::warn!(request_id = %ctx.id, model = %candidate.model,
                        provider = %candidate.provider, endpoint = endpoint.index,
                        failure = ?failure, "upstream attempt failed");
                    last = Some(failure);
                }
            }
        }
        Err(exhausted(&attempts, last.as_ref()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        pool: &ProviderPool,
        endpoint: &EndpointPick,
        request: UpstreamRequest,
        deadline: Instant,
        started: Instant,
    ) -> Attempt {
        let timeouts = &self.plan.timeouts;
        let peer = match peer_for(endpoint, timeouts.connect).await {
            Some(p) => p,
            None => return Attempt::Failed(Failure::Connect),
        };
        let connector = &self.gateway.connector;
        let (mut upstream, _reused) =
            match tokio::time::timeout(timeouts.connect, connector.get_http_session(&peer)).await {
                Err(_) => return Attempt::Failed(Failure::Timeout(TimeoutKind::Connect)),
                Ok(Err(e)) => return Attempt::Failed(connect_failure(e.etype())),
                Ok(Ok(s)) => s,
            };
        upstream.set_write_timeout(Some(timeouts.idle));
        upstream.set_read_timeout(Some(timeouts.first_token));

        let Some(header) = request_header(endpoint, &request, ctx) else {
            return Attempt::Failed(Failure::Other);
        };
        let sent = async {
            upstream.write_request_header(Box::new(header)).await?;
            upstream
                .write_request_body(Bytes::from(request.body), true)
                .await?;
            upstream.finish_request_body().await?;
            upstream.read_response_header().await
        };
        match tokio::time::timeout_at(deadline.into(), sent).await {
            Err(_) => return Attempt::Failed(Failure::Timeout(TimeoutKind::Total)),
            Ok(Err(e)) => return Attempt::Failed(read_failure(e.etype(), false)),
            Ok(Ok(())) => {}
        }
        let Some(status) = upstream.response_header().map(|h| h.status.as_u16()) else {
            return Attempt::Failed(Failure::Other);
        };
        let retry_after = upstream.response_header().and_then(parse_retry_after);
        upstream.set_read_timeout(Some(timeouts.idle));

        if status >= 400 {
            let body = match read_all(&mut upstream, MAX_ERROR_BODY_BYTES, deadline).await {
                Ok(b) | Err(ReadAllError::TooLarge(b)) => b,
                Err(ReadAllError::Failed(f)) => return Attempt::Failed(f),
            };
            return match classify_upstream_error(status, &body) {
                UpstreamErrorClass::RateLimited => Attempt::Failed(Failure::Status {
                    code: 429,
                    retry_after,
                }),
                UpstreamErrorClass::Server => Attempt::Failed(Failure::Status {
                    code: status,
                    retry_after,
                }),
                UpstreamErrorClass::ContextTooLong => Attempt::Failed(Failure::ContextTooLong),
                UpstreamErrorClass::Auth => Attempt::Failed(Failure::Status {
                    code: status,
                    retry_after: None,
                }),
                UpstreamErrorClass::Client => Attempt::Rejected { status, body },
            };
        }

        let is_stream = self.body.stream()
            && upstream
                .response_header()
                .and_then(|h| h.headers.get(http::header::CONTENT_TYPE))
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if is_stream {
            return self
                .relay_stream(session, ctx, pool, endpoint, upstream, deadline, started)
                .await;
        }

        let body = match read_all(&mut upstream, MAX_RESPONSE_BYTES, deadline).await {
            Ok(b) => b,
            Err(ReadAllError::TooLarge(_)) => return Attempt::Failed(Failure::Other),
            Err(ReadAllError::Failed(f)) => return Attempt::Failed(f),
        };
        pool.record_success(endpoint.index, started.elapsed());
        connector
            .release_http_session(upstream, &peer, Some(UPSTREAM_IDLE_KEEPALIVE))
            .await;
        let Some(header) = response_header(ctx, status, "application/json", Some(body.len()))
        else {
            return Attempt::Failed(Failure::Other);
        };
        if session
            .write_response_header(Box::new(header), false)
            .await
            .is_err()
            || session.write_response_body(Some(body), true).await.is_err()
        {
            return Attempt::ClientGone;
        }
        Attempt::Answered
    }

    #[allow(clippy::too_many_arguments)]
    async fn relay_stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        pool: &ProviderPool,
        endpoint: &EndpointPick,
        mut upstream: ClientSession,
        deadline: Instant,
        started: Instant,
    ) -> Attempt {
        let timeouts = &self.plan.timeouts;
        upstream.set_read_timeout(Some(timeouts.first_token));
        let _active = self.gateway.metrics.stream_started();
        let mut relay = StreamRelay::new();
        let mut events = Vec::new();
        let mut first_byte = true;
        let end = loop {
            let read =
                tokio::time::timeout_at(deadline.into(), upstream.read_response_body()).await;
            let chunk = match read {
                Err(_) => break StreamEnd::Broken(Failure::Timeout(TimeoutKind::Total)),
                Ok(Err(e)) => break StreamEnd::Broken(read_failure(e.etype(), !first_byte)),
                Ok(Ok(None)) => break StreamEnd::Finished,
                Ok(Ok(Some(chunk))) => chunk,
            };
            if first_byte {
                first_byte = false;
                pool.record_success(endpoint.index, started.elapsed());
                upstream.set_read_timeout(Some(timeouts.idle));
            }
            if relay.decoder.feed(&chunk, &mut events).is_err() {
                break StreamEnd::Broken(Failure::Other);
            }
            for event in events.drain(..) {
                if relay.push(&event) {
                    break;
                }
            }
            if let Some(failure) = relay.in_stream_error.take() {
                break StreamEnd::Broken(failure);
            }
            if relay.committed() && !relay.out.is_empty() {
                if let Err(gone) = relay.flush(session, ctx).await {
                    return gone;
                }
            }
        };
        let end = match end {
            StreamEnd::Finished if relay.decoder.finish().is_err() || !relay.saw_done => {
                StreamEnd::Broken(Failure::Status {
                    code: 502,
                    retry_after: None,
                })
            }
            other => other,
        };
        match end {
            StreamEnd::Finished => {
                if let Err(gone) = relay.flush(session, ctx).await {
                    return gone;
                }
                if session.write_response_body(None, true).await.is_err() {
                    return Attempt::ClientGone;
                }
                Attempt::Answered
            }
            StreamEnd::Broken(failure) if !relay.header_sent => Attempt::Failed(failure),
            StreamEnd::Broken(failure) => {
                let message = match &failure {
                    Failure::Timeout(kind) => format!("upstream stream timed out ({kind:?})"),
                    _ => "upstream stream ended unexpectedly".to_owned(),
                };
                tracing::warn!(request_id = %ctx.id, failure = ?failure, "stream broke after it started");
                ctx.error = Some("stream_broken");
                relay.out.clear();
                tollgate_sse::encode_data(
                    &openai::stream_error_data(&message, "api_error", "upstream_stream_error"),
                    &mut relay.out,
                );
                if let Err(gone) = relay.flush(session, ctx).await {
                    return gone;
                }
                let _ = session.write_response_body(None, true).await;
                Attempt::Answered
            }
        }
    }
}

enum StreamEnd {
    Finished,
    Broken(Failure),
}

/// Re-frames upstream SSE events for the client, holding back lifecycle-only events until
/// the first generated output (see [`MAX_HELD_BACK_BYTES`]).
struct StreamRelay {
    decoder: SseDecoder,
    out: Vec<u8>,
    has_output: bool,
    header_sent: bool,
    saw_done: bool,
    in_stream_error: Option<Failure>,
}

impl StreamRelay {
    fn new() -> Self {
        Self {
            decoder: SseDecoder::new(),
            out: Vec::new(),
            has_output: false,
            header_sent: false,
            saw_done: false,
            in_stream_error: None,
        }
    }

    fn committed(&self) -> bool {
        self.has_output || self.out.len() > MAX_HELD_BACK_BYTES
    }

    /// Queues one upstream event for the client; true when the stream must stop. An error
    /// event is not relayed: it ends the attempt (failing over if nothing was sent yet,
    /// else as a stream error).
    fn push(&mut self, event: &SseEvent) -> bool {
        match openai::classify_stream_data(&event.data) {
            StreamPayload::Error { .. } => {
                self.in_stream_error = Some(Failure::Status {
                    code: 502,
                    retry_after: None,
                });
                return true;
            }
            StreamPayload::Done => self.saw_done = true,
            StreamPayload::Chunk { has_output, .. } => self.has_output |= has_output,
            StreamPayload::Unknown => {}
        }
        tollgate_sse::encode(event, &mut self.out);
        false
    }

    async fn flush(&mut self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Attempt> {
        if !self.header_sent {
            let mut header =
                response_header(ctx, 200, "text/event-stream", None).ok_or(Attempt::ClientGone)?;
            let _ = header.insert_header("cache-control", "no-cache");
            if session
                .write_response_header(Box::new(header), false)
                .await
                .is_err()
            {
                return Err(Attempt::ClientGone);
            }
            self.header_sent = true;
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.out));
        session
            .write_response_body(Some(chunk), false)
            .await
            .map_err(|_| Attempt::ClientGone)
    }
}

/// The head of a response the gateway relays: status, content type, length when known,
/// the request id and the logical model that served it. Records the status for the log.
fn response_header(
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
) -> Option<ResponseHeader> {
    ctx.status = status;
    ctx.first_byte = Some(Instant::now());
    let mut header = ResponseHeader::build(status, Some(5)).ok()?;
    header.insert_header("content-type", content_type).ok()?;
    if let Some(len) = content_length {
        header
            .insert_header("content-length", len.to_string())
            .ok()?;
    }
    header.insert_header("x-request-id", ctx.id.as_str()).ok()?;
    if let Some(model) = &ctx.model {
        header.insert_header("x-tollgate-model", &**model).ok()?;
    }
    Some(header)
}

/// Cool-down for a key answered with 429 and no Retry-After.
const DEFAULT_KEY_COOLDOWN: Duration = Duration::from_secs(1);

async fn relay_rejection(session: &mut Session, ctx: &mut RequestCtx, status: u16, body: Bytes) {
    let looks_like_error = serde_json::from_slice::<Value>(&body)
        .ok()
        .is_some_and(|v| v.get("error").is_some());
    if looks_like_error {
        ctx.error = Some("upstream_rejected");
        crate::proxy::respond_json(session, ctx, status, body, &[]).await;
    } else {
        let err = GatewayError::new(
            ErrorKind::InvalidRequest,
            format!("the provider rejected the request with status {status}"),
        );
        let mut err = err;
        err.code = Some("upstream_rejected");
        respond_error(session, ctx, &err).await;
    }
}

/// The error after every attempt failed, summarising the attempts.
fn exhausted(attempts: &Attempts, last: Option<&Failure>) -> GatewayError {
    let summary = attempts.summary();
    match last {
        Some(Failure::Timeout(_)) => {
            GatewayError::new(ErrorKind::Timeout, format!("upstream timed out: {summary}"))
                .with_code("upstream_timeout")
        }
        Some(Failure::Status {
            code: 429,
            retry_after,
        }) => {
            let err = GatewayError::new(
                ErrorKind::RateLimited,
                format!("every upstream is rate limited: {summary}"),
            )
            .with_code("upstream_rate_limited");
            match retry_after {
                Some(wait) => err.with_retry_after(retry_after_secs(*wait).max(1)),
                None => err.with_retry_after(1),
            }
        }
        Some(Failure::Connect) => GatewayError::new(
            ErrorKind::Unavailable,
            format!("no upstream could be reached: {summary}"),
        )
        .with_code("upstream_unavailable"),
        Some(Failure::ContextTooLong) => GatewayError::new(
            ErrorKind::InvalidRequest,
            format!("the prompt does not fit any model of the route: {summary}"),
        )
        .with_code("context_length_exceeded")
        .with_param("messages"),
        _ => GatewayError::new(ErrorKind::BadGateway, format!("upstream failed: {summary}"))
            .with_code("upstream_error"),
    }
}

async fn peer_for(endpoint: &EndpointPick, connect: Duration) -> Option<HttpPeer> {
    let addr = match endpoint.addr {
        Some(addr) => addr,
        None => crate::resolve::resolve(&endpoint.host, endpoint.port).await?,
    };
    let mut peer = HttpPeer::new(addr, endpoint.tls, endpoint.host.to_string());
    peer.options.connection_timeout = Some(connect);
    peer.options.total_connection_timeout = Some(connect);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_KEEPALIVE);
    let _ = peer.reuse_hash();
    Some(peer)
}

fn request_header(
    endpoint: &EndpointPick,
    request: &UpstreamRequest,
    ctx: &RequestCtx,
) -> Option<RequestHeader> {
    let mut header = RequestHeader::build(
        "POST",
        request.path.as_bytes(),
        Some(6 + request.headers.len()),
    )
    .ok()?;
    let default_port = if endpoint.tls { 443 } else { 80 };
    let host = if endpoint.port == default_port {
        endpoint.host.to_string()
    } else if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    };
    header.insert_header("host", host).ok()?;
    header
        .insert_header("content-length", request.body.len().to_string())
        .ok()?;
    header.insert_header("x-request-id", ctx.id.as_str()).ok()?;
    header
        .insert_header(
            "user-agent",
            concat!("tollgate/", env!("CARGO_PKG_VERSION")),
        )
        .ok()?;
    for (name, value) in &request.headers {
        header.insert_header(*name, value.as_str()).ok()?;
    }
    for (name, value) in &request.extra {
        header.insert_header(name.clone(), value.as_str()).ok()?;
    }
    Some(header)
}

enum ReadAllError {
    TooLarge(Bytes),
    Failed(Failure),
}

async fn read_all(
    upstream: &mut ClientSession,
    cap: usize,
    deadline: Instant,
) -> Result<Bytes, ReadAllError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), upstream.read_response_body()).await {
            Err(_) => return Err(ReadAllError::Failed(Failure::Timeout(TimeoutKind::Total))),
            Ok(Err(e)) => return Err(ReadAllError::Failed(read_failure(e.etype(), true))),
            Ok(Ok(None)) => return Ok(Bytes::from(body)),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > cap {
                    let room = cap - body.len();
                    body.extend_from_slice(&chunk[..room]);
                    return Err(ReadAllError::TooLarge(Bytes::from(body)));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

fn connect_failure(etype: &ErrorType) -> Failure {
    match etype {
        ErrorType::ConnectTimedout => Failure::Timeout(TimeoutKind::Connect),
        _ => Failure::Connect,
    }
}

fn read_failure(etype: &ErrorType, started: bool) -> Failure {
    match etype {
        ErrorType::ReadTimedout if started => Failure::Timeout(TimeoutKind::Idle),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Failure::Timeout(TimeoutKind::FirstToken)
        }
        ErrorType::ConnectTimedout => Failure::Timeout(TimeoutKind::Connect),
        ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::ConnectionClosed => {
            Failure::Connect
        }
        _ => Failure::Connect,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(header: &ResponseHeader) -> Option<Duration> {
    let value = header
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}
