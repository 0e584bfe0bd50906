//! Drives one request's attempt plan against upstreams: picks endpoint and key, sends the
//! translated request with Pingora's connector, and relays the answer. Failures are
//! retried or failed over only while no byte has reached the client; a stream that breaks
//! after that ends with a well-formed error event.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::ErrorType;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_ledger::{Attempt as LedgerAttempt, CacheStatus};
use tollgate_providers::{
    classify_error, translate_response, upstream_request, Credentials, Dialect,
    ErrorType as UpstreamErrorType, IngressRequest, Operation, ProviderError, ProviderKind,
    ResponseMeta, StreamStep, StreamTranslator, Target, UpstreamError, UpstreamErrorClass,
    UpstreamRequest,
};
use tollgate_routing::{
    AttemptRecord, Attempts, Candidate, EndpointPick, Failure, KeyPick, Plan, ProviderPool,
    TimeoutKind,
};
use tollgate_sse::eventstream::{EventStreamDecoder, Message};
use tollgate_sse::{SseDecoder, SseEvent};

use crate::cache::{header_value, StreamTap};
use crate::guardrails::{AnswerRefused, InvalidJson};
use crate::proxy::{respond_error, retry_after_secs, Gateway, RequestCtx};
use crate::snapshot::{ProviderWire, Snapshot};

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

/// How one attempt ended.
enum Attempt {
    /// The response was relayed to the client (completely, or a stream ended with an error
    /// event after it had started): the request is over.
    Answered,
    /// The upstream answered with a client error (4xx other than 429): relayed in the
    /// client's dialect.
    Rejected { status: u16, body: Bytes },
    /// Nothing reached the client; the plan may try again.
    Failed(Failure),
    /// The client went away.
    ClientGone,
    /// A guardrail refused the answer; nothing reached the client.
    Refused(GatewayError),
    /// The answer broke the JSON promise of the request; nothing reached the client.
    InvalidJson(InvalidJson),
}

pub struct Exchange<'a> {
    pub gateway: &'a Gateway,
    pub snapshot: &'a Arc<Snapshot>,
    pub ingress: &'a IngressRequest,
    pub plan: &'a Plan,
}

impl Exchange<'_> {
    /// Whether the gateway counts tokens the provider did not report (`metering.estimate`).
    fn estimating(&self) -> bool {
        self.snapshot.config.metering.estimate
    }

    /// Usage counted by the gateway when the provider reported none (flagged estimated);
    /// nothing but the flag when estimating is off.
    fn estimate(&self, output_text: &str) -> tollgate_core::Usage {
        if !self.estimating() {
            return tollgate_core::Usage {
                estimated: true,
                ..Default::default()
            };
        }
        let mut prompt = String::new();
        self.ingress.prompt_text(&mut prompt);
        tollgate_core::Usage {
            input_tokens: tollgate_metering::estimate_tokens(&prompt),
            output_tokens: tollgate_metering::estimate_tokens(output_text),
            estimated: true,
            ..Default::default()
        }
    }

    /// Usage of a stream that ended without the provider's final report: what it did
    /// report, completed with the gateway's counts (`output_counted` from the text relayed).
    fn estimate_stream(
        &self,
        reported: Option<tollgate_core::Usage>,
        output_counted: u64,
    ) -> tollgate_core::Usage {
        let estimate = self.estimate("");
        let reported = reported.unwrap_or_default();
        tollgate_core::Usage {
            input_tokens: reported.input_tokens.max(estimate.input_tokens),
            output_tokens: reported.output_tokens.max(output_counted),
            estimated: true,
            ..reported
        }
    }

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
        let mut json_retried = false;
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
            let Some(wire) = self.snapshot.providers.get(&*candidate.provider) else {
                last = Some(Failure::Other);
                continue;
            };
            let request = self.request_for(ctx, wire, candidate, &endpoint, key.as_ref())?;
            ctx.accounting.provider = Some(candidate.provider.to_string());
            ctx.accounting.endpoint = Some(endpoint_url(&endpoint));
            start_attempt(
                ctx,
                LedgerAttempt {
                    model: candidate.model.to_string(),
                    provider: candidate.provider.to_string(),
                    endpoint: endpoint_url(&endpoint),
                    outcome: "pending".to_owned(),
                    status: None,
                    duration_ms: None,
                },
            );
            let guard = pool.start(endpoint.index);
            let started = Instant::now();
            let mut outcome = self
                .attempt(
                    session, ctx, pool, wire, candidate, &endpoint, request, deadline, started,
                )
                .await;
            if let Attempt::InvalidJson(InvalidJson { retry: true, .. }) = &outcome {
                if !json_retried {
                    // Once more from the same model; the broken answer's tokens were spent.
                    json_retried = true;
                    ctx.accounting.discarded_usage = ctx.usage.take();
                    set_outcome(ctx, "invalid_json", Some(200));
                    if let Some(retry) = ctx.accounting.attempts.last().cloned() {
                        start_attempt(
                            ctx,
                            LedgerAttempt {
                                outcome: "pending".to_owned(),
                                status: None,
                                duration_ms: None,
                                ..retry
                            },
                        );
                    }
                    let request =
                        self.request_for(ctx, wire, candidate, &endpoint, key.as_ref())?;
                    let started = Instant::now();
                    outcome = self
                        .attempt(
                            session, ctx, pool, wire, candidate, &endpoint, request, deadline,
                            started,
                        )
                        .await;
                }
            }
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
                    set_outcome(ctx, "client_gone", None);
                    ctx.error = Some("client_gone");
                    return Ok(());
                }
                Attempt::Refused(err) => {
                    set_outcome(ctx, "refused", Some(200));
                    return Err(err);
                }
                Attempt::InvalidJson(invalid) => {
                    set_outcome(ctx, "invalid_json", Some(200));
                    return Err(invalid.error);
                }
                Attempt::Rejected { status, body } => {
                    set_outcome(ctx, "rejected", Some(status));
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
                    set_outcome(ctx, outcome_label(&failure), failure_status(&failure));
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

    /// The upstream request of one attempt, with the trace context when tracing is on.
    fn request_for(
        &self,
        ctx: &mut RequestCtx,
        wire: &ProviderWire,
        candidate: &Candidate,
        endpoint: &EndpointPick,
        key: Option<&KeyPick>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut request =
            build_request(self.ingress, wire, &candidate.upstream_model, endpoint, key)?;
        if let (Some(telemetry), Some(span)) = (&self.gateway.telemetry, &ctx.span) {
            request.headers.extend(telemetry.propagation_headers(span));
            ctx.span_info.provider_kind = Some(wire.kind.name());
            ctx.span_info.upstream_model = Some(candidate.upstream_model.to_string());
        }
        Ok(request)
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        pool: &ProviderPool,
        wire: &ProviderWire,
        candidate: &Candidate,
        endpoint: &EndpointPick,
        request: UpstreamRequest,
        deadline: Instant,
        started: Instant,
    ) -> Attempt {
        let timeouts = &self.plan.timeouts;
        let peer = match peer_for(endpoint, timeouts.connect, pool, self.snapshot).await {
            Some(p) => p,
            None => return Attempt::Failed(Failure::Connect),
        };
        let connector = &self.gateway.connector;
        let opened = async {
            let _gate = pool.http2_gate(endpoint.index).await;
            connector.get_http_session(&peer).await
        };
        let (mut upstream, _reused) = match tokio::time::timeout(timeouts.connect, opened).await {
            Err(_) => return Attempt::Failed(Failure::Timeout(TimeoutKind::Connect)),
            Ok(Err(e)) => return Attempt::Failed(connect_failure(e.etype())),
            Ok(Ok(s)) => s,
        };
        upstream.set_write_timeout(Some(timeouts.idle));
        upstream.set_read_timeout(Some(timeouts.first_token));

        let Some(header) = request_header(endpoint, &request, ctx.id.as_str()) else {
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
            let error = classify_error(wire.kind, status, &body);
            return match error.class() {
                UpstreamErrorClass::RateLimited => Attempt::Failed(Failure::Status {
                    code: 429,
                    retry_after,
                }),
                UpstreamErrorClass::Server => Attempt::Failed(Failure::Status {
                    code: status.max(500),
                    retry_after,
                }),
                UpstreamErrorClass::ContextTooLong => Attempt::Failed(Failure::ContextTooLong),
                UpstreamErrorClass::Auth => Attempt::Failed(Failure::Status {
                    code: status,
                    retry_after: None,
                }),
                UpstreamErrorClass::Client => {
                    if wire.kind.native_dialect() == Some(ctx.dialect) {
                        Attempt::Rejected { status, body }
                    } else {
                        Attempt::Rejected {
                            status: error.client_status(ctx.dialect),
                            body: Bytes::from(error.client_body(ctx.dialect)),
                        }
                    }
                }
            };
        }

        let framing = upstream
            .response_header()
            .and_then(|h| h.headers.get(http::header::CONTENT_TYPE))
            .and_then(|v| Framing::of(v.as_bytes()));
        let meta = ResponseMeta {
            request_id: ctx.id.as_str(),
            created: unix_now(),
            model: &candidate.upstream_model,
        };
        if let (true, Some(framing)) = (self.ingress.stream(), framing) {
            let translator = match &ctx.answer_guard {
                Some(guard) => StreamTranslator::filtered(
                    wire.kind,
                    self.ingress,
                    &meta,
                    guard.stream_filter(),
                ),
                None => StreamTranslator::new(wire.kind, self.ingress, &meta),
            };
            return self
                .relay_stream(
                    session, ctx, pool, endpoint, upstream, framing, translator, deadline, started,
                )
                .await;
        }

        let body = match read_all(&mut upstream, MAX_RESPONSE_BYTES, deadline).await {
            Ok(b) => b,
            Err(ReadAllError::TooLarge(_)) => return Attempt::Failed(Failure::Other),
            Err(ReadAllError::Failed(f)) => return Attempt::Failed(f),
        };
        pool.record_success(endpoint.index, started.elapsed());
        connector
            .release_http_session(upstream, &peer, peer.options.idle_timeout)
            .await;
        let translated = match translate_response(wire.kind, self.ingress, &body, &meta) {
            Ok(t) => t,
            Err(ProviderError::Upstream(error)) => return upstream_error_attempt(&error, ctx),
            Err(err) => {
                tracing::warn!(request_id = %ctx.id, error = %err, "upstream answer could not be translated");
                return Attempt::Failed(Failure::Other);
            }
        };
        let usage = match translated.usage {
            Some(usage) => usage,
            None if self.estimating() => self.estimate(&response_text(&translated.body)),
            // Not estimating: the answer's text is not even extracted.
            None => self.estimate(""),
        };
        ctx.usage = Some(usage);
        let mut body = translated.body;
        if let Some(guard) = ctx.answer_guard.clone() {
            match guard.complete_answer(ctx.dialect, &body) {
                Ok(Some(rewritten)) => body = rewritten,
                Ok(None) => {}
                Err(AnswerRefused::Blocked(err)) => return Attempt::Refused(err),
                Err(AnswerRefused::InvalidJson(invalid)) => return Attempt::InvalidJson(invalid),
            }
        }
        let body = Bytes::from(body);
        let Some(mut header) = response_header(ctx, status, "application/json", Some(body.len()))
        else {
            return Attempt::Failed(Failure::Other);
        };
        set_outcome(ctx, "ok", Some(status));
        self.gateway.settle(self.snapshot, ctx).await;
        let _ = header.insert_header("x-tollgate-cost", ctx.accounting.cost.to_string());
        if let (Some(cache), Some(fill)) = (&self.gateway.cache, ctx.cache_fill.take()) {
            if let Some(entry) = crate::cache::entry_of_body(ctx.dialect, &body) {
                let entry = entry.with_cost(Some(ctx.accounting.cost));
                let guard = ctx.answer_guard.as_deref();
                cache
                    .store(fill, entry, &candidate.model, guard, &self.gateway.metrics)
                    .await;
            }
        }
        crate::proxy::close_if_draining(session, ctx);
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
        framing: Framing,
        translator: StreamTranslator,
        deadline: Instant,
        started: Instant,
    ) -> Attempt {
        let timeouts = &self.plan.timeouts;
        upstream.set_read_timeout(Some(timeouts.first_token));
        let _active = self.gateway.metrics.stream_started();
        let mut relay = StreamRelay::new(framing, translator, self.estimating());
        if ctx.cache_fill.is_some() {
            relay.tap = Some(StreamTap::new(ctx.dialect));
        }
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
            if let Some(error) = relay.feed(&chunk) {
                break StreamEnd::Error(error);
            }
            // What follows the end marker waits for the usage record: a client that has
            // seen the end of its answer must find it in the ledger, even after a crash.
            if relay.committed() && !relay.out.is_empty() && !relay.saw_done {
                if let Err(gone) = relay.flush(session, ctx).await {
                    // The client left mid-stream: what was generated so far still counts.
                    ctx.usage =
                        Some(self.estimate_stream(
                            relay.translator.usage(),
                            relay.output_tokens_counted(),
                        ));
                    return gone;
                }
            }
        };
        let end = match end {
            StreamEnd::Finished if !relay.finished_cleanly() => {
                StreamEnd::Broken(Failure::Status {
                    code: 502,
                    retry_after: None,
                })
            }
            // The answer is complete; the upstream only failed to close its body.
            StreamEnd::Broken(_) if relay.saw_done => StreamEnd::Finished,
            other => other,
        };
        let complete = matches!(end, StreamEnd::Finished);
        ctx.usage = Some(match relay.translator.usage() {
            Some(usage) if complete => usage,
            reported => self.estimate_stream(reported, relay.output_tokens_counted()),
        });
        match end {
            StreamEnd::Finished => {
                relay.translator.finish(&mut relay.out);
                ctx.status = 200;
                set_outcome(ctx, "ok", Some(200));
                self.gateway.settle(self.snapshot, ctx).await;
                if let (Some(cache), Some(fill), Some(mut tap)) =
                    (&self.gateway.cache, ctx.cache_fill.take(), relay.tap.take())
                {
                    tap.push(&relay.out);
                    if let Some(entry) = tap.finish(ctx.usage) {
                        let entry = entry.with_cost(Some(ctx.accounting.cost));
                        let served = ctx.model.as_deref().unwrap_or_default();
                        let guard = ctx.answer_guard.as_deref();
                        cache
                            .store(fill, entry, served, guard, &self.gateway.metrics)
                            .await;
                    }
                }
                if let Err(gone) = relay.flush(session, ctx).await {
                    return gone;
                }
                if session.write_response_body(None, true).await.is_err() {
                    return Attempt::ClientGone;
                }
                Attempt::Answered
            }
            StreamEnd::Error(error) if !relay.header_sent => upstream_error_attempt(&error, ctx),
            StreamEnd::Broken(failure) if !relay.header_sent => Attempt::Failed(failure),
            end => {
                let error = match end {
                    StreamEnd::Error(error) => error,
                    StreamEnd::Broken(Failure::Timeout(kind)) => UpstreamError::new(
                        UpstreamErrorType::Server,
                        504,
                        &format!("the upstream stream timed out ({kind:?})"),
                    ),
                    _ => UpstreamError::new(
                        UpstreamErrorType::Server,
                        502,
                        "the upstream stream ended unexpectedly",
                    ),
                };
                tracing::warn!(request_id = %ctx.id, error = %error, "stream broke after it started");
                ctx.error = Some("stream_broken");
                relay.out.clear();
                relay.translator.fail(&error, &mut relay.out);
                ctx.status = 200;
                set_outcome(ctx, "broken", Some(200));
                self.gateway.settle(self.snapshot, ctx).await;
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
    /// The upstream ended early or stalled.
    Broken(Failure),
    /// The upstream sent an error inside the stream.
    Error(UpstreamError),
}

/// How an upstream frames its stream.
#[derive(Clone, Copy)]
enum Framing {
    Sse,
    /// AWS event-stream binary messages (Bedrock `converse-stream`).
    EventStream,
}

impl Framing {
    fn of(content_type: &[u8]) -> Option<Framing> {
        if content_type.starts_with(b"text/event-stream") {
            Some(Framing::Sse)
        } else if content_type.starts_with(b"application/vnd.amazon.eventstream") {
            Some(Framing::EventStream)
        } else {
            None
        }
    }
}

/// An upstream stream's decoder with the buffer its decoded units land in, reused for
/// every chunk.
enum Decoder {
    Sse(SseDecoder, Vec<SseEvent>),
    EventStream(EventStreamDecoder, Vec<Message>),
}

/// Translates upstream stream events for the client, holding back lifecycle-only events
/// until the first generated output (see [`MAX_HELD_BACK_BYTES`]).
struct StreamRelay {
    decoder: Decoder,
    translator: StreamTranslator,
    /// Output tokens counted from the generated text, for when the provider reports none;
    /// `None` when `metering.estimate` is off.
    output_tokens: Option<tollgate_metering::TokenCounter>,
    out: Vec<u8>,
    has_output: bool,
    header_sent: bool,
    saw_done: bool,
    /// Records what the client gets, when the answer is to be cached.
    tap: Option<StreamTap>,
}

impl StreamRelay {
    fn new(framing: Framing, translator: StreamTranslator, count_output: bool) -> Self {
        let decoder = match framing {
            Framing::Sse => Decoder::Sse(SseDecoder::new(), Vec::new()),
            Framing::EventStream => Decoder::EventStream(EventStreamDecoder::new(), Vec::new()),
        };
        Self {
            decoder,
            translator,
            output_tokens: count_output.then(tollgate_metering::TokenCounter::new),
            out: Vec::new(),
            has_output: false,
            header_sent: false,
            saw_done: false,
            tap: None,
        }
    }

    /// Output tokens counted so far; 0 when not counting.
    fn output_tokens_counted(&self) -> u64 {
        self.output_tokens.as_ref().map_or(0, |c| c.total())
    }

    fn committed(&self) -> bool {
        self.has_output || self.out.len() > MAX_HELD_BACK_BYTES
    }

    /// Decodes and translates one chunk of upstream bytes into `out`; the upstream's error,
    /// when it sent one (or its framing is broken).
    fn feed(&mut self, chunk: &[u8]) -> Option<UpstreamError> {
        let Self {
            decoder,
            translator,
            output_tokens,
            out,
            has_output,
            saw_done,
            ..
        } = self;
        let mut absorb = |step: StreamStep| {
            *has_output |= step.has_output;
            *saw_done |= step.done;
            step.error
        };
        let (upstream_error, framing) = match decoder {
            Decoder::Sse(decoder, events) => {
                events.clear();
                let framing = decoder.feed(chunk, events).err().map(|e| e.to_string());
                let error = events
                    .iter()
                    .find_map(|event| absorb(translator.on_event(event, out)));
                (error, framing)
            }
            Decoder::EventStream(decoder, messages) => {
                messages.clear();
                let framing = decoder.feed(chunk, messages).err().map(|e| e.to_string());
                let error = messages
                    .iter()
                    .find_map(|message| absorb(translator.on_message(message, out)));
                (error, framing)
            }
        };
        translator.drain_output_text(|text| {
            if let Some(counter) = output_tokens {
                counter.push(text);
            }
        });
        upstream_error.or_else(|| {
            framing.map(|problem| {
                UpstreamError::new(
                    UpstreamErrorType::Server,
                    502,
                    &format!("the upstream stream is malformed: {problem}"),
                )
            })
        })
    }

    /// The upstream sent its end marker and no partial frame is left.
    fn finished_cleanly(&mut self) -> bool {
        let framing_complete = match &mut self.decoder {
            Decoder::Sse(decoder, _) => decoder.finish().is_ok(),
            Decoder::EventStream(decoder, _) => decoder.finish().is_ok(),
        };
        self.saw_done && framing_complete
    }

    async fn flush(&mut self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Attempt> {
        if !self.header_sent {
            let mut header =
                response_header(ctx, 200, "text/event-stream", None).ok_or(Attempt::ClientGone)?;
            let _ = header.insert_header("cache-control", "no-cache");
            crate::proxy::close_if_draining(session, ctx);
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
        if let Some(tap) = &mut self.tap {
            tap.push(&self.out);
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
    for (name, value) in &ctx.rate_headers {
        header.insert_header(*name, value.as_str()).ok()?;
    }
    if ctx.accounting.cache != CacheStatus::Off {
        header
            .insert_header("x-tollgate-cache", header_value(ctx.accounting.cache))
            .ok()?;
    }
    if let (Some(fill), Some(model)) = (&ctx.cache_fill, &ctx.model) {
        header
            .insert_header(crate::cache::KEY_HEADER, fill.key_for(model).to_hex())
            .ok()?;
    }
    Some(header)
}

/// Longest time the semantic cache waits for an embedding; past it the request is served
/// as a miss.
const EMBED_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedding of `text` by the catalog model `model`, for the semantic cache: one
/// attempt on one endpoint of its provider, on the gateway's own behalf. `None` on any
/// failure (the request is then served as a cache miss).
pub async fn embed(
    gateway: &Gateway,
    snap: &Snapshot,
    model: &str,
    text: &str,
    request_id: &str,
) -> Option<Vec<f32>> {
    let catalog = snap.router.model(model)?;
    let pool = snap.upstreams.provider(&catalog.provider)?;
    let wire = snap.providers.get(&*catalog.provider)?;
    let started = Instant::now();
    let deadline = started + EMBED_TIMEOUT;
    let endpoint = pool.pick_endpoint(&[], started)?;
    let key = pool.pick_key(started).ok()?;
    let body = serde_json::json!({ "model": model, "input": text }).to_string();
    let ingress =
        IngressRequest::parse(Dialect::OpenAi, Operation::Embeddings, body.as_bytes()).ok()?;
    let request = build_request(
        &ingress,
        wire,
        &catalog.upstream_model,
        &endpoint,
        key.as_ref(),
    )
    .ok()?;
    let header = request_header(&endpoint, &request, request_id)?;
    let peer = peer_for(&endpoint, EMBED_TIMEOUT, pool, snap).await?;
    let connector = &gateway.connector;
    let exchange = async {
        let (mut upstream, _) = connector.get_http_session(&peer).await.ok()?;
        upstream.write_request_header(Box::new(header)).await.ok()?;
        upstream
            .write_request_body(Bytes::from(request.body), true)
            .await
            .ok()?;
        upstream.finish_request_body().await.ok()?;
        upstream.read_response_header().await.ok()?;
        let status = upstream.response_header()?.status.as_u16();
        let body = read_all(&mut upstream, MAX_RESPONSE_BYTES, deadline)
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        connector
            .release_http_session(upstream, &peer, peer.options.idle_timeout)
            .await;
        Some(body)
    };
    let body = tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .ok()??;
    pool.record_success(endpoint.index, started.elapsed());
    let meta = ResponseMeta {
        request_id,
        created: unix_now(),
        model: &catalog.upstream_model,
    };
    let translated = translate_response(wire.kind, &ingress, &body, &meta).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&translated.body).ok()?;
    value
        .pointer("/data/0/embedding")?
        .as_array()?
        .iter()
        .map(|v| v.as_f64().map(|f| f as f32))
        .collect()
}

/// Cool-down for a key answered with 429 and no Retry-After.
const DEFAULT_KEY_COOLDOWN: Duration = Duration::from_secs(1);

async fn relay_rejection(session: &mut Session, ctx: &mut RequestCtx, status: u16, body: Bytes) {
    let looks_like_error = serde_json::from_slice::<serde_json::Value>(&body)
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
        respond_error(session, ctx, &err.with_code("upstream_rejected")).await;
    }
}

/// Adds an attempt to the request's history, timed from now.
fn start_attempt(ctx: &mut RequestCtx, attempt: LedgerAttempt) {
    ctx.accounting.attempts.push(attempt);
    ctx.accounting.attempt_started = Some(Instant::now());
}

/// How the latest attempt ended, and how long it took.
fn set_outcome(ctx: &mut RequestCtx, outcome: &str, status: Option<u16>) {
    let duration_ms = ctx
        .accounting
        .attempt_started
        .map(|started| started.elapsed().as_millis() as u64);
    if let Some(last) = ctx.accounting.attempts.last_mut() {
        outcome.clone_into(&mut last.outcome);
        last.status = status;
        last.duration_ms = duration_ms;
    }
}

fn outcome_label(failure: &Failure) -> &'static str {
    match failure {
        Failure::Connect => "connect",
        Failure::Timeout(_) => "timeout",
        Failure::Status { code: 429, .. } => "429",
        Failure::Status { code, .. } if *code >= 500 => "5xx",
        Failure::Status { .. } => "rejected",
        Failure::ContextTooLong => "context_too_long",
        Failure::Other => "error",
    }
}

fn failure_status(failure: &Failure) -> Option<u16> {
    match failure {
        Failure::Status { code, .. } => Some(*code),
        _ => None,
    }
}

/// The base URL of an endpoint, for records (never carries a secret).
fn endpoint_url(endpoint: &EndpointPick) -> String {
    let scheme = if endpoint.tls { "https" } else { "http" };
    format!(
        "{scheme}://{}{}",
        host_header(endpoint),
        endpoint.path_prefix
    )
}

/// The generated text of a complete answer in either client dialect, for estimates.
fn response_text(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let mut text = String::new();
    let mut push = |v: &serde_json::Value| {
        if let Some(s) = v.as_str() {
            text.push_str(s);
        }
    };
    for choice in value["choices"].as_array().into_iter().flatten() {
        push(&choice["message"]["content"]);
        for call in choice["message"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            push(&call["function"]["arguments"]);
        }
    }
    for block in value["content"].as_array().into_iter().flatten() {
        push(&block["text"]);
    }
    text
}

/// The upstream request of one attempt: the client's request in the provider's dialect,
/// with the provider's credentials.
fn build_request(
    ingress: &IngressRequest,
    wire: &ProviderWire,
    upstream_model: &str,
    endpoint: &EndpointPick,
    key: Option<&KeyPick>,
) -> Result<UpstreamRequest, GatewayError> {
    let credentials = match (wire.kind, &wire.aws, key) {
        (ProviderKind::Bedrock, Some(aws), _) => Credentials::Aws {
            credentials: aws,
            region: wire.region.as_deref(),
        },
        (_, _, Some(key)) => Credentials::ApiKey(&key.secret),
        _ => Credentials::None,
    };
    let host = host_header(endpoint);
    let target = Target {
        kind: wire.kind,
        upstream_model,
        path_prefix: &endpoint.path_prefix,
        host: &host,
        credentials,
        api_version: wire.api_version.as_deref(),
        extra_headers: &wire.headers,
    };
    upstream_request(ingress, &target, SystemTime::now()).map_err(GatewayError::from)
}

/// An error the provider reported inside a 200 answer or stream, before any output
/// reached the client: the client's own fault is relayed in its schema (no failover),
/// anything else fails over like the same error as a status.
fn upstream_error_attempt(error: &UpstreamError, ctx: &RequestCtx) -> Attempt {
    match error.class() {
        UpstreamErrorClass::Client => Attempt::Rejected {
            status: error.client_status(ctx.dialect),
            body: Bytes::from(error.client_body(ctx.dialect)),
        },
        _ => Attempt::Failed(stream_failure(error)),
    }
}

/// An in-stream error before any output: fail over like the same error as a status.
fn stream_failure(error: &UpstreamError) -> Failure {
    match error.class() {
        UpstreamErrorClass::RateLimited => Failure::Status {
            code: 429,
            retry_after: None,
        },
        UpstreamErrorClass::ContextTooLong => Failure::ContextTooLong,
        UpstreamErrorClass::Client => Failure::Other,
        UpstreamErrorClass::Server | UpstreamErrorClass::Auth => Failure::Status {
            code: error.upstream_status.max(500),
            retry_after: None,
        },
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `Host` header for an endpoint: the port only when it is not the scheme's default.
fn host_header(endpoint: &EndpointPick) -> String {
    let default_port = if endpoint.tls { 443 } else { 80 };
    if endpoint.port == default_port {
        endpoint.host.to_string()
    } else if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
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

/// The peer of one attempt on `pool`'s endpoint: TLS endpoints are verified against the
/// system roots unless the provider's `tls` names a CA, a client certificate or another
/// name; an idle pooled connection is kept `server.upstream.idle_timeout`.
async fn peer_for(
    endpoint: &EndpointPick,
    connect: Duration,
    pool: &ProviderPool,
    snap: &Snapshot,
) -> Option<HttpPeer> {
    let addr = match endpoint.addr {
        Some(addr) => addr,
        None => crate::resolve::resolve(&endpoint.host, endpoint.port).await?,
    };
    let mut peer = HttpPeer::new(addr, endpoint.tls, endpoint.host.to_string());
    peer.options.connection_timeout = Some(connect);
    peer.options.total_connection_timeout = Some(connect);
    peer.options.idle_timeout = Some(snap.config.server.upstream.idle_timeout);
    if let (true, Some(tls)) = (endpoint.tls, pool.tls()) {
        tls.apply(&mut peer);
    }
    if let Some(streams) = pool.http2_streams() {
        // Over TLS ALPN settles the version; in the clear only h2 is offered, which
        // Pingora takes as prior knowledge (h2c).
        peer.options.alpn = if endpoint.tls { ALPN::H2H1 } else { ALPN::H2 };
        peer.options.max_h2_streams = streams;
    }
    Some(peer)
}

fn request_header(
    endpoint: &EndpointPick,
    request: &UpstreamRequest,
    request_id: &str,
) -> Option<RequestHeader> {
    let mut header = RequestHeader::build(
        "POST",
        request.path.as_bytes(),
        Some(6 + request.headers.len()),
    )
    .ok()?;
    header.insert_header("host", host_header(endpoint)).ok()?;
    header
        .insert_header("content-length", request.body.len().to_string())
        .ok()?;
    header.insert_header("x-request-id", request_id).ok()?;
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
