//! Google's Gemini API: `models/{model}:generateContent`, `:streamGenerateContent` (SSE with
//! `alt=sse`, else a streamed JSON array), forced `functionCall` parts, blocked candidates
//! (`finish_reason` faults), and `:embedContent` / `:batchEmbedContents` with the same
//! vectors as OpenAI's dialect.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::answer::{content_words, Output, ToolInput};
use crate::dialect::{percent_decode, Dialect};
use crate::embeddings::{dimensions, embed};
use crate::error::MockError;
use crate::faults::{take_fault, Fault};
use crate::state::{App, Recorded, StreamGuard};
use crate::stream::{cut_error, half_body, stream_body, Beat, Frames, Pacer};
use crate::UsageReport;

const DIALECT: Dialect = Dialect::Gemini;

/// Most requests one `:batchEmbedContents` call may carry, as Gemini allows.
const MAX_BATCH_EMBED_REQUESTS: usize = 100;

/// Finish reasons whose candidate carries no content: the answer was withheld.
const BLOCKING_REASONS: [&str; 6] = [
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

/// The harm categories every safety verdict lists; the first is the one that blocked.
const HARM_CATEGORIES: [&str; 4] = [
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
];

// === routing ===

/// The method after the colon of `models/{model}:{method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Generate,
    StreamGenerate,
    Embed,
    BatchEmbed,
}

/// One call of a model method.
pub(crate) struct Call {
    model: String,
    operation: Operation,
}

impl Call {
    /// `/v1beta/models/{model}:{method}` or `/v1/models/{model}:{method}`.
    pub(crate) fn parse(path: &str) -> Option<Self> {
        let rest = path
            .strip_prefix("/v1beta/models/")
            .or_else(|| path.strip_prefix("/v1/models/"))?;
        let (model, method) = rest.rsplit_once(':')?;
        let operation = match method {
            "generateContent" => Operation::Generate,
            "streamGenerateContent" => Operation::StreamGenerate,
            "embedContent" => Operation::Embed,
            "batchEmbedContents" => Operation::BatchEmbed,
            _ => return None,
        };
        (!model.is_empty() && !model.contains('/')).then(|| Self {
            model: percent_decode(model).into_owned(),
            operation,
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
    let mut rec = Recorded::new(Method::POST, uri, headers, &body);
    rec.model = Some(call.model.clone());
    if matches!(
        call.operation,
        Operation::Generate | Operation::StreamGenerate
    ) {
        rec.messages = serde_json::from_slice::<ContentsSummary>(&body)
            .ok()
            .and_then(|s| s.contents)
            .map(|c| c.len());
    }
    app.record(rec);

    if let Err(refused) = DIALECT.admit(headers, uri) {
        return refused.into_dialect_response(DIALECT);
    }
    let fault = match take_fault(&app, DIALECT, uri.path(), Some(&call.model), true).await {
        Ok(fault) => fault,
        Err(forced) => return forced,
    };
    let result = match call.operation {
        Operation::Generate | Operation::StreamGenerate => {
            serde_json::from_slice::<GenerateRequest>(&body)
                .map_err(MockError::InvalidJson)
                .and_then(|req| generate(app, &call, uri, req, fault))
        }
        Operation::Embed => serde_json::from_slice::<EmbedRequest>(&body)
            .map_err(MockError::InvalidJson)
            .and_then(|req| embed_one(&app, &req)),
        Operation::BatchEmbed => serde_json::from_slice::<BatchEmbedRequest>(&body)
            .map_err(MockError::InvalidJson)
            .and_then(|req| embed_batch(&app, req)),
    };
    result.unwrap_or_else(|e| e.into_dialect_response(DIALECT))
}

// === request ===

#[derive(Deserialize)]
struct ContentsSummary {
    contents: Option<Vec<IgnoredAny>>,
}

/// Google's JSON accepts both the camelCase and the snake_case spelling of each field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    contents: Option<Vec<Content>>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<Content>,
    tools: Option<Vec<Tool>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<ToolConfig>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct Content {
    parts: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    #[serde(alias = "function_declarations")]
    function_declarations: Option<Vec<FunctionDeclaration>>,
}

#[derive(Deserialize)]
struct FunctionDeclaration {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

/// With `functionCallingConfig.mode` `ANY`: the first allowed function, else the first
/// declared one.
fn forced_tool(req: &GenerateRequest) -> Option<String> {
    let config = req.tool_config.as_ref()?.function_calling_config.as_ref()?;
    if config.mode.as_deref() != Some("ANY") {
        return None;
    }
    if let Some(name) = config
        .allowed_function_names
        .as_ref()
        .and_then(|n| n.first())
    {
        return Some(name.clone());
    }
    req.tools
        .iter()
        .flatten()
        .filter_map(|tool| tool.function_declarations.as_ref())
        .flatten()
        .find_map(|decl| decl.name.clone())
}

// === generate ===

fn generate(
    app: Arc<App>,
    call: &Call,
    uri: &Uri,
    req: GenerateRequest,
    fault: Fault,
) -> Result<Response, MockError> {
    let contents = req.contents.as_deref().unwrap_or_default();
    if contents.is_empty() {
        return Err(MockError::invalid(
            "contents",
            "* GenerateContentRequest.contents: contents is not specified",
        ));
    }
    let prompt_tokens = (content_words(
        req.system_instruction
            .as_ref()
            .and_then(|c| c.parts.as_ref()),
    ) + contents
        .iter()
        .map(|c| content_words(c.parts.as_ref()))
        .sum::<u64>())
    .max(1);
    let blocked = fault
        .finish_reason
        .as_deref()
        .is_some_and(|r| BLOCKING_REASONS.contains(&r));
    let output = if blocked {
        Output::Text {
            tokens: 0,
            truncated: false,
        }
    } else {
        let limit = req
            .generation_config
            .as_ref()
            .and_then(|g| g.max_output_tokens);
        Output::plan(&app, limit, forced_tool(&req))
    };
    let finish_reason = fault.finish_reason.clone().unwrap_or_else(|| {
        match output {
            Output::Text {
                truncated: true, ..
            } => "MAX_TOKENS",
            _ => "STOP",
        }
        .to_owned()
    });
    let id = app.next_id();
    let answer = Answer {
        response_id: format!("mock-{id}"),
        model_version: format!("{}{}", app.cfg.model_prefix, call.model),
        output,
        finish_reason,
        blocked,
        prompt_tokens,
        report: app.cfg.usage,
    };

    if call.operation == Operation::StreamGenerate {
        let sse = uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
        let (framing, content_type) = if sse {
            (Framing::Sse, "text/event-stream")
        } else {
            (
                Framing::Array { opened: false },
                "application/json; charset=UTF-8",
            )
        };
        let stream = GenerateStream {
            pacer: Pacer::new(&app, answer.output.tokens(), &fault),
            guard: StreamGuard::new(app),
            answer,
            framing,
            ended: false,
        };
        return Ok(DIALECT.ok_response(id, content_type, stream_body(stream)));
    }
    if fault.stream_error_after_tokens.is_some() {
        return Ok(DIALECT.mid_stream_error_response());
    }
    let tokens = answer.output.tokens();
    let text = app.reply.prefix(tokens);
    let json = serde_json::to_vec(&answer.response(text, true)).map_err(MockError::Encode)?;
    let body = match fault.cut_after_tokens {
        Some(_) => half_body(json),
        None => Body::from(json),
    };
    Ok(DIALECT.ok_response(id, "application/json; charset=UTF-8", body))
}

struct Answer {
    response_id: String,
    model_version: String,
    output: Output,
    finish_reason: String,
    blocked: bool,
    prompt_tokens: u64,
    report: UsageReport,
}

impl Answer {
    /// A response (or stream chunk) carrying `text` (ignored for a function call); `last`
    /// adds the finish reason and the usage.
    fn response<'a>(&'a self, text: &'a str, last: bool) -> GenerateResponse<'a> {
        let part = match &self.output {
            Output::Tool { name } => Part::FunctionCall {
                function_call: FunctionCall {
                    name,
                    args: ToolInput {},
                },
            },
            Output::Text { .. } => Part::Text { text },
        };
        let output_tokens = self.output.tokens() as u64;
        GenerateResponse {
            candidates: [Candidate {
                content: (!self.blocked).then_some(CandidateContent {
                    parts: [part],
                    role: "model",
                }),
                finish_reason: last.then_some(self.finish_reason.as_str()),
                safety_ratings: (last && self.finish_reason == "SAFETY").then(|| {
                    HARM_CATEGORIES.map(|category| SafetyRating {
                        category,
                        probability: if category == HARM_CATEGORIES[0] {
                            "HIGH"
                        } else {
                            "NEGLIGIBLE"
                        },
                        blocked: category == HARM_CATEGORIES[0],
                    })
                }),
                index: 0,
            }],
            usage_metadata: (last && !self.report.omit).then(|| UsageMetadata {
                prompt_token_count: self.prompt_tokens,
                candidates_token_count: (output_tokens > 0).then_some(output_tokens),
                cached_content_token_count: Some(self.report.cached(self.prompt_tokens))
                    .filter(|&n| n > 0),
                thoughts_token_count: Some(self.report.reasoning_tokens).filter(|&n| n > 0),
                total_token_count: self.prompt_tokens
                    + output_tokens
                    + self.report.reasoning_tokens,
            }),
            model_version: &self.model_version,
            response_id: &self.response_id,
        }
    }
}

// === response schema ===

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse<'a> {
    candidates: [Candidate<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<UsageMetadata>,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<CandidateContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_ratings: Option<[SafetyRating; 4]>,
    index: u32,
}

#[derive(Serialize)]
struct CandidateContent<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
    },
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: ToolInput,
}

#[derive(Serialize)]
struct SafetyRating {
    category: &'static str,
    probability: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    blocked: bool,
}

/// `candidatesTokenCount` is absent when nothing was generated, as Gemini does.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<u64>,
    /// Of the prompt, read from the cache; inside `prompt_token_count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    /// Thinking, not inside `candidates_token_count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<u64>,
    total_token_count: u64,
}

// === stream ===

/// How chunks are framed: SSE events, or the elements of one JSON array sent piecemeal.
enum Framing {
    Sse,
    Array { opened: bool },
}

impl Framing {
    /// Appends one chunk; `last` closes an array.
    fn push(&mut self, buf: &mut Vec<u8>, json: &[u8], last: bool) {
        match self {
            Self::Sse => {
                buf.extend_from_slice(b"data: ");
                buf.extend_from_slice(json);
                buf.extend_from_slice(b"\r\n\r\n");
            }
            Self::Array { opened } => {
                buf.extend_from_slice(if *opened { b",\r\n" } else { b"[" });
                *opened = true;
                buf.extend_from_slice(json);
                if last {
                    buf.push(b']');
                }
            }
        }
    }
}

struct GenerateStream {
    guard: StreamGuard,
    answer: Answer,
    pacer: Pacer,
    framing: Framing,
    ended: bool,
}

impl Frames for GenerateStream {
    async fn next_frame(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.ended {
            return None;
        }
        let app = self.guard.app();
        let (json, last) = match self.pacer.beat().await {
            Beat::Token { index, last } => {
                let chunk = self.answer.response(app.reply.token(index), last);
                (serde_json::to_vec(&chunk), last)
            }
            // Only an answer without tokens gets here: its one chunk closes it.
            Beat::Done => (serde_json::to_vec(&self.answer.response("", true)), true),
            Beat::Cut => {
                self.ended = true;
                return Some(Err(cut_error()));
            }
            Beat::Error => {
                let (code, status, message) = DIALECT.mid_stream_error();
                let error = serde_json::json!({
                    "error": {"code": code, "message": message, "status": status}
                });
                (serde_json::to_vec(&error), true)
            }
        };
        self.ended = last;
        let json = match json {
            Ok(json) => json,
            Err(e) => return Some(Err(std::io::Error::other(e))),
        };
        let mut buf = Vec::with_capacity(json.len() + 8);
        self.framing.push(&mut buf, &json, last);
        Some(Ok(Bytes::from(buf)))
    }
}

// === embeddings ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest {
    content: Option<Content>,
    #[serde(alias = "output_dimensionality")]
    output_dimensionality: Option<u64>,
}

#[derive(Deserialize)]
struct BatchEmbedRequest {
    requests: Option<Vec<EmbedRequest>>,
}

#[derive(Serialize)]
struct Embedding {
    values: Vec<f32>,
}

/// The text of an embed request: its parts' texts, one per line.
fn embed_values(req: &EmbedRequest) -> Result<Embedding, MockError> {
    let parts = req
        .content
        .as_ref()
        .and_then(|c| c.parts.as_ref())
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| {
            MockError::invalid(
                "content",
                "* EmbedContentRequest.content: contents is not specified",
            )
        })?;
    let text = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(serde_json::Value::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let dims = dimensions(req.output_dimensionality, "outputDimensionality")?;
    Ok(Embedding {
        values: embed(&text, dims),
    })
}

fn embed_one(app: &App, req: &EmbedRequest) -> Result<Response, MockError> {
    #[derive(Serialize)]
    struct Single {
        embedding: Embedding,
    }
    let json = serde_json::to_vec(&Single {
        embedding: embed_values(req)?,
    })
    .map_err(MockError::Encode)?;
    Ok(DIALECT.ok_response(
        app.next_id(),
        "application/json; charset=UTF-8",
        json.into(),
    ))
}

fn embed_batch(app: &App, req: BatchEmbedRequest) -> Result<Response, MockError> {
    #[derive(Serialize)]
    struct Batch {
        embeddings: Vec<Embedding>,
    }
    let requests = req.requests.unwrap_or_default();
    if requests.is_empty() || requests.len() > MAX_BATCH_EMBED_REQUESTS {
        return Err(MockError::invalid(
            "requests",
            format!(
                "* BatchEmbedContentsRequest.requests: must hold 1 to \
                 {MAX_BATCH_EMBED_REQUESTS} requests"
            ),
        ));
    }
    let embeddings = requests
        .iter()
        .map(embed_values)
        .collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_vec(&Batch { embeddings }).map_err(MockError::Encode)?;
    Ok(DIALECT.ok_response(
        app.next_id(),
        "application/json; charset=UTF-8",
        json.into(),
    ))
}
