//! `POST /v1/messages` in Anthropic's shape: the `message` object, the event sequence of a
//! streamed message (`message_start` … `message_stop`), forced `tool_use` blocks, and the
//! stream faults as Anthropic reports them.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::answer::{content_words, Output, ToolInput, TOOL_INPUT};
use crate::dialect::{Dialect, SSE_CONTENT_TYPE};
use crate::error::MockError;
use crate::faults::{take_fault, Fault};
use crate::state::{App, Recorded, StreamGuard};
use crate::stream::{cut_error, half_body, push_event, stream_body, Beat, Frames, Pacer};

const DIALECT: Dialect = Dialect::Anthropic;

// === request ===

#[derive(Deserialize)]
struct MessagesRequest {
    model: Option<String>,
    messages: Option<Vec<InputMessage>>,
    system: Option<serde_json::Value>,
    max_tokens: Option<u64>,
    stream: Option<bool>,
    tools: Option<Vec<serde_json::Value>>,
    tool_choice: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct InputMessage {
    content: Option<serde_json::Value>,
}

/// The tool to call when `tool_choice` is `{"type":"any"}` (the first tool) or
/// `{"type":"tool","name":…}`.
fn forced_tool(
    tools: Option<&[serde_json::Value]>,
    choice: Option<&serde_json::Value>,
) -> Option<String> {
    let first = tools?.first()?;
    let choice = choice?;
    let name = match choice.get("type")?.as_str()? {
        "any" => first.get("name")?,
        "tool" => choice.get("name")?,
        _ => return None,
    };
    name.as_str().map(str::to_owned)
}

pub(crate) async fn messages(
    app: Arc<App>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<MessagesRequest>(&body);
    let mut rec = Recorded::new(Method::POST, uri, headers, &body);
    match &parsed {
        Ok(req) => {
            rec.model.clone_from(&req.model);
            rec.messages = req.messages.as_ref().map(Vec::len);
        }
        Err(_) => rec.summarize(&body),
    }
    let model = rec.model.clone();
    app.record(rec);

    if let Err(refused) = DIALECT.admit(headers, uri) {
        return refused.into_dialect_response(DIALECT);
    }
    let fault = match take_fault(&app, DIALECT, uri.path(), model.as_deref(), true).await {
        Ok(fault) => fault,
        Err(forced) => return forced,
    };
    parsed
        .map_err(MockError::InvalidJson)
        .and_then(|req| respond(app, req, fault))
        .unwrap_or_else(|e| e.into_dialect_response(DIALECT))
}

fn respond(app: Arc<App>, req: MessagesRequest, fault: Fault) -> Result<Response, MockError> {
    let model = req
        .model
        .ok_or_else(|| MockError::invalid("model", "model: Field required"))?;
    let messages = req
        .messages
        .ok_or_else(|| MockError::invalid("messages", "messages: Field required"))?;
    if messages.is_empty() {
        return Err(MockError::invalid(
            "messages",
            "messages: at least one message is required",
        ));
    }
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| MockError::invalid("max_tokens", "max_tokens: Field required"))?;
    if max_tokens == 0 {
        return Err(MockError::invalid(
            "max_tokens",
            "max_tokens: Input should be greater than or equal to 1",
        ));
    }
    let input_tokens = (content_words(req.system.as_ref())
        + messages
            .iter()
            .map(|m| content_words(m.content.as_ref()))
            .sum::<u64>())
    .max(1);
    let output = Output::plan(
        &app,
        Some(max_tokens),
        forced_tool(req.tools.as_deref(), req.tool_choice.as_ref()),
    );
    let id = app.next_id();
    let answer = Answer {
        id: format!("msg_mock_{id}"),
        model: format!("{}{model}", app.cfg.model_prefix),
        tool_id: match &output {
            Output::Tool { .. } => format!("toolu_mock_{}", app.next_id()),
            Output::Text { .. } => String::new(),
        },
        output,
        input_tokens,
    };

    if req.stream.unwrap_or(false) {
        let stream = MessagesStream {
            pacer: Pacer::new(&app, answer.output.tokens(), &fault),
            guard: StreamGuard::new(app),
            answer,
            step: Step::Start,
        };
        return Ok(DIALECT.ok_response(id, SSE_CONTENT_TYPE, stream_body(stream)));
    }
    if fault.stream_error_after_tokens.is_some() {
        return Ok(DIALECT.mid_stream_error_response());
    }
    let json = serde_json::to_vec(&answer.message(&app, false)).map_err(MockError::Encode)?;
    let body = match fault.cut_after_tokens {
        Some(_) => half_body(json),
        None => Body::from(json),
    };
    Ok(DIALECT.ok_response(id, "application/json", body))
}

// === answer ===

struct Answer {
    id: String,
    model: String,
    tool_id: String,
    output: Output,
    input_tokens: u64,
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

    fn content_block<'a>(&'a self, app: &'a App, opening: bool) -> ContentBlock<'a> {
        match &self.output {
            Output::Text { tokens, .. } => ContentBlock::Text {
                text: if opening {
                    ""
                } else {
                    app.reply.prefix(*tokens)
                },
            },
            Output::Tool { name } => ContentBlock::ToolUse {
                id: &self.tool_id,
                name,
                input: ToolInput {},
            },
        }
    }

    /// The whole message, or (`opening`) the one `message_start` carries: no content, no
    /// stop reason, one output token so far.
    fn message<'a>(&'a self, app: &'a App, opening: bool) -> MessageObject<'a> {
        MessageObject {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: if opening {
                Vec::new()
            } else {
                vec![self.content_block(app, false)]
            },
            stop_reason: (!opening).then(|| self.stop_reason()),
            stop_sequence: None,
            usage: self.usage(app, opening),
        }
    }

    /// Anthropic's input count leaves out cache reads; its output count holds thinking.
    /// `None` when the mock leaves usage out.
    fn usage(&self, app: &App, opening: bool) -> Option<Usage> {
        let report = app.cfg.usage;
        let cached = report.cached(self.input_tokens);
        (!report.omit).then(|| Usage {
            input_tokens: self.input_tokens - cached,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
            output_tokens: if opening { 1 } else { self.output_tokens(app) },
        })
    }

    /// The message's whole output count, as `message_delta` and the plain answer give it.
    fn output_tokens(&self, app: &App) -> u64 {
        self.output.tokens() as u64 + app.cfg.usage.reasoning_tokens
    }
}

// === response schema ===

#[derive(Serialize)]
struct MessageObject<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<ContentBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: ToolInput,
    },
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageObject<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<DeltaUsage>,
    },
    MessageStop,
    Error {
        error: ErrorObject,
    },
}

impl Event<'_> {
    /// The SSE `event:` name, which Anthropic sets to the payload's `type`.
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::Ping => "ping",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
            Self::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

/// `output_tokens` here is the message's total so far, not an increment.
#[derive(Serialize)]
struct DeltaUsage {
    output_tokens: u64,
}

#[derive(Serialize)]
struct ErrorObject {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'static str,
}

// === stream ===

enum Step {
    Start,
    Tokens,
    End,
}

struct MessagesStream {
    guard: StreamGuard,
    answer: Answer,
    pacer: Pacer,
    step: Step,
}

impl Frames for MessagesStream {
    async fn next_frame(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let app = self.guard.app();
        let answer = &self.answer;
        let events = match self.step {
            Step::Start => {
                self.step = Step::Tokens;
                vec![
                    Event::MessageStart {
                        message: answer.message(app, true),
                    },
                    Event::ContentBlockStart {
                        index: 0,
                        content_block: answer.content_block(app, true),
                    },
                    Event::Ping,
                ]
            }
            Step::Tokens => match self.pacer.beat().await {
                Beat::Token { index, .. } => match &answer.output {
                    Output::Text { .. } => vec![Event::ContentBlockDelta {
                        index: 0,
                        delta: BlockDelta::TextDelta {
                            text: app.reply.token(index),
                        },
                    }],
                    // The input arrives as JSON text in pieces, to be joined by the client.
                    Output::Tool { .. } => {
                        let (head, tail) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
                        [head, tail]
                            .into_iter()
                            .map(|piece| Event::ContentBlockDelta {
                                index: 0,
                                delta: BlockDelta::InputJsonDelta {
                                    partial_json: piece,
                                },
                            })
                            .collect()
                    }
                },
                Beat::Cut => {
                    self.step = Step::End;
                    return Some(Err(cut_error()));
                }
                Beat::Error => {
                    self.step = Step::End;
                    let (_, kind, message) = DIALECT.mid_stream_error();
                    vec![Event::Error {
                        error: ErrorObject { kind, message },
                    }]
                }
                Beat::Done => {
                    self.step = Step::End;
                    vec![
                        Event::ContentBlockStop { index: 0 },
                        Event::MessageDelta {
                            delta: MessageDelta {
                                stop_reason: answer.stop_reason(),
                                stop_sequence: None,
                            },
                            usage: (!app.cfg.usage.omit).then(|| DeltaUsage {
                                output_tokens: answer.output_tokens(app),
                            }),
                        },
                        Event::MessageStop,
                    ]
                }
            },
            Step::End => return None,
        };
        let mut buf = Vec::with_capacity(256 * events.len());
        for event in &events {
            if let Err(e) = push_event(&mut buf, event.name(), event) {
                return Some(Err(e));
            }
        }
        Some(Ok(Bytes::from(buf)))
    }
}
