//! Amazon Bedrock's Converse API: `POST /model/{modelId}/converse` (JSON) and
//! `/model/{modelId}/converse-stream` (AWS event-stream framing), forced `toolUse` blocks,
//! and the stream faults as Bedrock reports them (exception messages in the stream).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_sse::eventstream::{encode, HeaderValue, Message};

use crate::answer::{content_words, Output, ToolInput, TOOL_INPUT};
use crate::dialect::{percent_decode, Dialect};
use crate::error::MockError;
use crate::faults::{take_fault, Fault};
use crate::state::{App, Recorded, StreamGuard};
use crate::stream::{cut_error, half_body, stream_body, Beat, Frames, Pacer};
use crate::UsageReport;

const DIALECT: Dialect = Dialect::Bedrock;

/// `Content-Type` of a ConverseStream answer.
const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Source of the `p` field Bedrock adds to every stream event: padding of varying length
/// so that an event's size does not reveal the length of its text.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

// === routing ===

/// One call of a model: which model, and whether it streams.
pub(crate) struct Call {
    model: String,
    stream: bool,
}

impl Call {
    /// `/model/{modelId}/converse` or `/model/{modelId}/converse-stream`; the model id may
    /// be percent-encoded (ARNs and versioned ids carry `/` and `:`).
    pub(crate) fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/model/")?;
        let (model, operation) = rest.rsplit_once('/')?;
        let stream = match operation {
            "converse" => false,
            "converse-stream" => true,
            _ => return None,
        };
        (!model.is_empty()).then(|| Self {
            model: percent_decode(model).into_owned(),
            stream,
        })
    }
}

pub(crate) async fn handle(
    app: Arc<App>,
    call: Call,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let parsed = serde_json::from_slice::<ConverseRequest>(&body);
    let mut rec = Recorded::new(Method::POST, uri, headers, &body);
    rec.model = Some(call.model.clone());
    if let Ok(req) = &parsed {
        rec.messages = req.messages.as_ref().map(Vec::len);
    }
    app.record(rec);

    if let Err(refused) = DIALECT.admit(headers, uri) {
        return refused.into_dialect_response(DIALECT);
    }
    let fault = match take_fault(&app, DIALECT, uri.path(), Some(&call.model), true).await {
        Ok(fault) => fault,
        Err(forced) => return forced,
    };
    parsed
        .map_err(MockError::InvalidJson)
        .and_then(|req| respond(app, &call, req, fault, started))
        .unwrap_or_else(|e| e.into_dialect_response(DIALECT))
}

// === request ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest {
    messages: Option<Vec<InputMessage>>,
    system: Option<serde_json::Value>,
    inference_config: Option<InferenceConfig>,
    tool_config: Option<ToolConfig>,
}

#[derive(Deserialize)]
struct InputMessage {
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    tools: Option<Vec<serde_json::Value>>,
    tool_choice: Option<serde_json::Value>,
}

/// With `toolChoice` `{"any":{}}` the first tool, with `{"tool":{"name":…}}` that one.
fn forced_tool(config: Option<&ToolConfig>) -> Option<String> {
    let config = config?;
    let choice = config.tool_choice.as_ref()?;
    let name = if choice.get("any").is_some() {
        config.tools.as_ref()?.first()?.pointer("/toolSpec/name")?
    } else {
        choice.pointer("/tool/name")?
    };
    name.as_str().map(str::to_owned)
}

fn respond(
    app: Arc<App>,
    call: &Call,
    req: ConverseRequest,
    fault: Fault,
    started: Instant,
) -> Result<Response, MockError> {
    let messages = req.messages.ok_or_else(|| {
        MockError::invalid(
            "messages",
            "1 validation error detected: Value null at 'messages' failed to satisfy \
             constraint: Member must not be null",
        )
    })?;
    if messages.is_empty() {
        return Err(MockError::invalid(
            "messages",
            "A conversation must start with a user message. Try again with a conversation \
             that starts with a user message.",
        ));
    }
    let input_tokens = (content_words(req.system.as_ref())
        + messages
            .iter()
            .map(|m| content_words(m.content.as_ref()))
            .sum::<u64>())
    .max(1);
    let limit = req.inference_config.as_ref().and_then(|c| c.max_tokens);
    let output = Output::plan(&app, limit, forced_tool(req.tool_config.as_ref()));
    let id = app.next_id();
    let answer = Answer {
        tool_use_id: match &output {
            Output::Tool { .. } => format!("tooluse_mock_{}", app.next_id()),
            Output::Text { .. } => String::new(),
        },
        output,
        input_tokens,
        started,
        report: app.cfg.usage,
    };

    if call.stream {
        let stream = ConverseStream {
            pacer: Pacer::new(&app, answer.output.tokens(), &fault),
            guard: StreamGuard::new(app),
            answer,
            step: Step::Start,
            events: 0,
        };
        return Ok(DIALECT.ok_response(id, EVENT_STREAM_CONTENT_TYPE, stream_body(stream)));
    }
    if fault.stream_error_after_tokens.is_some() {
        return Ok(DIALECT.mid_stream_error_response());
    }
    let text = app.reply.prefix(answer.output.tokens());
    let json = serde_json::to_vec(&answer.response(text)).map_err(MockError::Encode)?;
    let body = match fault.cut_after_tokens {
        Some(_) => half_body(json),
        None => Body::from(json),
    };
    Ok(DIALECT.ok_response(id, "application/json", body))
}

// === answer ===

struct Answer {
    tool_use_id: String,
    output: Output,
    input_tokens: u64,
    started: Instant,
    report: UsageReport,
}

impl Answer {
    fn stop_reason(&self) -> &'static str {
        match self.output {
            Output::Text {
                truncated: true, ..
            } => "max_tokens",
            Output::Text { .. } => "end_turn",
            Output::Tool { .. } => "tool_use",
        }
    }

    /// Bedrock's input count leaves out cache reads, and its output count holds
    /// reasoning. `None` when the mock leaves usage out.
    fn usage(&self) -> Option<Usage> {
        let cached = self.report.cached(self.input_tokens);
        let output_tokens = self.output.tokens() as u64 + self.report.reasoning_tokens;
        (!self.report.omit).then(|| Usage {
            input_tokens: self.input_tokens - cached,
            output_tokens,
            total_tokens: self.input_tokens + output_tokens,
            cache_read_input_tokens: Some(cached).filter(|&n| n > 0),
        })
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn response<'a>(&'a self, text: &'a str) -> ConverseResponse<'a> {
        let block = match &self.output {
            Output::Text { .. } => ContentBlock::Text { text },
            Output::Tool { name } => ContentBlock::ToolUse {
                tool_use: ToolUse {
                    tool_use_id: &self.tool_use_id,
                    name,
                    input: ToolInput {},
                },
            },
        };
        ConverseResponse {
            output: ResponseOutput {
                message: OutputMessage {
                    role: "assistant",
                    content: [block],
                },
            },
            stop_reason: self.stop_reason(),
            usage: self.usage(),
            metrics: self.metrics(),
        }
    }
}

// === response schema ===

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse<'a> {
    output: ResponseOutput<'a>,
    stop_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    metrics: Metrics,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    message: OutputMessage<'a>,
}

#[derive(Serialize)]
struct OutputMessage<'a> {
    role: &'static str,
    content: [ContentBlock<'a>; 1],
}

#[derive(Serialize)]
#[serde(untagged)]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        #[serde(rename = "toolUse")]
        tool_use: ToolUse<'a>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse<'a> {
    tool_use_id: &'a str,
    name: &'a str,
    input: ToolInput,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    latency_ms: u64,
}

// === stream ===

enum Step {
    Start,
    Tokens,
    End,
}

struct ConverseStream {
    guard: StreamGuard,
    answer: Answer,
    pacer: Pacer,
    step: Step,
    /// Events sent so far; varies the padding.
    events: usize,
}

impl Frames for ConverseStream {
    async fn next_frame(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let answer = &self.answer;
        let events: Vec<(&str, serde_json::Value)> = match self.step {
            Step::Start => {
                self.step = Step::Tokens;
                let mut events = vec![("messageStart", json!({"role": "assistant"}))];
                if let Output::Tool { name } = &answer.output {
                    events.push((
                        "contentBlockStart",
                        json!({
                            "contentBlockIndex": 0,
                            "start": {"toolUse": {"toolUseId": answer.tool_use_id, "name": name}},
                        }),
                    ));
                }
                events
            }
            Step::Tokens => match self.pacer.beat().await {
                Beat::Token { index, .. } => {
                    let delta = match &answer.output {
                        Output::Text { .. } => json!({"text": self.guard.app().reply.token(index)}),
                        Output::Tool { .. } => json!({"toolUse": {"input": TOOL_INPUT}}),
                    };
                    vec![(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": delta}),
                    )]
                }
                Beat::Cut => {
                    self.step = Step::End;
                    return Some(Err(cut_error()));
                }
                Beat::Error => {
                    self.step = Step::End;
                    return Some(exception());
                }
                Beat::Done => {
                    self.step = Step::End;
                    let mut events = Vec::with_capacity(3);
                    // A block exists once a delta or a tool's start was sent.
                    if answer.output.tokens() > 0 {
                        events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
                    }
                    events.push(("messageStop", json!({"stopReason": answer.stop_reason()})));
                    let metadata = match answer.usage() {
                        Some(usage) => json!({"usage": usage, "metrics": answer.metrics()}),
                        None => json!({"metrics": answer.metrics()}),
                    };
                    events.push(("metadata", metadata));
                    events
                }
            },
            Step::End => return None,
        };
        let mut buf = Vec::with_capacity(256 * events.len());
        for (event_type, mut payload) in events {
            if let Some(fields) = payload.as_object_mut() {
                let len = (self.events * 7 + 3) % PADDING.len();
                fields.insert(
                    "p".to_owned(),
                    json!(PADDING.get(..len).unwrap_or_default()),
                );
            }
            self.events += 1;
            if let Err(e) = push_message(&mut buf, "event", event_type, &payload) {
                return Some(Err(e));
            }
        }
        Some(Ok(Bytes::from(buf)))
    }
}

/// The exception message a stream fault ends with, named as the stream names exceptions
/// (lower camel case).
fn exception() -> Result<Bytes, std::io::Error> {
    let (_, kind, message) = DIALECT.mid_stream_error();
    let mut name = kind.to_owned();
    if let Some(first) = name.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    let mut buf = Vec::with_capacity(256);
    push_message(&mut buf, "exception", &name, &json!({ "message": message }))?;
    Ok(Bytes::from(buf))
}

/// Appends one event-stream message: `:message-type` `event` (named by `:event-type`) or
/// `exception` (named by `:exception-type`), with a JSON payload.
fn push_message(
    buf: &mut Vec<u8>,
    message_type: &str,
    name: &str,
    payload: &serde_json::Value,
) -> Result<(), std::io::Error> {
    let name_header = if message_type == "exception" {
        ":exception-type"
    } else {
        ":event-type"
    };
    let message = Message::new(serde_json::to_vec(payload).map_err(std::io::Error::other)?)
        .with_header(name_header, HeaderValue::String(name.to_owned()))
        .with_header(
            ":content-type",
            HeaderValue::String("application/json".to_owned()),
        )
        .with_header(
            ":message-type",
            HeaderValue::String(message_type.to_owned()),
        );
    encode(&message, buf).map_err(std::io::Error::other)
}
