//! `converse-stream` events: each event-stream message names its event in the
//! `:event-type` header (`messageStart`, `contentBlockStart`, `contentBlockDelta`,
//! `contentBlockStop`, `messageStop`, `metadata`) and carries it as JSON; failures are
//! messages of `:message-type` `exception` named by `:exception-type`.

use serde_json::{json, Value};

use super::{stop_reason_from, usage_report};
use crate::canonical::StreamEvent;
use crate::json;
use crate::stream::too_many_tool_calls;
use crate::upstream_error::{classify_value, ErrorType, UpstreamError};
use crate::{ProviderKind, MAX_TOOL_CALLS_PER_STREAM};

/// Reads decoded event-stream messages of a Converse stream.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    tools: usize,
}

impl FrameReader {
    /// Reads one message; `header` looks up its string headers by name.
    pub(crate) fn read<'h>(
        &mut self,
        header: impl Fn(&str) -> Option<&'h str>,
        payload: &[u8],
        out: &mut Vec<StreamEvent>,
    ) {
        let value = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
        match header(":message-type").unwrap_or("event") {
            "exception" => {
                let name = header(":exception-type").unwrap_or("");
                let mut body = value.clone();
                if let Value::Object(obj) = &mut body {
                    obj.insert("__type".into(), json!(name));
                }
                out.push(StreamEvent::Error(classify_value(
                    ProviderKind::Bedrock,
                    200,
                    &body,
                )));
                return;
            }
            "error" => {
                let message = header(":error-message").unwrap_or("stream error");
                out.push(StreamEvent::Error(UpstreamError::new(
                    ErrorType::Server,
                    200,
                    message,
                )));
                return;
            }
            _ => {}
        }
        match header(":event-type").unwrap_or("") {
            "messageStart" => out.push(StreamEvent::Start {
                id: None,
                model: None,
            }),
            "contentBlockStart" => {
                let index = json::count(&value, "contentBlockIndex");
                if let Some(tool) = value.pointer("/start/toolUse") {
                    if self.tools >= MAX_TOOL_CALLS_PER_STREAM {
                        out.push(StreamEvent::Error(too_many_tool_calls()));
                        return;
                    }
                    self.tools += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: json::str_or_empty(tool, "toolUseId").to_owned(),
                        name: json::str_or_empty(tool, "name").to_owned(),
                    });
                }
            }
            "contentBlockDelta" => {
                let index = json::count(&value, "contentBlockIndex");
                let delta = value.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta(text.to_owned()));
                    }
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    if !input.is_empty() {
                        out.push(StreamEvent::ToolCallDelta {
                            index,
                            arguments: input.to_owned(),
                        });
                    }
                }
            }
            "messageStop" => {
                if let Some(reason) = value.get("stopReason").and_then(Value::as_str) {
                    out.push(StreamEvent::Stop {
                        reason: stop_reason_from(reason),
                        stop_sequence: None,
                    });
                }
            }
            "metadata" => {
                if let Some(usage) = value.get("usage") {
                    out.push(StreamEvent::Usage(usage_report(usage)));
                }
                out.push(StreamEvent::End);
            }
            _ => {}
        }
    }
}
