//! Detection and redaction of personal data, credentials and operator-defined terms in LLM
//! traffic, and prompt-injection heuristics. Pure and synchronous: no IO, nothing awaits,
//! so the gateway calls it from request handling and from body filters, per text delta.
//!
//! - [`Detector`] finds entities (e-mail, phone, payment card, SSN, IBAN, IP, secrets,
//!   custom patterns, deny words) in one pass of one automaton over a normalized view of
//!   the text that sees through Unicode disguises; offsets refer to the original text.
//! - [`Redactor`] applies the configured [`Action`] per kind and [`Direction`]: mask,
//!   per-tenant hash, pseudonymize (restored later through [`Pseudonyms`]), or block.
//! - [`StreamRedactor`] does the same over a response's text deltas, holding back only the
//!   suffix that could still grow into an entity; its output equals the whole-text
//!   redaction for every way the stream is cut. [`StreamRestorer`] puts pseudonymized
//!   originals back into a streamed response.
//! - [`injection::score`] rates prompt-injection and jailbreak patterns.
//!
//! ```
//! use std::sync::Arc;
//! use tollgate_redact::{Pseudonyms, RedactConfig, Redactor};
//!
//! let config: RedactConfig = serde_yaml_ng::from_str("actions: { email: pseudonymize }")?;
//! let redactor = Arc::new(Redactor::new(&config)?);
//!
//! let mut pseudonyms = Pseudonyms::new();
//! let request = redactor.redact_request("Write to jane@corp.example", "acme", &mut pseudonyms)?;
//! assert_eq!(request.text, "Write to [EMAIL_1]");
//!
//! let mut stream = redactor.stream("acme");
//! let mut restorer = pseudonyms.into_restorer();
//! let (mut redacted, mut restored) = (String::new(), String::new());
//! for delta in ["Sure, I wrote to [EMA", "IL_1]. Call 415-55", "5-2671 if needed."] {
//!     stream.push(delta, &mut redacted)?;
//! }
//! stream.finish(&mut redacted)?;
//! restorer.push(&redacted, &mut restored);
//! restorer.finish(&mut restored);
//! assert_eq!(restored, "Sure, I wrote to jane@corp.example. Call [PHONE] if needed.");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod detect;
pub mod injection;
mod normalize;
pub mod output;
mod patterns;
mod pseudonym;
mod redact;
mod stream;
mod validate;

pub use config::{
    Action, ActionRule, ConfigIssue, CustomRule, DenyList, Direction, DirectionActions, EntityKind,
    RedactConfig, MAX_CUSTOM_RULES, MAX_DENY_WORDS, MAX_RULE_NAME_BYTES, MIN_HASH_KEY_BYTES,
};
pub use detect::{Detector, Entity, Kind, MAX_ENTITY_BYTES, MAX_OPEN_SECRET_BYTES};
pub use pseudonym::{Concealer, Pseudonyms, StreamRestorer, MAX_PSEUDONYMS};
pub use redact::{Applied, Blocked, Redacted, Redactor};
pub use stream::StreamRedactor;

/// Why a redaction engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The config has problems; each names its path.
    #[error("invalid redaction config: {}", join(.0))]
    Config(Vec<ConfigIssue>),
    /// An automaton could not be compiled (a pattern too large for its limits).
    #[error("cannot compile the redaction patterns: {0}")]
    Build(String),
}

fn join(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
