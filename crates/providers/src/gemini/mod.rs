//! Google's Gemini API (`kind: gemini`): `generateContent`, `streamGenerateContent` with
//! `alt=sse`, and `batchEmbedContents`, to and from the canonical model.
//!
//! Gemini has no tool-call ids: calls are matched to results by function name. Ids the
//! gateway hands to clients are made from the response id and the call's position, and a
//! result is sent back under the name of the call with its id earlier in the conversation.

pub(crate) mod stream;

use serde_json::{json, Map, Value};
use tollgate_core::Usage;

use crate::canonical::{
    Image, Message, Part, Request, Response, ResponseFormat, Role, StopReason, Tool, ToolCall,
    ToolChoice, ToolResult, UsageReport,
};
use crate::json::{self, arguments_object};
use crate::openai::EmbeddingsRequest;
use crate::upstream_error::{ErrorType, UpstreamError};
use crate::ProviderError;

const PROVIDER: &str = "gemini";

/// The API version in Gemini paths.
pub const API_VERSION: &str = "v1beta";

/// Path (and query) of a model method: `generateContent`, `streamGenerateContent` (as SSE)
/// or `batchEmbedContents`.
pub fn path(prefix: &str, model: &str, method: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let model = json::encode_path_segment(model);
    let query = if method == "streamGenerateContent" {
        "?alt=sse"
    } else {
        ""
    };
    format!("{prefix}/{API_VERSION}/models/{model}:{method}{query}")
}

// === requests ===

/// A `generateContent` body from the canonical request (the model goes in the path).
pub fn encode_request(req: &Request) -> Result<Value, ProviderError> {
    let mut contents = Vec::with_capacity(req.messages.len());
    for (i, message) in req.messages.iter().enumerate() {
        let mut parts = Vec::with_capacity(message.content.len());
        for part in &message.content {
            parts.push(match part {
                Part::Text(text) => json!({"text": text}),
                Part::Image(image) => encode_image(image),
                Part::ToolCall(call) => json!({"functionCall": {
                    "name": call.name,
                    "args": arguments_object(
                        &call.arguments,
                        &format!("the arguments of tool call '{}'", call.id),
                    )?,
                }}),
                Part::ToolResult(result) => {
                    let name = call_name(&req.messages[..i], &result.call_id).ok_or_else(|| {
                        ProviderError::invalid(
                            format!("messages[{i}]"),
                            format!(
                                "answers tool call '{}', which no earlier assistant turn made",
                                result.call_id
                            ),
                        )
                    })?;
                    if result.content.iter().any(|p| !matches!(p, Part::Text(_))) {
                        return Err(ProviderError::unsupported(
                            "an image inside a tool result",
                            PROVIDER,
                        ));
                    }
                    let key = if result.is_error { "error" } else { "output" };
                    json!({"functionResponse": {"name": name, "response": {key: result.text()}}})
                }
            });
        }
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        contents.push(json!({"role": role, "parts": parts}));
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !req.system.is_empty() {
        let parts: Vec<Value> = req.system.iter().map(|t| json!({"text": t})).collect();
        body.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut out = Map::new();
                out.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    out.insert("description".into(), json!(description));
                }
                out.insert("parameters".into(), schema(&tool.parameters));
                Value::Object(out)
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    let mut config = Map::new();
    let numbers = [
        ("maxOutputTokens", req.max_tokens.map(Value::from)),
        ("temperature", req.temperature.map(Value::from)),
        ("topP", req.top_p.map(Value::from)),
        ("topK", req.top_k.map(Value::from)),
        ("seed", req.seed.map(Value::from)),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            config.insert(key.into(), value);
        }
    }
    if !req.stop.is_empty() {
        config.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema: s, .. }) => {
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseSchema".into(), schema(s));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(body))
}

/// The name of the call with `id` in the turns before a result, the latest first.
fn call_name<'a>(history: &'a [Message], id: &str) -> Option<&'a str> {
    history.iter().rev().find_map(|message| {
        message.content.iter().find_map(|part| match part {
            Part::ToolCall(call) if call.id == id => Some(call.name.as_str()),
            _ => None,
        })
    })
}

fn encode_image(image: &Image) -> Value {
    match image {
        Image::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Image::Url(url) => match mime_from_url(url) {
            Some(mime) => json!({"fileData": {"mimeType": mime, "fileUri": url}}),
            None => json!({"fileData": {"fileUri": url}}),
        },
    }
}

fn mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        _ => return None,
    })
}

/// The JSON schema reduced to the OpenAPI subset Gemini's `parameters` accept: unknown
/// keywords are refused with a 400 there, so they are dropped here; a nullable type list
/// becomes `nullable`, `const` a one-value `enum`.
fn schema(value: &Value) -> Value {
    const KEPT: [&str; 18] = [
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "default",
        "propertyOrdering",
    ];
    let Value::Object(obj) = value else {
        return value.clone();
    };
    let mut out = Map::new();
    for (key, v) in obj {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = v {
                    let props: Map<String, Value> =
                        props.iter().map(|(k, s)| (k.clone(), schema(s))).collect();
                    out.insert(key.clone(), Value::Object(props));
                }
            }
            "items" => {
                out.insert(key.clone(), schema(v));
            }
            "anyOf" => {
                if let Value::Array(options) = v {
                    out.insert(
                        key.clone(),
                        Value::Array(options.iter().map(schema).collect()),
                    );
                }
            }
            "type" => match v {
                Value::Array(types) => {
                    let mut concrete = types.iter().filter(|t| t.as_str() != Some("null"));
                    if let Some(first) = concrete.next() {
                        out.insert("type".into(), first.clone());
                    }
                    if types.len() > 1 {
                        out.insert("nullable".into(), json!(true));
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), json!([v]));
            }
            k if KEPT.contains(&k) => {
                out.insert(key.clone(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// A `generateContent` body in canonical form. Calls get the ids `call_<n>` in order, and
/// a result answers the latest call of its function name.
pub fn decode_request(body: &Value) -> Result<Request, ProviderError> {
    let bad = |problem: &str| ProviderError::invalid("contents", problem.to_owned());
    let mut req = Request::default();
    if let Some(parts) = body
        .pointer("/systemInstruction/parts")
        .and_then(Value::as_array)
    {
        for part in parts {
            req.system.push(json::str_or_empty(part, "text").to_owned());
        }
    }
    let mut calls: Vec<(String, String)> = Vec::new();
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("is required"))?;
    for content in contents {
        let role = match json::str_or_empty(content, "role") {
            "model" => Role::Assistant,
            _ => Role::User,
        };
        let mut parts = Vec::new();
        for part in content
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                parts.push(Part::Text(text.to_owned()));
            } else if let Some(data) = part.get("inlineData") {
                parts.push(Part::Image(Image::Base64 {
                    media_type: json::str_or_empty(data, "mimeType").to_owned(),
                    data: json::str_or_empty(data, "data").to_owned(),
                }));
            } else if let Some(file) = part.get("fileData") {
                parts.push(Part::Image(Image::Url(
                    json::str_or_empty(file, "fileUri").to_owned(),
                )));
            } else if let Some(call) = part.get("functionCall") {
                let name = json::str_or_empty(call, "name").to_owned();
                let id = format!("call_{}", calls.len());
                calls.push((id.clone(), name.clone()));
                parts.push(Part::ToolCall(ToolCall {
                    id,
                    name,
                    arguments: json::arguments_text(call.get("args")),
                }));
            } else if let Some(response) = part.get("functionResponse") {
                let name = json::str_or_empty(response, "name");
                let call_id = calls
                    .iter()
                    .rev()
                    .find(|(_, n)| n == name)
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default();
                let (text, is_error) = function_response_text(response.get("response"));
                parts.push(Part::ToolResult(ToolResult {
                    call_id,
                    content: vec![Part::Text(text)],
                    is_error,
                }));
            }
        }
        req.messages.push(Message {
            role,
            content: parts,
        });
    }
    for tool in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for decl in tool
            .get("functionDeclarations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            req.tools.push(Tool {
                name: json::str_or_empty(decl, "name").to_owned(),
                description: decl
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: decl.get("parameters").cloned().unwrap_or(json!({})),
            });
        }
    }
    if let Some(config) = body.pointer("/toolConfig/functionCallingConfig") {
        let allowed = config
            .pointer("/allowedFunctionNames/0")
            .and_then(Value::as_str);
        req.tool_choice = match (json::str_or_empty(config, "mode"), allowed) {
            ("NONE", _) => Some(ToolChoice::None),
            ("ANY", Some(name)) => Some(ToolChoice::Tool(name.to_owned())),
            ("ANY", None) => Some(ToolChoice::Required),
            ("AUTO", _) => Some(ToolChoice::Auto),
            _ => None,
        };
    }
    if let Some(config) = body.get("generationConfig") {
        req.max_tokens = json::opt_count(config, "maxOutputTokens");
        req.temperature = config.get("temperature").and_then(Value::as_f64);
        req.top_p = config.get("topP").and_then(Value::as_f64);
        req.top_k = json::opt_count(config, "topK");
        req.seed = config.get("seed").and_then(Value::as_i64);
        req.stop = json::strings(config.get("stopSequences"), "stopSequences")?;
        if json::str_or_empty(config, "responseMimeType") == "application/json" {
            req.response_format = Some(match config.get("responseSchema") {
                Some(s) => ResponseFormat::JsonSchema {
                    name: "response".to_owned(),
                    schema: s.clone(),
                },
                None => ResponseFormat::JsonObject,
            });
        }
    }
    Ok(req)
}

/// The text of a `functionResponse.response`: its `output` or `error` string when it has
/// one, else the whole object as JSON.
fn function_response_text(response: Option<&Value>) -> (String, bool) {
    let Some(response) = response else {
        return (String::new(), false);
    };
    for (key, is_error) in [("output", false), ("error", true)] {
        if let Some(Value::String(s)) = response.get(key) {
            return (s.clone(), is_error);
        }
    }
    (response.to_string(), false)
}

// === responses ===

/// A `generateContent` answer in canonical form. A prompt or answer blocked by a safety
/// filter with nothing generated is an error of type [`ErrorType::ContentPolicy`].
pub fn decode_response(value: &Value) -> Result<Response, ProviderError> {
    if let Some(reason) = value
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
    {
        return Err(ProviderError::Upstream(blocked(reason, "prompt")));
    }
    let candidate = value
        .pointer("/candidates/0")
        .ok_or_else(|| ProviderError::UpstreamBody {
            provider: PROVIDER,
            problem: "no 'candidates'".to_owned(),
        })?;
    let response_id = json::str_or_empty(value, "responseId");
    let mut content = Vec::new();
    let mut calls = 0;
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(part) = decode_part(part, response_id, &mut calls) {
            content.push(part);
        }
    }
    let finish = candidate.get("finishReason").and_then(Value::as_str);
    let stop_reason = finish.map(|r| stop_reason_from(r, calls > 0));
    if let Some(reason) = finish {
        if reason == "MALFORMED_FUNCTION_CALL" {
            return Err(ProviderError::Upstream(UpstreamError::new(
                ErrorType::Server,
                200,
                "the model produced a malformed function call",
            )));
        }
        if stop_reason == Some(StopReason::ContentFilter) && content.is_empty() {
            return Err(ProviderError::Upstream(blocked(reason, "response")));
        }
    }
    Ok(Response {
        id: response_id.to_owned(),
        model: json::str_or_empty(value, "modelVersion").to_owned(),
        content,
        stop_reason,
        stop_sequence: None,
        usage: value
            .get("usageMetadata")
            .map(usage_from)
            .unwrap_or_default(),
    })
}

/// One part of a candidate: text (thought summaries are skipped) or a function call, whose
/// id is Gemini's when it sent one.
fn decode_part(part: &Value, response_id: &str, calls: &mut usize) -> Option<Part> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    if let Some(text) = part.get("text").and_then(Value::as_str) {
        return Some(Part::Text(text.to_owned()));
    }
    let call = part.get("functionCall")?;
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ if response_id.is_empty() => format!("call_{calls}"),
        _ => format!("call_{response_id}_{calls}"),
    };
    *calls += 1;
    Some(Part::ToolCall(ToolCall {
        id,
        name: json::str_or_empty(call, "name").to_owned(),
        arguments: json::arguments_text(call.get("args")),
    }))
}

fn blocked(reason: &str, what: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorType::ContentPolicy,
        200,
        &format!("the provider's safety filter blocked the {what} ({reason})"),
    )
}

/// Gemini reports STOP also when the model called functions; clients expect a tool-use stop
/// then.
pub(crate) fn stop_reason_from(reason: &str, called_tools: bool) -> StopReason {
    match reason {
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            StopReason::ContentFilter
        }
        _ if called_tools => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
    }
}

/// A `generateContent` answer from the canonical response.
pub fn encode_response(resp: &Response) -> Value {
    let parts: Vec<Value> = resp
        .content
        .iter()
        .filter_map(|part| match part {
            Part::Text(text) => Some(json!({"text": text})),
            Part::ToolCall(call) => Some(json!({"functionCall": {
                "name": call.name,
                "args": arguments_object(&call.arguments, "arguments").unwrap_or_else(|_| json!({})),
            }})),
            Part::Image(_) | Part::ToolResult(_) => None,
        })
        .collect();
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": finish_reason(resp.stop_reason.unwrap_or(StopReason::EndTurn)),
            "index": 0,
        }],
        "usageMetadata": usage_value(&resp.usage),
        "modelVersion": resp.model,
        "responseId": resp.id,
    })
}

// === usage ===

/// Usage from `usageMetadata`: Gemini counts thinking apart from the answer
/// (`thoughtsTokenCount`); both are output.
pub fn usage_from(meta: &Value) -> Usage {
    let report = usage_report(meta);
    Usage {
        input_tokens: report.input_tokens.unwrap_or(0),
        output_tokens: report.output_tokens.unwrap_or(0),
        cached_input_tokens: report.cached_input_tokens.unwrap_or(0),
        reasoning_tokens: report.reasoning_tokens.unwrap_or(0),
        estimated: false,
    }
}

pub(crate) fn usage_report(meta: &Value) -> UsageReport {
    let candidates = json::opt_count(meta, "candidatesTokenCount");
    let thoughts = json::opt_count(meta, "thoughtsTokenCount");
    let output = match (candidates, thoughts) {
        (None, None) => None,
        (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
    };
    let input = json::opt_count(meta, "promptTokenCount");
    UsageReport {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: input.map(|_| json::count(meta, "cachedContentTokenCount")),
        reasoning_tokens: output.map(|_| thoughts.unwrap_or(0)),
    }
}

fn usage_value(usage: &Usage) -> Value {
    json!({
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens.saturating_sub(usage.reasoning_tokens),
        "thoughtsTokenCount": usage.reasoning_tokens,
        "cachedContentTokenCount": usage.cached_input_tokens,
        "totalTokenCount": usage.total_tokens(),
    })
}

// === embeddings ===

/// A `batchEmbedContents` body for an OpenAI embeddings request.
pub fn encode_embeddings(req: &EmbeddingsRequest, model: &str) -> Result<Value, ProviderError> {
    let texts = req
        .input_texts()
        .ok_or_else(|| ProviderError::unsupported("token-id embedding input", PROVIDER))?;
    let model = model.strip_prefix("models/").unwrap_or(model);
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut item = Map::new();
            item.insert("model".into(), json!(format!("models/{model}")));
            item.insert("content".into(), json!({"parts": [{"text": text}]}));
            if let Some(dimensions) = req.dimensions() {
                item.insert("outputDimensionality".into(), json!(dimensions));
            }
            Value::Object(item)
        })
        .collect();
    Ok(json!({"requests": requests}))
}

/// An OpenAI embeddings list from a `batchEmbedContents` answer; vectors as base64 of
/// little-endian `f32` when the client asked for that encoding. Gemini reports no usage,
/// so the usage fields are zero and the gateway estimates.
pub fn decode_embeddings(value: &Value, model: &str, base64: bool) -> Result<Value, ProviderError> {
    let embeddings = value
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::UpstreamBody {
            provider: PROVIDER,
            problem: "no 'embeddings'".to_owned(),
        })?;
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(index, embedding)| {
            let values = embedding
                .get("values")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let vector = if base64 {
                let mut bytes = Vec::with_capacity(values.len() * 4);
                for v in values {
                    bytes.extend_from_slice(&(v.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                json!(base64_encode(&bytes))
            } else {
                Value::Array(values.to_vec())
            };
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }))
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_encode(input), want);
        }
    }

    #[test]
    fn schemas_lose_what_gemini_refuses() {
        let input = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "city": {"type": "string", "description": "name"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                "tags": {"type": "array", "items": {"type": "string", "additionalProperties": false}},
                "kind": {"const": "weather"}
            },
            "required": ["city"]
        });
        assert_eq!(
            schema(&input),
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "name"},
                    "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "kind": {"enum": ["weather"]}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn paths_name_the_model_and_the_method() {
        assert_eq!(
            path("", "gemini-2.0-flash", "generateContent"),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            path("/proxy", "models/gemini-2.0-flash", "streamGenerateContent"),
            "/proxy/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn blocked_prompts_are_content_policy_errors() {
        let body = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        match decode_response(&body) {
            Err(ProviderError::Upstream(err)) => {
                assert_eq!(err.error_type, ErrorType::ContentPolicy);
                assert!(err.message.contains("SAFETY"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let body = json!({"candidates": [{"finishReason": "PROHIBITED_CONTENT", "index": 0}]});
        assert!(matches!(
            decode_response(&body),
            Err(ProviderError::Upstream(UpstreamError {
                error_type: ErrorType::ContentPolicy,
                ..
            }))
        ));
    }
}
