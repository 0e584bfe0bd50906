//! OpenAI `chat.completion.chunk` streams: upstream chunks to canonical events, and
//! canonical events to chunks for OpenAI clients.

use serde_json::{json, Value};
use tollgate_core::Usage;

use super::convert::{finish_reason, stop_reason_from, usage_value};
use crate::canonical::{StopReason, StreamEvent, UsageReport};
use crate::stream::too_many_tool_calls;
use crate::upstream_error::{classify_value, ErrorType, UpstreamError};
use crate::{ProviderKind, MAX_TOOL_CALLS_PER_STREAM};

// === impl ChunkReader ===

/// Reads an upstream OpenAI stream, one `data:` payload at a time.
#[derive(Debug, Default)]
pub struct ChunkReader {
    started: bool,
    /// Tool-call indexes already announced: some servers repeat the id and name in every
    /// delta of a call.
    tools: Vec<u64>,
}

impl ChunkReader {
    /// Appends the canonical events of one payload; returns true for a chunk that carries
    /// only usage (no choices), which a client that did not ask for usage must not see.
    pub fn read(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> bool {
        if data.trim() == "[DONE]" {
            out.push(StreamEvent::End);
            return false;
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            // A corrupt event may have carried output: passing it on or skipping it would
            // hand the client a silently damaged answer, so the stream fails instead.
            if !data.trim().is_empty() {
                out.push(StreamEvent::Error(UpstreamError::new(
                    ErrorType::Server,
                    502,
                    "the upstream sent a stream event that is not JSON",
                )));
            }
            return false;
        };
        if value.get("error").is_some_and(|e| !e.is_null()) {
            out.push(StreamEvent::Error(classify_value(
                ProviderKind::OpenAi,
                200,
                &value,
            )));
            return false;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: value.get("id").and_then(Value::as_str).map(str::to_owned),
                model: value
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        let choices = value.get("choices").and_then(Value::as_array);
        if let Some(choice) = choices.and_then(|c| c.first()) {
            self.read_choice(choice, out);
        }
        let usage = super::usage_from(&value).filter(|_| !value["usage"].is_null());
        if let Some(usage) = &usage {
            out.push(StreamEvent::Usage(UsageReport::full(usage)));
        }
        usage.is_some() && choices.is_some_and(|c| c.is_empty())
    }

    fn read_choice(&mut self, choice: &Value, out: &mut Vec<StreamEvent>) {
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta(text.to_owned()));
                }
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let function = call.get("function").unwrap_or(&Value::Null);
                let id = call.get("id").and_then(Value::as_str);
                let name = function.get("name").and_then(Value::as_str);
                if (id.is_some() || name.is_some()) && !self.tools.contains(&index) {
                    if self.tools.len() >= MAX_TOOL_CALLS_PER_STREAM {
                        out.push(StreamEvent::Error(too_many_tool_calls()));
                        return;
                    }
                    self.tools.push(index);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: id.unwrap_or_default().to_owned(),
                        name: name.unwrap_or_default().to_owned(),
                    });
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallDelta {
                            index,
                            arguments: arguments.to_owned(),
                        });
                    }
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(StreamEvent::Stop {
                reason: stop_reason_from(reason),
                stop_sequence: None,
            });
        }
    }
}

// === impl ChunkWriter ===

/// Writes canonical events as OpenAI chunks for the client.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    role_sent: bool,
    /// Source tool index to the client's `tool_calls[].index`, in order of appearance.
    tools: Vec<u64>,
    stop: Option<StopReason>,
    closed: bool,
}

impl ChunkWriter {
    pub fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        Self {
            id,
            model,
            created,
            include_usage,
            role_sent: false,
            tools: Vec::new(),
            stop: None,
            closed: false,
        }
    }

    /// Writes what `event` means for the client. Usage is not written here: it goes out
    /// once, in [`ChunkWriter::close`].
    pub fn write(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                if !self.role_sent {
                    if let Some(id) = id {
                        self.id.clone_from(id);
                    }
                    if let Some(model) = model {
                        self.model.clone_from(model);
                    }
                }
                self.ensure_role(out);
            }
            StreamEvent::TextDelta(text) => {
                self.ensure_role(out);
                self.chunk(json!({"content": text}), None, out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_role(out);
                let position = self.tool_position(*index);
                self.chunk(
                    json!({"tool_calls": [{
                        "index": position,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    None,
                    out,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.ensure_role(out);
                let position = self.tool_position(*index);
                self.chunk(
                    json!({"tool_calls": [{"index": position, "function": {"arguments": arguments}}]}),
                    None,
                    out,
                );
            }
            StreamEvent::Stop { reason, .. } => self.stop = Some(*reason),
            StreamEvent::Usage(_) | StreamEvent::End | StreamEvent::Error(_) => {}
        }
    }

    /// The closing chunks: the finish reason, the usage chunk if the client asked for it,
    /// and `[DONE]`. Writes nothing the second time.
    pub fn close(&mut self, usage: Option<Usage>, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.ensure_role(out);
        let reason = match self.stop {
            Some(StopReason::EndTurn) | None if !self.tools.is_empty() => StopReason::ToolUse,
            Some(reason) => reason,
            None => StopReason::EndTurn,
        };
        self.chunk(json!({}), Some(finish_reason(reason)), out);
        if self.include_usage {
            if let Some(usage) = usage {
                let chunk = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_value(&usage),
                });
                tollgate_sse::encode_data(&chunk.to_string(), out);
            }
        }
        tollgate_sse::encode_data("[DONE]", out);
        self.closed = true;
    }

    /// An error event for a stream that breaks after it started.
    pub(crate) fn fail(&mut self, error: &UpstreamError, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        tollgate_sse::encode_data(&error.openai_value().to_string(), out);
        self.closed = true;
    }

    fn ensure_role(&mut self, out: &mut Vec<u8>) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(json!({"role": "assistant", "content": ""}), None, out);
        }
    }

    fn tool_position(&mut self, index: u64) -> usize {
        match self.tools.iter().position(|&i| i == index) {
            Some(position) => position,
            None => {
                self.tools.push(index);
                self.tools.len() - 1
            }
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        tollgate_sse::encode_data(&chunk.to_string(), out);
    }
}

#[cfg(test)]
mod corrupt_event_tests {
    use super::*;

    #[test]
    fn an_event_that_is_not_json_fails_the_stream() {
        let mut reader = ChunkReader::default();
        let mut out = Vec::new();
        reader.read(
            r#"#"id":"x","choices":[{"delta":{"content":"lost"}}]}"#,
            &mut out,
        );
        assert!(matches!(out.as_slice(), [StreamEvent::Error(_)]), "{out:?}");
        out.clear();
        reader.read("  ", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
