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

use crate::{canonical, ProviderError};

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
        crate::json::body_with_model(&self.body, upstream_model, false)
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
        crate::json::body_with_model(&self.body, upstream_model, self.stream())
    }

    /// The request in canonical form, for a provider of another dialect.
    pub fn to_canonical(&self) -> Result<canonical::Request, ProviderError> {
        decode_request(&self.body)
    }

    pub(crate) fn body_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.body
    }

    /// What `response_format` promises the answer will be, if JSON.
    pub fn json_promise(&self) -> Option<JsonPromise<'_>> {
        let format = self.body.get("response_format")?;
        match format.get("type").and_then(Value::as_str)? {
            "json_object" => Some(JsonPromise::Object),
            "json_schema" => Some(
                format
                    .pointer("/json_schema/schema")
                    .map_or(JsonPromise::Object, JsonPromise::Schema),
            ),
            _ => None,
        }
    }
}

/// The JSON a client asked for with `response_format`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JsonPromise<'a> {
    /// Any JSON object (`json_object`).
    Object,
    /// A value of this JSON Schema (`json_schema`).
    Schema(&'a Value),
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
        crate::json::body_with_model(&self.body, upstream_model, false)
    }

    pub(crate) fn body_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.body
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
}
