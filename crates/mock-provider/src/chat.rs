//! `POST /v1/chat/completions` in OpenAI's shape: plain answers, lazily timed SSE
//! streams, tool calls, `n` choices, and the stream faults.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::error::{error_json, error_response, MockError};
use crate::faults::Fault;
use crate::state::{count_words, unix_secs, App, Recorded, StreamGuard};
use crate::v1::{request_id_header, take_fault};

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

/// What the recorder needs from a body whose shape the full parse rejected.
#[derive(Deserialize)]
struct Summary {
    model: Option<String>,
    messages: Option<Vec<IgnoredAny>>,
}

/// Words of a message's text: a string content, or the `text` of each content part.
fn content_words(content: Option<&serde_json::Value>) -> u64 {
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

pub(crate) async fn completions(
    app: Arc<App>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<ChatRequest>(&body);
    let mut rec = Recorded::new(Method::POST, uri, headers, &body);
    match &parsed {
        Ok(req) => {
            rec.model.clone_from(&req.model);
            rec.messages = req.messages.as_ref().map(Vec::len);
        }
        Err(_) => {
            if let Ok(summary) = serde_json::from_slice::<Summary>(&body) {
                rec.model = summary.model;
                rec.messages = summary.messages.as_ref().map(Vec::len);
            }
        }
    }
    let model = rec.model.clone();
    app.record(rec);

    let fault = match take_fault(&app, uri.path(), model.as_deref()).await {
        Ok(fault) => fault,
        Err(forced) => return forced,
    };
    let result = match parsed {
        Ok(req) => respond(app, req, fault),
        Err(e) => Err(MockError::InvalidJson(e)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

// === answer plan ===

/// What every choice of one answer carries.
enum Output {
    /// The first `tokens` tokens of the configured reply.
    Text { tokens: usize, finish: &'static str },
    /// One call of this function with arguments `{}`.
    Tool { name: String },
}

impl Output {
    fn tokens(&self) -> usize {
        match self {
            Self::Text { tokens, .. } => *tokens,
            Self::Tool { .. } => 1,
        }
    }

    fn finish(&self) -> &'static str {
        match self {
            Self::Text { finish, .. } => finish,
            Self::Tool { .. } => "tool_calls",
        }
    }
}

fn respond(app: Arc<App>, req: ChatRequest, fault: Option<Fault>) -> Result<Response, MockError> {
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
    let output = match forced_tool(req.tools.as_deref(), req.tool_choice.as_ref()) {
        Some(name) => Output::Tool { name },
        None => {
            let available = app.reply.len();
            match req.max_completion_tokens.or(req.max_tokens) {
                Some(limit) if limit < available as u64 => Output::Text {
                    tokens: usize::try_from(limit).unwrap_or(0),
                    finish: "length",
                },
                _ => Output::Text {
                    tokens: available,
                    finish: "stop",
                },
            }
        }
    };
    let completion_tokens = (output.tokens() * n) as u64;
    let usage = Usage::new(prompt_tokens, completion_tokens);
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
    let request_id = request_id_header(id);
    let fault = fault.unwrap_or_default();

    if req.stream.unwrap_or(false) {
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let stream = ChatStream {
            first_delay: app.cfg.first_token_delay,
            token_delay: app.cfg.token_delay,
            guard: StreamGuard::new(app),
            answer,
            include_usage,
            cut_after: fault.cut_after_tokens,
            error_after: fault.stream_error_after_tokens,
            step: Step::Role,
        };
        let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        }));
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(request_id.0, request_id.1);
        return Ok(response);
    }

    if fault.stream_error_after_tokens.is_some() {
        return Ok(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock fault: error while generating",
            "server_error",
            None,
            None,
        ));
    }
    let json = serde_json::to_vec(&answer.completion(&app)).map_err(MockError::Encode)?;
    let body = match fault.cut_after_tokens {
        // The connection dies halfway through the document.
        Some(_) => {
            let half = json.len() / 2;
            cut_body(Bytes::from(json).slice(..half))
        }
        None => Body::from(json),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(request_id.0, request_id.1);
    Ok(response)
}

/// A body that sends `prefix` and then breaks the connection.
fn cut_body(prefix: Bytes) -> Body {
    let stream = futures::stream::unfold(Some(prefix), |state| async move {
        match state {
            Some(prefix) => Some((Ok(prefix), None)),
            None => {
                // Returning Pending once lets the server flush what was sent before the
                // error tears the connection down.
                tokio::task::yield_now().await;
                Some((Err(cut_error()), None))
            }
        }
    });
    Body::from_stream(stream)
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "mock fault: connection cut",
    )
}

/// Everything that describes one answer, shared by its plain and streamed forms.
struct Answer {
    id: String,
    created: u64,
    model: String,
    n: usize,
    output: Output,
    tool_call_ids: Vec<String>,
    usage: Usage,
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
                                arguments: "{}",
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
                    finish_reason: self.output.finish(),
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
    usage: Usage,
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

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
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
    /// About to send token `i` (or to stop, when `i` reaches a fault's count).
    Token(usize),
    Finish,
    Usage,
    Done,
    End,
}

/// A stream produced one frame per poll: the timer for a token starts only when the
/// previous one has been taken, and dropping the body (client gone) drops the timer.
struct ChatStream {
    guard: StreamGuard,
    answer: Answer,
    include_usage: bool,
    first_delay: Duration,
    token_delay: Duration,
    cut_after: Option<usize>,
    error_after: Option<usize>,
    step: Step,
}

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

impl ChatStream {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            match self.step {
                Step::Role => {
                    self.step = Step::Token(0);
                    return Some(self.frame(None, |tool| {
                        Delta {
                            role: Some("assistant"),
                            // A tool call's role chunk carries `content: null`.
                            content: Some(tool.map_or(Some(""), |_| None)),
                            refusal: Some(None),
                            tool_calls: None,
                        }
                        .with_tool_head(tool)
                    }));
                }
                Step::Token(i) => {
                    let done = i >= self.answer.output.tokens();
                    // A fault count beyond the reply strikes after the last token.
                    let cut = self.cut_after.is_some_and(|c| done || i >= c);
                    let error = self.error_after.is_some_and(|c| done || i >= c);
                    if done && !cut && !error {
                        self.step = Step::Finish;
                        continue;
                    }
                    let delay = if i == 0 {
                        self.first_delay
                    } else {
                        self.token_delay
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if cut {
                        self.step = Step::End;
                        tokio::task::yield_now().await;
                        return Some(Err(cut_error()));
                    }
                    if error {
                        self.step = Step::End;
                        let mut buf = b"data: ".to_vec();
                        buf.extend_from_slice(&error_json(
                            "mock fault: error while generating",
                            "server_error",
                            None,
                            None,
                        ));
                        buf.extend_from_slice(b"\n\n");
                        return Some(Ok(Bytes::from(buf)));
                    }
                    self.step = Step::Token(i + 1);
                    let text = self.guard.app().reply.token(i);
                    let is_tool = matches!(self.answer.output, Output::Tool { .. });
                    return Some(self.frame(None, |_| {
                        if is_tool {
                            Delta {
                                tool_calls: Some([DeltaToolCall {
                                    index: 0,
                                    id: None,
                                    kind: None,
                                    function: DeltaFunction {
                                        name: None,
                                        arguments: "{}",
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
                    }));
                }
                Step::Finish => {
                    self.step = if self.include_usage {
                        Step::Usage
                    } else {
                        Step::Done
                    };
                    let finish = self.answer.output.finish();
                    return Some(self.frame(Some(finish), |_| Delta::default()));
                }
                Step::Usage => {
                    self.step = Step::Done;
                    let chunk = Chunk {
                        usage: Some(Some(self.answer.usage)),
                        ..self.chunk(&[])
                    };
                    let mut buf = Vec::with_capacity(512);
                    return Some(push_event(&mut buf, &chunk).map(|()| Bytes::from(buf)));
                }
                Step::Done => {
                    self.step = Step::End;
                    return Some(Ok(Bytes::from_static(DONE_EVENT)));
                }
                Step::End => return None,
            }
        }
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
            push_event(&mut buf, &self.chunk(&choice))?;
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

/// Appends `data: <json>\n\n`.
fn push_event<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Result<(), std::io::Error> {
    buf.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *buf, value).map_err(std::io::Error::other)?;
    buf.extend_from_slice(b"\n\n");
    Ok(())
}
