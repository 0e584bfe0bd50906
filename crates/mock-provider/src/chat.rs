//! `POST /v1/chat/completions` in OpenAI's shape (also Azure OpenAI's deployments):
//! plain answers, lazily timed SSE streams, tool calls, `n` choices, and the stream faults.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::answer::{content_words, Output, TOOL_INPUT};
use crate::dialect::{Dialect, SSE_CONTENT_TYPE};
use crate::error::{error_json, MockError};
use crate::faults::{take_fault, Fault};
use crate::state::{unix_secs, App, Recorded, StreamGuard};
use crate::stream::{cut_error, half_body, push_data, stream_body, Beat, Frames, Pacer};

/// Most choices one request may ask for with `n`, as OpenAI allows.
const MAX_CHOICES: u64 = 128;

// === request ===

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    n: Option<u64>,
    tools: Option<Vec<serde_json::Value>>,
    tool_choice: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChatMessage {
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The function to call when the request forces a tool call.
fn forced_tool(
    tools: Option<&[serde_json::Value]>,
    choice: Option<&serde_json::Value>,
) -> Option<String> {
    let first = tools?.first()?;
    match choice? {
        serde_json::Value::String(s) if s == "required" => first
            .pointer("/function/name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        serde_json::Value::Object(_) => choice?
            .pointer("/function/name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Answers a chat completion; `deployment` is set for Azure OpenAI's deployment URLs,
/// where it names the model.
pub(crate) async fn completions(
    app: Arc<App>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    deployment: Option<String>,
) -> Response {
    let dialect = if deployment.is_some() {
        Dialect::Azure
    } else {
        Dialect::OpenAi
    };
    let parsed = serde_json::from_slice::<ChatRequest>(&body);
    let mut rec = Recorded::new(Method::POST, uri, headers, &body);
    match &parsed {
        Ok(req) => {
            rec.model.clone_from(&req.model);
            rec.messages = req.messages.as_ref().map(Vec::len);
        }
        Err(_) => {
            rec.summarize(&body);
        }
    }
    if deployment.is_some() {
        rec.model.clone_from(&deployment);
    }
    let model = rec.model.clone();
    app.record(rec);

    if let Err(refused) = dialect.admit(headers, uri) {
        return refused.into_dialect_response(dialect);
    }
    let fault = match take_fault(&app, dialect, uri.path(), model.as_deref(), true).await {
        Ok(fault) => fault,
        Err(forced) => return forced,
    };
    let result = match parsed {
        Ok(mut req) => {
            if deployment.is_some() {
                req.model = deployment;
            }
            respond(app, req, fault, dialect)
        }
        Err(e) => Err(MockError::InvalidJson(e)),
    };
    result.unwrap_or_else(|e| e.into_dialect_response(dialect))
}

// === answer plan ===

/// OpenAI's `finish_reason` for an output.
fn finish_reason(output: &Output) -> &'static str {
    match output {
        Output::Text {
            truncated: true, ..
        } => "length",
        Output::Text { .. } => "stop",
        Output::Tool { .. } => "tool_calls",
    }
}

fn respond(
    app: Arc<App>,
    req: ChatRequest,
    fault: Fault,
    dialect: Dialect,
) -> Result<Response, MockError> {
    let model = req
        .model
        .ok_or_else(|| MockError::invalid("model", "you must provide a model parameter"))?;
    let messages = req
        .messages
        .ok_or_else(|| MockError::invalid("messages", "Missing required parameter: 'messages'."))?;
    let n = req.n.unwrap_or(1);
    if n == 0 || n > MAX_CHOICES {
        return Err(MockError::invalid(
            "n",
            format!("{n} is not valid for 'n': expected 1 to {MAX_CHOICES}"),
        ));
    }
    let n = usize::try_from(n).unwrap_or(1);
    let prompt_tokens = messages
        .iter()
        .map(|m| content_words(m.content.as_ref()))
        .sum::<u64>()
        .max(1);
    let output = Output::plan(
        &app,
        req.max_completion_tokens.or(req.max_tokens),
        forced_tool(req.tools.as_deref(), req.tool_choice.as_ref()),
    );
    let completion_tokens = (output.tokens() * n) as u64;
    let report = app.cfg.usage;
    let usage = (!report.omit).then(|| Usage {
        prompt_tokens,
        completion_tokens: completion_tokens + report.reasoning_tokens,
        total_tokens: prompt_tokens + completion_tokens + report.reasoning_tokens,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: report.cached(prompt_tokens),
            audio_tokens: 0,
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: report.reasoning_tokens,
            ..CompletionTokensDetails::default()
        },
    });
    let id = app.next_id();
    let answer = Answer {
        id: format!("chatcmpl-mock-{id}"),
        created: unix_secs(),
        model: format!("{}{model}", app.cfg.model_prefix),
        tool_call_ids: match &output {
            Output::Tool { .. } => (0..n)
                .map(|_| format!("call_mock_{}", app.next_id()))
                .collect(),
            Output::Text { .. } => Vec::new(),
        },
        n,
        output,
        usage,
    };

    if req.stream.unwrap_or(false) {
        let include_usage = usage.is_some()
            && req
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false);
        let stream = ChatStream {
            pacer: Pacer::new(&app, answer.output.tokens(), &fault),
            guard: StreamGuard::new(app),
            answer,
            include_usage,
            step: Step::Role,
        };
        return Ok(dialect.ok_response(id, SSE_CONTENT_TYPE, stream_body(stream)));
    }

    if fault.stream_error_after_tokens.is_some() {
        return Ok(dialect.mid_stream_error_response());
    }
    let json = serde_json::to_vec(&answer.completion(&app)).map_err(MockError::Encode)?;
    let body = match fault.cut_after_tokens {
        // The connection dies halfway through the document.
        Some(_) => half_body(json),
        None => Body::from(json),
    };
    Ok(dialect.ok_response(id, "application/json", body))
}

/// Everything that describes one answer, shared by its plain and streamed forms.
struct Answer {
    id: String,
    created: u64,
    model: String,
    n: usize,
    output: Output,
    tool_call_ids: Vec<String>,
    /// `None` when the mock leaves usage out.
    usage: Option<Usage>,
}

impl Answer {
    fn completion<'a>(&'a self, app: &'a App) -> Completion<'a> {
        let choices = (0..self.n)
            .map(|index| {
                let (content, tool_calls) = match &self.output {
                    Output::Text { tokens, .. } => (Some(app.reply.prefix(*tokens)), None),
                    Output::Tool { name } => (
                        None,
                        Some([ToolCall {
                            id: self
                                .tool_call_ids
                                .get(index)
                                .map_or("call_mock", String::as_str),
                            kind: "function",
                            function: FunctionCall {
                                name,
                                arguments: TOOL_INPUT,
                            },
                        }]),
                    ),
                };
                Choice {
                    index,
                    message: Message {
                        role: "assistant",
                        content,
                        refusal: None,
                        tool_calls,
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: finish_reason(&self.output),
                }
            })
            .collect();
        Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.usage,
            service_tier: "default",
            system_fingerprint: None,
        }
    }
}

// === response schema ===

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    service_tier: &'static str,
    system_fingerprint: Option<&'static str>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize, Clone, Copy, Default)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy, Default)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: Option<()>,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless usage was asked for; then `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[DeltaToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct DeltaToolCall<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: DeltaFunction<'a>,
}

#[derive(Serialize)]
struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

// === stream ===

/// Where a stream is; each step yields one frame (one event per choice).
#[derive(Clone, Copy)]
enum Step {
    Role,
    Tokens,
    Usage,
    Done,
    End,
}

struct ChatStream {
    guard: StreamGuard,
    answer: Answer,
    include_usage: bool,
    pacer: Pacer,
    step: Step,
}

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

impl Frames for ChatStream {
    async fn next_frame(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        match self.step {
            Step::Role => {
                self.step = Step::Tokens;
                Some(self.frame(None, |tool| {
                    Delta {
                        role: Some("assistant"),
                        // A tool call's role chunk carries `content: null`.
                        content: Some(tool.map_or(Some(""), |_| None)),
                        refusal: Some(None),
                        tool_calls: None,
                    }
                    .with_tool_head(tool)
                }))
            }
            Step::Tokens => match self.pacer.beat().await {
                Beat::Token { index, .. } => Some(self.token_frame(index)),
                Beat::Cut => {
                    self.step = Step::End;
                    Some(Err(cut_error()))
                }
                Beat::Error => {
                    self.step = Step::End;
                    let (_, kind, message) = Dialect::OpenAi.mid_stream_error();
                    let mut buf = b"data: ".to_vec();
                    buf.extend_from_slice(&error_json(message, kind, None, None));
                    buf.extend_from_slice(b"\n\n");
                    Some(Ok(Bytes::from(buf)))
                }
                Beat::Done => {
                    self.step = if self.include_usage {
                        Step::Usage
                    } else {
                        Step::Done
                    };
                    let finish = finish_reason(&self.answer.output);
                    Some(self.frame(Some(finish), |_| Delta::default()))
                }
            },
            Step::Usage => {
                self.step = Step::Done;
                let chunk = Chunk {
                    usage: Some(self.answer.usage),
                    ..self.chunk(&[])
                };
                let mut buf = Vec::with_capacity(512);
                Some(push_data(&mut buf, &chunk).map(|()| Bytes::from(buf)))
            }
            Step::Done => {
                self.step = Step::End;
                Some(Ok(Bytes::from_static(DONE_EVENT)))
            }
            Step::End => None,
        }
    }
}

impl ChatStream {
    fn token_frame(&self, index: usize) -> Result<Bytes, std::io::Error> {
        let text = self.guard.app().reply.token(index);
        let is_tool = matches!(self.answer.output, Output::Tool { .. });
        self.frame(None, |_| {
            if is_tool {
                Delta {
                    tool_calls: Some([DeltaToolCall {
                        index: 0,
                        id: None,
                        kind: None,
                        function: DeltaFunction {
                            name: None,
                            arguments: TOOL_INPUT,
                        },
                    }]),
                    ..Delta::default()
                }
            } else {
                Delta {
                    content: Some(Some(text)),
                    ..Delta::default()
                }
            }
        })
    }

    fn chunk<'a>(&'a self, choices: &'a [ChunkChoice<'a>]) -> Chunk<'a> {
        Chunk {
            id: &self.answer.id,
            object: "chat.completion.chunk",
            created: self.answer.created,
            model: &self.answer.model,
            service_tier: "default",
            system_fingerprint: None,
            choices,
            usage: self.include_usage.then_some(None),
        }
    }

    /// One event per choice, in one frame; `delta` gets, for tool answers, the
    /// choice's call id and function name.
    fn frame<'a>(
        &'a self,
        finish_reason: Option<&'static str>,
        delta: impl Fn(Option<(&'a str, &'a str)>) -> Delta<'a>,
    ) -> Result<Bytes, std::io::Error> {
        let mut buf = Vec::with_capacity(320 * self.answer.n);
        for index in 0..self.answer.n {
            let tool = match &self.answer.output {
                Output::Tool { name } => Some((
                    self.answer
                        .tool_call_ids
                        .get(index)
                        .map_or("call_mock", String::as_str),
                    name.as_str(),
                )),
                Output::Text { .. } => None,
            };
            let choice = [ChunkChoice {
                index,
                delta: delta(tool),
                logprobs: None,
                finish_reason,
            }];
            push_data(&mut buf, &self.chunk(&choice))?;
        }
        Ok(Bytes::from(buf))
    }
}

impl<'a> Delta<'a> {
    /// Adds the tool call's head (id, type, name, empty arguments) to a role delta.
    fn with_tool_head(mut self, tool: Option<(&'a str, &'a str)>) -> Self {
        if let Some((id, name)) = tool {
            self.tool_calls = Some([DeltaToolCall {
                index: 0,
                id: Some(id),
                kind: Some("function"),
                function: DeltaFunction {
                    name: Some(name),
                    arguments: "",
                },
            }]);
        }
        self
    }
}
