//! A client request in either ingress dialect, with what the gateway asks of every request
//! whatever its dialect.

use serde_json::{Map, Value};

use crate::anthropic::MessagesRequest;
use crate::openai::{ChatRequest, EmbeddingsRequest};
use crate::{canonical, Dialect, Operation, ProviderError};

/// A parsed client request.
#[derive(Debug, Clone)]
pub enum IngressRequest {
    /// `POST /v1/chat/completions`.
    Chat(ChatRequest),
    /// `POST /v1/embeddings`.
    Embeddings(EmbeddingsRequest),
    /// `POST /v1/messages`.
    Messages(MessagesRequest),
}

impl IngressRequest {
    /// Parses a body of `op` in `dialect`. Anthropic's API has no embeddings.
    pub fn parse(dialect: Dialect, op: Operation, bytes: &[u8]) -> Result<Self, ProviderError> {
        match (dialect, op) {
            (Dialect::OpenAi, Operation::ChatCompletions) => {
                ChatRequest::parse(bytes).map(Self::Chat)
            }
            (Dialect::OpenAi, Operation::Embeddings) => {
                EmbeddingsRequest::parse(bytes).map(Self::Embeddings)
            }
            (Dialect::Anthropic, Operation::ChatCompletions) => {
                MessagesRequest::parse(bytes).map(Self::Messages)
            }
            (Dialect::Anthropic, Operation::Embeddings) => Err(ProviderError::untranslatable(
                "an embeddings request in Anthropic's API",
            )),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Chat(_) | Self::Embeddings(_) => Dialect::OpenAi,
            Self::Messages(_) => Dialect::Anthropic,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Self::Chat(_) | Self::Messages(_) => Operation::ChatCompletions,
            Self::Embeddings(_) => Operation::Embeddings,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Self::Chat(r) => r.model(),
            Self::Embeddings(r) => r.model(),
            Self::Messages(r) => r.model(),
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            Self::Chat(r) => r.stream(),
            Self::Embeddings(_) => false,
            Self::Messages(r) => r.stream(),
        }
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        match self {
            Self::Chat(r) => r.metadata(),
            Self::Embeddings(r) => r.metadata(),
            Self::Messages(r) => r.metadata(),
        }
    }

    pub fn max_output_tokens(&self) -> Option<u64> {
        match self {
            Self::Chat(r) => r.max_output_tokens(),
            Self::Embeddings(_) => None,
            Self::Messages(r) => r.max_output_tokens(),
        }
    }

    pub fn prompt_text(&self, out: &mut String) {
        match self {
            Self::Chat(r) => r.prompt_text(out),
            Self::Embeddings(r) => r.prompt_text(out),
            Self::Messages(r) => r.prompt_text(out),
        }
    }

    /// Whether a stream's client wants the closing usage report in its own stream: OpenAI
    /// clients ask with `stream_options.include_usage`; Anthropic's always get it.
    pub fn include_usage(&self) -> bool {
        match self {
            Self::Chat(r) => r.include_usage(),
            Self::Embeddings(_) => false,
            Self::Messages(_) => true,
        }
    }

    /// What the client's `response_format` promises the answer will be, if JSON.
    /// Anthropic's Messages API has no such field.
    pub fn json_promise(&self) -> Option<crate::openai::JsonPromise<'_>> {
        match self {
            Self::Chat(r) => r.json_promise(),
            Self::Embeddings(_) | Self::Messages(_) => None,
        }
    }

    /// The chat request in canonical form, for a provider of another dialect.
    pub fn to_canonical(&self) -> Result<canonical::Request, ProviderError> {
        match self {
            Self::Chat(r) => r.to_canonical(),
            Self::Messages(r) => r.to_canonical(),
            Self::Embeddings(_) => Err(ProviderError::untranslatable(
                "an embeddings request as a chat request",
            )),
        }
    }
}
