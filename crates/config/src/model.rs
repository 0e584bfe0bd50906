//! The file format operators write, as serde structs. Every struct rejects unknown keys;
//! every default is documented here and in `conf/tollgate.yaml`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A whole `tollgate.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Provider accounts by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The model catalog: logical model name -> where it is served.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Matched top-down; the first match wins. A request for a catalog model that no route
    /// matches is served by that model alone with default retry and timeouts.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Gateway keys (hashes only).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Where usage records go. Default: SQLite at `data/usage.db`, spool in `data/spool`.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// How the gateway counts tokens the providers do not report.
    #[serde(default)]
    pub metering: MeteringConfig,
    /// What the per-request access log line carries.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// OpenTelemetry traces; off when absent.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
    /// Named guardrails, applied by the routes that list them.
    #[serde(default)]
    pub guardrails: BTreeMap<String, crate::GuardrailConfig>,
    /// The response cache's store; routes opt in with their own `cache:`. Off when absent.
    #[serde(default)]
    pub cache: Option<tollgate_cache::CacheConfig>,
    /// Rate limits, checked top-down; every limit that matches applies.
    #[serde(default)]
    pub limits: Vec<tollgate_policy::LimitConfig>,
    /// Spending limits in USD per key, user, team or tag and calendar period.
    #[serde(default)]
    pub budgets: Vec<tollgate_policy::BudgetConfig>,
    /// Where limit and budget counters live: this node's memory, or Redis for several.
    #[serde(default)]
    pub state: tollgate_policy::StateConfig,
    /// Gateway keys managed through the admin API, besides those in `keys:`. Off when
    /// absent.
    #[serde(default)]
    pub managed_keys: Option<ManagedKeysConfig>,
}

/// Where managed keys are stored (hashed): SQLite for one node, PostgreSQL for several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedKeysConfig {
    /// `sqlite` or `postgres`. (default sqlite)
    #[serde(default)]
    pub store: LedgerSink,
    /// SQLite database file. (default data/keys.db)
    #[serde(default = "default_keys_path")]
    pub path: std::path::PathBuf,
    /// PostgreSQL connection URL; required for `postgres`.
    #[serde(default)]
    pub url: Option<String>,
}

fn default_keys_path() -> std::path::PathBuf {
    std::path::PathBuf::from("data/keys.db")
}

/// OTLP/HTTP (JSON) trace export.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (spans go to
    /// `/v1/traces` under it).
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Default `tollgate`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "tollgate".to_owned()
}

/// The usage ledger: every request's record is spooled durably to local disk first, then
/// shipped to the sink in the background.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    #[serde(default)]
    pub sink: LedgerSink,
    /// `sqlite`: the database file. Default `data/usage.db`.
    #[serde(default = "default_ledger_path")]
    pub path: std::path::PathBuf,
    /// `postgres`: a connection URL, e.g. `postgres://tollgate:${PGPASSWORD}@db:5432/tollgate`.
    #[serde(default)]
    pub url: Option<String>,
    /// The spool directory (one per gateway process). Default `data/spool`.
    #[serde(default = "default_spool_dir")]
    pub spool: std::path::PathBuf,
    /// What an answer's record must survive before the answer's last byte is sent.
    #[serde(default)]
    pub durability: LedgerDurability,
    /// `durability: process`: how often the spool is fsynced. Default 1s.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
}

/// Token counting by the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringConfig {
    /// Count tokens with tiktoken (o200k) when a provider reports no usage, or a stream
    /// ends before its report (cut, or the client left): the text of every streamed answer
    /// is tokenized as it passes. `false` skips that work; such records then hold only what
    /// the provider reported (often nothing), still flagged `estimated`. (default true)
    #[serde(default = "default_true")]
    pub estimate: bool,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self { estimate: true }
    }
}

/// The access log: one JSON line per request on stderr, target `access`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Add the prompt's text, as the route's guardrails left it (redacted where they
    /// redact; as sent on a route without guardrails), cut to its first 4 KiB. (default
    /// false)
    #[serde(default)]
    pub prompt: bool,
}

/// How far a usage record is written before the answer it accounts for completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerDurability {
    /// Written to the OS: survives the gateway being killed or crashing; the spool is
    /// fsynced every `fsync_interval`, so a power loss or kernel crash can lose the
    /// records of the last interval. Adds microseconds to an answer.
    #[default]
    Process,
    /// Fsynced (group-committed with concurrent answers): survives a power loss too, and
    /// adds a disk flush to every answer.
    Machine,
}

/// Bounds of `ledger.fsync_interval`.
pub const FSYNC_INTERVAL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);

fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            sink: LedgerSink::default(),
            path: default_ledger_path(),
            url: None,
            spool: default_spool_dir(),
            durability: LedgerDurability::default(),
            fsync_interval: default_fsync_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerSink {
    /// Embedded SQLite: one node.
    #[default]
    Sqlite,
    /// PostgreSQL: several nodes share one ledger.
    Postgres,
}

fn default_ledger_path() -> std::path::PathBuf {
    "data/usage.db".into()
}

fn default_spool_dir() -> std::path::PathBuf {
    "data/spool".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Client-facing plain-HTTP listeners. Default `["0.0.0.0:8080"]`; `[]` when only TLS
    /// listeners (`tls.listen`) serve clients.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Admin listener for `/healthz`, `/readyz`, `/metrics`, `/admin/*`. Default
    /// `127.0.0.1:9090`; `null` disables.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: Option<String>,
    /// Worker threads of the proxy service. Default: the number of CPU cores.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Largest request body accepted, in bytes; larger bodies get 413 before any upstream
    /// request. Default 32 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// TLS termination with rustls; no TLS listener when absent.
    #[serde(default)]
    pub tls: Option<TlsListenConfig>,
    /// Accept HTTP/2 without TLS (prior knowledge, "h2c") on `listen`. Default false.
    #[serde(default)]
    pub h2c: bool,
    /// Downstream (client) connection settings.
    #[serde(default)]
    pub client: ClientConnConfig,
    /// Upstream (provider) connection settings.
    #[serde(default)]
    pub upstream: UpstreamConnConfig,
    /// After SIGTERM or an upgrade hand-over, the longest time requests in flight may take
    /// to finish; the process exits as soon as none is left. Default 300s.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// After the grace period, how long the runtimes get to stop before the process
    /// exits. Default 5s.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// After SIGTERM or an upgrade hand-over, how long idle kept-alive client connections
    /// stay open: a request that arrives on one meanwhile is served and answered with
    /// `Connection: close`, so a client reusing a pooled connection never races the
    /// process closing it. Bounded by `shutdown_grace`. Default 2s; `0s` closes them at once.
    #[serde(default = "default_idle_drain", with = "humantime_serde")]
    pub idle_drain: Duration,
    /// Unix socket over which a process started with `tollgate run --upgrade` receives
    /// the listening sockets of the running one (which hands them over on SIGQUIT).
    /// Default `/tmp/tollgate-upgrade.sock`.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: PathBuf,
    /// File the process writes its pid to once it serves; none when absent.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            threads: None,
            max_body_bytes: default_max_body_bytes(),
            tls: None,
            h2c: false,
            client: ClientConnConfig::default(),
            upstream: UpstreamConnConfig::default(),
            shutdown_grace: default_shutdown_grace(),
            shutdown_timeout: default_shutdown_timeout(),
            idle_drain: default_idle_drain(),
            upgrade_sock: default_upgrade_sock(),
            pid_file: None,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".to_owned()]
}

fn default_admin_listen() -> Option<String> {
    Some("127.0.0.1:9090".to_owned())
}

fn default_max_body_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_idle_drain() -> Duration {
    Duration::from_secs(2)
}

fn default_upgrade_sock() -> PathBuf {
    "/tmp/tollgate-upgrade.sock".into()
}

/// TLS listeners. Certificates are PEM files (the leaf first, then intermediates); keys
/// are PEM PKCS#8, PKCS#1 or SEC1. TLS 1.2 and 1.3 are offered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenConfig {
    /// Addresses served with TLS, e.g. `["0.0.0.0:8443"]`.
    pub listen: Vec<String>,
    /// The certificate chain served when no `sni` entry matches the name the client asks
    /// for (or it sends none). Required unless `sni` is given.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Certificates chosen by the server name (SNI) the client sends; the first entry
    /// naming it wins. `*.example.com` matches one label.
    #[serde(default)]
    pub sni: Vec<SniCertConfig>,
    /// CA bundle (PEM) that client certificates must chain to; every client must then
    /// present one. No client authentication when absent.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`). Default true.
    #[serde(default = "default_true")]
    pub http2: bool,
}

fn default_true() -> bool {
    true
}

/// One certificate served for the listed server names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertConfig {
    /// DNS names, e.g. `[api.example.com, "*.internal.example.com"]`.
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Settings of the connections clients open to the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConnConfig {
    /// Read buffer per client connection, in bytes. Default 65536 (Pingora's); a smaller
    /// one saves memory with many idle streaming clients at the cost of more reads for
    /// large request bodies.
    #[serde(default = "default_read_buffer")]
    pub read_buffer: usize,
    /// Requests served on one HTTP/1.1 connection before it is closed; no limit when absent.
    #[serde(default)]
    pub keepalive_requests: Option<u32>,
    /// TCP keep-alive probes on client connections, so connections of vanished clients
    /// are closed; off when absent.
    #[serde(default)]
    pub tcp_keepalive: Option<TcpKeepaliveConfig>,
    /// Concurrent streams per HTTP/2 client connection. Default 100.
    #[serde(default = "default_h2_max_streams")]
    pub h2_max_streams: u32,
    /// Close an HTTP/2 client connection idle this long; never when absent.
    #[serde(default, with = "humantime_serde")]
    pub h2_idle_timeout: Option<Duration>,
    /// Header, body, idle and write limits on each request.
    #[serde(default)]
    pub limits: crate::ClientLimitsConfig,
}

impl Default for ClientConnConfig {
    fn default() -> Self {
        Self {
            read_buffer: default_read_buffer(),
            keepalive_requests: None,
            tcp_keepalive: None,
            h2_max_streams: default_h2_max_streams(),
            h2_idle_timeout: None,
            limits: crate::ClientLimitsConfig::default(),
        }
    }
}

fn default_read_buffer() -> usize {
    64 * 1024
}

fn default_h2_max_streams() -> u32 {
    100
}

/// TCP keep-alive: after `idle` without traffic, a probe every `interval`; `count`
/// unanswered probes close the connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepaliveConfig {
    /// Default 60s.
    #[serde(default = "default_keepalive_idle", with = "humantime_serde")]
    pub idle: Duration,
    /// Default 10s.
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Default 6.
    #[serde(default = "default_keepalive_count")]
    pub count: usize,
}

fn default_keepalive_idle() -> Duration {
    Duration::from_secs(60)
}

fn default_keepalive_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_keepalive_count() -> usize {
    6
}

/// Settings of the connections the gateway opens to providers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConnConfig {
    /// Idle upstream connections kept for reuse, in total. Default 128 per worker thread.
    #[serde(default)]
    pub keepalive_pool: Option<usize>,
    /// How long an idle pooled upstream connection is kept. Default 60s.
    #[serde(default = "default_upstream_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for UpstreamConnConfig {
    fn default() -> Self {
        Self {
            keepalive_pool: None,
            idle_timeout: default_upstream_idle(),
        }
    }
}

fn default_upstream_idle() -> Duration {
    Duration::from_secs(60)
}

/// The wire dialect a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible server (vLLM, Ollama, Mistral, Groq, DeepSeek…).
    Openai,
    /// Azure OpenAI: a model's `model` is its deployment name; keys go in `api-key`.
    AzureOpenai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generateContent`, `streamGenerateContent`).
    Gemini,
    /// Amazon Bedrock's Converse API, signed with SigV4 (`region` and `aws` required).
    Bedrock,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URLs, e.g. `https://api.openai.com` or `http://127.0.0.1:11434`. A path in the URL
    /// is kept as a prefix (`https://api.groq.com/openai` -> `/openai/v1/chat/completions`).
    pub endpoints: Vec<String>,
    /// Provider API keys, used in turn; a key answered with 429 cools down for Retry-After.
    /// Empty for servers without auth.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Extra headers sent upstream on every request (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Active health checks; off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// `azure_openai`: the `api-version` query parameter (a recent GA version by default);
    /// `anthropic`: the `anthropic-version` header (default `2023-06-01`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// `bedrock`: the AWS region, e.g. `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// `bedrock`: credentials for SigV4 signing.
    #[serde(default)]
    pub aws: Option<AwsConfig>,
    /// How `https` endpoints are verified and authenticated. Default: the server's
    /// certificate must chain to the system's roots; no client certificate.
    #[serde(default)]
    pub tls: Option<ProviderTlsConfig>,
    /// HTTP/2 to this provider, so that many requests and streams share a few
    /// connections: `https` endpoints offer `h2` in ALPN and fall back to HTTP/1.1 when the
    /// server does not take it; `http` endpoints speak h2c with prior knowledge, so the
    /// server must accept it. Health checks stay on HTTP/1.1. Default false.
    #[serde(default)]
    pub http2: bool,
    /// With `http2`, the concurrent streams one connection carries before another one
    /// opens (fewer when the server's SETTINGS allow fewer). Default 100.
    #[serde(default = "default_http2_streams")]
    pub http2_streams: usize,
}

/// The largest `http2_streams`: servers rarely allow more, and one connection's flow
/// control window would be shared too thinly.
pub const MAX_HTTP2_STREAMS: usize = 1000;

fn default_http2_streams() -> usize {
    100
}

/// TLS towards one provider's `https` endpoints (and their health checks).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTlsConfig {
    /// CA bundle (PEM) the endpoints' certificates must chain to, instead of the system
    /// roots (a private CA, a self-hosted model server).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to the provider (mutual TLS); needs
    /// `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Name sent as SNI and checked against the certificate, instead of the endpoint's
    /// host (an endpoint given by IP address whose certificate names a host).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// AWS credentials for Bedrock; write them as `${AWS_ACCESS_KEY_ID}` etc.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET. Default `/v1/models`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Default 10s.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Status that counts as healthy. Default 200.
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
}

fn default_health_path() -> String {
    "/v1/models".to_owned()
}

fn default_health_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_expected_status() -> u16 {
    200
}

/// Passive circuit breaker per endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures (connect errors, timeouts, 5xx) that open the circuit. Default 5.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long an open circuit refuses traffic before one half-open probe. Default 30s.
    #[serde(default = "default_breaker_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            cooldown: default_breaker_cooldown(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}

/// What a logical model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelMode {
    #[default]
    Chat,
    Embeddings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name of an entry in `providers`.
    pub provider: String,
    /// The model id the provider knows.
    pub model: String,
    #[serde(default)]
    pub mode: ModelMode,
    /// Largest prompt + output in tokens; targets whose window is smaller than the
    /// request's estimated prompt are skipped. Unchecked when absent.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Prices in USD per 1M tokens.
    #[serde(default)]
    pub price: Option<PriceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Price of cached input tokens; the input price when absent.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Every given condition must hold; an empty match matches every request.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Catalog models tried in order after the selected target failed.
    #[serde(default)]
    pub fallback: Vec<String>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Names from `guardrails:`, applied in this order.
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// Response caching for this route (needs the top-level `cache:`). Off when absent.
    #[serde(default)]
    pub cache: Option<tollgate_cache::RouteCacheConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Requested model name(s).
    #[serde(default, deserialize_with = "one_or_many")]
    pub model: Vec<String>,
    /// Gateway key name(s).
    #[serde(default, deserialize_with = "one_or_many")]
    pub key: Vec<String>,
    /// Team(s) of the gateway key.
    #[serde(default, deserialize_with = "one_or_many")]
    pub team: Vec<String>,
    /// Request headers that must be present with exactly these values (names case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Entries that must be present in the request's `metadata` object.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Name of a catalog model.
    pub model: String,
    /// Share of traffic under the `weighted` strategy. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// How a route picks one of its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Random by weight (the default).
    #[default]
    Weighted,
    /// Lowest EWMA time-to-first-byte, by the power of two random choices.
    Latency,
    /// Fewest requests in flight.
    LeastBusy,
    /// Cheapest healthy target by price.
    Cost,
}

/// A failure class that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// Status 429.
    RateLimited,
    /// Any status 500-599.
    ServerError,
    /// Connect, first-byte, idle or total timeout.
    Timeout,
    /// Connection refused or reset before a response.
    Connect,
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, so a wrong value is named in the error.
        struct RetryOnVisitor;

        impl Visitor<'_> for RetryOnVisitor {
            type Value = RetryOn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of 429, 5xx, timeout, connect")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RetryOn, E> {
                self.visit_str(&n.to_string())
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RetryOn, E> {
                self.visit_str(&n.to_string())
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<RetryOn, E> {
                match text {
                    "429" => Ok(RetryOn::RateLimited),
                    "5xx" => Ok(RetryOn::ServerError),
                    "timeout" => Ok(RetryOn::Timeout),
                    "connect" => Ok(RetryOn::Connect),
                    other => Err(E::custom(format!(
                        "unknown retry condition '{other}', expected one of 429, 5xx, \
                         timeout, connect"
                    ))),
                }
            }
        }

        deserializer.deserialize_any(RetryOnVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per candidate model (the first try included), each on another endpoint or
    /// key when there is one. Default 2.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Failures that are retried. Default all: `[429, 5xx, timeout, connect]`.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// First backoff; doubles per attempt with full jitter. Default 100ms.
    #[serde(default = "default_backoff_base", with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest backoff. Default 2s.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Longest Retry-After the gateway waits for; a longer one moves on to the next
    /// candidate at once. Default 10s.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            on: default_retry_on(),
            backoff: default_backoff_base(),
            backoff_max: default_backoff_max(),
            max_retry_after: default_max_retry_after(),
        }
    }
}

fn default_attempts() -> u32 {
    2
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::RateLimited,
        RetryOn::ServerError,
        RetryOn::Timeout,
        RetryOn::Connect,
    ]
}

fn default_backoff_base() -> Duration {
    Duration::from_millis(100)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(2)
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP (and TLS) connect. Default 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect: Duration,
    /// Until the first byte of the response (streams: the first token). Default 60s.
    #[serde(default = "default_first_token_timeout", with = "humantime_serde")]
    pub first_token: Duration,
    /// Longest silence between two chunks of a response. Default 60s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle: Duration,
    /// The whole attempt, from connect to the last byte. Default 10m.
    #[serde(default = "default_total_timeout", with = "humantime_serde")]
    pub total: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            first_token: default_first_token_timeout(),
            idle: default_idle_timeout(),
            total: default_total_timeout(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_first_token_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_total_timeout() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs and usable in route matches; never secret.
    pub name: String,
    /// `sha256:<64 hex digits>` of the secret; `tollgate keys new` prints one.
    pub hash: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Logical models (catalog names or route `match.model` names) this key may request;
    /// empty allows all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Route names this key may be served by; empty allows all.
    #[serde(default)]
    pub routes: Vec<String>,
    /// `admin` keys may also call the admin API. (default user)
    #[serde(default)]
    pub role: KeyRole,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    #[default]
    User,
    Admin,
}

/// A string or a list of strings. A visitor rather than an untagged enum, so errors say
/// what was expected and which list element was wrong.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(vec![text.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}
