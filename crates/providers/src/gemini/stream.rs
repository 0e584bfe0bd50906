//! Gemini's `streamGenerateContent?alt=sse` stream: each event is a whole
//! `GenerateContentResponse` holding the next parts; function calls arrive whole.

use serde_json::Value;

use super::{blocked, decode_part, stop_reason_from, usage_report};
use crate::canonical::{Part, StopReason, StreamEvent};
use crate::json;
use crate::stream::too_many_tool_calls;
use crate::upstream_error::{classify_value, ErrorType, UpstreamError};
use crate::{ProviderKind, MAX_TOOL_CALLS_PER_STREAM};

/// Reads an upstream Gemini stream, one `data:` payload at a time.
#[derive(Debug, Default)]
pub(crate) struct ChunkReader {
    started: bool,
    response_id: String,
    calls: usize,
    had_output: bool,
}

impl ChunkReader {
    pub(crate) fn read(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if value.get("error").is_some() {
            out.push(StreamEvent::Error(classify_value(
                ProviderKind::Gemini,
                200,
                &value,
            )));
            return;
        }
        if !self.started {
            self.started = true;
            self.response_id = json::str_or_empty(&value, "responseId").to_owned();
            out.push(StreamEvent::Start {
                id: Some(self.response_id.clone()).filter(|id| !id.is_empty()),
                model: value
                    .get("modelVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        if let Some(reason) = value
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            out.push(StreamEvent::Error(blocked(reason, "prompt")));
            return;
        }
        // Usage first: a client's opening event (Anthropic's `message_start`) reports the
        // input count, which Gemini sends from its first chunk on.
        if let Some(meta) = value.get("usageMetadata") {
            out.push(StreamEvent::Usage(usage_report(meta)));
        }
        let candidate = value.pointer("/candidates/0").unwrap_or(&Value::Null);
        for part in candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match decode_part(part, &self.response_id, &mut self.calls) {
                Some(Part::Text(text)) if !text.is_empty() => {
                    self.had_output = true;
                    out.push(StreamEvent::TextDelta(text));
                }
                Some(Part::ToolCall(call)) => {
                    if self.calls > MAX_TOOL_CALLS_PER_STREAM {
                        out.push(StreamEvent::Error(too_many_tool_calls()));
                        return;
                    }
                    self.had_output = true;
                    let index = self.calls as u64 - 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: call.id,
                        name: call.name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: call.arguments,
                    });
                }
                _ => {}
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            if reason == "MALFORMED_FUNCTION_CALL" {
                out.push(StreamEvent::Error(UpstreamError::new(
                    ErrorType::Server,
                    200,
                    "the model produced a malformed function call",
                )));
                return;
            }
            let reason = stop_reason_from(reason, self.calls > 0);
            if reason == StopReason::ContentFilter && !self.had_output {
                out.push(StreamEvent::Error(blocked(
                    json::str_or_empty(candidate, "finishReason"),
                    "response",
                )));
                return;
            }
            out.push(StreamEvent::Stop {
                reason,
                stop_sequence: None,
            });
            out.push(StreamEvent::End);
        }
    }
}
