//! Fault rules queued through `POST /__mock/faults`, and the answers they force in each
//! dialect.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::dialect::{percent_decode, Dialect};
use crate::state::App;

/// Longest `finish_reason` a rule may carry; real ones are a word or two.
const MAX_FINISH_REASON_BYTES: usize = 64;

/// A rule as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRuleWire {
    status: Option<u16>,
    retry_after: Option<u64>,
    body: Option<String>,
    times: Option<u32>,
    delay: Option<DelayWire>,
    cut_after_tokens: Option<usize>,
    stream_error_after_tokens: Option<usize>,
    match_model: Option<String>,
    path: Option<String>,
    finish_reason: Option<String>,
}

/// `"300ms"` (humantime) or a number of milliseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DelayWire {
    Text(String),
    Millis(u64),
}

/// A queued rule: which requests it catches, how many more times, and what it does.
#[derive(Debug)]
pub(crate) struct FaultRule {
    pub(crate) times: u32,
    match_model: Option<String>,
    path: Option<String>,
    pub(crate) fault: Fault,
}

/// What one consumed rule does to one request; the default does nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fault {
    /// Answer with this status (and `body`) instead of a completion.
    status: Option<StatusCode>,
    retry_after: Option<u64>,
    body: Option<String>,
    /// Wait this long before the response headers.
    pub(crate) delay: Option<Duration>,
    /// Streams: send this many token chunks, then drop the connection.
    pub(crate) cut_after_tokens: Option<usize>,
    /// Streams: send this many token chunks, then an error event, and end.
    pub(crate) stream_error_after_tokens: Option<usize>,
    /// Gemini: the candidate's `finishReason` (`SAFETY` and the like block its content).
    pub(crate) finish_reason: Option<String>,
}

impl FaultRule {
    /// Validates a posted rule; the error names the offending field.
    pub(crate) fn parse(wire: FaultRuleWire) -> Result<Self, String> {
        let status = wire
            .status
            .map(|s| {
                StatusCode::from_u16(s)
                    .ok()
                    .filter(|_| (100..=599).contains(&s))
                    .ok_or_else(|| format!("status: {s} is not an HTTP status"))
            })
            .transpose()?
            // A bare body is a malformed success, e.g. garbage JSON with 200.
            .or_else(|| wire.body.as_ref().map(|_| StatusCode::OK));
        let times = wire.times.unwrap_or(1);
        if times == 0 {
            return Err("times: must be at least 1".to_owned());
        }
        let delay = match wire.delay {
            None => None,
            Some(DelayWire::Millis(ms)) => Some(Duration::from_millis(ms)),
            Some(DelayWire::Text(text)) => Some(
                humantime::parse_duration(&text).map_err(|e| format!("delay: {text:?}: {e}"))?,
            ),
        };
        if let Some(reason) = &wire.finish_reason {
            let valid = !reason.is_empty()
                && reason.len() <= MAX_FINISH_REASON_BYTES
                && reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
            if !valid {
                return Err(format!(
                    "finish_reason: {reason:?} is not an upper-case reason such as \"SAFETY\""
                ));
            }
        }
        Ok(Self {
            times,
            match_model: wire.match_model,
            path: wire.path,
            fault: Fault {
                status,
                retry_after: wire.retry_after,
                body: wire.body,
                delay,
                cut_after_tokens: wire.cut_after_tokens,
                stream_error_after_tokens: wire.stream_error_after_tokens,
                finish_reason: wire.finish_reason,
            },
        })
    }

    /// Whether the rule catches a request to `path` (as sent; a rule may also name it
    /// percent-decoded) for `model`. A rule without `path` catches every completion and
    /// embedding endpoint (`endpoint`), not listings or unknown URLs.
    pub(crate) fn matches(&self, path: &str, model: Option<&str>, endpoint: bool) -> bool {
        let path_ok = match &self.path {
            Some(p) => p == path || *p == percent_decode(path),
            None => endpoint,
        };
        let model_ok = match &self.match_model {
            Some(m) => model == Some(m.as_str()),
            None => true,
        };
        path_ok && model_ok
    }
}

impl Fault {
    /// The forced answer, in `dialect`'s error schema, if this fault replaces the response
    /// outright.
    pub(crate) fn status_response(&self, dialect: Dialect) -> Option<Response> {
        let status = self.status?;
        let mut response = match &self.body {
            Some(body) => {
                let is_json = serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok();
                let ct = if is_json {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                let mut response = (status, body.clone()).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                response
            }
            None => {
                let message = format!("mock fault: HTTP {}", status.as_u16());
                dialect.error_response(status, None, &message)
            }
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Some(response)
    }
}

/// Consumes the first rule matching this request and waits its delay. `Err` carries the
/// answer that replaces the response; `Ok` carries what is left for the endpoint to apply
/// (the default fault when no rule matched).
pub(crate) async fn take_fault(
    app: &App,
    dialect: Dialect,
    path: &str,
    model: Option<&str>,
    endpoint: bool,
) -> Result<Fault, Response> {
    let Some(fault) = app.take_fault(path, model, endpoint) else {
        return Ok(Fault::default());
    };
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    match fault.status_response(dialect) {
        Some(forced) => Err(forced),
        None => Ok(fault),
    }
}
