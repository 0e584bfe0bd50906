//! Anthropic's Messages bodies to and from the canonical model.

use serde_json::{json, Map, Value};
use tollgate_core::Usage;

use crate::canonical::{
    Image, Message, Part, Request, Response, Role, StopReason, Tool, ToolCall, ToolChoice,
    ToolResult, UsageReport,
};
use crate::json::{
    self, arguments_object, field_path, object, opt_array, opt_bool, opt_f64, opt_str, opt_u64,
    req_str, Object,
};
use crate::ProviderError;

const PROVIDER: &str = "anthropic";

/// `max_tokens` sent when the client gave none: Anthropic requires it, and every current
/// model can produce at least this many tokens in one answer. A larger default would let
/// an OpenAI client that asks for nothing run up a long (and costly) answer.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

// === requests ===

/// A Messages body in canonical form.
pub fn decode_request(body: &Object) -> Result<Request, ProviderError> {
    let mut req = Request {
        model: req_str(body, "model", "")?.to_owned(),
        max_tokens: opt_u64(body, "max_tokens", "")?,
        temperature: opt_f64(body, "temperature", "")?,
        top_p: opt_f64(body, "top_p", "")?,
        top_k: opt_u64(body, "top_k", "")?,
        stop: json::strings(body.get("stop_sequences"), "stop_sequences")?,
        stream: opt_bool(body, "stream", "")?.unwrap_or(false),
        ..Request::default()
    };
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => req.system.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system[{i}]");
                let block = object(block, &path)?;
                req.system.push(req_str(block, "text", &path)?.to_owned());
            }
        }
        Some(_) => {
            return Err(ProviderError::invalid(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    for (i, message) in opt_array(body, "messages", "")?.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = object(message, &path)?;
        let role = match req_str(message, "role", &path)? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => {
                return Err(ProviderError::invalid(
                    field_path(&path, "role"),
                    "must be 'user' or 'assistant'",
                ))
            }
        };
        let content = decode_blocks(message.get("content"), &field_path(&path, "content"))?;
        req.messages.push(Message { role, content });
    }
    for (i, tool) in opt_array(body, "tools", "")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let tool = object(tool, &path)?;
        if let Some(kind) = opt_str(tool, "type", &path)? {
            if kind != "custom" {
                return Err(ProviderError::untranslatable(format!(
                    "the server tool '{kind}' ({path})"
                )));
            }
        }
        req.tools.push(Tool {
            name: req_str(tool, "name", &path)?.to_owned(),
            description: opt_str(tool, "description", &path)?.map(str::to_owned),
            parameters: tool
                .get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let choice = object(choice, "tool_choice")?;
        req.tool_choice = Some(match req_str(choice, "type", "tool_choice")? {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(req_str(choice, "name", "tool_choice")?.to_owned()),
            _ => {
                return Err(ProviderError::invalid(
                    "tool_choice.type",
                    "must be 'auto', 'any', 'tool' or 'none'",
                ))
            }
        });
        if let Some(disable) = opt_bool(choice, "disable_parallel_tool_use", "tool_choice")? {
            req.parallel_tool_calls = Some(!disable);
        }
    }
    if let Some(metadata) = body.get("metadata").and_then(Value::as_object) {
        req.user = opt_str(metadata, "user_id", "metadata")?.map(str::to_owned);
    }
    Ok(req)
}

fn decode_blocks(value: Option<&Value>, path: &str) -> Result<Vec<Part>, ProviderError> {
    let blocks = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(ProviderError::invalid(
                path,
                "must be a string or an array of content blocks",
            ))
        }
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let block = object(block, &path)?;
        match req_str(block, "type", &path)? {
            "text" => parts.push(Part::Text(req_str(block, "text", &path)?.to_owned())),
            "image" => parts.push(Part::Image(decode_image(block, &path)?)),
            "tool_use" => parts.push(Part::ToolCall(ToolCall {
                id: req_str(block, "id", &path)?.to_owned(),
                name: req_str(block, "name", &path)?.to_owned(),
                arguments: json::arguments_text(block.get("input")),
            })),
            "tool_result" => parts.push(Part::ToolResult(ToolResult {
                call_id: req_str(block, "tool_use_id", &path)?.to_owned(),
                content: decode_blocks(block.get("content"), &field_path(&path, "content"))?,
                is_error: opt_bool(block, "is_error", &path)?.unwrap_or(false),
            })),
            // Thinking blocks carry a provider signature that only the same provider can
            // check; other providers neither need nor accept them.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(ProviderError::untranslatable(format!(
                    "a '{other}' content block ({path})"
                )))
            }
        }
    }
    Ok(parts)
}

fn decode_image(block: &Object, path: &str) -> Result<Image, ProviderError> {
    let source_path = field_path(path, "source");
    let source = object(block.get("source").unwrap_or(&Value::Null), &source_path)?;
    match req_str(source, "type", &source_path)? {
        "base64" => Ok(Image::Base64 {
            media_type: req_str(source, "media_type", &source_path)?.to_owned(),
            data: req_str(source, "data", &source_path)?.to_owned(),
        }),
        "url" => Ok(Image::Url(req_str(source, "url", &source_path)?.to_owned())),
        other => Err(ProviderError::untranslatable(format!(
            "an image source of type '{other}' ({source_path})"
        ))),
    }
}

/// A Messages body for `model` from the canonical request.
pub fn encode_request(req: &Request, model: &str) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    match req.system.as_slice() {
        [] => {}
        [one] => {
            body.insert("system".into(), json!(one));
        }
        many => {
            let blocks: Vec<Value> = many
                .iter()
                .map(|text| json!({"type": "text", "text": text}))
                .collect();
            body.insert("system".into(), Value::Array(blocks));
        }
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, message) in req.messages.iter().enumerate() {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content = encode_blocks(&message.content, &format!("messages[{i}]"))?;
        messages.push(json!({"role": role, "content": content}));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut out = Map::new();
                out.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    out.insert("description".into(), json!(description));
                }
                out.insert("input_schema".into(), tool.parameters.clone());
                Value::Object(out)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let choice = match &req.tool_choice {
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Tool(name)) => Some(json!({"type": "tool", "name": name})),
        None if req.parallel_tool_calls == Some(false) => Some(json!({"type": "auto"})),
        None => None,
    };
    if let Some(mut choice) = choice {
        if let (Some(parallel), Value::Object(obj)) = (req.parallel_tool_calls, &mut choice) {
            obj.insert("disable_parallel_tool_use".into(), json!(!parallel));
        }
        body.insert("tool_choice".into(), choice);
    }
    // Anthropic's temperature range is 0 to 1, OpenAI's 0 to 2: clamp rather than have
    // every OpenAI client that asks for more than 1 rejected.
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        body.insert("top_k".into(), json!(k));
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn encode_blocks(parts: &[Part], path: &str) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        blocks.push(match part {
            Part::Text(text) => json!({"type": "text", "text": text}),
            Part::Image(image) => encode_image(image),
            Part::ToolCall(call) => json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": arguments_object(
                    &call.arguments,
                    &format!("{path}: the arguments of tool call '{}'", call.id),
                )?,
            }),
            Part::ToolResult(result) => {
                let mut block = Map::new();
                block.insert("type".into(), json!("tool_result"));
                block.insert("tool_use_id".into(), json!(result.call_id));
                match result.content.as_slice() {
                    [] => {}
                    [Part::Text(text)] => {
                        block.insert("content".into(), json!(text));
                    }
                    parts => {
                        block.insert("content".into(), Value::Array(encode_blocks(parts, path)?));
                    }
                }
                if result.is_error {
                    block.insert("is_error".into(), json!(true));
                }
                Value::Object(block)
            }
        });
    }
    Ok(blocks)
}

fn encode_image(image: &Image) -> Value {
    match image {
        Image::Base64 { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Image::Url(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

// === responses ===

/// A Messages answer in canonical form.
pub fn decode_response(value: &Value) -> Result<Response, ProviderError> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::UpstreamBody {
            provider: PROVIDER,
            problem: "no 'content'".to_owned(),
        })?;
    let mut content = Vec::with_capacity(blocks.len());
    for block in blocks {
        match json::str_or_empty(block, "type") {
            "text" => content.push(Part::Text(json::str_or_empty(block, "text").to_owned())),
            "tool_use" => content.push(Part::ToolCall(ToolCall {
                id: json::str_or_empty(block, "id").to_owned(),
                name: json::str_or_empty(block, "name").to_owned(),
                arguments: json::arguments_text(block.get("input")),
            })),
            _ => {}
        }
    }
    Ok(Response {
        id: json::str_or_empty(value, "id").to_owned(),
        model: json::str_or_empty(value, "model").to_owned(),
        content,
        stop_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(stop_reason_from),
        stop_sequence: value
            .get("stop_sequence")
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage: value.get("usage").map(usage_from).unwrap_or_default(),
    })
}

pub(crate) fn stop_reason_from(reason: &str) -> StopReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

pub(crate) fn stop_reason_name(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    }
}

/// A Messages answer from the canonical response.
pub fn encode_response(resp: &Response) -> Value {
    let content: Vec<Value> = resp
        .content
        .iter()
        .filter_map(|part| match part {
            Part::Text(text) => Some(json!({"type": "text", "text": text})),
            Part::ToolCall(call) => Some(json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": arguments_object(&call.arguments, "arguments")
                    .unwrap_or_else(|_| json!({})),
            })),
            Part::Image(_) | Part::ToolResult(_) => None,
        })
        .collect();
    json!({
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason_name(resp.stop_reason.unwrap_or(StopReason::EndTurn)),
        "stop_sequence": resp.stop_sequence,
        "usage": usage_value(&resp.usage),
    })
}

// === usage ===

/// Usage from an Anthropic `usage` object. Anthropic counts cache reads and writes apart
/// from `input_tokens`; the canonical input count includes them, and the cached count is
/// the cache reads.
pub fn usage_from(usage: &Value) -> Usage {
    let report = usage_report(usage, &mut RawUsage::default());
    Usage {
        input_tokens: report.input_tokens.unwrap_or(0),
        output_tokens: report.output_tokens.unwrap_or(0),
        cached_input_tokens: report.cached_input_tokens.unwrap_or(0),
        reasoning_tokens: 0,
        estimated: false,
    }
}

/// The input-side counts of a stream so far, which `message_start` gives and a later
/// `message_delta` may restate.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RawUsage {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
}

/// A usage report from an Anthropic `usage` object, completing `raw` with what it states.
pub(crate) fn usage_report(usage: &Value, raw: &mut RawUsage) -> UsageReport {
    let mut input_seen = false;
    for (key, slot) in [
        ("input_tokens", &mut raw.input),
        ("cache_creation_input_tokens", &mut raw.cache_creation),
        ("cache_read_input_tokens", &mut raw.cache_read),
    ] {
        if let Some(n) = json::opt_count(usage, key) {
            *slot = Some(n);
            input_seen = true;
        }
    }
    let input =
        raw.input.unwrap_or(0) + raw.cache_creation.unwrap_or(0) + raw.cache_read.unwrap_or(0);
    UsageReport {
        input_tokens: input_seen.then_some(input),
        output_tokens: json::opt_count(usage, "output_tokens"),
        cached_input_tokens: input_seen.then_some(raw.cache_read.unwrap_or(0)),
        reasoning_tokens: None,
    }
}

/// Anthropic's `usage` object: uncached input apart from cache reads.
pub(crate) fn usage_value(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input_tokens.saturating_sub(usage.cached_input_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    })
}
