//! Prometheus metrics, `tollgate_` prefix. Every label takes values from a set the
//! operator's config bounds (routes, catalog models, providers, endpoints) or from a
//! fixed list in this file, so a hostile client cannot grow the series count.

use std::time::Instant;

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tollgate_routing::{CircuitState, Failure, Upstreams};

/// Latency buckets in seconds: LLM calls span milliseconds (cache, errors) to minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    attempts: IntCounterVec,
    fallbacks: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    ledger_errors: IntCounter,
    active_streams: IntGauge,
    client_connections: IntGauge,
    connections_refused: IntCounter,
    circuit_state: IntGaugeVec,
    endpoint_healthy: IntGaugeVec,
    guardrail_actions: IntCounterVec,
    cache_requests: IntCounterVec,
    cache_saved_tokens: IntCounterVec,
    cache_saved_cost: CounterVec,
    cache_errors: IntCounter,
    limit_rejections: IntCounterVec,
    budget_blocks: IntCounter,
    budget_alerts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let latency = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "stream"],
            )
        };
        let metrics = Metrics {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new(
                    "tollgate_requests_total",
                    "Requests answered, by route, served model, status class and error",
                ),
                &["route", "model", "status", "error"],
            )?,
            duration: latency(
                "tollgate_request_duration_seconds",
                "Time from request to the last byte of the answer",
            )?,
            ttft: latency(
                "tollgate_time_to_first_byte_seconds",
                "Time from request to the first byte sent to the client (the first token on streams)",
            )?,
            attempts: IntCounterVec::new(
                Opts::new(
                    "tollgate_upstream_attempts_total",
                    "Upstream attempts by provider and outcome",
                ),
                &["provider", "outcome"],
            )?,
            fallbacks: IntCounterVec::new(
                Opts::new(
                    "tollgate_fallbacks_total",
                    "Requests served by a fallback candidate, by route",
                ),
                &["route"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "tollgate_tokens_total",
                    "Tokens by served model and direction (input, output, cached_input, reasoning)",
                ),
                &["model", "direction"],
            )?,
            cost: CounterVec::new(
                Opts::new(
                    "tollgate_cost_usd_total",
                    "Cost in USD by route, served model and team, from the config's prices",
                ),
                &["route", "model", "team"],
            )?,
            ledger_errors: IntCounter::new(
                "tollgate_ledger_errors_total",
                "Usage records that could not be written to the spool",
            )?,
            active_streams: IntGauge::new("tollgate_active_streams", "Streams being relayed now")?,
            client_connections: IntGauge::new(
                "tollgate_client_connections",
                "Client connections open now, idle and half-sent ones included",
            )?,
            connections_refused: IntCounter::new(
                "tollgate_client_connections_refused_total",
                "Client connections closed on arrival: their address had \
                 server.client.limits.max_connections_per_address open",
            )?,
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "tollgate_circuit_state",
                    "Circuit of each endpoint: 0 closed, 1 half-open, 2 open",
                ),
                &["provider", "endpoint"],
            )?,
            endpoint_healthy: IntGaugeVec::new(
                Opts::new(
                    "tollgate_endpoint_healthy",
                    "Active health of each endpoint: 1 healthy, 0 unhealthy (absent without a check)",
                ),
                &["provider", "endpoint"],
            )?,
            guardrail_actions: IntCounterVec::new(
                Opts::new(
                    "tollgate_guardrail_actions_total",
                    "Guardrail actions by guardrail, entity or reason code, action and direction",
                ),
                &["guardrail", "entity", "action", "direction"],
            )?,
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "tollgate_cache_requests_total",
                    "Requests on cached routes by result: hit, semantic-hit, miss, bypass",
                ),
                &["route", "result"],
            )?,
            cache_saved_tokens: IntCounterVec::new(
                Opts::new(
                    "tollgate_cache_saved_tokens_total",
                    "Tokens cache hits did not spend, by route and direction",
                ),
                &["route", "direction"],
            )?,
            cache_saved_cost: CounterVec::new(
                Opts::new(
                    "tollgate_cache_saved_cost_usd_total",
                    "USD cache hits did not spend, by route",
                ),
                &["route"],
            )?,
            cache_errors: IntCounter::new(
                "tollgate_cache_errors_total",
                "Cache lookups, stores and embeddings that failed (served as misses)",
            )?,
            limit_rejections: IntCounterVec::new(
                Opts::new(
                    "tollgate_ratelimit_rejections_total",
                    "Requests refused by a rate limit, by limit name and kind",
                ),
                &["limit", "kind"],
            )?,
            budget_blocks: IntCounter::new(
                "tollgate_budget_blocked_total",
                "Requests refused because a budget is spent or its scope is killed",
            )?,
            budget_alerts: IntCounterVec::new(
                Opts::new(
                    "tollgate_budget_alerts_total",
                    "Budget alert thresholds crossed, by budget",
                ),
                &["budget"],
            )?,
        };
        for collector in metrics.collectors() {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.ttft.clone()),
            Box::new(self.attempts.clone()),
            Box::new(self.fallbacks.clone()),
            Box::new(self.tokens.clone()),
            Box::new(self.cost.clone()),
            Box::new(self.ledger_errors.clone()),
            Box::new(self.active_streams.clone()),
            Box::new(self.client_connections.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.circuit_state.clone()),
            Box::new(self.endpoint_healthy.clone()),
            Box::new(self.guardrail_actions.clone()),
            Box::new(self.cache_requests.clone()),
            Box::new(self.cache_saved_tokens.clone()),
            Box::new(self.cache_saved_cost.clone()),
            Box::new(self.cache_errors.clone()),
            Box::new(self.limit_rejections.clone()),
            Box::new(self.budget_blocks.clone()),
            Box::new(self.budget_alerts.clone()),
        ]
    }

    /// Records one finished request.
    pub fn request(&self, done: &RequestDone<'_>) {
        let status = match done.status {
            0 => "none",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let stream = if done.stream { "true" } else { "false" };
        self.requests
            .with_label_values(&[done.route, done.model, status, done.error])
            .inc();
        self.duration
            .with_label_values(&[done.route, stream])
            .observe(done.started.elapsed().as_secs_f64());
        if let Some(first) = done.first_byte {
            self.ttft
                .with_label_values(&[done.route, stream])
                .observe(first.saturating_duration_since(done.started).as_secs_f64());
        }
        if done.fallback {
            self.fallbacks.with_label_values(&[done.route]).inc();
        }
        if let Some(cost) = done.cost.filter(|c| *c > 0.0) {
            self.cost
                .with_label_values(&[done.route, done.model, done.team])
                .inc_by(cost);
        }
        if let Some(usage) = done.usage {
            for (direction, count) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cached_input", usage.cached_input_tokens),
                ("reasoning", usage.reasoning_tokens),
            ] {
                self.tokens
                    .with_label_values(&[done.model, direction])
                    .inc_by(count);
            }
        }
    }

    /// Counts what guardrails did to one request. Labels come from the config (guardrail
    /// names) and fixed code lists, so their cardinality is bounded.
    pub fn guardrail_actions(&self, actions: &[tollgate_ledger::GuardrailAction]) {
        for a in actions {
            self.guardrail_actions
                .with_label_values(&[&*a.guardrail, &*a.reason, &*a.action, &*a.direction])
                .inc_by(u64::from(a.count));
        }
    }

    /// One request on a cached route; `result` is a fixed word.
    pub fn cache_request(&self, route: &str, result: &str) {
        self.cache_requests
            .with_label_values(&[route, result])
            .inc();
    }

    /// What one cache hit saved.
    pub fn cache_saved(
        &self,
        route: &str,
        usage: &tollgate_core::Usage,
        cost: rust_decimal::Decimal,
    ) {
        self.cache_saved_tokens
            .with_label_values(&[route, "input"])
            .inc_by(usage.input_tokens);
        self.cache_saved_tokens
            .with_label_values(&[route, "output"])
            .inc_by(usage.output_tokens);
        if let Some(cost) = rust_decimal::prelude::ToPrimitive::to_f64(&cost) {
            self.cache_saved_cost
                .with_label_values(&[route])
                .inc_by(cost);
        }
    }

    /// Labels are limit and budget names from the config.
    pub fn limit_rejected(&self, limit: &str, kind: &str) {
        self.limit_rejections
            .with_label_values(&[limit, kind])
            .inc();
    }

    pub fn budget_blocked(&self) {
        self.budget_blocks.inc();
    }

    pub fn budget_alert(&self, budget: &str) {
        self.budget_alerts.with_label_values(&[budget]).inc();
    }

    pub fn cache_error(&self) {
        self.cache_errors.inc();
    }

    pub fn ledger_error(&self) {
        self.ledger_errors.inc();
    }

    pub fn attempt(&self, provider: &str, failure: Option<&Failure>) {
        let outcome = match failure {
            None => "success",
            Some(Failure::Connect) => "connect_error",
            Some(Failure::Timeout(_)) => "timeout",
            Some(Failure::Status { code: 429, .. }) => "rate_limited",
            Some(Failure::Status { code, .. }) if *code >= 500 => "server_error",
            Some(Failure::Status { .. }) => "rejected",
            Some(Failure::ContextTooLong) => "context_too_long",
            Some(Failure::Other) => "other",
        };
        self.attempts.with_label_values(&[provider, outcome]).inc();
    }

    /// Counts a stream as active until the guard is dropped.
    pub fn stream_started(&self) -> GaugeGuard {
        GaugeGuard::new(&self.active_streams)
    }

    pub fn connection_opened(&self) -> GaugeGuard {
        GaugeGuard::new(&self.client_connections)
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// The text exposition, with circuit and health gauges refreshed from `upstreams`.
    pub fn render(&self, upstreams: &Upstreams) -> Vec<u8> {
        let status = upstreams.status(Instant::now());
        self.circuit_state.reset();
        self.endpoint_healthy.reset();
        for provider in &status.providers {
            for endpoint in &provider.endpoints {
                let index = endpoint.index.to_string();
                let labels = [provider.name.as_str(), index.as_str()];
                let state = match endpoint.circuit {
                    CircuitState::Closed => 0,
                    CircuitState::HalfOpen => 1,
                    CircuitState::Open => 2,
                };
                self.circuit_state.with_label_values(&labels).set(state);
                if let Some(healthy) = endpoint.healthy {
                    self.endpoint_healthy
                        .with_label_values(&labels)
                        .set(i64::from(healthy));
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Counts one open stream or connection in its gauge until dropped, whatever way it ended.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the access log and the metrics learn of a finished request.
pub struct RequestDone<'a> {
    pub route: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub error: &'a str,
    pub stream: bool,
    pub started: Instant,
    pub first_byte: Option<Instant>,
    pub fallback: bool,
    pub usage: Option<tollgate_core::Usage>,
    /// USD; `None` when unpriced.
    pub cost: Option<f64>,
    pub team: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_registered_and_rendered() {
        let m = Metrics::new().unwrap();
        m.request(&RequestDone {
            route: "r",
            model: "m",
            status: 200,
            error: "",
            stream: true,
            started: Instant::now(),
            first_byte: Some(Instant::now()),
            fallback: true,
            usage: Some(tollgate_core::Usage {
                input_tokens: 3,
                output_tokens: 5,
                ..Default::default()
            }),
            cost: Some(0.25),
            team: "t",
        });
        m.attempt(
            "p",
            Some(&Failure::Status {
                code: 429,
                retry_after: None,
            }),
        );
        let _guard = m.stream_started();
        let _connection = m.connection_opened();
        m.connection_refused();
        let cfg = tollgate_config::parse(
            "providers:\n  p: { kind: openai, endpoints: [\"http://127.0.0.1:1\"] }\n",
            "t.yaml",
        )
        .unwrap();
        let upstreams = Upstreams::from_config(&cfg).unwrap();
        let text = String::from_utf8(m.render(&upstreams)).unwrap();
        for name in [
            "tollgate_requests_total",
            "tollgate_request_duration_seconds",
            "tollgate_time_to_first_byte_seconds",
            "tollgate_upstream_attempts_total",
            "tollgate_fallbacks_total",
            r#"tollgate_tokens_total{direction="output",model="m"} 5"#,
            "tollgate_active_streams 1",
            "tollgate_client_connections 1",
            "tollgate_client_connections_refused_total 1",
            "tollgate_circuit_state",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.contains(r#"outcome="rate_limited""#));
    }
}
