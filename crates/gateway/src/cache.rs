//! The response cache in the request path: looked up after authentication, guardrails and
//! routing (so it keys the redacted request, scoped to the tenant and route), answered
//! from at once on a hit, filled after a complete successful answer.
//!
//! - The key's model is the one that serves the answer: a lookup uses the first target of
//!   the request's plan (after the weighted pick, a reroute or a downgrade), and an answer
//!   is stored under the model that actually produced it, so a fallback's answer is only
//!   ever served to requests that model would answer anyway. `x-tollgate-cache-key` names
//!   the entry (for purge by key).
//! - Pseudonymized requests share a key when they differ only in the originals behind
//!   their placeholders (`[EMAIL_1]`), since the key is over what goes upstream. Their
//!   answers are therefore stored concealed (the request's originals put back into
//!   placeholders; an answer that would still hold one is not stored) and a hit is
//!   restored with the hitting request's own originals. Masked and hashed values need
//!   nothing: the stored answer holds only what the upstream saw, which the key pins.
//!
//! - `Cache-Control: no-cache` skips the lookup (the fresh answer is still stored);
//!   `no-store` keeps the answer out of the cache; both together bypass it.
//! - Hits answer in the client's dialect, as one body or as a well-formed SSE stream;
//!   their usage record holds the tokens the hit saved, a cost of zero and the saved cost.
//! - Semantic lookups embed the last user turn with the configured embedding model
//!   through the gateway's own providers.
//!
//! A store error is a miss (or an answer left unstored), counted in metrics; the cache
//! never fails a request.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tollgate_cache::{
    last_user_text, request_key, Cache, CacheConfig, CacheEntry, CacheKey, Labels, Purge, Replay,
    RequestKey, RouteCacheConfig, Scope, StreamRecorder,
};
use tollgate_ledger::CacheStatus;
use tollgate_providers::{Dialect, IngressRequest};
use tollgate_sse::{SseDecoder, SseEvent};

use crate::guardrails::AnswerGuard;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, RequestCtx};
use crate::snapshot::Snapshot;

/// The gateway's cache, connected on first use (a Redis store connects lazily and works
/// once Redis is reachable). Lives across config reloads.
pub struct ResponseCache {
    config: CacheConfig,
    cache: tokio::sync::OnceCell<Arc<Cache>>,
}

/// What a request that missed needs to fill the cache with its answer.
pub struct CacheFill {
    /// The keys for `model`; another serving model has its own ([`RequestKey::for_model`]).
    /// Boxed: four digests would make every `Lookup` large.
    keys: Box<RequestKey>,
    /// The model the lookup expected to serve the request.
    model: String,
    /// The embedding of the request's last user turn, for the semantic index.
    similar: Option<Vec<f32>>,
    labels: Labels,
    ttl: Duration,
}

impl CacheFill {
    /// The entry key of the answer `served_model` gives.
    pub fn key_for(&self, served_model: &str) -> CacheKey {
        self.keys_for(served_model).exact
    }

    fn keys_for(&self, served_model: &str) -> RequestKey {
        if served_model == self.model {
            *self.keys
        } else {
            self.keys.for_model(served_model)
        }
    }
}

/// How the cache took part in one request.
pub enum Lookup {
    /// The answer came from the cache and has been written.
    Answered,
    /// Forward the request; store its answer with this fill when it completes.
    Miss(Option<CacheFill>),
}

impl ResponseCache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            cache: tokio::sync::OnceCell::new(),
        }
    }

    async fn cache(&self) -> Option<&Arc<Cache>> {
        let cache = self
            .cache
            .get_or_try_init(|| async { Cache::from_config(&self.config).await.map(Arc::new) })
            .await;
        match cache {
            Ok(cache) => Some(cache),
            Err(err) => {
                tracing::warn!(error = %err, "the response cache is unavailable");
                None
            }
        }
    }

    /// Removes entries; the number removed.
    pub async fn purge(&self, purge: &Purge) -> Result<u64, String> {
        let cache = self
            .cache()
            .await
            .ok_or_else(|| "the response cache is unavailable".to_owned())?;
        cache.purge(purge).await.map_err(|e| e.to_string())
    }

    /// Looks the request up; on a hit writes the answer. `tenant` is the team (or key)
    /// the entry belongs to; `model` the catalog model the plan tries first; `body` the
    /// client's body as it arrived.
    #[allow(clippy::too_many_arguments)]
    pub async fn lookup(
        &self,
        gateway: &Gateway,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        route_cache: &RouteCacheConfig,
        ingress: &IngressRequest,
        body: &[u8],
        tenant: &str,
        model: &str,
    ) -> Lookup {
        let (no_cache, no_store) = cache_control(session);
        let route = ctx.route.as_deref().unwrap_or_default().to_owned();
        let miss = |ctx: &mut RequestCtx, status: CacheStatus| {
            ctx.accounting.cache = status;
            gateway.metrics.cache_request(&route, status.as_str());
        };
        if no_cache && no_store {
            miss(ctx, CacheStatus::Bypass);
            return Lookup::Miss(None);
        }
        let Some(cache) = self.cache().await else {
            miss(ctx, CacheStatus::Bypass);
            return Lookup::Miss(None);
        };
        let Ok(canonical) = ingress.to_canonical() else {
            // Not representable (e.g. `n` above 1): not cacheable.
            miss(ctx, CacheStatus::Bypass);
            return Lookup::Miss(None);
        };
        let scope = Scope {
            tenant,
            route: &route,
            model,
        };
        let Ok(keys) = request_key(&scope, ingress.dialect(), body, &canonical) else {
            miss(ctx, CacheStatus::Bypass);
            return Lookup::Miss(None);
        };

        if !no_cache {
            match cache.get(&keys.exact).await {
                Ok(Some(entry)) => {
                    answer(
                        gateway,
                        session,
                        ctx,
                        ingress,
                        &entry,
                        keys.exact,
                        CacheStatus::Hit,
                    )
                    .await;
                    return Lookup::Answered;
                }
                Ok(None) => {}
                Err(err) => {
                    gateway.metrics.cache_error();
                    tracing::warn!(request_id = %ctx.id, error = %err, "cache lookup failed");
                }
            }
        }

        let mut similar = None;
        if let (Some(semantic), Some(threshold)) = (
            &self.config.semantic,
            route_cache.semantic.as_ref().map(|s| s.threshold),
        ) {
            if let Some(text) = last_user_text(&canonical) {
                let embedding = crate::forward::embed(
                    gateway,
                    snap,
                    &semantic.embedding_model,
                    &text,
                    ctx.id.as_str(),
                )
                .await;
                match embedding {
                    Some(vector) => {
                        if !no_cache {
                            match cache.get_similar(&keys.semantic, &vector, threshold).await {
                                Ok(Some((found, entry))) => {
                                    answer(
                                        gateway,
                                        session,
                                        ctx,
                                        ingress,
                                        &entry,
                                        found.key,
                                        CacheStatus::SemanticHit,
                                    )
                                    .await;
                                    return Lookup::Answered;
                                }
                                Ok(None) => {}
                                Err(err) => {
                                    gateway.metrics.cache_error();
                                    tracing::warn!(request_id = %ctx.id, error = %err,
                                        "semantic cache lookup failed");
                                }
                            }
                        }
                        similar = Some(vector);
                    }
                    None => gateway.metrics.cache_error(),
                }
            }
        }

        miss(
            ctx,
            if no_cache {
                CacheStatus::Bypass
            } else {
                CacheStatus::Miss
            },
        );
        if no_store {
            return Lookup::Miss(None);
        }
        let mut labels = Labels::route(route.clone());
        labels.tags = ctx
            .accounting
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Lookup::Miss(Some(CacheFill {
            keys: Box::new(keys),
            model: model.to_owned(),
            similar,
            labels,
            ttl: route_cache.ttl,
        }))
    }

    /// Stores a complete answer of `served_model` before its last byte goes out, so the
    /// client's next identical request hits (a memory put takes microseconds, a Redis one
    /// a round trip bounded by `redis_timeout`). `guard` is the request's answer guard:
    /// the answer is stored with its pseudonymized originals concealed, or not at all.
    pub async fn store(
        &self,
        fill: CacheFill,
        mut entry: CacheEntry,
        served_model: &str,
        guard: Option<&AnswerGuard>,
        metrics: &Metrics,
    ) {
        if let Some(pseudonyms) = guard.map(AnswerGuard::pseudonyms) {
            if !pseudonyms.is_empty() {
                let Some(concealer) = pseudonyms.concealer() else {
                    return;
                };
                entry.rewrite_text(|text| match concealer.conceal(text) {
                    Cow::Owned(concealed) => Some(concealed),
                    Cow::Borrowed(_) => None,
                });
                if entry.any_text(|text| concealer.reveals(text)) {
                    return;
                }
            }
        }
        let Some(cache) = self.cache().await else {
            return;
        };
        let keys = fill.keys_for(served_model);
        if let Err(err) = cache.put(&keys.exact, entry, &fill.labels, fill.ttl).await {
            metrics.cache_error();
            tracing::warn!(error = %err, "answer not cached");
            return;
        }
        if let Some(vector) = &fill.similar {
            cache.put_similar(&keys.semantic, vector, &keys.exact, &fill.labels, fill.ttl);
        }
    }
}

/// `Cache-Control` request directives: (`no-cache`, `no-store`).
fn cache_control(session: &Session) -> (bool, bool) {
    let mut flags = (false, false);
    for value in session
        .req_header()
        .headers
        .get_all(http::header::CACHE_CONTROL)
    {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" => flags.0 = true,
                "no-store" => flags.1 = true,
                _ => {}
            }
        }
    }
    flags
}

/// Writes a cached answer in the client's dialect and format.
async fn answer(
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    ingress: &IngressRequest,
    entry: &CacheEntry,
    key: CacheKey,
    status: CacheStatus,
) {
    // The entry holds placeholders where its request's originals were: this request's
    // own originals go back in.
    let restored;
    let entry = match ctx.answer_guard.as_deref().map(AnswerGuard::pseudonyms) {
        Some(pseudonyms) if !pseudonyms.is_empty() => {
            let mut own = entry.clone();
            own.rewrite_text(|text| match pseudonyms.restore(text) {
                Cow::Owned(text) => Some(text),
                Cow::Borrowed(_) => None,
            });
            restored = own;
            &restored
        }
        _ => entry,
    };
    ctx.accounting.cache = status;
    let route = ctx.route.as_deref().unwrap_or_default();
    gateway.metrics.cache_request(route, status.as_str());
    // Served by no upstream: nothing is charged; the record keeps what the hit saved.
    ctx.model = None;
    ctx.accounting.served_model = Some(entry.model().to_owned());
    ctx.usage = Some(entry.usage());
    ctx.accounting.saved_cost = entry.cost().unwrap_or_default();
    gateway
        .metrics
        .cache_saved(route, &entry.usage(), ctx.accounting.saved_cost);
    let replay = Replay {
        request_id: ctx.id.as_str(),
        created: SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        include_usage: ingress.include_usage(),
    };
    let dialect = ingress.dialect();
    let (content_type, body) = if ingress.stream() {
        ("text/event-stream", entry.replay_stream(dialect, &replay))
    } else {
        ("application/json", entry.replay_body(dialect, &replay))
    };
    ctx.status = 200;
    ctx.first_byte = Some(std::time::Instant::now());
    let Ok(mut header) = ResponseHeader::build(200, Some(6)) else {
        return;
    };
    let _ = header.insert_header("content-type", content_type);
    let _ = header.insert_header("content-length", body.len().to_string());
    let _ = header.insert_header("x-request-id", ctx.id.as_str());
    let _ = header.insert_header("x-tollgate-cache", header_value(status));
    let _ = header.insert_header(KEY_HEADER, key.to_hex());
    let _ = header.insert_header("x-tollgate-cost", "0");
    // A hit counts against the request limits like any answer, so it says where they stand.
    for (name, value) in &ctx.rate_headers {
        let _ = header.insert_header(*name, value.as_str());
    }
    crate::proxy::close_if_draining(session, ctx);
    if session
        .write_response_header(Box::new(header), false)
        .await
        .is_ok()
    {
        let _ = session
            .write_response_body(Some(Bytes::from(body)), true)
            .await;
    }
}

/// Names the cache entry an answer came from or went into, for purge by key.
pub const KEY_HEADER: &str = "x-tollgate-cache-key";

/// The `x-tollgate-cache` value of a status.
pub fn header_value(status: CacheStatus) -> &'static str {
    match status {
        CacheStatus::Hit => "hit",
        CacheStatus::SemanticHit => "semantic-hit",
        CacheStatus::Miss => "miss",
        CacheStatus::Bypass | CacheStatus::Off => "bypass",
    }
}

/// The entry of a complete non-stream answer in the client's `dialect`; `None` when it is
/// not cacheable.
pub fn entry_of_body(dialect: Dialect, body: &[u8]) -> Option<CacheEntry> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let response = match dialect {
        Dialect::OpenAi => tollgate_providers::openai::decode_response(&value).ok()?,
        Dialect::Anthropic => tollgate_providers::anthropic::decode_response(&value).ok()?,
    };
    CacheEntry::from_response(&response)
}

/// Records the SSE bytes a stream sends its client, for the cache.
pub struct StreamTap {
    decoder: SseDecoder,
    events: Vec<SseEvent>,
    recorder: StreamRecorder,
    broken: bool,
}

impl StreamTap {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            decoder: SseDecoder::new(),
            events: Vec::new(),
            recorder: StreamRecorder::new(dialect),
            broken: false,
        }
    }

    /// Reads bytes about to be sent to the client.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        self.events.clear();
        if self.decoder.feed(bytes, &mut self.events).is_err() {
            self.broken = true;
            return;
        }
        for event in &self.events {
            self.recorder.push_sse(event);
        }
    }

    /// The entry of the stream that ended normally with `usage`; `None` when it is not
    /// cacheable.
    pub fn finish(self, usage: Option<tollgate_core::Usage>) -> Option<CacheEntry> {
        if self.broken {
            return None;
        }
        self.recorder.finish(usage)
    }
}
