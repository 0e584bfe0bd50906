//! `guardrails:`: named checks that routes list by name. Each has a `kind`:
//!
//! ```yaml
//! guardrails:
//!   pii:        { kind: pii, entities: [email, credit_card], action: mask, on: [request, response] }
//!   injection:  { kind: injection, threshold: 0.5, action: block }      # flag | block | reroute
//!   strict-json: { kind: json_output, on_invalid: retry }              # error | retry
//! routes:
//!   - { name: support, match: { model: support }, targets: [...], guardrails: [pii, injection] }
//! ```
//!
//! A `pii` guardrail takes every setting of the redaction engine (see `tollgate-redact`'s
//! `RedactConfig`): entities, actions per kind and direction, custom patterns, deny words.

use serde::Deserialize;
pub use tollgate_redact::RedactConfig;

/// One named guardrail.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuardrailConfig {
    /// Detects personal data, secrets, custom patterns and deny words in requests and
    /// answers, and masks, hashes, pseudonymizes or blocks them.
    Pii(RedactConfig),
    /// Scores requests for prompt-injection and jailbreak patterns.
    Injection(InjectionConfig),
    /// Checks that an answer to a request with `response_format` JSON is JSON.
    JsonOutput(JsonOutputConfig),
}

impl GuardrailConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            GuardrailConfig::Pii(_) => "pii",
            GuardrailConfig::Injection(_) => "injection",
            GuardrailConfig::JsonOutput(_) => "json_output",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionConfig {
    /// Score (0 to 1) at which the action applies. Default 0.5: one strong signal
    /// ("ignore previous instructions") or two weaker ones.
    #[serde(default = "default_injection_threshold")]
    pub threshold: f32,
    #[serde(default)]
    pub action: InjectionAction,
    /// The catalog model a `reroute` sends the request to instead.
    #[serde(default)]
    pub reroute_to: Option<String>,
    /// Also score system prompts. Default false: they are the operator's own text.
    #[serde(default)]
    pub include_system: bool,
}

fn default_injection_threshold() -> f32 {
    tollgate_redact::injection::DEFAULT_THRESHOLD
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionAction {
    /// Forward the request and record the score (ledger, metrics, log).
    #[default]
    Flag,
    /// Refuse the request: 400 with code `prompt_injection_detected`.
    Block,
    /// Serve the request with `reroute_to` instead of the route's targets.
    Reroute,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOutputConfig {
    #[serde(default)]
    pub on_invalid: OnInvalidJson,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidJson {
    /// Answer 502 with code `invalid_json_output` instead of the broken answer.
    #[default]
    Error,
    /// Ask the model once more; answer the error if the second answer breaks it too.
    Retry,
}
