//! What the gateway sends upstream for one attempt, independent of the transport.

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
