//! What the cache stores: one completed answer in a compact, dialect-free form, built from
//! a complete response or from a stream that ended well.
//!
//! An entry keeps the answer's text and tool calls in order, why it stopped, its usage and
//! (once the gateway metered it) its cost, so that a hit can report the tokens and money
//! it saved. Only successful, complete answers become entries: a stream that carried an
//! error, ended without its end marker, or was stopped by a content filter gives none.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::Usage;
use tollgate_providers::canonical::{
    Part, Response, StopReason, StreamEvent, ToolCall, UsageTracker,
};
use tollgate_providers::{
    AnthropicEventReader, Dialect, OpenAiChunkReader, MAX_TOOL_CALLS_PER_STREAM,
};
use tollgate_sse::SseEvent;

/// Largest answer stored, counted as the bytes of its text, tool calls and model name.
/// Bigger answers are rare and would crowd out many ordinary ones; a stream recorder
/// stops holding text once past it, so its memory stays bounded by this too.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The model that produced it, as the provider named it.
    pub(crate) model: String,
    pub(crate) content: Vec<EntryPart>,
    pub(crate) stop: EntryStop,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stop_sequence: Option<String>,
    pub(crate) usage: Usage,
    /// USD, as the gateway priced the original answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cost: Option<Decimal>,
}

/// A piece of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum EntryPart {
    Text {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
}

/// Why a stored answer stopped (never a content filter: those are not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EntryStop {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
}

impl EntryStop {
    fn from_reason(reason: StopReason) -> Option<Self> {
        match reason {
            StopReason::EndTurn => Some(Self::EndTurn),
            StopReason::MaxTokens => Some(Self::MaxTokens),
            StopReason::StopSequence => Some(Self::StopSequence),
            StopReason::ToolUse => Some(Self::ToolUse),
            StopReason::ContentFilter => None,
        }
    }

    pub(crate) fn reason(self) -> StopReason {
        match self {
            Self::EndTurn => StopReason::EndTurn,
            Self::MaxTokens => StopReason::MaxTokens,
            Self::StopSequence => StopReason::StopSequence,
            Self::ToolUse => StopReason::ToolUse,
        }
    }
}

impl CacheEntry {
    /// The entry of a complete answer; `None` when it must not be cached: stopped by a
    /// content filter, empty, holding parts an answer cannot replay (images), or larger
    /// than [`MAX_ENTRY_BYTES`].
    pub fn from_response(response: &Response) -> Option<Self> {
        let mut content = Vec::with_capacity(response.content.len());
        for part in &response.content {
            content.push(match part {
                Part::Text(text) => EntryPart::Text { text: text.clone() },
                Part::ToolCall(call) => EntryPart::ToolCall {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                },
                Part::Image(_) | Part::ToolResult(_) => return None,
            });
        }
        let has_tools = content
            .iter()
            .any(|p| matches!(p, EntryPart::ToolCall { .. }));
        let stop = match response.stop_reason {
            Some(reason) => EntryStop::from_reason(reason)?,
            None if has_tools => EntryStop::ToolUse,
            None => EntryStop::EndTurn,
        };
        Self {
            model: response.model.clone(),
            content,
            stop,
            stop_sequence: response.stop_sequence.clone(),
            usage: response.usage,
            cost: None,
        }
        .checked()
    }

    /// This entry with the cost the gateway metered for the original answer.
    #[must_use]
    pub fn with_cost(mut self, cost: Option<Decimal>) -> Self {
        self.cost = cost;
        self
    }

    /// The original answer's usage: on a hit, the tokens saved.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The original answer's cost in USD, when it was priced: on a hit, the money saved.
    pub fn cost(&self) -> Option<Decimal> {
        self.cost
    }

    /// The model that produced the answer.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Rewrites every text the answer carries (its text parts and tool-call arguments) with
    /// `rewrite`, which returns `None` to keep a text as it is. The gateway swaps a
    /// request's pseudonymized originals for their placeholders before storing, and the
    /// placeholders for the hitting request's own originals on a hit.
    pub fn rewrite_text(&mut self, mut rewrite: impl FnMut(&str) -> Option<String>) {
        for part in &mut self.content {
            let text = match part {
                EntryPart::Text { text } => text,
                EntryPart::ToolCall { arguments, .. } => arguments,
            };
            if let Some(new) = rewrite(text) {
                *text = new;
            }
        }
    }

    /// Whether any text the answer carries satisfies `test`.
    pub fn any_text(&self, mut test: impl FnMut(&str) -> bool) -> bool {
        self.content.iter().any(|part| match part {
            EntryPart::Text { text } => test(text),
            EntryPart::ToolCall { arguments, .. } => test(arguments),
        })
    }

    /// Approximate memory held by the entry: its strings plus a fixed overhead per part.
    /// The memory store weighs entries by it.
    pub fn approx_bytes(&self) -> usize {
        /// Enum tag, string headers and vector slot of one part.
        const PART_OVERHEAD: usize = 80;
        /// The struct itself, usage and cost.
        const ENTRY_OVERHEAD: usize = 160;
        ENTRY_OVERHEAD
            + self.model.len()
            + self.stop_sequence.as_ref().map_or(0, String::len)
            + self
                .content
                .iter()
                .map(|part| PART_OVERHEAD + part.bytes())
                .sum::<usize>()
    }

    /// The answer in canonical form, with `id` as its id (for output checks on a hit).
    pub fn to_response(&self, id: String) -> Response {
        Response {
            id,
            model: self.model.clone(),
            content: self
                .content
                .iter()
                .map(|part| match part {
                    EntryPart::Text { text } => Part::Text(text.clone()),
                    EntryPart::ToolCall {
                        id,
                        name,
                        arguments,
                    } => Part::ToolCall(ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: arguments.clone(),
                    }),
                })
                .collect(),
            stop_reason: Some(self.stop.reason()),
            stop_sequence: self.stop_sequence.clone(),
            usage: self.usage,
        }
    }

    fn checked(self) -> Option<Self> {
        let empty = self.content.iter().all(|part| part.bytes() == 0);
        (!empty && self.approx_bytes() <= MAX_ENTRY_BYTES).then_some(self)
    }
}

impl EntryPart {
    fn bytes(&self) -> usize {
        match self {
            Self::Text { text } => text.len(),
            Self::ToolCall {
                id,
                name,
                arguments,
            } => id.len() + name.len() + arguments.len(),
        }
    }
}

// === impl StreamRecorder ===

#[derive(Debug)]
enum Reader {
    OpenAi(OpenAiChunkReader),
    Anthropic(AnthropicEventReader),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Recording,
    /// The end marker arrived; only usage may follow.
    Ended,
    /// An error, a content filter, or too much to hold: no entry.
    Refused,
}

/// Builds an entry from a stream as it passes, event by event.
///
/// Feed it the canonical events of the stream ([`StreamRecorder::push`]) or the SSE
/// events the client receives in its dialect ([`StreamRecorder::push_sse`], which reads
/// them with the providers' own readers); recording the client's side stores what the
/// client was actually sent, after redaction. Memory is bounded by [`MAX_ENTRY_BYTES`]:
/// past it the recorder drops what it holds and gives no entry.
#[derive(Debug)]
pub struct StreamRecorder {
    reader: Reader,
    /// Scratch for the reader's events, reused across calls.
    events: Vec<StreamEvent>,
    model: String,
    content: Vec<EntryPart>,
    /// A tool call's stream index and the position of its part in `content`.
    tools: Vec<(u64, usize)>,
    stop: Option<(StopReason, Option<String>)>,
    usage: UsageTracker,
    bytes: usize,
    state: State,
}

impl StreamRecorder {
    /// A recorder for a stream whose SSE events are in `dialect` (the client's).
    pub fn new(dialect: Dialect) -> Self {
        Self {
            reader: match dialect {
                Dialect::OpenAi => Reader::OpenAi(OpenAiChunkReader::default()),
                Dialect::Anthropic => Reader::Anthropic(AnthropicEventReader::default()),
            },
            events: Vec::new(),
            model: String::new(),
            content: Vec::new(),
            tools: Vec::new(),
            stop: None,
            usage: UsageTracker::default(),
            bytes: 0,
            state: State::Recording,
        }
    }

    /// Reads one SSE event of the stream in the recorder's dialect.
    pub fn push_sse(&mut self, event: &SseEvent) {
        if self.state == State::Refused {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        match &mut self.reader {
            Reader::OpenAi(reader) => {
                reader.read(&event.data, &mut events);
            }
            Reader::Anthropic(reader) => reader.read(event, &mut events),
        }
        for event in &events {
            self.push(event);
        }
        self.events = events;
    }

    /// Records one canonical event.
    pub fn push(&mut self, event: &StreamEvent) {
        match (self.state, event) {
            (State::Refused, _) => {}
            (_, StreamEvent::Error(_)) => self.refuse(),
            (_, StreamEvent::Usage(report)) => self.usage.apply(report),
            (State::Ended, _) => {
                // Output after the end marker: the stream is not what it claimed.
                if event.has_output() {
                    self.refuse();
                }
            }
            (State::Recording, event) => self.record(event),
        }
    }

    /// The entry of a stream that ended well; `None` for one that was cut (no end marker),
    /// carried an error, was stopped by a content filter, or grew past
    /// [`MAX_ENTRY_BYTES`]. `usage` is the gateway's metered usage of the stream, which
    /// takes the place of what the stream reported (a client's stream may not carry it).
    pub fn finish(self, usage: Option<Usage>) -> Option<CacheEntry> {
        if self.state != State::Ended {
            return None;
        }
        let has_tools = !self.tools.is_empty();
        let (stop, stop_sequence) = match self.stop {
            Some((reason, sequence)) => (EntryStop::from_reason(reason)?, sequence),
            None if has_tools => (EntryStop::ToolUse, None),
            None => (EntryStop::EndTurn, None),
        };
        let stop = match stop {
            // Writers report a tool-calling answer as tool use whatever the source said.
            EntryStop::EndTurn if has_tools => EntryStop::ToolUse,
            stop => stop,
        };
        CacheEntry {
            model: self.model,
            content: self.content,
            stop,
            stop_sequence,
            usage: usage.unwrap_or_else(|| self.usage.current()),
            cost: None,
        }
        .checked()
    }

    fn record(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Start { model, .. } => {
                if let Some(model) = model {
                    if self.model.is_empty() {
                        self.grow(model.len());
                        self.model.clone_from(model);
                    }
                }
            }
            StreamEvent::TextDelta(text) => {
                if !self.grow(text.len()) {
                    return;
                }
                match self.content.last_mut() {
                    Some(EntryPart::Text { text: last }) => last.push_str(text),
                    _ => self.content.push(EntryPart::Text { text: text.clone() }),
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.tools.iter().any(|(i, _)| i == index) {
                    self.start_tool(*index, id.clone(), name.clone());
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !self.tools.iter().any(|(i, _)| i == index) {
                    // Arguments of a call never announced, as the stream translator treats them.
                    self.start_tool(*index, format!("call_{index}"), String::new());
                }
                if !self.grow(arguments.len()) {
                    return;
                }
                let position = self.tools.iter().find(|(i, _)| i == index).map(|t| t.1);
                if let Some(EntryPart::ToolCall {
                    arguments: args, ..
                }) = position.and_then(|p| self.content.get_mut(p))
                {
                    args.push_str(arguments);
                }
            }
            StreamEvent::Stop {
                reason,
                stop_sequence,
            } => self.stop = Some((*reason, stop_sequence.clone())),
            StreamEvent::End => self.state = State::Ended,
            StreamEvent::Usage(_) | StreamEvent::Error(_) => {}
        }
    }

    fn start_tool(&mut self, index: u64, id: String, name: String) {
        if self.tools.len() >= MAX_TOOL_CALLS_PER_STREAM || !self.grow(id.len() + name.len()) {
            self.refuse();
            return;
        }
        self.tools.push((index, self.content.len()));
        self.content.push(EntryPart::ToolCall {
            id,
            name,
            arguments: String::new(),
        });
    }

    /// Counts `n` more bytes; past the cap, refuses the stream and says so.
    fn grow(&mut self, n: usize) -> bool {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_ENTRY_BYTES {
            self.refuse();
            return false;
        }
        true
    }

    fn refuse(&mut self) {
        self.state = State::Refused;
        self.content = Vec::new();
        self.tools = Vec::new();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_providers::canonical::UsageReport;
    use tollgate_providers::{ErrorType, UpstreamError};

    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    fn text_response(text: &str) -> Response {
        Response {
            id: "chatcmpl-1".into(),
            model: "gpt-4o-mini".into(),
            content: vec![Part::Text(text.into())],
            stop_reason: Some(StopReason::EndTurn),
            stop_sequence: None,
            usage: usage(12, 3),
        }
    }

    #[test]
    fn a_response_becomes_an_entry_and_back() {
        let mut response = text_response("Paris.");
        response.content.push(Part::ToolCall(ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: r#"{"q":"x"}"#.into(),
        }));
        response.stop_reason = Some(StopReason::ToolUse);
        let entry = CacheEntry::from_response(&response)
            .unwrap()
            .with_cost(Some(Decimal::new(15, 6)));
        assert_eq!(entry.usage(), usage(12, 3));
        assert_eq!(entry.cost(), Some(Decimal::new(15, 6)));
        assert_eq!(entry.model(), "gpt-4o-mini");
        let back = entry.to_response("id-2".into());
        assert_eq!(back.content, response.content);
        assert_eq!(back.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(back.usage, response.usage);

        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<CacheEntry>(&json).unwrap(), entry);
        assert!(json.contains(r#""cost":"0.000015""#), "{json}");
    }

    #[test]
    fn texts_and_tool_arguments_are_rewritten_in_place() {
        let mut response = text_response("Mail a@b.co today.");
        response.content.push(Part::ToolCall(ToolCall {
            id: "call_1".into(),
            name: "send".into(),
            arguments: r#"{"to":"a@b.co"}"#.into(),
        }));
        let mut entry = CacheEntry::from_response(&response).unwrap();
        assert!(entry.any_text(|t| t.contains("a@b.co")));
        entry.rewrite_text(|t| {
            t.contains("a@b.co")
                .then(|| t.replace("a@b.co", "[EMAIL_1]"))
        });
        assert!(!entry.any_text(|t| t.contains("a@b.co")));
        let back = entry.to_response("id".into());
        assert_eq!(back.content[0], Part::Text("Mail [EMAIL_1] today.".into()));
        assert_eq!(
            back.content[1],
            Part::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "send".into(),
                arguments: r#"{"to":"[EMAIL_1]"}"#.into(),
            })
        );
    }

    #[test]
    fn filtered_empty_and_huge_answers_are_not_entries() {
        let mut filtered = text_response("I can't");
        filtered.stop_reason = Some(StopReason::ContentFilter);
        assert_eq!(CacheEntry::from_response(&filtered), None);
        assert_eq!(CacheEntry::from_response(&text_response("")), None);
        let huge = text_response(&"x".repeat(MAX_ENTRY_BYTES));
        assert_eq!(CacheEntry::from_response(&huge), None);
    }

    fn record(events: &[StreamEvent]) -> Option<CacheEntry> {
        let mut recorder = StreamRecorder::new(Dialect::OpenAi);
        for event in events {
            recorder.push(event);
        }
        recorder.finish(None)
    }

    fn good_stream() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: Some("x".into()),
                model: Some("claude-haiku".into()),
            },
            StreamEvent::Usage(UsageReport {
                input_tokens: Some(20),
                ..UsageReport::default()
            }),
            StreamEvent::TextDelta("Let me ".into()),
            StreamEvent::TextDelta("check.".into()),
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_1".into(),
                name: "weather".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"city\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "\"Oslo\"}".into(),
            },
            StreamEvent::Stop {
                reason: StopReason::ToolUse,
                stop_sequence: None,
            },
            StreamEvent::Usage(UsageReport {
                output_tokens: Some(9),
                ..UsageReport::default()
            }),
            StreamEvent::End,
        ]
    }

    #[test]
    fn a_complete_stream_is_recorded_in_order() {
        let entry = record(&good_stream()).unwrap();
        assert_eq!(entry.model, "claude-haiku");
        assert_eq!(
            entry.content,
            vec![
                EntryPart::Text {
                    text: "Let me check.".into()
                },
                EntryPart::ToolCall {
                    id: "toolu_1".into(),
                    name: "weather".into(),
                    arguments: "{\"city\":\"Oslo\"}".into()
                }
            ]
        );
        assert_eq!(entry.stop, EntryStop::ToolUse);
        assert_eq!(entry.usage, usage(20, 9));

        let mut recorder = StreamRecorder::new(Dialect::OpenAi);
        for event in good_stream() {
            recorder.push(&event);
        }
        let metered = Usage {
            estimated: true,
            ..usage(21, 9)
        };
        assert_eq!(recorder.finish(Some(metered)).unwrap().usage, metered);
    }

    #[test]
    fn cut_errored_and_filtered_streams_give_nothing() {
        let mut cut = good_stream();
        cut.pop();
        assert_eq!(record(&cut), None);

        let mut errored = good_stream();
        errored.insert(
            4,
            StreamEvent::Error(UpstreamError::new(ErrorType::Server, 200, "overloaded")),
        );
        assert_eq!(record(&errored), None);

        let filtered = vec![
            StreamEvent::TextDelta("I".into()),
            StreamEvent::Stop {
                reason: StopReason::ContentFilter,
                stop_sequence: None,
            },
            StreamEvent::End,
        ];
        assert_eq!(record(&filtered), None);

        let mut output_after_end = good_stream();
        output_after_end.push(StreamEvent::TextDelta("more".into()));
        assert_eq!(record(&output_after_end), None);

        let empty = vec![StreamEvent::End];
        assert_eq!(record(&empty), None);
    }

    #[test]
    fn a_stream_past_the_cap_is_dropped_as_it_goes() {
        let mut recorder = StreamRecorder::new(Dialect::OpenAi);
        let piece = "y".repeat(64 * 1024);
        for _ in 0..(MAX_ENTRY_BYTES / piece.len() + 1) {
            recorder.push(&StreamEvent::TextDelta(piece.clone()));
        }
        assert!(recorder.content.is_empty(), "memory released at the cap");
        recorder.push(&StreamEvent::End);
        assert_eq!(recorder.finish(None), None);
    }

    #[test]
    fn client_sse_in_either_dialect_is_read() {
        let openai = [
            r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ];
        let mut recorder = StreamRecorder::new(Dialect::OpenAi);
        for data in openai {
            recorder.push_sse(&SseEvent {
                data: data.into(),
                ..SseEvent::default()
            });
        }
        let entry = recorder.finish(Some(usage(5, 2))).unwrap();
        assert_eq!(
            entry.to_response(String::new()).content,
            vec![Part::Text("Hello".into())]
        );
        assert_eq!(entry.model, "gpt-4o");

        let anthropic = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"m","model":"claude","usage":{"input_tokens":7,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":4}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let mut recorder = StreamRecorder::new(Dialect::Anthropic);
        for (name, data) in anthropic {
            recorder.push_sse(&SseEvent {
                event: Some(name.into()),
                data: data.into(),
                ..SseEvent::default()
            });
        }
        let entry = recorder.finish(None).unwrap();
        assert_eq!(entry.stop, EntryStop::MaxTokens);
        assert_eq!(entry.usage, usage(7, 4));
    }
}
