//! A mock LLM provider speaking the HTTP dialects of OpenAI, Azure OpenAI, Anthropic,
//! Gemini and Bedrock, for end-to-end tests, the bench suite and `tollgate demo`.
//!
//! The server answers OpenAI's `/v1/chat/completions` (plain and streamed),
//! `/v1/embeddings` and `/v1/models`; Azure OpenAI's deployment URLs; Anthropic's
//! `/v1/messages`; Gemini's `models/{model}:generateContent` and its stream and embedding
//! methods; Bedrock's Converse and ConverseStream; and `/health`. Latency and token-rate
//! knobs come from [`MockConfig`]; a control API under `/__mock/` queues faults (applied in
//! each dialect's own error and stream formats) and exposes every request received. See
//! the crate's `README.md` for the wire-level contract.
//!
//! Embed it with [`spawn`] (binds `127.0.0.1:0`) or [`serve`] (any listener).

mod answer;
mod anthropic;
mod bedrock;
mod chat;
mod control;
mod dialect;
mod dispatch;
mod embeddings;
mod error;
mod faults;
mod gemini;
mod state;
mod stream;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::state::App;

/// Largest request body accepted, on every route.
///
/// Tests push 16 MiB bodies through the gateway and need them to arrive whole; beyond
/// 64 MiB a request is almost surely a bug, and the mock answers 413 rather than hold it
/// in memory (a body is buffered whole while it is parsed).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Knobs that shape every answer; the CLI flags of `tollgate-mock` map onto these fields.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Fixed reply text. `None` makes a reply of [`MockConfig::tokens`] words
    /// `"tok0 tok1 … "`.
    pub reply: Option<String>,
    /// Number of words in the generated reply when [`MockConfig::reply`] is `None`.
    pub tokens: usize,
    /// Pause before each streamed token after the first.
    pub token_delay: Duration,
    /// Pause before the first streamed token (the role chunk goes out at once).
    pub first_token_delay: Duration,
    /// Prepended to every model id the mock reports (responses and `/v1/models`), so a
    /// test can tell which of several mocks answered.
    pub model_prefix: String,
    /// What the answers' usage reports hold beyond the prompt's and the reply's counts.
    pub usage: UsageReport,
}

/// The usage every answer reports, in each dialect's own fields and semantics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Leave usage out of every answer, plain and streamed (as some OpenAI-compatible
    /// servers do), so the gateway has to count tokens itself.
    pub omit: bool,
    /// Prompt tokens reported as read from the provider's prompt cache (at most the
    /// prompt's count): OpenAI's `cached_tokens`, Anthropic's and Bedrock's cache reads
    /// (which their input count then leaves out), Gemini's `cachedContentTokenCount`.
    pub cached_tokens: u64,
    /// Reasoning tokens reported on top of the reply's: inside OpenAI's completion count
    /// (and its `reasoning_tokens`), Gemini's `thoughtsTokenCount`, and in Anthropic's and
    /// Bedrock's output counts, which have no field of their own for them.
    pub reasoning_tokens: u64,
}

impl UsageReport {
    /// Cached tokens of a prompt of `prompt` tokens.
    pub(crate) fn cached(self, prompt: u64) -> u64 {
        self.cached_tokens.min(prompt)
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            reply: None,
            tokens: 16,
            token_delay: Duration::from_millis(20),
            first_token_delay: Duration::ZERO,
            model_prefix: String::new(),
            usage: UsageReport::default(),
        }
    }
}

/// Serves the mock on `listener` until the task is dropped or aborted.
///
/// Only a failure of the listener itself ends it with an error.
pub async fn serve(listener: TcpListener, cfg: MockConfig) -> std::io::Result<()> {
    let state = Arc::new(App::new(cfg));
    let app = router(state.clone());
    // Streams are many small writes; without TCP_NODELAY, Nagle's algorithm would hold
    // each token back until the previous one is acknowledged.
    let listener = listener.tap_io(move |tcp| {
        state.connections.fetch_add(1, Ordering::Relaxed);
        // A socket that refuses the option still works, only with coarser timing.
        let _ = tcp.set_nodelay(true);
    });
    // HTTP/1.1 and HTTP/2 with prior knowledge (h2c), told apart by the connection preface.
    axum::serve(listener, app).await
}

/// Listens on `addr` with the deepest accept queue the kernel grants: benches and tests
/// open thousands of streams at once, and tokio's default queue of 1024 would have the
/// rest resend their SYN a second later.
pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u16::MAX.into())
}

/// Binds `127.0.0.1:0`, starts [`serve`] on a new task and returns the bound address.
pub async fn spawn(
    cfg: MockConfig,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(serve(listener, cfg))))
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/{*rest}", any(dispatch::dispatch))
        .route("/v1beta/{*rest}", any(dispatch::dispatch))
        .route("/openai/{*rest}", any(dispatch::dispatch))
        .route("/model/{*rest}", any(dispatch::dispatch))
        .route("/health", get(control::health))
        .route(
            "/__mock/faults",
            post(control::add_faults).delete(control::clear_faults),
        )
        .route("/__mock/health", post(control::set_health))
        .route(
            "/__mock/requests",
            get(control::requests).delete(control::clear_requests),
        )
        .route("/__mock/stats", get(control::stats))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}
