//! Anthropic's Messages event streams: upstream events to canonical events, and canonical
//! events to the event sequence Anthropic clients expect (`message_start`, content blocks
//! with their deltas, `message_delta`, `message_stop`).

use serde_json::{json, Value};
use tollgate_core::Usage;
use tollgate_sse::SseEvent;

use super::convert::{stop_reason_from, stop_reason_name, usage_report, RawUsage};
use crate::canonical::{StopReason, StreamEvent};
use crate::json;
use crate::stream::too_many_tool_calls;
use crate::upstream_error::{classify_value, UpstreamError};
use crate::{ProviderKind, MAX_TOOL_CALLS_PER_STREAM};

// === impl EventReader ===

/// Reads an upstream Anthropic stream, one event at a time.
#[derive(Debug, Default)]
pub struct EventReader {
    /// Input-side counts from `message_start`, which a later `message_delta` may restate.
    usage: RawUsage,
    tools: usize,
}

impl EventReader {
    pub fn read(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                let message = value.get("message").unwrap_or(&Value::Null);
                out.push(StreamEvent::Start {
                    id: message.get("id").and_then(Value::as_str).map(str::to_owned),
                    model: message
                        .get("model")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
                if let Some(usage) = message.get("usage") {
                    out.push(StreamEvent::Usage(usage_report(usage, &mut self.usage)));
                }
            }
            "content_block_start" => {
                let index = json::count(&value, "index");
                let block = value.get("content_block").unwrap_or(&Value::Null);
                match json::str_or_empty(block, "type") {
                    "text" => {
                        let text = json::str_or_empty(block, "text");
                        if !text.is_empty() {
                            out.push(StreamEvent::TextDelta(text.to_owned()));
                        }
                    }
                    "tool_use" => {
                        if self.tools >= MAX_TOOL_CALLS_PER_STREAM {
                            out.push(StreamEvent::Error(too_many_tool_calls()));
                            return;
                        }
                        self.tools += 1;
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: json::str_or_empty(block, "id").to_owned(),
                            name: json::str_or_empty(block, "name").to_owned(),
                        });
                        let input = block.get("input");
                        if input
                            .and_then(Value::as_object)
                            .is_some_and(|o| !o.is_empty())
                        {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: json::arguments_text(input),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = json::count(&value, "index");
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match json::str_or_empty(delta, "type") {
                    "text_delta" => {
                        let text = json::str_or_empty(delta, "text");
                        if !text.is_empty() {
                            out.push(StreamEvent::TextDelta(text.to_owned()));
                        }
                    }
                    "input_json_delta" => {
                        let partial = json::str_or_empty(delta, "partial_json");
                        if !partial.is_empty() {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: partial.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                let delta = value.get("delta").unwrap_or(&Value::Null);
                if let Some(reason) = delta.get("stop_reason").and_then(Value::as_str) {
                    out.push(StreamEvent::Stop {
                        reason: stop_reason_from(reason),
                        stop_sequence: delta
                            .get("stop_sequence")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    });
                }
                if let Some(usage) = value.get("usage") {
                    out.push(StreamEvent::Usage(usage_report(usage, &mut self.usage)));
                }
            }
            "message_stop" => out.push(StreamEvent::End),
            "error" => out.push(StreamEvent::Error(classify_value(
                ProviderKind::Anthropic,
                200,
                &value,
            ))),
            _ => {}
        }
    }
}

// === impl EventWriter ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text(u64),
    Tool(u64),
}

/// Writes canonical events as Anthropic's event sequence for the client.
#[derive(Debug)]
pub struct EventWriter {
    id: String,
    model: String,
    started: bool,
    open: Option<Block>,
    next_block: u64,
    /// Source tool index to the client's content block index.
    tools: Vec<(u64, u64)>,
    stop: Option<(StopReason, Option<String>)>,
    closed: bool,
}

impl EventWriter {
    pub fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop: None,
            closed: false,
        }
    }

    /// Writes what `event` means for the client; `usage` is the stream's usage so far, for
    /// `message_start`.
    pub fn write(&mut self, event: &StreamEvent, usage: Usage, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            // `message_start` waits for the first content so that it can report the
            // input count of usage that arrives right after the start.
            StreamEvent::Start { id, model } => {
                if !self.started {
                    if let Some(id) = id {
                        self.id.clone_from(id);
                    }
                    if let Some(model) = model {
                        self.model.clone_from(model);
                    }
                }
            }
            StreamEvent::TextDelta(text) => {
                self.ensure_started(usage, out);
                let index = match self.open {
                    Some(Block::Text(index)) => index,
                    _ => {
                        self.close_block(out);
                        let index = self.open_block(out, json!({"type": "text", "text": ""}));
                        self.open = Some(Block::Text(index));
                        index
                    }
                };
                emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": text}}),
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(usage, out);
                self.close_block(out);
                let block = self.open_block(
                    out,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.tools.push((*index, block));
                self.open = Some(Block::Tool(block));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.ensure_started(usage, out);
                // A delta for a call whose block was already closed (sources that
                // interleave calls) still goes to that call's block index, so clients that
                // assemble blocks by index lose nothing.
                let Some(&(_, block)) = self.tools.iter().find(|(i, _)| i == index) else {
                    return;
                };
                emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                );
            }
            StreamEvent::Stop {
                reason,
                stop_sequence,
            } => self.stop = Some((*reason, stop_sequence.clone())),
            StreamEvent::Usage(_) | StreamEvent::End | StreamEvent::Error(_) => {}
        }
    }

    /// The closing events: the open block's stop, `message_delta` with the stop reason and
    /// the final usage, and `message_stop`. Writes nothing the second time.
    pub fn close(&mut self, usage: Option<Usage>, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let usage = usage.unwrap_or_default();
        self.ensure_started(usage, out);
        self.close_block(out);
        let (reason, stop_sequence) = match self.stop.take() {
            Some((StopReason::EndTurn, seq)) if !self.tools.is_empty() => {
                (StopReason::ToolUse, seq)
            }
            Some(stop) => stop,
            None if !self.tools.is_empty() => (StopReason::ToolUse, None),
            None => (StopReason::EndTurn, None),
        };
        emit(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason_name(reason), "stop_sequence": stop_sequence},
                "usage": super::convert::usage_value(&usage)}),
        );
        emit(out, "message_stop", &json!({"type": "message_stop"}));
        self.closed = true;
    }

    /// An `error` event for a stream that breaks after it started.
    pub(crate) fn fail(&mut self, error: &UpstreamError, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        write_error(error, out);
        self.closed = true;
    }

    fn ensure_started(&mut self, usage: Usage, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let start_usage = super::convert::usage_value(&usage);
        emit(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": start_usage}}),
        );
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Value) -> u64 {
        let index = self.next_block;
        self.next_block += 1;
        emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(Block::Text(index) | Block::Tool(index)) = self.open.take() {
            emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }
}

/// Anthropic's `error` event.
pub(crate) fn write_error(error: &UpstreamError, out: &mut Vec<u8>) {
    emit(
        out,
        "error",
        &json!({"type": "error", "error": {
            "type": error.error_type.anthropic_type(), "message": error.message}}),
    );
}

fn emit(out: &mut Vec<u8>, name: &str, data: &Value) {
    tollgate_sse::encode(
        &SseEvent {
            event: Some(name.to_owned()),
            data: data.to_string(),
            id: None,
            retry: None,
        },
        out,
    );
}
