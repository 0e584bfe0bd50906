//! The canonical model every provider maps to and from: one chat request, one response and
//! one stream-event vocabulary.
//!
//! Shapes follow the common ground of the providers: a conversation of user and assistant
//! turns, each a list of parts; system prompts apart; tool calls as parts of assistant turns
//! and tool results as parts of user turns (OpenAI's `tool` messages fold into the user turn
//! that carries them). Tool-call arguments stay JSON text, as they stream.

use serde_json::Value;
use tollgate_core::Usage;

use crate::UpstreamError;

// === requests ===

/// One chat request, independent of the dialect it came in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub model: String,
    /// System prompts, in order (several OpenAI system messages, Anthropic system blocks).
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn; `None` leaves the default.
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    /// An opaque end-user id for the provider's abuse monitoring.
    pub user: Option<String>,
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

/// One piece of a turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A call the assistant made (assistant turns only).
    ToolCall(ToolCall),
    /// The answer to a call (user turns only).
    ToolResult(ToolResult),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    Url(String),
    Base64 { media_type: String, data: String },
}

impl Image {
    /// An image from an OpenAI-style URL, which may be a `data:<type>;base64,<data>` URL.
    pub fn from_url(url: &str) -> Self {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((media_type, data)) = rest.split_once(";base64,") {
                return Image::Base64 {
                    media_type: media_type.to_owned(),
                    data: data.to_owned(),
                };
            }
        }
        Image::Url(url.to_owned())
    }

    /// The image as a URL, a `data:` URL for inline bytes.
    pub fn to_url(&self) -> String {
        match self {
            Image::Url(url) => url.clone(),
            Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text of an object.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The id of the [`ToolCall`] this answers.
    pub call_id: String,
    /// Text and image parts.
    pub content: Vec<Part>,
    pub is_error: bool,
}

impl ToolResult {
    /// The text parts joined, for providers whose tool results are one string.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let Part::Text(text) = part {
                out.push_str(text);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the arguments object.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value },
}

// === responses ===

/// One complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub id: String,
    pub model: String,
    /// Text and tool-call parts, in the order the model produced them.
    pub content: Vec<Part>,
    pub stop_reason: Option<StopReason>,
    /// The stop sequence that ended the answer, when the provider says which.
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    /// A safety filter or a refusal ended the answer.
    ContentFilter,
}

// === streams ===

/// One step of a streamed answer, as every provider's stream decodes to it.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer began (lifecycle only: no output yet).
    Start {
        id: Option<String>,
        model: Option<String>,
    },
    TextDelta(String),
    /// A tool call began; `index` is the source's own number for it, which later deltas
    /// repeat.
    ToolCallStart {
        index: u64,
        id: String,
        name: String,
    },
    /// A fragment of the JSON text of a tool call's arguments.
    ToolCallDelta {
        index: u64,
        arguments: String,
    },
    Stop {
        reason: StopReason,
        stop_sequence: Option<String>,
    },
    /// Usage so far; see [`UsageReport`].
    Usage(UsageReport),
    /// The source's end-of-answer marker arrived.
    End,
    /// The provider sent an error inside the stream.
    Error(UpstreamError),
}

impl StreamEvent {
    /// True when the event carries generated content, as opposed to lifecycle only.
    pub fn has_output(&self) -> bool {
        match self {
            StreamEvent::TextDelta(text) => !text.is_empty(),
            StreamEvent::ToolCallStart { .. } => true,
            StreamEvent::ToolCallDelta { arguments, .. } => !arguments.is_empty(),
            _ => false,
        }
    }
}

/// Token counts reported during a stream. Every count present is the total so far and
/// replaces the previous one: providers report cumulative counts (Anthropic's
/// `message_delta`, Gemini's `usageMetadata`) or report once, so replacing, never adding,
/// counts each token once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageReport {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

impl UsageReport {
    /// A report of every count of `usage`.
    pub fn full(usage: &Usage) -> Self {
        Self {
            input_tokens: Some(usage.input_tokens),
            output_tokens: Some(usage.output_tokens),
            cached_input_tokens: Some(usage.cached_input_tokens),
            reasoning_tokens: Some(usage.reasoning_tokens),
        }
    }
}

/// The usage of one stream: the latest value of each count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageTracker {
    seen: bool,
    usage: Usage,
}

impl UsageTracker {
    pub fn apply(&mut self, report: &UsageReport) {
        let fields = [
            (report.input_tokens, &mut self.usage.input_tokens),
            (report.output_tokens, &mut self.usage.output_tokens),
            (
                report.cached_input_tokens,
                &mut self.usage.cached_input_tokens,
            ),
            (report.reasoning_tokens, &mut self.usage.reasoning_tokens),
        ];
        for (new, slot) in fields {
            if let Some(value) = new {
                *slot = value;
                self.seen = true;
            }
        }
    }

    /// The usage, once the provider reported any.
    pub fn usage(&self) -> Option<Usage> {
        self.seen.then_some(self.usage)
    }

    /// The usage so far, zero where nothing was reported.
    pub fn current(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_become_inline_images_and_back() {
        let image = Image::from_url("data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(
            image,
            Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert_eq!(image.to_url(), "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(
            Image::from_url("https://example.com/a.png"),
            Image::Url("https://example.com/a.png".into())
        );
    }

    #[test]
    fn usage_reports_replace_and_never_add() {
        let mut tracker = UsageTracker::default();
        assert_eq!(tracker.usage(), None);
        tracker.apply(&UsageReport {
            input_tokens: Some(25),
            output_tokens: Some(1),
            ..UsageReport::default()
        });
        tracker.apply(&UsageReport {
            output_tokens: Some(15),
            ..UsageReport::default()
        });
        tracker.apply(&UsageReport {
            output_tokens: Some(40),
            ..UsageReport::default()
        });
        let usage = tracker.usage().unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (25, 40));
    }
}
