//! Anthropic's Messages API: the gateway's Anthropic-compatible ingress
//! (`POST /v1/messages`) and `kind: anthropic` upstreams.
//!
//! Like the OpenAI ingress, a request is kept as the client's JSON object so that it passes
//! to an Anthropic upstream unchanged but for `model`; [`MessagesRequest::to_canonical`]
//! translates it for any other provider.

mod convert;
pub(crate) mod stream;

use serde_json::{Map, Value};

use crate::openai::{content_text, parse_object, push_json, require_model};
use crate::{canonical, ProviderError};

pub use convert::{
    decode_request, decode_response, encode_request, encode_response, usage_from,
    DEFAULT_MAX_TOKENS,
};

/// The `anthropic-version` header value the gateway sends upstream.
pub const API_VERSION: &str = "2023-06-01";

/// A top-level field, the test its value must pass, and the problem reported otherwise.
type EnvelopeCheck = (&'static str, fn(&Value) -> bool, &'static str);

// === impl MessagesRequest ===

/// A parsed `POST /v1/messages` body.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    body: Map<String, Value>,
}

impl MessagesRequest {
    /// Parses and checks the envelope: `model`, `messages`, `max_tokens`, `stream`,
    /// `system`, `tools`, `metadata`. The content blocks are checked when the request is
    /// translated; an Anthropic upstream checks them itself.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProviderError> {
        let body = parse_object(bytes)?;
        require_model(&body)?;
        match body.get("messages") {
            Some(Value::Array(msgs)) if !msgs.is_empty() => {
                for (i, message) in msgs.iter().enumerate() {
                    check_message(message, i)?;
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
        match body.get("max_tokens") {
            Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
            Some(_) => {
                return Err(ProviderError::InvalidField {
                    field: "max_tokens",
                    problem: "must be a positive integer",
                })
            }
            None => {
                return Err(ProviderError::InvalidField {
                    field: "max_tokens",
                    problem: "is required",
                })
            }
        }
        let checks: [EnvelopeCheck; 4] = [
            (
                "stream",
                |v| v.is_boolean() || v.is_null(),
                "must be a boolean",
            ),
            (
                "system",
                |v| v.is_string() || v.is_array(),
                "must be a string or an array of text blocks",
            ),
            ("tools", Value::is_array, "must be an array of tools"),
            ("metadata", Value::is_object, "must be an object"),
        ];
        for (field, ok, problem) in checks {
            if body.get(field).is_some_and(|v| !ok(v)) {
                return Err(ProviderError::InvalidField { field, problem });
            }
        }
        Ok(Self { body })
    }

    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("")
    }

    pub fn stream(&self) -> bool {
        matches!(self.body.get("stream"), Some(Value::Bool(true)))
    }

    /// The client's `metadata` object (Anthropic's holds `user_id`), for route matching.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.body.get("metadata").and_then(Value::as_object)
    }

    /// The output cap the client asked for (`max_tokens`, required by this API).
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.body.get("max_tokens").and_then(Value::as_u64)
    }

    /// Appends every piece of text the model will read (system prompt, message contents,
    /// tool calls and results, tool definitions) to `out`, for token estimates.
    pub fn prompt_text(&self, out: &mut String) {
        if let Some(system) = self.body.get("system") {
            content_text(system, out);
        }
        if let Some(Value::Array(messages)) = self.body.get("messages") {
            for message in messages {
                let Some(content) = message.get("content") else {
                    continue;
                };
                content_text(content, out);
                if let Value::Array(blocks) = content {
                    for block in blocks {
                        if let Some(input) = block.get("input") {
                            push_json(input, out);
                        }
                        if let Some(inner) = block.get("content") {
                            content_text(inner, out);
                        }
                    }
                }
            }
        }
        if let Some(tools) = self.body.get("tools") {
            push_json(tools, out);
        }
    }

    /// The body for an Anthropic upstream, with `model` set to the provider's id.
    pub fn to_upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        crate::json::body_with_model(&self.body, upstream_model, false)
    }

    /// The request in canonical form, for a provider of another dialect.
    pub fn to_canonical(&self) -> Result<canonical::Request, ProviderError> {
        decode_request(&self.body)
    }

    pub(crate) fn body_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.body
    }
}

fn check_message(message: &Value, i: usize) -> Result<(), ProviderError> {
    let Some(message) = message.as_object() else {
        return Err(ProviderError::InvalidField {
            field: "messages",
            problem: "must be an array of message objects",
        });
    };
    match message.get("role").and_then(Value::as_str) {
        Some("user" | "assistant") => {}
        _ => {
            return Err(ProviderError::invalid(
                format!("messages[{i}].role"),
                "must be 'user' or 'assistant'",
            ))
        }
    }
    match message.get("content") {
        Some(Value::String(_) | Value::Array(_)) => Ok(()),
        Some(_) => Err(ProviderError::invalid(
            format!("messages[{i}].content"),
            "must be a string or an array of content blocks",
        )),
        None => Err(ProviderError::invalid(
            format!("messages[{i}].content"),
            "is required",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_every_field_and_rewrites_model() {
        let raw = br#"{"model":"claude-x","max_tokens":512,"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u-1"},
            "thinking":{"type":"enabled","budget_tokens":1024},"future_field":[1,2]}"#;
        let req = MessagesRequest::parse(raw).unwrap();
        assert_eq!(req.model(), "claude-x");
        assert_eq!(req.max_output_tokens(), Some(512));
        assert!(!req.stream());
        assert_eq!(req.metadata().unwrap()["user_id"], "u-1");
        let out: Value = serde_json::from_slice(&req.to_upstream_body("claude-3-5-haiku")).unwrap();
        let orig: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(out["model"], "claude-3-5-haiku");
        for (k, v) in orig.as_object().unwrap() {
            if k != "model" {
                assert_eq!(&out[k], v, "field {k} changed");
            }
        }
    }

    #[test]
    fn parse_names_the_field_at_fault() {
        let cases: [(&[u8], &str); 9] = [
            (b"{oops", "not valid JSON"),
            (br#"{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#, "'model' is required"),
            (br#"{"model":"m","max_tokens":1}"#, "'messages' is required"),
            (br#"{"model":"m","max_tokens":1,"messages":[]}"#, "'messages' must not be empty"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#, "'max_tokens' is required"),
            (br#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#, "'max_tokens' must be a positive integer"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#, "'messages[0].role' must be 'user' or 'assistant'"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}"#, "'messages[0].content' is required"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, "'stream' must be a boolean"),
        ];
        for (body, want) in cases {
            let err = MessagesRequest::parse(body).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn prompt_text_covers_system_blocks_tools_and_results() {
        let req = MessagesRequest::parse(
            br#"{"model":"m","max_tokens":9,"system":"be brief","messages":[
              {"role":"user","content":[{"type":"text","text":"weather?"}]},
              {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Oslo"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"rainy"}]}],
              "tools":[{"name":"get_weather","description":"looks it up","input_schema":{"type":"object"}}]}"#,
        )
        .unwrap();
        let mut text = String::new();
        req.prompt_text(&mut text);
        for needle in ["be brief", "weather?", "Oslo", "rainy", "looks it up"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
