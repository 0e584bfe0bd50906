//! One usage record per request: who asked, what served it, what it cost.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::Usage;

/// What the ledger keeps about one request, written once when the request ends however
/// it ends (served, failed, rejected, client gone). Fields added later must have serde
/// defaults so that records spooled by an older build still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Minted by the gateway for every request, so unique whatever the client sends: the
    /// sinks' primary key, which makes replaying a record a no-op. Records spooled before
    /// this field existed read with it empty; the spool fills it in from `request_id`, the
    /// key they were stored under then.
    #[serde(default)]
    pub record_id: String,
    /// The id the client sent in `x-request-id` (echoed to it and forwarded upstream), or
    /// the record id when it sent none. Not unique: a client may reuse it (SDK retries).
    pub request_id: String,
    /// When the request arrived, in milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// Gateway key name.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Caller-supplied labels (request metadata).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub route: Option<String>,
    /// The model name the client asked for.
    pub requested_model: String,
    /// The catalog model that answered; `None` when none did.
    #[serde(default)]
    pub served_model: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    /// The upstream base URL that answered.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Every upstream attempt in order, the serving one last.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// HTTP status sent to the client (or that would have been, if it left first).
    pub status: u16,
    /// Why the request did not complete normally, as a short label (`client_gone`,
    /// `upstream_broken`, `rate_limited`, …); `None` when it did.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub stream: bool,
    pub usage: Usage,
    /// USD, exact.
    pub cost: Decimal,
    /// From arrival to the last byte sent.
    pub latency_ms: u64,
    /// From arrival to the first generated token sent; `None` when none was.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    #[serde(default)]
    pub cache: CacheStatus,
    /// For a cache hit: what the answer would have cost without the cache (its `usage`
    /// holds the tokens the hit saved; `cost` is zero).
    #[serde(default)]
    pub saved_cost: Decimal,
    #[serde(default)]
    pub guardrails: Vec<GuardrailAction>,
}

/// One try of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub model: String,
    pub provider: String,
    pub endpoint: String,
    /// `ok`, or what failed: `429`, `5xx`, `timeout`, `connect`, `breaker_open`, …
    pub outcome: String,
    /// The upstream's HTTP status, when it answered.
    #[serde(default)]
    pub status: Option<u16>,
    /// From sending the attempt to its end (the last byte of a relayed answer); `None`
    /// when it never ended (the request was cut short first).
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

impl UsageRecord {
    /// Gives a record spooled before `record_id` existed the key it was stored under then,
    /// so replaying it stays a no-op.
    pub(crate) fn backfill_record_id(&mut self) {
        if self.record_id.is_empty() {
            self.record_id.clone_from(&self.request_id);
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    /// No cache applies to the route.
    #[default]
    Off,
    Hit,
    /// Answered from the entry of a similar earlier request (semantic cache).
    SemanticHit,
    Miss,
    /// A cache applies but the request opted out or was not cacheable.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Hit => "hit",
            Self::SemanticHit => "semantic_hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// What a guardrail did to the request or response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailAction {
    pub guardrail: String,
    /// `mask`, `hash`, `pseudonymize`, `block`, `flag`, `reroute`, `retry`.
    pub action: String,
    /// Why, as a stable code: `pii_email`, `secret`, `prompt_injection`,
    /// `invalid_json_output`… Never the detected value itself.
    #[serde(default)]
    pub reason: String,
    /// `request` or `response`.
    #[serde(default)]
    pub direction: String,
    /// How many times it applied in that direction.
    #[serde(default)]
    pub count: u32,
}
