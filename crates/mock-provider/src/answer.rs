//! What an answer is made of, in every dialect: some tokens of the configured reply or one
//! forced tool call, and the prompt's token count.

use serde::Serialize;

use crate::state::{count_words, App};

/// The input every forced tool call carries, as JSON text: an empty object.
pub(crate) const TOOL_INPUT: &str = "{}";

/// [`TOOL_INPUT`] where a schema wants the object itself: serialises as `{}`.
#[derive(Serialize)]
pub(crate) struct ToolInput {}

/// What an answer says.
pub(crate) enum Output {
    /// The first `tokens` tokens of the configured reply; `truncated` when the request's
    /// output limit cut it short.
    Text { tokens: usize, truncated: bool },
    /// One call of this tool with input [`TOOL_INPUT`].
    Tool { name: String },
}

impl Output {
    /// A call of `tool` when the request forces one, else as much of the reply as `limit`
    /// (the request's output token limit) allows.
    pub(crate) fn plan(app: &App, limit: Option<u64>, tool: Option<String>) -> Self {
        if let Some(name) = tool {
            return Self::Tool { name };
        }
        let available = app.reply.len();
        match limit {
            Some(limit) if limit < available as u64 => Self::Text {
                tokens: usize::try_from(limit).unwrap_or(0),
                truncated: true,
            },
            _ => Self::Text {
                tokens: available,
                truncated: false,
            },
        }
    }

    /// Output tokens: the reply tokens sent, or 1 for a tool call.
    pub(crate) fn tokens(&self) -> usize {
        match self {
            Self::Text { tokens, .. } => *tokens,
            Self::Tool { .. } => 1,
        }
    }
}

/// Words of a message's text: a string content, or the `text` of each content part or
/// block (OpenAI's parts, Anthropic's blocks, Gemini's parts, Bedrock's content blocks).
pub(crate) fn content_words(content: Option<&serde_json::Value>) -> u64 {
    match content {
        Some(serde_json::Value::String(text)) => count_words(text),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(serde_json::Value::as_str))
            .map(count_words)
            .sum(),
        _ => 0,
    }
}
