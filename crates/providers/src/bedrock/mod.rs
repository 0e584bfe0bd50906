//! Amazon Bedrock's Converse API (`kind: bedrock`): `converse` and `converse-stream`, to
//! and from the canonical model. Requests are signed with SigV4 (see [`crate::sigv4`]);
//! streams arrive in AWS's binary event-stream framing, whose decoded messages (headers and
//! JSON payload) [`crate::StreamTranslator::on_message`] reads.

pub(crate) mod stream;

use serde_json::{json, Map, Value};
use tollgate_core::Usage;

use crate::canonical::{
    Image, Message, Part, Request, Response, Role, StopReason, Tool, ToolCall, ToolChoice,
    ToolResult, UsageReport,
};
use crate::json::{self, arguments_object};
use crate::ProviderError;

const PROVIDER: &str = "bedrock";

/// The SigV4 service name of Bedrock's runtime API.
pub const SIGNING_SERVICE: &str = "bedrock";

/// Path of `converse` or `converse-stream` for a model id (or an ARN, encoded).
pub fn path(prefix: &str, model_id: &str, stream: bool) -> String {
    let action = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!(
        "{prefix}/model/{}/{action}",
        json::encode_path_segment(model_id)
    )
}

// === requests ===

/// A Converse body from the canonical request (the model goes in the path). Consecutive
/// turns of one role are merged: Converse requires the roles to alternate.
pub fn encode_request(req: &Request) -> Result<Value, ProviderError> {
    let mut messages: Vec<(Role, Vec<Value>)> = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        let blocks = encode_blocks(&message.content)?;
        match messages.last_mut() {
            Some((role, existing)) if *role == message.role => existing.extend(blocks),
            _ => messages.push((message.role, blocks)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if !req.system.is_empty() {
        let system: Vec<Value> = req.system.iter().map(|t| json!({"text": t})).collect();
        body.insert("system".into(), Value::Array(system));
    }
    let mut config = Map::new();
    if let Some(max) = req.max_tokens {
        config.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        config.insert("stopSequences".into(), json!(req.stop));
    }
    if !config.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(config));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut spec = Map::new();
                spec.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    spec.insert("description".into(), json!(description));
                }
                spec.insert("inputSchema".into(), json!({"json": tool.parameters}));
                json!({"toolSpec": spec})
            })
            .collect();
        let mut tool_config = Map::new();
        tool_config.insert("tools".into(), Value::Array(tools));
        // Converse has no "none": the tools stay declared (earlier tool turns need them)
        // and the choice is left to the model.
        let choice = match &req.tool_choice {
            Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
            Some(ToolChoice::Required) => Some(json!({"any": {}})),
            Some(ToolChoice::Tool(name)) => Some(json!({"tool": {"name": name}})),
            Some(ToolChoice::None) | None => None,
        };
        if let Some(choice) = choice {
            tool_config.insert("toolChoice".into(), choice);
        }
        body.insert("toolConfig".into(), Value::Object(tool_config));
    }
    if let Some(k) = req.top_k {
        // Converse has no portable top-k; Anthropic's models on Bedrock take it here.
        body.insert("additionalModelRequestFields".into(), json!({"top_k": k}));
    }
    Ok(Value::Object(body))
}

fn encode_blocks(parts: &[Part]) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            // Converse refuses blank text blocks.
            Part::Text(text) if text.trim().is_empty() => {}
            Part::Text(text) => blocks.push(json!({"text": text})),
            Part::Image(image) => blocks.push(encode_image(image)?),
            Part::ToolCall(call) => blocks.push(json!({"toolUse": {
                "toolUseId": call.id,
                "name": call.name,
                "input": arguments_object(
                    &call.arguments,
                    &format!("the arguments of tool call '{}'", call.id),
                )?,
            }})),
            Part::ToolResult(result) => {
                let mut content = encode_blocks(&result.content)?;
                if content.is_empty() {
                    content.push(json!({"text": ""}));
                }
                let mut block = Map::new();
                block.insert("toolUseId".into(), json!(result.call_id));
                block.insert("content".into(), Value::Array(content));
                if result.is_error {
                    block.insert("status".into(), json!("error"));
                }
                blocks.push(json!({"toolResult": block}));
            }
        }
    }
    Ok(blocks)
}

fn encode_image(image: &Image) -> Result<Value, ProviderError> {
    match image {
        Image::Base64 { media_type, data } => {
            let format = media_type.strip_prefix("image/").unwrap_or(media_type);
            let format = if format == "jpg" { "jpeg" } else { format };
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        Image::Url(_) => Err(ProviderError::unsupported(
            "an image by URL (send it inline as base64)",
            PROVIDER,
        )),
    }
}

/// A Converse body in canonical form.
pub fn decode_request(body: &Value) -> Result<Request, ProviderError> {
    let mut req = Request::default();
    for block in body
        .get("system")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            req.system.push(text.to_owned());
        }
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::invalid("messages", "is required"))?;
    for message in messages {
        let role = match json::str_or_empty(message, "role") {
            "assistant" => Role::Assistant,
            _ => Role::User,
        };
        let content = decode_blocks(message.get("content"));
        req.messages.push(Message { role, content });
    }
    if let Some(config) = body.get("inferenceConfig") {
        req.max_tokens = json::opt_count(config, "maxTokens");
        req.temperature = config.get("temperature").and_then(Value::as_f64);
        req.top_p = config.get("topP").and_then(Value::as_f64);
        req.stop = json::strings(config.get("stopSequences"), "inferenceConfig.stopSequences")?;
    }
    req.top_k = body
        .pointer("/additionalModelRequestFields/top_k")
        .and_then(Value::as_u64);
    if let Some(config) = body.get("toolConfig") {
        for tool in config
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let spec = tool.get("toolSpec").unwrap_or(&Value::Null);
            req.tools.push(Tool {
                name: json::str_or_empty(spec, "name").to_owned(),
                description: spec
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: spec
                    .pointer("/inputSchema/json")
                    .cloned()
                    .unwrap_or(json!({})),
            });
        }
        req.tool_choice = config.get("toolChoice").and_then(|choice| {
            if choice.get("auto").is_some() {
                Some(ToolChoice::Auto)
            } else if choice.get("any").is_some() {
                Some(ToolChoice::Required)
            } else {
                choice
                    .pointer("/tool/name")
                    .and_then(Value::as_str)
                    .map(|name| ToolChoice::Tool(name.to_owned()))
            }
        });
    }
    Ok(req)
}

fn decode_blocks(value: Option<&Value>) -> Vec<Part> {
    let mut parts = Vec::new();
    for block in value.and_then(Value::as_array).into_iter().flatten() {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            parts.push(Part::Text(text.to_owned()));
        } else if let Some(image) = block.get("image") {
            parts.push(Part::Image(Image::Base64 {
                media_type: format!("image/{}", json::str_or_empty(image, "format")),
                data: image
                    .pointer("/source/bytes")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            }));
        } else if let Some(call) = block.get("toolUse") {
            parts.push(Part::ToolCall(ToolCall {
                id: json::str_or_empty(call, "toolUseId").to_owned(),
                name: json::str_or_empty(call, "name").to_owned(),
                arguments: json::arguments_text(call.get("input")),
            }));
        } else if let Some(result) = block.get("toolResult") {
            let mut content = decode_blocks(result.get("content"));
            for item in result
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(value) = item.get("json") {
                    content.push(Part::Text(value.to_string()));
                }
            }
            parts.push(Part::ToolResult(ToolResult {
                call_id: json::str_or_empty(result, "toolUseId").to_owned(),
                content,
                is_error: json::str_or_empty(result, "status") == "error",
            }));
        }
    }
    parts
}

// === responses ===

/// A Converse answer in canonical form. Converse answers carry no id or model; `id` and
/// `model` fill them.
pub fn decode_response(value: &Value, id: &str, model: &str) -> Result<Response, ProviderError> {
    let message = value
        .pointer("/output/message")
        .ok_or_else(|| ProviderError::UpstreamBody {
            provider: PROVIDER,
            problem: "no 'output.message'".to_owned(),
        })?;
    let content = decode_blocks(message.get("content"))
        .into_iter()
        .filter(|p| matches!(p, Part::Text(_) | Part::ToolCall(_)))
        .collect();
    Ok(Response {
        id: id.to_owned(),
        model: model.to_owned(),
        content,
        stop_reason: value
            .get("stopReason")
            .and_then(Value::as_str)
            .map(stop_reason_from),
        stop_sequence: None,
        usage: value.get("usage").map(usage_from).unwrap_or_default(),
    })
}

pub(crate) fn stop_reason_from(reason: &str) -> StopReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "guardrail_intervened" | "content_filtered" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn stop_reason_name(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "content_filtered",
    }
}

/// A Converse answer from the canonical response.
pub fn encode_response(resp: &Response) -> Result<Value, ProviderError> {
    let content = encode_blocks(&resp.content)?;
    Ok(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason_name(resp.stop_reason.unwrap_or(StopReason::EndTurn)),
        "usage": usage_value(&resp.usage),
        "metrics": {"latencyMs": 0},
    }))
}

// === usage ===

/// Usage from a Converse `usage` object; like Anthropic's, its `inputTokens` leaves out
/// cache reads and writes, which the canonical input count includes.
pub fn usage_from(usage: &Value) -> Usage {
    let report = usage_report(usage);
    Usage {
        input_tokens: report.input_tokens.unwrap_or(0),
        output_tokens: report.output_tokens.unwrap_or(0),
        cached_input_tokens: report.cached_input_tokens.unwrap_or(0),
        reasoning_tokens: 0,
        estimated: false,
    }
}

pub(crate) fn usage_report(usage: &Value) -> UsageReport {
    let input = json::opt_count(usage, "inputTokens");
    let read = json::count(usage, "cacheReadInputTokens");
    let write = json::count(usage, "cacheWriteInputTokens");
    UsageReport {
        input_tokens: input.map(|n| n + read + write),
        output_tokens: json::opt_count(usage, "outputTokens"),
        cached_input_tokens: input.map(|_| read),
        reasoning_tokens: None,
    }
}

fn usage_value(usage: &Usage) -> Value {
    json!({
        "inputTokens": usage.input_tokens.saturating_sub(usage.cached_input_tokens),
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens(),
        "cacheReadInputTokens": usage.cached_input_tokens,
        "cacheWriteInputTokens": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_encoded_into_the_path() {
        assert_eq!(
            path("", "anthropic.claude-3-haiku-20240307-v1:0", false),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(
            path("", "arn:aws:bedrock:us-east-1::foundation-model/x", true),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fx/converse-stream"
        );
    }

    #[test]
    fn consecutive_turns_of_one_role_merge_and_urls_are_refused() {
        let req = Request {
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![Part::Text("a".into())],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::Text("b".into())],
                },
            ],
            ..Request::default()
        };
        let body = encode_request(&req).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}])
        );
        let with_url = Request {
            messages: vec![Message {
                role: Role::User,
                content: vec![Part::Image(Image::Url("https://x/y.png".into()))],
            }],
            ..Request::default()
        };
        assert!(matches!(
            encode_request(&with_url),
            Err(ProviderError::Unsupported { .. })
        ));
    }
}
