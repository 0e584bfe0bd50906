//! OpenAI's Chat Completions bodies to and from the canonical model.

use serde_json::{json, Map, Value};
use tollgate_core::Usage;

use crate::canonical::{
    Image, Message, Part, Request, Response, ResponseFormat, Role, StopReason, Tool, ToolCall,
    ToolChoice, ToolResult,
};
use crate::json::{
    self, field_path, object, opt_array, opt_bool, opt_f64, opt_i64, opt_str, opt_u64, req_str,
    Object,
};
use crate::ProviderError;

const PROVIDER: &str = "openai";

// === requests ===

/// A Chat Completions body in canonical form.
pub fn decode_request(body: &Object) -> Result<Request, ProviderError> {
    let mut req = Request {
        model: req_str(body, "model", "")?.to_owned(),
        max_tokens: match opt_u64(body, "max_completion_tokens", "")? {
            Some(n) => Some(n),
            None => opt_u64(body, "max_tokens", "")?,
        },
        temperature: opt_f64(body, "temperature", "")?,
        top_p: opt_f64(body, "top_p", "")?,
        stop: json::strings(body.get("stop"), "stop")?,
        seed: opt_i64(body, "seed", "")?,
        user: opt_str(body, "user", "")?.map(str::to_owned),
        stream: opt_bool(body, "stream", "")?.unwrap_or(false),
        parallel_tool_calls: opt_bool(body, "parallel_tool_calls", "")?,
        ..Request::default()
    };
    if opt_u64(body, "n", "")?.is_some_and(|n| n > 1) {
        return Err(ProviderError::invalid(
            "n",
            "must be 1 when the route translates the request for another provider",
        ));
    }
    for (i, message) in opt_array(body, "messages", "")?.iter().enumerate() {
        decode_message(message, &format!("messages[{i}]"), &mut req)?;
    }
    for (i, tool) in opt_array(body, "tools", "")?.iter().enumerate() {
        req.tools.push(decode_tool(tool, &format!("tools[{i}]"))?);
    }
    req.tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(ProviderError::invalid(
                    "tool_choice",
                    "must be 'auto', 'none', 'required' or a function",
                ))
            }
        }),
        Some(other) => {
            let choice = object(other, "tool_choice")?;
            let function = object(
                choice.get("function").unwrap_or(&Value::Null),
                "tool_choice.function",
            )?;
            Some(ToolChoice::Tool(
                req_str(function, "name", "tool_choice.function")?.to_owned(),
            ))
        }
    };
    req.response_format = match body.get("response_format") {
        None | Some(Value::Null) => None,
        Some(format) => {
            let format = object(format, "response_format")?;
            Some(match req_str(format, "type", "response_format")? {
                "text" => ResponseFormat::Text,
                "json_object" => ResponseFormat::JsonObject,
                "json_schema" => {
                    let schema = object(
                        format.get("json_schema").unwrap_or(&Value::Null),
                        "response_format.json_schema",
                    )?;
                    ResponseFormat::JsonSchema {
                        name: opt_str(schema, "name", "response_format.json_schema")?
                            .unwrap_or("response")
                            .to_owned(),
                        schema: schema.get("schema").cloned().unwrap_or(json!({})),
                    }
                }
                _ => {
                    return Err(ProviderError::invalid(
                        "response_format.type",
                        "must be 'text', 'json_object' or 'json_schema'",
                    ))
                }
            })
        }
    };
    Ok(req)
}

fn decode_message(value: &Value, path: &str, req: &mut Request) -> Result<(), ProviderError> {
    let message = object(value, path)?;
    let role = req_str(message, "role", path)?;
    let content_path = field_path(path, "content");
    match role {
        "system" | "developer" => {
            let mut text = String::new();
            for part in decode_content(message.get("content"), &content_path)? {
                match part {
                    Part::Text(t) => text.push_str(&t),
                    _ => {
                        return Err(ProviderError::invalid(
                            content_path,
                            "of a system message must be text",
                        ))
                    }
                }
            }
            req.system.push(text);
        }
        "user" => {
            let content = decode_content(message.get("content"), &content_path)?;
            match req.messages.last_mut() {
                // A user turn after tool results continues the turn that carries them.
                Some(last) if is_tool_results(last) => last.content.extend(content),
                _ => req.messages.push(Message {
                    role: Role::User,
                    content,
                }),
            }
        }
        "assistant" => {
            let mut content = decode_content(message.get("content"), &content_path)?;
            if content.is_empty() {
                if let Some(refusal) = opt_str(message, "refusal", path)? {
                    content.push(Part::Text(refusal.to_owned()));
                }
            }
            for (i, call) in opt_array(message, "tool_calls", path)?.iter().enumerate() {
                let call_path = format!("{path}.tool_calls[{i}]");
                let call = object(call, &call_path)?;
                let function = object(
                    call.get("function").unwrap_or(&Value::Null),
                    &field_path(&call_path, "function"),
                )?;
                content.push(Part::ToolCall(ToolCall {
                    id: req_str(call, "id", &call_path)?.to_owned(),
                    name: req_str(function, "name", &field_path(&call_path, "function"))?
                        .to_owned(),
                    arguments: opt_str(function, "arguments", &field_path(&call_path, "function"))?
                        .unwrap_or("")
                        .to_owned(),
                }));
            }
            req.messages.push(Message {
                role: Role::Assistant,
                content,
            });
        }
        "tool" => {
            let result = Part::ToolResult(ToolResult {
                call_id: req_str(message, "tool_call_id", path)?.to_owned(),
                content: decode_content(message.get("content"), &content_path)?,
                is_error: false,
            });
            match req.messages.last_mut() {
                Some(last) if is_tool_results(last) => last.content.push(result),
                _ => req.messages.push(Message {
                    role: Role::User,
                    content: vec![result],
                }),
            }
        }
        "function" => return Err(ProviderError::untranslatable("the legacy 'function' role")),
        _ => {
            return Err(ProviderError::invalid(
                field_path(path, "role"),
                "must be 'system', 'developer', 'user', 'assistant' or 'tool'",
            ))
        }
    }
    Ok(())
}

/// A user turn made only of tool results, which later tool messages extend.
fn is_tool_results(message: &Message) -> bool {
    message.role == Role::User
        && !message.content.is_empty()
        && message
            .content
            .iter()
            .all(|p| matches!(p, Part::ToolResult(_)))
}

fn decode_content(value: Option<&Value>, path: &str) -> Result<Vec<Part>, ProviderError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| decode_part(part, &format!("{path}[{i}]")))
            .collect(),
        Some(_) => Err(ProviderError::invalid(
            path,
            "must be a string or an array of content parts",
        )),
    }
}

fn decode_part(value: &Value, path: &str) -> Result<Part, ProviderError> {
    let part = object(value, path)?;
    match req_str(part, "type", path)? {
        "text" => Ok(Part::Text(req_str(part, "text", path)?.to_owned())),
        "refusal" => Ok(Part::Text(req_str(part, "refusal", path)?.to_owned())),
        "image_url" => {
            let url = match part.get("image_url") {
                Some(Value::String(url)) => url.as_str(),
                Some(Value::Object(image)) => {
                    req_str(image, "url", &field_path(path, "image_url"))?
                }
                _ => {
                    return Err(ProviderError::invalid(
                        field_path(path, "image_url"),
                        "must be an object with a 'url'",
                    ))
                }
            };
            Ok(Part::Image(Image::from_url(url)))
        }
        other => Err(ProviderError::untranslatable(format!(
            "a '{other}' content part ({path})"
        ))),
    }
}

fn decode_tool(value: &Value, path: &str) -> Result<Tool, ProviderError> {
    let tool = object(value, path)?;
    if let Some(kind) = opt_str(tool, "type", path)? {
        if kind != "function" {
            return Err(ProviderError::untranslatable(format!(
                "a '{kind}' tool ({path})"
            )));
        }
    }
    let function_path = field_path(path, "function");
    let function = object(tool.get("function").unwrap_or(&Value::Null), &function_path)?;
    Ok(Tool {
        name: req_str(function, "name", &function_path)?.to_owned(),
        description: opt_str(function, "description", &function_path)?.map(str::to_owned),
        parameters: function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    })
}

/// A Chat Completions body for `model` from the canonical request.
pub fn encode_request(req: &Request, model: &str) -> Result<Value, ProviderError> {
    let mut messages = Vec::with_capacity(req.messages.len() + req.system.len());
    for system in &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &req.messages {
        match message.role {
            Role::User => encode_user(message, &mut messages)?,
            Role::Assistant => messages.push(encode_assistant(message)?),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                function.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    function.insert("description".into(), json!(description));
                }
                function.insert("parameters".into(), tool.parameters.clone());
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &req.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(parallel) = req.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(parallel));
    }
    if let Some(max) = req.max_tokens {
        body.insert("max_completion_tokens".into(), json!(max));
    }
    insert_opt(&mut body, "temperature", req.temperature.map(Value::from));
    insert_opt(&mut body, "top_p", req.top_p.map(Value::from));
    if !req.stop.is_empty() {
        body.insert("stop".into(), json!(req.stop));
    }
    insert_opt(&mut body, "seed", req.seed.map(Value::from));
    insert_opt(&mut body, "user", req.user.as_ref().map(|u| json!(u)));
    if let Some(format) = &req.response_format {
        let format = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema } => {
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
            }
        };
        body.insert("response_format".into(), format);
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
        // The gateway meters every stream: ask for the closing usage chunk.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

fn insert_opt(body: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        body.insert(key.into(), value);
    }
}

/// A user turn: its tool results become `tool` messages, the rest one user message.
fn encode_user(message: &Message, out: &mut Vec<Value>) -> Result<(), ProviderError> {
    let mut rest = Vec::new();
    for part in &message.content {
        match part {
            Part::ToolResult(result) => {
                if result.content.iter().any(|p| !matches!(p, Part::Text(_))) {
                    return Err(ProviderError::unsupported(
                        "an image inside a tool result",
                        PROVIDER,
                    ));
                }
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": result.call_id,
                    "content": text_content(&result.content),
                }));
            }
            Part::ToolCall(_) => {
                return Err(ProviderError::unsupported(
                    "a tool call in a user turn",
                    PROVIDER,
                ))
            }
            Part::Text(_) | Part::Image(_) => rest.push(part),
        }
    }
    if !rest.is_empty() || message.content.is_empty() {
        let content = match rest.as_slice() {
            [Part::Text(text)] => json!(text),
            parts => Value::Array(parts.iter().filter_map(|p| encode_part(p)).collect()),
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// One string for a single text part, an array of text parts otherwise.
fn text_content(parts: &[Part]) -> Value {
    match parts {
        [Part::Text(text)] => json!(text),
        parts => Value::Array(parts.iter().filter_map(encode_part).collect()),
    }
}

fn encode_part(part: &Part) -> Option<Value> {
    match part {
        Part::Text(text) => Some(json!({"type": "text", "text": text})),
        Part::Image(image) => {
            Some(json!({"type": "image_url", "image_url": {"url": image.to_url()}}))
        }
        Part::ToolCall(_) | Part::ToolResult(_) => None,
    }
}

fn encode_assistant(message: &Message) -> Result<Value, ProviderError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for part in &message.content {
        match part {
            Part::Text(text) => texts.push(Part::Text(text.clone())),
            Part::ToolCall(call) => calls.push(json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            })),
            Part::Image(_) => {
                return Err(ProviderError::unsupported(
                    "an image in an assistant turn",
                    PROVIDER,
                ))
            }
            Part::ToolResult(_) => {
                return Err(ProviderError::unsupported(
                    "a tool result in an assistant turn",
                    PROVIDER,
                ))
            }
        }
    }
    let mut out = Map::new();
    out.insert("role".into(), json!("assistant"));
    let content = if texts.is_empty() {
        Value::Null
    } else {
        text_content(&texts)
    };
    out.insert("content".into(), content);
    if !calls.is_empty() {
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(out))
}

// === responses ===

/// A `chat.completion` body in canonical form (its first choice).
pub fn decode_response(value: &Value) -> Result<Response, ProviderError> {
    let choice = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| ProviderError::UpstreamBody {
            provider: PROVIDER,
            problem: "no 'choices'".to_owned(),
        })?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    match message.get("content") {
        Some(Value::String(text)) if !text.is_empty() => content.push(Part::Text(text.clone())),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    content.push(Part::Text(text.to_owned()));
                }
            }
        }
        _ => {}
    }
    if content.is_empty() {
        if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            content.push(Part::Text(refusal.to_owned()));
        }
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let function = call.get("function").unwrap_or(&Value::Null);
            content.push(Part::ToolCall(ToolCall {
                id: json::str_or_empty(call, "id").to_owned(),
                name: json::str_or_empty(function, "name").to_owned(),
                arguments: json::str_or_empty(function, "arguments").to_owned(),
            }));
        }
    }
    Ok(Response {
        id: json::str_or_empty(value, "id").to_owned(),
        model: json::str_or_empty(value, "model").to_owned(),
        content,
        stop_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(stop_reason_from),
        stop_sequence: None,
        usage: super::usage_from(value).unwrap_or_default(),
    })
}

pub(crate) fn stop_reason_from(reason: &str) -> StopReason {
    match reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

pub(crate) fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

/// A `chat.completion` body from the canonical response.
pub fn encode_response(resp: &Response, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in &resp.content {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::ToolCall(call) => calls.push(json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            })),
            Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let has_text = !text.is_empty() || calls.is_empty();
    message.insert(
        "content".into(),
        if has_text { json!(text) } else { Value::Null },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    message.insert("refusal".into(), Value::Null);
    json!({
        "id": resp.id,
        "object": "chat.completion",
        "created": created,
        "model": resp.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(resp.stop_reason.unwrap_or(StopReason::EndTurn)),
        }],
        "usage": usage_value(&resp.usage),
    })
}

/// OpenAI's `usage` object.
pub(crate) fn usage_value(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}
