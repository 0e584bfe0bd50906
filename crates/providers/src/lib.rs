//! Provider wire formats: parsing client requests in the gateway's ingress dialects,
//! building upstream requests for each provider family, and reading their responses,
//! stream events, usage and errors. Pure: no IO.
//!
//! Every provider maps to and from one [`canonical`] model. A request whose ingress dialect
//! is the provider's own (OpenAI ingress to an `openai` or `azure_openai` upstream,
//! Anthropic ingress to an `anthropic` upstream) skips it: the client's body passes through
//! with only `model` rewritten. Every other pair goes client dialect -> canonical ->
//! provider dialect, and back for the response, event by event for streams.
//!
//! Per attempt the gateway calls [`upstream_request`], then [`translate_response`] for a
//! complete answer, a [`StreamTranslator`] for a stream, or [`classify_error`] for an error.

pub mod anthropic;
pub mod bedrock;
pub mod canonical;
pub mod gemini;
pub mod openai;
pub mod sigv4;

mod azure;
mod error;
#[cfg(test)]
mod golden;
mod ingress;
mod json;
mod request;
mod response;
#[cfg(test)]
mod roundtrip;
mod stream;
mod text;
mod upstream;
mod upstream_error;

pub use anthropic::stream::{
    EventReader as AnthropicEventReader, EventWriter as AnthropicEventWriter,
};
pub use error::{ProviderError, UpstreamErrorClass};
pub use ingress::IngressRequest;
pub use openai::stream::{ChunkReader as OpenAiChunkReader, ChunkWriter as OpenAiChunkWriter};
pub use request::{upstream_request, Credentials, Target, DEFAULT_AZURE_API_VERSION};
pub use response::{translate_response, ResponseMeta, Translated};
pub use sigv4::AwsCredentials;
pub use stream::{StreamStep, StreamTranslator, TextFilter, TextPart, MAX_TOOL_CALLS_PER_STREAM};
pub use text::{for_each_answer_text_mut, TextRole};
pub use upstream::{Operation, UpstreamRequest};
pub use upstream_error::{
    anthropic_error_body, anthropic_error_type, classify_error, ErrorType, UpstreamError,
};

/// The API dialect a client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI's Chat Completions and Embeddings (`/v1/chat/completions`, `/v1/embeddings`).
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
}

/// The wire dialect of an upstream provider (`kind:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI and every server that speaks its API (vLLM, Ollama, Mistral, Groq…).
    OpenAi,
    /// Azure OpenAI: OpenAI's bodies on deployment-based paths with an `api-key` header.
    AzureOpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generateContent`).
    Gemini,
    /// Amazon Bedrock's Converse API, signed with SigV4.
    Bedrock,
}

impl ProviderKind {
    /// The ingress dialect whose bodies this provider takes unchanged, if any.
    pub fn native_dialect(self) -> Option<Dialect> {
        match self {
            ProviderKind::OpenAi | ProviderKind::AzureOpenAi => Some(Dialect::OpenAi),
            ProviderKind::Anthropic => Some(Dialect::Anthropic),
            ProviderKind::Gemini | ProviderKind::Bedrock => None,
        }
    }

    /// The name used in config files and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::AzureOpenAi => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Bedrock => "bedrock",
        }
    }
}
