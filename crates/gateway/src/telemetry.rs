//! OpenTelemetry traces over OTLP/HTTP (JSON), off unless `telemetry.otlp_endpoint` is set.
//! One client span per request with the GenAI semantic-convention attributes; the
//! client's W3C `traceparent` is its parent, and the span is propagated to the provider.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tollgate_config::TelemetryConfig;

/// How long spans wait in the batch before export: short enough for an operator to see a
/// request a moment after it ends, long enough to batch under load.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

/// Spans held for export at most; past it new spans are dropped (counted by the SDK)
/// rather than growing memory when the collector is down.
const MAX_QUEUED_SPANS: usize = 8192;

/// A collector that does not answer in this time loses that batch, not the gateway's time.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    pub fn start(cfg: &TelemetryConfig) -> Result<Self, String> {
        let endpoint = format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(EXPORT_DELAY)
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts the span of one request, a child of the client's `traceparent` if it sent one.
    pub fn request_span(&self, headers: &http::HeaderMap, operation: &str, model: &str) -> Context {
        let parent = self.propagator.extract(&HeaderSource(headers));
        let span = self
            .tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", operation.to_owned()),
                KeyValue::new("gen_ai.request.model", model.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// The `traceparent` (and `tracestate`) headers that make the provider's work a child
    /// of the request's span.
    pub fn propagation_headers(&self, cx: &Context) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        self.propagator
            .inject_context(cx, &mut HeaderSink(&mut headers));
        headers
    }

    /// Exports the spans still queued.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

/// Flushes the span queue when the server shuts down, so the last requests' spans are
/// not lost with the process.
pub struct FlushOnShutdown(pub std::sync::Arc<Telemetry>);

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for FlushOnShutdown {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let _ = shutdown.changed().await;
        let telemetry = self.0.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.flush()).await;
    }
}

/// What the finished request adds to its span.
pub struct SpanEnd<'a> {
    pub provider_kind: Option<&'a str>,
    pub response_model: Option<&'a str>,
    pub route: Option<&'a str>,
    pub request_id: &'a str,
    pub status: u16,
    pub error: Option<&'a str>,
    pub usage: Option<tollgate_core::Usage>,
    pub max_tokens: Option<u64>,
}

pub fn end_span(cx: &Context, end: &SpanEnd<'_>) {
    let span = cx.span();
    let mut attributes = vec![
        KeyValue::new("tollgate.request_id", end.request_id.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(end.status)),
    ];
    if let Some(kind) = end.provider_kind {
        attributes.push(KeyValue::new("gen_ai.provider.name", kind.to_owned()));
        attributes.push(KeyValue::new("gen_ai.system", kind.to_owned()));
    }
    if let Some(model) = end.response_model {
        attributes.push(KeyValue::new("gen_ai.response.model", model.to_owned()));
    }
    if let Some(route) = end.route {
        attributes.push(KeyValue::new("tollgate.route", route.to_owned()));
    }
    if let Some(max) = end.max_tokens {
        attributes.push(KeyValue::new("gen_ai.request.max_tokens", max as i64));
    }
    if let Some(usage) = end.usage {
        attributes.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            usage.input_tokens as i64,
        ));
        attributes.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            usage.output_tokens as i64,
        ));
    }
    if let Some(error) = end.error {
        attributes.push(KeyValue::new("error.type", error.to_owned()));
        span.set_status(Status::error(error.to_owned()));
    }
    span.set_attributes(attributes);
    span.end();
}

struct HeaderSource<'a>(&'a http::HeaderMap);

impl Extractor for HeaderSource<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderSink<'a>(&'a mut Vec<(&'static str, String)>);

impl Injector for HeaderSink<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}
