//! What the gateway sends upstream for one attempt, independent of the transport.

use crate::UpstreamErrorClass;

/// The API operation a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Embeddings,
}

/// One upstream HTTP request, ready for the transport.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Path and query, including the endpoint's path prefix.
    pub path: String,
    /// Headers besides Host and Content-Length (the transport sets those). Values may be
    /// secret and must never be logged.
    pub headers: Vec<(&'static str, String)>,
    /// Operator-configured headers, sent after `headers`.
    pub extra: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Classifies an error answer by status and, where the status is ambiguous, the body.
pub fn classify_upstream_error(status: u16, body: &[u8]) -> UpstreamErrorClass {
    match status {
        429 => UpstreamErrorClass::RateLimited,
        401 | 403 => UpstreamErrorClass::Auth,
        500..=599 => UpstreamErrorClass::Server,
        400 | 413 if mentions_context_length(body) => UpstreamErrorClass::ContextTooLong,
        _ => UpstreamErrorClass::Client,
    }
}

/// Providers signal an oversized prompt with a 400 whose code or message says so.
fn mentions_context_length(body: &[u8]) -> bool {
    const MARKERS: [&[u8]; 3] = [
        b"context_length_exceeded",
        b"maximum context length",
        b"prompt is too long",
    ];
    MARKERS
        .iter()
        .any(|m| body.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_status_and_body() {
        assert_eq!(
            classify_upstream_error(429, b""),
            UpstreamErrorClass::RateLimited
        );
        assert_eq!(
            classify_upstream_error(503, b""),
            UpstreamErrorClass::Server
        );
        assert_eq!(classify_upstream_error(401, b""), UpstreamErrorClass::Auth);
        assert_eq!(
            classify_upstream_error(
                400,
                br#"{"error":{"code":"context_length_exceeded","message":"This model's maximum context length is 8192 tokens"}}"#
            ),
            UpstreamErrorClass::ContextTooLong
        );
        assert_eq!(
            classify_upstream_error(400, br#"{"error":{"message":"bad temperature"}}"#),
            UpstreamErrorClass::Client
        );
    }
}
