//! OpenAI's Chat Completions and Embeddings dialect: the gateway's OpenAI-compatible
//! ingress, and `kind: openai` upstreams (OpenAI and every server that speaks its API:
//! vLLM, Ollama, Mistral, Groq, DeepSeek…).
//!
//! Requests are kept as the client's JSON object so every field (tools, tool_choice,
//! response_format, stop, n, temperature, max_tokens, max_completion_tokens, user,
//! metadata, and fields this gateway does not know yet) passes through unchanged; only
//! `model` is rewritten to the upstream model id. When the route's provider speaks another
//! dialect, [`ChatRequest::to_canonical`] is the way out and [`encode_response`] and the
//! stream writer the way back.

mod convert;
pub(crate) mod stream;

use serde_json::{Map, Value};
use tollgate_core::Usage;

use crate::{canonical, Operation, ProviderError, UpstreamRequest};

pub use convert::{decode_request, decode_response, encode_request, encode_response};

// === impl ChatRequest ===

/// A parsed `POST /v1/chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    body: Map<String, Value>,
}

impl ChatRequest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ProviderError> {
        let body = parse_object(bytes)?;
        require_model(&body)?;
        match body.get("messages") {
            Some(Value::Array(msgs)) if !msgs.is_empty() => {
                if msgs.iter().any(|m| !m.is_object()) {
                    return Err(ProviderError::InvalidField {
                        field: "messages",
                        problem: "must be an array of message objects",
                    });
                }
            }
            Some(Value::Array(_)) => {
                return Err(ProviderError::InvalidField {
                    field: "messages",
                    problem: "must not be empty",
                })
            }
            Some(_) => {
                return Err(ProviderError::InvalidField {
                    field: "messages",
                    problem: "must be an array of message objects",
                })
            }
            None => {
                return Err(ProviderError::InvalidField {
                    field: "messages",
                    problem: "is required",
                })
            }
        }
        if !matches!(
            body.get("stream"),
            None | Some(Value::Bool(_)) | Some(Value::Null)
        ) {
            return Err(ProviderError::InvalidField {
                field: "stream",
                problem: "must be a boolean",
            });
        }
        Ok(Self { body })
    }

    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("")
    }

    pub fn stream(&self) -> bool {
        matches!(self.body.get("stream"), Some(Value::Bool(true)))
    }

    /// The client's `metadata` object, used by route matching.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.body.get("metadata").and_then(Value::as_object)
    }

    /// The output cap the client asked for (`max_completion_tokens`, else `max_tokens`).
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.body
            .get("max_completion_tokens")
            .or_else(|| self.body.get("max_tokens"))
            .and_then(Value::as_u64)
    }

    /// Appends every piece of text the model will read (message contents, tool calls
    /// and tool definitions) to `out`, for token estimates.
    pub fn prompt_text(&self, out: &mut String) {
        if let Some(Value::Array(messages)) = self.body.get("messages") {
            for message in messages {
                if let Some(content) = message.get("content") {
                    content_text(content, out);
                }
                if let Some(calls) = message.get("tool_calls") {
                    push_json(calls, out);
                }
            }
        }
        if let Some(tools) = self.body.get("tools") {
            push_json(tools, out);
        }
    }

    /// The body for an upstream of this dialect, with `model` set to the provider's id.
    pub fn to_upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_owned()));
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Whether the client asked for the closing usage chunk of a stream
    /// (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// [`ChatRequest::to_upstream_body`], and for a stream also asking the upstream for
    /// its usage chunk, which the gateway meters (and strips again when the client did not
    /// ask for it).
    pub fn to_metered_upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_owned()));
        if self.stream() {
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if !options.is_object() {
                *options = Value::Object(Map::new());
            }
            if let Value::Object(options) = options {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The request in canonical form, for a provider of another dialect.
    pub fn to_canonical(&self) -> Result<canonical::Request, ProviderError> {
        decode_request(&self.body)
    }
}

// === impl EmbeddingsRequest ===

/// A parsed `POST /v1/embeddings` body.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    body: Map<String, Value>,
}

impl EmbeddingsRequest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ProviderError> {
        let body = parse_object(bytes)?;
        require_model(&body)?;
        match body.get("input") {
            Some(Value::String(_)) | Some(Value::Array(_)) => Ok(Self { body }),
            Some(_) => Err(ProviderError::InvalidField {
                field: "input",
                problem: "must be a string or an array",
            }),
            None => Err(ProviderError::InvalidField {
                field: "input",
                problem: "is required",
            }),
        }
    }

    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("")
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.body.get("metadata").and_then(Value::as_object)
    }

    pub fn prompt_text(&self, out: &mut String) {
        if let Some(input) = self.body.get("input") {
            content_text(input, out);
        }
    }

    pub fn to_upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_owned()));
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The texts to embed: one string or an array of strings. Token-id inputs (arrays of
    /// integers) are `None`: only OpenAI-dialect upstreams take them.
    pub fn input_texts(&self) -> Option<Vec<&str>> {
        match self.body.get("input")? {
            Value::String(s) => Some(vec![s.as_str()]),
            Value::Array(items) => items.iter().map(Value::as_str).collect(),
            _ => None,
        }
    }

    /// The `dimensions` the client asked for.
    pub fn dimensions(&self) -> Option<u64> {
        self.body.get("dimensions").and_then(Value::as_u64)
    }

    /// Whether the client asked for base64-encoded vectors (`encoding_format`).
    pub fn wants_base64(&self) -> bool {
        self.body.get("encoding_format").and_then(Value::as_str) == Some("base64")
    }
}

pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ProviderError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ProviderError::NotAnObject),
        Err(e) => Err(ProviderError::InvalidJson(e.to_string())),
    }
}

pub(crate) fn require_model(body: &Map<String, Value>) -> Result<(), ProviderError> {
    match body.get("model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(_) => Err(ProviderError::InvalidField {
            field: "model",
            problem: "must be a non-empty string",
        }),
        None => Err(ProviderError::InvalidField {
            field: "model",
            problem: "is required",
        }),
    }
}

/// Text of a `content` value: a string, or an array of parts of which the text parts
/// count (images are priced by providers separately and are not estimated here).
pub(crate) fn content_text(content: &Value, out: &mut String) {
    match content {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(parts) => {
            for part in parts {
                match part {
                    Value::String(s) => {
                        out.push_str(s);
                        out.push('\n');
                    }
                    Value::Object(obj) => {
                        if let Some(Value::String(text)) = obj.get("text") {
                            out.push_str(text);
                            out.push('\n');
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn push_json(value: &Value, out: &mut String) {
    if let Ok(text) = serde_json::to_string(value) {
        out.push_str(&text);
        out.push('\n');
    }
}

// === upstream requests ===

/// Builds the HTTP request for an upstream of `kind: openai`.
///
/// `path_prefix` is the endpoint URL's path (`/openai` for `https://api.groq.com/openai`),
/// `api_key` is injected as a bearer token, `extra_headers` are the provider's configured
/// headers.
pub fn upstream_request(
    op: Operation,
    path_prefix: &str,
    api_key: Option<&str>,
    extra_headers: &[(String, String)],
    body: Vec<u8>,
) -> UpstreamRequest {
    let path = match op {
        Operation::ChatCompletions => format!("{path_prefix}/v1/chat/completions"),
        Operation::Embeddings => format!("{path_prefix}/v1/embeddings"),
    };
    let mut headers: Vec<(&'static str, String)> =
        vec![("content-type", "application/json".to_owned())];
    if let Some(key) = api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    UpstreamRequest {
        path,
        headers,
        extra: extra_headers.to_vec(),
        body,
    }
}

// === responses ===

/// Usage from an OpenAI `usage` object (non-stream body or the final stream chunk).
pub fn usage_from(value: &Value) -> Option<Usage> {
    let usage = value.get("usage")?.as_object()?;
    let get = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let nested = |outer: &str, inner: &str| {
        usage
            .get(outer)
            .and_then(|o| o.get(inner))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Some(Usage {
        input_tokens: get("prompt_tokens"),
        output_tokens: get("completion_tokens"),
        cached_input_tokens: nested("prompt_tokens_details", "cached_tokens"),
        reasoning_tokens: nested("completion_tokens_details", "reasoning_tokens"),
        estimated: false,
    })
}

/// What one `data:` payload of an OpenAI stream is.
#[derive(Debug, PartialEq)]
pub enum StreamPayload {
    /// A `chat.completion.chunk`; `has_output` is true when it carries generated content
    /// (text, refusal or tool-call deltas) rather than only a role or a finish reason.
    Chunk {
        has_output: bool,
        usage: Option<Usage>,
    },
    /// The terminating `[DONE]` sentinel.
    Done,
    /// An error object sent inside the stream.
    Error { message: String },
    /// Not JSON, or JSON of an unknown shape; passed through.
    Unknown,
}

pub fn classify_stream_data(data: &str) -> StreamPayload {
    if data.trim() == "[DONE]" {
        return StreamPayload::Done;
    }
    let Ok(value) = serde_json::from_str::<Value>(data) else {
        return StreamPayload::Unknown;
    };
    if let Some(err) = value.get("error") {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error")
            .to_owned();
        return StreamPayload::Error { message };
    }
    let Some(choices) = value.get("choices").and_then(Value::as_array) else {
        return StreamPayload::Unknown;
    };
    let has_output = choices.iter().any(|choice| {
        choice.get("delta").is_some_and(|delta| {
            delta
                .get("content")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
                || delta
                    .get("refusal")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
                || delta.get("tool_calls").is_some_and(|t| !t.is_null())
        })
    });
    StreamPayload::Chunk {
        has_output,
        usage: usage_from(&value).filter(|_| !value["usage"].is_null()),
    }
}

/// A stream error event in OpenAI's shape, for a stream that breaks after it started.
pub fn stream_error_data(message: &str, kind: &str, code: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
        .to_string()
}

/// The body of `GET /v1/models` listing the given logical model ids.
pub fn models_list(ids: &[String], created: u64) -> Vec<u8> {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({"id": id, "object": "model", "created": created, "owned_by": "tollgate"})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_keeps_every_field_and_rewrites_model() {
        let raw = br#"{"model":"cheap","messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{}}}],
            "tool_choice":"auto","response_format":{"type":"json_object"},"stop":["x"],"n":2,
            "temperature":0.5,"max_tokens":7,"max_completion_tokens":9,"user":"u1",
            "metadata":{"feature":"search"},"seed":42,"unknown_future_field":{"a":1}}"#;
        let req = ChatRequest::parse(raw).unwrap();
        assert_eq!(req.model(), "cheap");
        assert_eq!(req.max_output_tokens(), Some(9));
        assert_eq!(req.metadata().unwrap()["feature"], "search");
        let out: Value = serde_json::from_slice(&req.to_upstream_body("gpt-4o-mini")).unwrap();
        let orig: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(out["model"], "gpt-4o-mini");
        for (k, v) in orig.as_object().unwrap() {
            if k != "model" {
                assert_eq!(&out[k], v, "field {k} changed");
            }
        }
    }

    #[test]
    fn chat_request_rejects_bad_bodies_with_the_field() {
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "not valid JSON"),
            (b"[1]", "JSON object"),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                "'model' is required",
            ),
            (br#"{"model":"m"}"#, "'messages' is required"),
            (
                br#"{"model":"m","messages":[]}"#,
                "'messages' must not be empty",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "'stream' must be a boolean",
            ),
        ];
        for (body, want) in cases {
            let err = ChatRequest::parse(body).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn prompt_text_covers_parts_and_tools() {
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is"},{"type":"image_url","image_url":{"url":"x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"lookup","arguments":"{}"}}]}],
            "tools":[{"type":"function","function":{"name":"lookup","description":"finds"}}]}"#,
        )
        .unwrap();
        let mut text = String::new();
        req.prompt_text(&mut text);
        for needle in ["be brief", "what is", "lookup", "finds"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn stream_payloads_are_classified() {
        assert_eq!(classify_stream_data("[DONE]"), StreamPayload::Done);
        assert_eq!(
            classify_stream_data(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
            StreamPayload::Chunk {
                has_output: false,
                usage: None
            }
        );
        assert_eq!(
            classify_stream_data(r#"{"choices":[{"delta":{"content":"Hi"}}],"usage":null}"#),
            StreamPayload::Chunk {
                has_output: true,
                usage: None
            }
        );
        match classify_stream_data(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#,
        ) {
            StreamPayload::Chunk { usage: Some(u), .. } => {
                assert_eq!(
                    (u.input_tokens, u.output_tokens, u.cached_input_tokens),
                    (3, 5, 1)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            classify_stream_data(r#"{"error":{"message":"overloaded"}}"#),
            StreamPayload::Error { .. }
        ));
    }

    #[test]
    fn upstream_request_uses_prefix_and_bearer() {
        let req = upstream_request(
            Operation::ChatCompletions,
            "/openai",
            Some("sk-test"),
            &[("OpenAI-Organization".into(), "org".into())],
            b"{}".to_vec(),
        );
        assert_eq!(req.path, "/openai/v1/chat/completions");
        assert!(req
            .headers
            .iter()
            .any(|(k, v)| *k == "authorization" && v == "Bearer sk-test"));
        assert_eq!(
            req.extra,
            vec![("OpenAI-Organization".into(), "org".into())]
        );
    }
}
