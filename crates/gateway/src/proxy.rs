//! The gateway's Pingora `ProxyHttp` implementation.
//!
//! Every API request is answered in `request_filter`: authenticate, read the body
//! (bounded), parse, route, then drive the attempt plan (see `forward`). Tollgate owns the
//! body and the upstream exchange because Pingora 0.9 can only replay a body read before
//! `upstream_peer` through its 64 KiB retry buffer, and never retries a POST by itself;
//! prompts of many MiB must route and fail over like small ones. Pingora still provides
//! the listeners, HTTP parsing, keep-alive, TLS, connection pools and the `logging` phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};
use tollgate_core::{ErrorKind, GatewayError, RequestId};
use tollgate_policy::Subject;
use tollgate_providers::openai;
use tollgate_providers::{Dialect, IngressRequest, Operation};
use tollgate_routing::{Plan, RouteRequest};

use crate::auth::{presented_secret, GatewayKey};
use crate::cache::{CacheFill, Lookup, ResponseCache};
use crate::forward::Exchange;
use crate::guardrails::AnswerGuard;
use crate::hardening;
use crate::metrics::{Metrics, RequestDone};
use crate::policy::{worst_case_cost, Admitted, PolicyHandles};
use crate::snapshot::Snapshot;
use crate::tokens::estimate_prompt_tokens;
use crate::usage::{tags_of, Accounting};

pub struct Gateway {
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// While draining, answers close their connection, so clients take their next
    /// request to the process that now holds the listeners.
    pub(crate) readiness: Arc<crate::reload::Readiness>,
    pub(crate) cache: Option<Arc<ResponseCache>>,
    pub(crate) policy: PolicyHandles,
    pub(crate) connector: Connector,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ledger: Arc<tollgate_ledger::Ledger>,
    pub(crate) telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl Gateway {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        ledger: Arc<tollgate_ledger::Ledger>,
        telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    ) -> Self {
        let cache = snapshot
            .load()
            .config
            .cache
            .clone()
            .map(|config| Arc::new(ResponseCache::new(config)));
        let policy = PolicyHandles::from_config(&snapshot.load().config, ledger.clone());
        Self {
            snapshot,
            readiness: Arc::default(),
            cache,
            policy,
            connector: Connector::new(None),
            metrics,
            ledger,
            telemetry,
        }
    }
}

/// What one request did, for the access log.
pub struct RequestCtx {
    /// The client's `x-request-id` when it sent a sane one, else [`RequestCtx::record_id`]:
    /// echoed in the answer, forwarded upstream, in every log line.
    pub id: RequestId,
    /// Minted here for every request, unique whatever the client sends: the usage
    /// record's key.
    pub record_id: RequestId,
    pub started: Instant,
    pub key: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub status: u16,
    pub error: Option<&'static str>,
    pub attempts: usize,
    pub stream: bool,
    /// The API dialect the client speaks; errors are answered in it.
    pub dialect: Dialect,
    /// Token usage of the answer, when known.
    pub usage: Option<tollgate_core::Usage>,
    /// What the usage record needs.
    pub accounting: Accounting,
    /// The config the request started with; it finishes on it.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The request's trace span, when tracing is on.
    pub span: Option<opentelemetry::Context>,
    /// What the span reports at the end.
    pub span_info: SpanInfo,
    /// When the first byte of the answer went to the client.
    pub first_byte: Option<Instant>,
    /// Served by a candidate after the first (a fallback model).
    pub fallback: bool,
    /// What the route's guardrails do to the answer.
    pub answer_guard: Option<Arc<AnswerGuard>>,
    /// How to cache the answer, when the route caches and the request missed.
    pub cache_fill: Option<CacheFill>,
    /// The process's readiness: answers written while it drains close their connection.
    pub readiness: Arc<crate::reload::Readiness>,
    /// The rate-limit permit and budget reservation the request holds.
    pub admitted: Option<Admitted>,
    /// `x-ratelimit-*` headers for the answer.
    pub rate_headers: Vec<(&'static str, String)>,
    /// The prompt as the guardrails left it, when `access_log.prompt` is on.
    pub logged_prompt: Option<String>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let record_id = RequestId::new();
        RequestCtx {
            id: record_id.clone(),
            record_id,
            started: Instant::now(),
            key: None,
            route: None,
            model: None,
            status: 0,
            error: None,
            attempts: 0,
            stream: false,
            dialect: Dialect::OpenAi,
            usage: None,
            accounting: Accounting::default(),
            snapshot: None,
            span: None,
            span_info: SpanInfo::default(),
            first_byte: None,
            fallback: false,
            answer_guard: None,
            cache_fill: None,
            readiness: self.readiness.clone(),
            admitted: None,
            rate_headers: Vec::new(),
            logged_prompt: None,
        }
    }

    /// Never reached: `request_filter` answers every request itself (see the module docs).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "tollgate answers in request_filter",
        )
    }

    /// Answers the request. Always returns `Ok(true)`: the response has been written.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(client_id) = session.req_header().headers.get("x-request-id") {
            ctx.id = RequestId::from_client_or_new(Some(client_id.as_bytes()));
        }
        let snapshot = self.snapshot.load_full();
        ctx.snapshot = Some(snapshot.clone());
        if hardening::screen(session, ctx, &snapshot.config.server.client.limits).await {
            return Ok(true);
        }
        ctx.accounting.time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Err(err) = self.handle(session, ctx, &snapshot).await {
            respond_error(session, ctx, &err).await;
        }
        Ok(true)
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(snapshot) = ctx.snapshot.clone() {
            self.settle(&snapshot, ctx).await;
        }
        if let Some(mut admitted) = ctx.admitted.take() {
            let tokens = ctx.usage.map_or(0, |u| u.total_tokens());
            admitted
                .finish(tokens, ctx.accounting.cost, &self.metrics)
                .await;
        }
        if let Some(span) = &ctx.span {
            crate::telemetry::end_span(
                span,
                &crate::telemetry::SpanEnd {
                    provider_kind: ctx.span_info.provider_kind,
                    response_model: ctx.span_info.upstream_model.as_deref(),
                    route: ctx.route.as_deref(),
                    request_id: ctx.id.as_str(),
                    status: ctx.status,
                    error: ctx.error,
                    usage: ctx.usage,
                    max_tokens: ctx.span_info.max_tokens,
                },
            );
        }
        self.metrics.guardrail_actions(&ctx.accounting.guardrails);
        self.metrics.request(&RequestDone {
            route: ctx.route.as_deref().unwrap_or(""),
            model: ctx.model.as_deref().unwrap_or(""),
            status: ctx.status,
            error: ctx.error.unwrap_or(""),
            stream: ctx.stream,
            started: ctx.started,
            first_byte: ctx.first_byte,
            fallback: ctx.fallback,
            usage: ctx.usage,
            // Prometheus keeps floats; the exact figure is in the ledger.
            cost: rust_decimal::prelude::ToPrimitive::to_f64(&ctx.accounting.cost),
            team: ctx.accounting.team.as_deref().unwrap_or(""),
        });
        crate::usage::access_log(ctx);
    }
}

impl Gateway {
    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Arc<Snapshot>,
    ) -> std::result::Result<(), GatewayError> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let endpoint = match path.as_str() {
            "/v1/chat/completions" | "/chat/completions" => Endpoint::Chat,
            "/v1/embeddings" | "/embeddings" => Endpoint::Embeddings,
            "/v1/messages" | "/messages" => Endpoint::Messages,
            "/v1/models" | "/models" => Endpoint::Models,
            _ => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("unknown path '{path}'"),
                )
                .with_code("unknown_url"))
            }
        };
        if endpoint == Endpoint::Messages {
            ctx.dialect = Dialect::Anthropic;
        }
        let allowed = match endpoint {
            Endpoint::Models => Method::GET,
            Endpoint::Chat | Endpoint::Embeddings | Endpoint::Messages => Method::POST,
        };
        if method != allowed {
            return Err(GatewayError::new(
                ErrorKind::MethodNotAllowed,
                format!("{path} accepts {allowed} only"),
            ));
        }

        let key = self.authenticate(session, snap)?;
        ctx.key = Some(key.name.clone());

        if endpoint == Endpoint::Models {
            return list_models(session, ctx, snap, &key).await;
        }

        let server = &snap.config.server;
        let body =
            hardening::read_body(session, server.max_body_bytes, &server.client.limits).await?;
        let op = match endpoint {
            Endpoint::Embeddings => Operation::Embeddings,
            _ => Operation::ChatCompletions,
        };
        let mut parsed = IngressRequest::parse(ctx.dialect, op, &body)?;
        ctx.accounting.requested_model = Some(parsed.model().to_owned());
        ctx.accounting.team = key.team.clone();
        ctx.accounting.user = key.user.clone();
        ctx.accounting.tags = tags_of(parsed.metadata());
        if let Some(telemetry) = &self.telemetry {
            let operation = match op {
                Operation::Embeddings => "embeddings",
                Operation::ChatCompletions => "chat",
            };
            ctx.span = Some(telemetry.request_span(
                &session.req_header().headers,
                operation,
                parsed.model(),
            ));
            ctx.span_info.max_tokens = parsed.max_output_tokens();
        }
        ctx.stream = parsed.stream();

        let mut prompt = String::new();
        parsed.prompt_text(&mut prompt);
        // Exact when a limit or budget decides on it, else only when a context window may.
        let exact_above = if snap.exact_prompt_tokens {
            0
        } else {
            snap.min_context_window
        };
        let estimated_prompt_tokens = estimate_prompt_tokens(&prompt, exact_above);
        drop(prompt);

        let mut plan = plan_for(
            snap,
            session,
            &key,
            &parsed,
            parsed.model(),
            estimated_prompt_tokens,
        )?;
        ctx.route = Some(plan.route.clone());

        if let Some(guards) = snap.guardrails.for_route(&plan.route) {
            let tenant = key.team.as_deref().unwrap_or(&key.name);
            let verdict =
                guards.check_request(&mut parsed, tenant, &mut ctx.accounting.guardrails)?;
            if let Some(model) = verdict.reroute {
                plan = plan_for(
                    snap,
                    session,
                    &key,
                    &parsed,
                    &model,
                    estimated_prompt_tokens,
                )?;
                ctx.route = Some(plan.route.clone());
            }
            ctx.answer_guard = verdict.answer.map(Arc::new);
        }
        if snap.config.access_log.prompt {
            ctx.logged_prompt = Some(crate::usage::prompt_for_log(&parsed));
        }

        // A managed key's lifetime cap first: it is final, and cheap to check.
        let charge = self.policy.charge(&key, &self.metrics)?;
        let governance = self.policy.governance(snap);
        let subject = Subject {
            key: key.name.to_string(),
            user: key.user.clone(),
            team: key.team.clone(),
            model: parsed.model().to_owned(),
            route: Some(plan.route.to_string()),
            tags: ctx.accounting.tags.clone(),
        };
        let max_output = parsed.max_output_tokens();
        let requested = parsed.model().to_owned();
        // The requested model's worst case is its most expensive candidate's; a model it
        // is downgraded to is priced on its own.
        let worst_case = |model: &str| {
            if model == requested {
                plan.candidates
                    .iter()
                    .map(|c| {
                        worst_case_cost(
                            snap.prices.price(&c.model),
                            estimated_prompt_tokens,
                            max_output,
                        )
                    })
                    .max()
                    .unwrap_or_default()
            } else {
                worst_case_cost(
                    snap.prices.price(model),
                    estimated_prompt_tokens,
                    max_output,
                )
            }
        };
        let admitted = governance
            .admit(
                &subject,
                estimated_prompt_tokens + max_output.unwrap_or(0),
                &worst_case,
                &self.metrics,
            )
            .await?;
        if let Some(charge) = charge {
            charge.keep();
        }
        if let Some(model) = &admitted.downgraded_to {
            plan = plan_for(snap, session, &key, &parsed, model, estimated_prompt_tokens)?;
            ctx.route = Some(plan.route.clone());
        }
        if let Some(permit) = &admitted.permit {
            ctx.rate_headers = permit.rate().to_pairs();
        }
        ctx.admitted = Some(admitted);

        if let (Some(cache), Some(route_cache)) = (&self.cache, snap.route_cache(&plan.route)) {
            if op == Operation::ChatCompletions && route_cache.enabled {
                let tenant = key.team.as_deref().unwrap_or(&key.name);
                // Keyed by the model expected to serve it; a fallback stores under its own.
                let first = plan
                    .candidates
                    .first()
                    .map_or(parsed.model(), |c| &*c.model);
                let lookup = cache
                    .lookup(
                        self,
                        session,
                        ctx,
                        snap,
                        route_cache,
                        &parsed,
                        &body,
                        tenant,
                        first,
                    )
                    .await;
                match lookup {
                    Lookup::Answered => return Ok(()),
                    Lookup::Miss(fill) => ctx.cache_fill = fill,
                }
            }
        }
        drop(body);

        Exchange {
            gateway: self,
            snapshot: snap,
            ingress: &parsed,
            plan: &plan,
        }
        .run(session, ctx)
        .await
    }
}

/// The attempt plan for `model`: the requested one, or where a guardrail reroutes or a
/// limit or budget downgrades the request.
fn plan_for(
    snap: &Snapshot,
    session: &Session,
    key: &GatewayKey,
    ingress: &IngressRequest,
    model: &str,
    estimated_prompt_tokens: u64,
) -> std::result::Result<Plan, GatewayError> {
    Ok(snap.router.plan(
        &RouteRequest {
            model,
            key: key.scope(),
            headers: &session.req_header().headers,
            metadata: ingress.metadata(),
            estimated_prompt_tokens,
        },
        &snap.upstreams,
        Instant::now(),
        &mut rand::rng(),
    )?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Embeddings,
    Messages,
    Models,
}

impl Gateway {
    /// The key the client presented: one of the config's, else a managed one.
    fn authenticate(
        &self,
        session: &Session,
        snap: &Snapshot,
    ) -> std::result::Result<Arc<GatewayKey>, GatewayError> {
        let secret = presented_secret(&session.req_header().headers).ok_or_else(|| {
            GatewayError::new(
                ErrorKind::Authentication,
                "missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key' or 'api-key'",
            )
            .with_code("missing_api_key")
        })?;
        snap.keys
            .authenticate(secret)
            .or_else(|| self.policy.managed_key(secret))
            .ok_or_else(|| {
                GatewayError::new(ErrorKind::Authentication, "invalid API key")
                    .with_code("invalid_api_key")
            })
    }
}

async fn list_models(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Snapshot,
    key: &GatewayKey,
) -> std::result::Result<(), GatewayError> {
    let ids: Vec<String> = snap
        .router
        .models_for_key(&key.scope(), None)
        .into_iter()
        .map(|m| m.id)
        .collect();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = openai::models_list(&ids, created);
    respond_json(session, ctx, 200, Bytes::from(body), &[]).await;
    Ok(())
}

/// Writes a complete JSON response.
pub async fn respond_json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
    extra_headers: &[(&'static str, String)],
) {
    ctx.status = status;
    let Ok(mut header) = ResponseHeader::build(status, Some(4 + extra_headers.len())) else {
        return;
    };
    let _ = header.insert_header("content-type", "application/json");
    let _ = header.insert_header("content-length", body.len().to_string());
    let _ = header.insert_header("x-request-id", ctx.id.as_str());
    for (name, value) in extra_headers {
        let _ = header.insert_header(*name, value.as_str());
    }
    close_if_draining(session, ctx);
    if session
        .write_response_header(Box::new(header), false)
        .await
        .is_ok()
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

/// While the process drains (an upgrade handed its listeners over), an answer closes its
/// connection: Pingora drops idle kept-alive connections once it drains, and a client
/// that reused one would see its next request fail.
pub fn close_if_draining(session: &mut Session, ctx: &RequestCtx) {
    if ctx.readiness.is_draining() {
        session.set_keepalive(None);
    }
}

/// Answers with the gateway's error in the schema of the client's dialect.
pub async fn respond_error(session: &mut Session, ctx: &mut RequestCtx, err: &GatewayError) {
    hardening::close_after(session, err);
    ctx.error = Some(err.kind.label());
    let mut extra = err.headers.clone();
    if let Some(secs) = err.retry_after {
        if !extra.iter().any(|(name, _)| *name == "retry-after") {
            extra.push(("retry-after", secs.to_string()));
        }
    }
    let body = match ctx.dialect {
        Dialect::OpenAi => err.openai_body(),
        Dialect::Anthropic => err.anthropic_body(),
    };
    respond_json(session, ctx, err.status(), Bytes::from(body), &extra).await;
}

/// Rounds a wait up to whole seconds for a `Retry-After` header.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Span attributes learnt while the request runs.
#[derive(Default)]
pub struct SpanInfo {
    pub provider_kind: Option<&'static str>,
    pub upstream_model: Option<String>,
    pub max_tokens: Option<u64>,
}
