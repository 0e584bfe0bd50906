//! What the gateway sends upstream for one attempt, independent of the transport.

use crate::{classify_error, ProviderKind, UpstreamErrorClass};

/// The API operation a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A chat turn, in either ingress dialect (chat completions or messages).
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

/// Classifies an error answer of an OpenAI-dialect upstream by status and, where the status
/// is ambiguous, the body. [`crate::classify_error`] does the same for every provider kind
/// and also says how the client sees the error.
pub fn classify_upstream_error(status: u16, body: &[u8]) -> UpstreamErrorClass {
    classify_error(ProviderKind::OpenAi, status, body).class()
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
