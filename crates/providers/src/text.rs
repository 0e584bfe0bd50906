//! Every piece of free text a client request or a complete answer carries, reachable for
//! in-place rewriting. Guardrails use it to redact what goes upstream and what comes back
//! without caring which dialect carried it: message contents of every role, multi-part
//! texts, tool-call arguments and tool results, system prompts and embedding inputs.
//!
//! Structured values that only carry text in their string leaves (Anthropic's `tool_use`
//! `input` object) are walked leaf by leaf, so a rewrite can never break their JSON.

use serde_json::{Map, Value};

use crate::{Dialect, IngressRequest};

/// Who wrote a piece of text, so a check can look only where it matters (injection
/// heuristics skip the operator's system prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRole {
    /// System (and OpenAI `developer`) prompts.
    System,
    User,
    /// An assistant turn: earlier answers and the tool calls it made.
    Assistant,
    /// A tool's result handed back to the model.
    Tool,
    /// A text to embed.
    Input,
}

impl TextRole {
    fn of_openai(role: Option<&str>) -> TextRole {
        match role {
            Some("system" | "developer") => TextRole::System,
            Some("assistant") => TextRole::Assistant,
            Some("tool" | "function") => TextRole::Tool,
            _ => TextRole::User,
        }
    }
}

impl IngressRequest {
    /// Hands every text of the request to `visit`, which may rewrite it in place; the
    /// upstream body is built from the rewritten request.
    pub fn for_each_text_mut(&mut self, mut visit: impl FnMut(TextRole, &mut String)) {
        match self {
            IngressRequest::Chat(r) => openai_chat(r.body_mut(), &mut visit),
            IngressRequest::Embeddings(r) => {
                if let Some(input) = r.body_mut().get_mut("input") {
                    match input {
                        Value::String(s) => visit(TextRole::Input, s),
                        Value::Array(items) => {
                            for item in items {
                                if let Value::String(s) = item {
                                    visit(TextRole::Input, s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            IngressRequest::Messages(r) => anthropic_messages(r.body_mut(), &mut visit),
        }
    }
}

fn openai_chat(body: &mut Map<String, Value>, visit: &mut impl FnMut(TextRole, &mut String)) {
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    for message in messages {
        let Value::Object(message) = message else {
            continue;
        };
        let role = TextRole::of_openai(message.get("role").and_then(Value::as_str));
        if let Some(content) = message.get_mut("content") {
            openai_content(content, role, visit);
        }
        if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
            for call in calls {
                if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments") {
                    visit(TextRole::Assistant, arguments);
                }
            }
        }
        if let Some(Value::String(arguments)) = message
            .get_mut("function_call")
            .and_then(|call| call.get_mut("arguments"))
        {
            visit(TextRole::Assistant, arguments);
        }
    }
}

/// A message content: a string, or parts of which the text ones carry `text`.
fn openai_content(
    content: &mut Value,
    role: TextRole,
    visit: &mut impl FnMut(TextRole, &mut String),
) {
    match content {
        Value::String(s) => visit(role, s),
        Value::Array(parts) => {
            for part in parts {
                match part {
                    Value::String(s) => visit(role, s),
                    Value::Object(part) => {
                        if let Some(Value::String(text)) = part.get_mut("text") {
                            visit(role, text);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn anthropic_messages(
    body: &mut Map<String, Value>,
    visit: &mut impl FnMut(TextRole, &mut String),
) {
    if let Some(system) = body.get_mut("system") {
        anthropic_blocks(system, TextRole::System, visit);
    }
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    for message in messages {
        let Value::Object(message) = message else {
            continue;
        };
        let role = match message.get("role").and_then(Value::as_str) {
            Some("assistant") => TextRole::Assistant,
            _ => TextRole::User,
        };
        if let Some(content) = message.get_mut("content") {
            anthropic_blocks(content, role, visit);
        }
    }
}

/// A string or a list of content blocks: text, `tool_use` (its `input` leaves) and
/// `tool_result` (its own string or blocks).
fn anthropic_blocks(
    content: &mut Value,
    role: TextRole,
    visit: &mut impl FnMut(TextRole, &mut String),
) {
    match content {
        Value::String(s) => visit(role, s),
        Value::Array(blocks) => {
            for block in blocks {
                let Value::Object(block) = block else {
                    continue;
                };
                if let Some(Value::String(text)) = block.get_mut("text") {
                    visit(role, text);
                }
                if let Some(input) = block.get_mut("input") {
                    string_leaves(input, role, visit);
                }
                if let Some(inner) = block.get_mut("content") {
                    anthropic_blocks(inner, TextRole::Tool, visit);
                }
            }
        }
        _ => {}
    }
}

/// Every string in a JSON value, keys excluded. Depth is bounded by the JSON parser's own
/// recursion limit.
fn string_leaves(value: &mut Value, role: TextRole, visit: &mut impl FnMut(TextRole, &mut String)) {
    match value {
        Value::String(s) => visit(role, s),
        Value::Array(items) => {
            for item in items {
                string_leaves(item, role, visit);
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                string_leaves(item, role, visit);
            }
        }
        _ => {}
    }
}

/// Hands every generated text of a complete answer in the client's `dialect` (answer
/// text, tool-call arguments, Anthropic `tool_use` input leaves) to `visit`, which may
/// rewrite it in place.
pub fn for_each_answer_text_mut(
    dialect: Dialect,
    answer: &mut Value,
    mut visit: impl FnMut(&mut String),
) {
    let mut visit = |_: TextRole, text: &mut String| visit(text);
    match dialect {
        Dialect::OpenAi => {
            let Some(Value::Array(choices)) = answer.get_mut("choices") else {
                return;
            };
            for choice in choices {
                let Some(Value::Object(message)) = choice.get_mut("message") else {
                    continue;
                };
                if let Some(content) = message.get_mut("content") {
                    openai_content(content, TextRole::Assistant, &mut visit);
                }
                if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                    for call in calls {
                        if let Some(Value::String(arguments)) =
                            call.pointer_mut("/function/arguments")
                        {
                            visit(TextRole::Assistant, arguments);
                        }
                    }
                }
            }
        }
        Dialect::Anthropic => {
            if let Some(content) = answer.get_mut("content") {
                anthropic_blocks(content, TextRole::Assistant, &mut visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::Operation;

    fn collect(request: &mut IngressRequest) -> Vec<(TextRole, String)> {
        let mut seen = Vec::new();
        request.for_each_text_mut(|role, text| {
            seen.push((role, text.clone()));
            text.make_ascii_uppercase();
        });
        seen
    }

    #[test]
    fn openai_chat_texts_of_every_role_part_and_tool_call() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":\"x\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "result"}
            ]
        });
        let mut request = IngressRequest::parse(
            Dialect::OpenAi,
            Operation::ChatCompletions,
            body.to_string().as_bytes(),
        )
        .unwrap();
        let seen = collect(&mut request);
        assert_eq!(
            seen,
            vec![
                (TextRole::System, "sys".to_owned()),
                (TextRole::System, "dev".to_owned()),
                (TextRole::User, "hi".to_owned()),
                (TextRole::Assistant, "{\"a\":\"x\"}".to_owned()),
                (TextRole::Tool, "result".to_owned()),
            ]
        );
        let mut prompt = String::new();
        request.prompt_text(&mut prompt);
        assert!(prompt.contains("HI") && prompt.contains("RESULT") && prompt.contains("SYS"));
        assert!(matches!(&request, IngressRequest::Chat(_)));
        if let IngressRequest::Chat(chat) = &request {
            let upstream = String::from_utf8(chat.to_upstream_body("m")).unwrap();
            assert!(
                upstream.contains("\"url\":\"data:\""),
                "non-text parts are left alone"
            );
        }
    }

    #[test]
    fn anthropic_texts_of_system_blocks_tool_use_and_results() {
        let body = json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "question"},
                {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {"q": "x", "n": [1, "y"]}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                    "content": [{"type": "text", "text": "found"}]}]}
            ]
        });
        let mut request = IngressRequest::parse(
            Dialect::Anthropic,
            Operation::ChatCompletions,
            body.to_string().as_bytes(),
        )
        .unwrap();
        let seen = collect(&mut request);
        assert_eq!(
            seen,
            vec![
                (TextRole::System, "sys".to_owned()),
                (TextRole::User, "question".to_owned()),
                (TextRole::Assistant, "calling".to_owned()),
                // Object leaves in key order: "n" before "q".
                (TextRole::Assistant, "y".to_owned()),
                (TextRole::Assistant, "x".to_owned()),
                (TextRole::Tool, "found".to_owned()),
            ]
        );
    }

    #[test]
    fn embedding_inputs() {
        let body = json!({"model": "e", "input": ["a", "b"]});
        let mut request = IngressRequest::parse(
            Dialect::OpenAi,
            Operation::Embeddings,
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(collect(&mut request).len(), 2);
    }

    #[test]
    fn answer_texts_in_both_dialects() {
        let mut openai = json!({"choices": [{"message": {"role": "assistant", "content": "a",
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}]});
        let mut seen = Vec::new();
        for_each_answer_text_mut(Dialect::OpenAi, &mut openai, |t| seen.push(t.clone()));
        assert_eq!(seen, ["a", "{}"]);
        let mut anthropic = json!({"content": [{"type": "text", "text": "b"},
            {"type": "tool_use", "input": {"k": "v"}}]});
        seen.clear();
        for_each_answer_text_mut(Dialect::Anthropic, &mut anthropic, |t| {
            seen.push(t.clone());
            t.push('!');
        });
        assert_eq!(seen, ["b", "v"]);
        assert_eq!(anthropic["content"][1]["input"]["k"], "v!");
    }
}
