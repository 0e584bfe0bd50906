//! Cache keys: what makes two requests the same question.
//!
//! The exact key is a SHA-256 over, in a framed (length-prefixed, tagged) encoding:
//!
//! - a format version, so that entries of an older encoding are never read as current;
//! - the [`Scope`]: tenant (team or key id), route and model, so no answer ever crosses
//!   tenants or routes;
//! - every field of the canonical request that changes the answer: system prompts, the
//!   messages (text, images, tool calls and tool results), tools, `tool_choice`,
//!   `parallel_tool_calls`, `max_tokens`, `temperature`, `top_p`, `top_k`, `stop`, `seed`
//!   and `response_format`;
//! - every top-level field of the client's body that the canonical form does not carry
//!   (OpenAI's `frequency_penalty`, `logit_bias`, `reasoning_effort`, Anthropic's
//!   `thinking`, fields newer than this gateway…), tagged with the dialect, because a
//!   request that passes through to a provider of its own dialect keeps them and they
//!   change the answer.
//!
//! Left out on purpose: `stream` and `stream_options` (a hit is replayed in either form),
//! `user` and `metadata` (who asks and how it is labelled, not what is asked), and the
//! client's own `model` name (the scope's model stands for it).
//!
//! Hashing the canonical form rather than the raw body makes one conversation sent through
//! the OpenAI and the Anthropic ingress share an entry: the same system prompt, turns and
//! parameters give the same key whatever the dialect, JSON key order or whitespace. Tool
//! call ids are replaced by their order of first appearance, since providers make them up
//! afresh on every answer. What the canonical form drops inside messages (OpenAI's
//! per-message `name`, an image's `detail`, Anthropic's `cache_control`) does not split
//! entries. Parameters must agree for a shared entry: an OpenAI client that sends no
//! `max_tokens` asks a different question than an Anthropic client that must send one.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_providers::canonical::{
    Image, Message, Part, Request, ResponseFormat, Role, ToolChoice,
};
use tollgate_providers::Dialect;

use crate::CacheError;

/// Changes whenever the encoding below changes, so old entries are never matched.
const KEY_VERSION: &[u8] = b"tollgate-cache/v2";

/// Top-level OpenAI Chat Completions fields that the canonical form carries, or that do not
/// change the answer (`n` above 1 cannot reach here: the canonical form refuses it).
const OPENAI_KNOWN: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "n",
    "stream",
    "stream_options",
    "user",
    "metadata",
];

/// Top-level Anthropic Messages fields that the canonical form carries, or that do not
/// change the answer.
const ANTHROPIC_KNOWN: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
];

/// Whose question it is: the part of every key that keeps tenants and routes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The tenant: the team of the gateway key, or the key's own id when it has no team
    /// (`team:billing`, `key:billing-svc`). Answers never cross tenants.
    pub tenant: &'a str,
    /// The matched route's name.
    pub route: &'a str,
    /// The catalog model that serves the answer. The gateway looks up with the first
    /// target of the request's plan (after weighted choice, reroutes and downgrades) and
    /// stores under the model that actually answered ([`RequestKey::for_model`]), so an
    /// answer from a fallback is only ever served where that model would answer anyway.
    pub model: &'a str,
}

/// The exact key of one request: 32 bytes of SHA-256, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits (as the admin API and Redis show it).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits, as [`CacheKey::to_hex`] writes them (for purge by key).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

/// The semantic cache's neighbourhood of a request: two requests may share an answer by
/// similarity only when their scopes are equal. It covers everything the exact key covers
/// except the last user turn: tenant, route, model, system prompt, parameters, tools and
/// the conversation before that turn (so a follow-up such as "and in Paris?" never takes
/// the answer of another conversation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SemanticScope([u8; 32]);

impl fmt::Debug for SemanticScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SemanticScope({})", hex::encode(self.0))
    }
}

/// The keys of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey {
    pub exact: CacheKey,
    pub semantic: SemanticScope,
    /// Digests of everything but the model, so the keys for another model cost two small
    /// hashes instead of a pass over the request.
    base: Base,
}

/// The model-free digests behind a [`RequestKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Base {
    exact: [u8; 32],
    semantic: [u8; 32],
}

impl Base {
    fn keys(self, model: &str) -> RequestKey {
        let keyed = |digest: &[u8; 32], kind: &[u8]| {
            let mut feed = Feed::new();
            feed.bytes(b'V', KEY_VERSION);
            feed.str(b'M', model);
            feed.bytes(b'B', digest);
            feed.bytes(b'E', kind);
            feed.finish()
        };
        RequestKey {
            exact: CacheKey(keyed(&self.exact, b"exact")),
            semantic: SemanticScope(keyed(&self.semantic, b"semantic")),
            base: self,
        }
    }
}

impl RequestKey {
    /// The same request's keys when `model` serves it (the model that actually answered,
    /// when a fallback did).
    #[must_use]
    pub fn for_model(&self, model: &str) -> RequestKey {
        self.base.keys(model)
    }
}

/// The keys of a chat request. `body` is the client's JSON body in its ingress `dialect`
/// and `request` its canonical form (`IngressRequest::to_canonical`); the body is read
/// only for its top-level field names and the values of fields the canonical form lacks.
///
/// Hashed: the scope (the model last, so [`RequestKey::for_model`] is cheap); system prompts; messages (tool-call ids by order of appearance);
/// tools, `tool_choice`, `parallel_tool_calls`, `max_tokens`, `temperature`, `top_p`,
/// `top_k`, `stop`, `seed`, `response_format`; and every other top-level body field
/// (`frequency_penalty`, `logit_bias`, `thinking`, …) with the dialect's name. Left out:
/// `stream`, `stream_options`, `user`, `metadata` and the client's `model` name. The same
/// conversation through the OpenAI and the Anthropic ingress has the same key.
///
/// Cost: one pass over the body to find its top-level fields (nothing is allocated for
/// known fields) and one SHA-256 over the canonical request, both linear in its size.
pub fn request_key(
    scope: &Scope<'_>,
    dialect: Dialect,
    body: &[u8],
    request: &Request,
) -> Result<RequestKey, CacheError> {
    let fields: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| CacheError::InvalidBody(e.to_string()))?;
    let (known, dialect_name) = match dialect {
        Dialect::OpenAi => (OPENAI_KNOWN, "openai"),
        Dialect::Anthropic => (ANTHROPIC_KNOWN, "anthropic"),
    };
    let mut extras = Vec::new();
    for (name, raw) in &fields {
        if known.contains(&name.as_str()) {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw.get()).map_err(|e| CacheError::InvalidBody(e.to_string()))?;
        if !value.is_null() {
            extras.push((name.as_str(), value));
        }
    }

    let mut feed = Feed::new();
    feed.bytes(b'V', KEY_VERSION);
    feed.str(b'T', scope.tenant);
    feed.str(b'R', scope.route);
    if !extras.is_empty() {
        feed.str(b'D', dialect_name);
        feed.len(b'X', extras.len());
        for (name, value) in &extras {
            feed.str(b'k', name);
            feed.json(value);
        }
    }
    feed.params(request);

    let (last, before) = match request.messages.split_last() {
        Some((last, before)) => (Some(last), before),
        None => (None, &request.messages[..]),
    };
    let mut ids = ToolIds::default();
    feed.len(b'N', request.messages.len());
    for message in before {
        feed.message(message, &mut ids);
    }
    let mut semantic = feed.clone();
    semantic.bytes(b'S', b"semantic");
    if let Some(last) = last {
        feed.message(last, &mut ids);
    }
    feed.bytes(b'E', b"exact");
    let base = Base {
        exact: feed.finish(),
        semantic: semantic.finish(),
    };
    Ok(base.keys(scope.model))
}

/// The text of the conversation's last user turn, for the semantic cache to embed: its
/// text parts joined by newlines. `None` when the last turn is not the user's (an
/// assistant prefill), carries tool results or images (whose meaning the text alone does
/// not hold), or has no text.
pub fn last_user_text(request: &Request) -> Option<String> {
    let last = request.messages.last()?;
    if last.role != Role::User {
        return None;
    }
    let mut text = String::new();
    for part in &last.content {
        match part {
            Part::Text(piece) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(piece);
            }
            Part::Image(_) | Part::ToolCall(_) | Part::ToolResult(_) => return None,
        }
    }
    (!text.trim().is_empty()).then_some(text)
}

// === impl Feed ===

/// Tool call ids in order of first appearance; a call and its result name the same id.
#[derive(Default)]
struct ToolIds<'a>(Vec<&'a str>);

impl<'a> ToolIds<'a> {
    fn ordinal(&mut self, id: &'a str) -> usize {
        match self.0.iter().position(|seen| *seen == id) {
            Some(i) => i,
            None => {
                self.0.push(id);
                self.0.len() - 1
            }
        }
    }
}

/// A SHA-256 fed with tagged, length-prefixed items, so that no two different requests
/// write the same byte sequence.
#[derive(Clone)]
struct Feed(Sha256);

impl Feed {
    fn new() -> Self {
        Self(Sha256::new())
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }

    fn bytes(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn str(&mut self, tag: u8, text: &str) {
        self.bytes(tag, text.as_bytes());
    }

    fn len(&mut self, tag: u8, n: usize) {
        self.u64(tag, n as u64);
    }

    fn u64(&mut self, tag: u8, n: u64) {
        self.0.update([tag]);
        self.0.update(n.to_le_bytes());
    }

    fn none(&mut self, tag: u8) {
        self.0.update([tag, 0]);
    }

    fn opt_u64(&mut self, tag: u8, n: Option<u64>) {
        match n {
            Some(n) => self.u64(tag, n),
            None => self.none(tag),
        }
    }

    fn opt_f64(&mut self, tag: u8, x: Option<f64>) {
        match x {
            // 0.0 and -0.0 ask the same.
            Some(x) => self.u64(tag, if x == 0.0 { 0 } else { x.to_bits() }),
            None => self.none(tag),
        }
    }

    fn opt_str(&mut self, tag: u8, text: Option<&str>) {
        match text {
            Some(text) => self.str(tag, text),
            None => self.none(tag),
        }
    }

    /// A JSON value with object keys sorted, so key order and whitespace do not matter.
    fn json(&mut self, value: &Value) {
        match value {
            Value::Null => self.none(b'n'),
            Value::Bool(b) => self.u64(b'b', u64::from(*b)),
            Value::Number(n) => self.str(b'd', &n.to_string()),
            Value::String(s) => self.str(b's', s),
            Value::Array(items) => {
                self.len(b'a', items.len());
                for item in items {
                    self.json(item);
                }
            }
            Value::Object(map) => {
                self.len(b'o', map.len());
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_unstable();
                for key in keys {
                    self.str(b'k', key);
                    if let Some(value) = map.get(key) {
                        self.json(value);
                    }
                }
            }
        }
    }

    /// Tool-call arguments: JSON text, compared as JSON when it parses.
    fn arguments(&mut self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => self.json(&value),
            Err(_) => self.str(b'r', text),
        }
    }

    fn params(&mut self, req: &Request) {
        self.len(b'y', req.system.len());
        for system in &req.system {
            self.str(b'y', system);
        }
        self.len(b'l', req.tools.len());
        for tool in &req.tools {
            self.str(b'l', &tool.name);
            self.opt_str(b'L', tool.description.as_deref());
            self.json(&tool.parameters);
        }
        match &req.tool_choice {
            None => self.none(b'c'),
            Some(ToolChoice::Auto) => self.u64(b'c', 1),
            Some(ToolChoice::None) => self.u64(b'c', 2),
            Some(ToolChoice::Required) => self.u64(b'c', 3),
            Some(ToolChoice::Tool(name)) => self.str(b'C', name),
        }
        self.opt_u64(b'p', req.parallel_tool_calls.map(u64::from));
        self.opt_u64(b'x', req.max_tokens);
        self.opt_f64(b't', req.temperature);
        self.opt_f64(b'P', req.top_p);
        self.opt_u64(b'K', req.top_k);
        self.len(b'z', req.stop.len());
        for stop in &req.stop {
            self.str(b'z', stop);
        }
        match req.seed {
            Some(seed) => self.u64(b'e', seed as u64),
            None => self.none(b'e'),
        }
        match &req.response_format {
            None => self.none(b'f'),
            Some(ResponseFormat::Text) => self.u64(b'f', 1),
            Some(ResponseFormat::JsonObject) => self.u64(b'f', 2),
            Some(ResponseFormat::JsonSchema { name, schema }) => {
                self.str(b'F', name);
                self.json(schema);
            }
        }
    }

    fn message<'a>(&mut self, message: &'a Message, ids: &mut ToolIds<'a>) {
        let role = match message.role {
            Role::User => b"user".as_slice(),
            Role::Assistant => b"assistant".as_slice(),
        };
        self.bytes(b'm', role);
        self.parts(&message.content, ids);
    }

    fn parts<'a>(&mut self, parts: &'a [Part], ids: &mut ToolIds<'a>) {
        self.len(b'#', parts.len());
        for part in parts {
            match part {
                Part::Text(text) => self.str(b'0', text),
                Part::Image(Image::Url(url)) => self.str(b'1', url),
                Part::Image(Image::Base64 { media_type, data }) => {
                    self.str(b'2', media_type);
                    self.str(b'2', data);
                }
                Part::ToolCall(call) => {
                    self.u64(b'3', ids.ordinal(&call.id) as u64);
                    self.str(b'3', &call.name);
                    self.arguments(&call.arguments);
                }
                Part::ToolResult(result) => {
                    self.u64(b'4', ids.ordinal(&result.call_id) as u64);
                    self.u64(b'4', u64::from(result.is_error));
                    self.parts(&result.content, ids);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tollgate_providers::{IngressRequest, Operation};

    use super::*;

    const SCOPE: Scope<'static> = Scope {
        tenant: "team:billing",
        route: "faq",
        model: "best-cheap-chat",
    };

    fn key_of(dialect: Dialect, body: &str) -> RequestKey {
        key_in(&SCOPE, dialect, body)
    }

    fn key_in(scope: &Scope<'_>, dialect: Dialect, body: &str) -> RequestKey {
        let ingress = IngressRequest::parse(dialect, Operation::ChatCompletions, body.as_bytes())
            .expect("body parses");
        let canonical = ingress.to_canonical().expect("canonical");
        request_key(scope, dialect, body.as_bytes(), &canonical).expect("key")
    }

    const OPENAI_TOOLS: &str = r#"{"model":"best-cheap-chat","max_tokens":300,"temperature":0.2,
        "messages":[{"role":"system","content":"You are terse."},
          {"role":"user","content":"Weather in Oslo?"},
          {"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function",
             "function":{"name":"get_weather","arguments":"{\"city\": \"Oslo\", \"unit\": \"c\"}"}}]},
          {"role":"tool","tool_call_id":"call_9","content":"rain, 8C"},
          {"role":"user","content":"And should I take an umbrella?"}],
        "tools":[{"type":"function","function":{"name":"get_weather","description":"Looks up weather",
           "parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string"}}}}}],
        "tool_choice":"auto","stream":true,"stream_options":{"include_usage":true},"user":"u-1"}"#;

    const ANTHROPIC_TOOLS: &str = r#"{"model":"best-cheap-chat","max_tokens":300,"temperature":0.2,
        "system":"You are terse.",
        "messages":[{"role":"user","content":"Weather in Oslo?"},
          {"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"get_weather",
             "input":{"unit":"c","city":"Oslo"}}]},
          {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"rain, 8C"},
             {"type":"text","text":"And should I take an umbrella?"}]}],
        "tools":[{"name":"get_weather","description":"Looks up weather",
           "input_schema":{"properties":{"unit":{"type":"string"},"city":{"type":"string"}},"type":"object"}}],
        "tool_choice":{"type":"auto"},"metadata":{"user_id":"someone"}}"#;

    #[test]
    fn one_conversation_has_one_key_through_either_ingress() {
        let openai = key_of(Dialect::OpenAi, OPENAI_TOOLS);
        let anthropic = key_of(Dialect::Anthropic, ANTHROPIC_TOOLS);
        assert_eq!(openai, anthropic);

        let plain_openai = r#"{"model":"m","max_tokens":64,"messages":[
            {"role":"system","content":"Be brief."},{"role":"user","content":"What is Rust?"}]}"#;
        let plain_anthropic = r#"{"model":"m","max_tokens":64,"system":[{"type":"text","text":"Be brief.",
            "cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"What is Rust?"}]}]}"#;
        assert_eq!(
            key_of(Dialect::OpenAi, plain_openai),
            key_of(Dialect::Anthropic, plain_anthropic)
        );
    }

    #[test]
    fn stream_user_and_metadata_do_not_split_entries() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let dressed = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
            "stream_options":{"include_usage":true},"user":"alice","metadata":{"feature":"x"},"n":1}"#;
        assert_eq!(
            key_of(Dialect::OpenAi, base),
            key_of(Dialect::OpenAi, dressed)
        );
        let anthropic =
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        let anthropic_streamed = r#"{"model":"m","max_tokens":5,"stream":true,"metadata":{"user_id":"b"},
            "messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            key_of(Dialect::Anthropic, anthropic),
            key_of(Dialect::Anthropic, anthropic_streamed)
        );
    }

    #[test]
    fn every_output_changing_field_splits_entries() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let variants = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"x"},{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["x"]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"none"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"parallel_tool_calls":false}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"frequency_penalty":0.3}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"logit_bias":{"50256":-100}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},
                {"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]}"#,
        ];
        let base_key = key_of(Dialect::OpenAi, base);
        let mut seen = vec![base_key.exact];
        for variant in variants {
            let key = key_of(Dialect::OpenAi, variant).exact;
            assert!(!seen.contains(&key), "{variant} shares a key");
            seen.push(key);
        }
        let anthropic =
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        let with_top_k =
            r#"{"model":"m","max_tokens":5,"top_k":3,"messages":[{"role":"user","content":"hi"}]}"#;
        let thinking = r#"{"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},
            "messages":[{"role":"user","content":"hi"}]}"#;
        let keys = [anthropic, with_top_k, thinking].map(|b| key_of(Dialect::Anthropic, b).exact);
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_ne!(keys[1], keys[2]);
        let null_extra =
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"frequency_penalty":null}"#;
        assert_eq!(key_of(Dialect::OpenAi, null_extra), base_key);
    }

    #[test]
    fn tenants_routes_and_models_never_share_keys() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let scopes = [
            SCOPE,
            Scope {
                tenant: "team:search",
                ..SCOPE
            },
            Scope {
                route: "other",
                ..SCOPE
            },
            Scope {
                model: "gpt-4o",
                ..SCOPE
            },
            // The framing keeps "ab"+"c" apart from "a"+"bc".
            Scope {
                tenant: "team:billingf",
                route: "aq",
                ..SCOPE
            },
        ];
        let keys: Vec<RequestKey> = scopes
            .iter()
            .map(|s| key_in(s, Dialect::OpenAi, body))
            .collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a.exact, b.exact);
                assert_ne!(a.semantic, b.semantic);
            }
        }
    }

    #[test]
    fn keys_for_another_model_match_a_scope_of_that_model() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let primary = key_of(Dialect::OpenAi, body);
        let fallback = key_in(
            &Scope {
                model: "claude-haiku",
                ..SCOPE
            },
            Dialect::OpenAi,
            body,
        );
        assert_ne!(primary.exact, fallback.exact);
        assert_ne!(primary.semantic, fallback.semantic);
        assert_eq!(primary.for_model("claude-haiku"), fallback);
        assert_eq!(fallback.for_model(SCOPE.model), primary);
    }

    #[test]
    fn tool_call_ids_are_compared_by_position() {
        let other_ids = OPENAI_TOOLS.replace("call_9", "call_abc");
        assert_eq!(
            key_of(Dialect::OpenAi, OPENAI_TOOLS),
            key_of(Dialect::OpenAi, &other_ids)
        );
        let other_args = OPENAI_TOOLS.replace("Oslo\\\"", "Bergen\\\"");
        assert_ne!(
            key_of(Dialect::OpenAi, OPENAI_TOOLS).exact,
            key_of(Dialect::OpenAi, &other_args).exact
        );
    }

    #[test]
    fn semantic_scope_ignores_only_the_last_user_turn() {
        let a = r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"What is the capital of France?"}]}"#;
        let b = r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"capital city of france?"}]}"#;
        let other_system = r#"{"model":"m","messages":[{"role":"system","content":"t"},{"role":"user","content":"capital city of france?"}]}"#;
        let follow_up = r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hello"},
            {"role":"assistant","content":"hi"},{"role":"user","content":"capital city of france?"}]}"#;
        let (ka, kb) = (key_of(Dialect::OpenAi, a), key_of(Dialect::OpenAi, b));
        assert_ne!(ka.exact, kb.exact);
        assert_eq!(ka.semantic, kb.semantic);
        assert_ne!(ka.semantic, key_of(Dialect::OpenAi, other_system).semantic);
        assert_ne!(ka.semantic, key_of(Dialect::OpenAi, follow_up).semantic);
    }

    #[test]
    fn last_user_text_takes_plain_user_turns_only() {
        let canonical = |dialect, body: &str| {
            IngressRequest::parse(dialect, Operation::ChatCompletions, body.as_bytes())
                .unwrap()
                .to_canonical()
                .unwrap()
        };
        let text = canonical(
            Dialect::Anthropic,
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"old"},
                {"role":"assistant","content":"reply"},
                {"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]}]}"#,
        );
        assert_eq!(last_user_text(&text).as_deref(), Some("part one\npart two"));
        let tools = canonical(Dialect::OpenAi, OPENAI_TOOLS);
        // OpenAI's tool message and the user message after it make one turn.
        assert_eq!(last_user_text(&tools), None);
        let with_results = canonical(Dialect::Anthropic, ANTHROPIC_TOOLS);
        assert_eq!(last_user_text(&with_results), None);
        let prefill = canonical(
            Dialect::Anthropic,
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"{"}]}"#,
        );
        assert_eq!(last_user_text(&prefill), None);
        let image = canonical(
            Dialect::OpenAi,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},
                {"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]}"#,
        );
        assert_eq!(last_user_text(&image), None);
        let blank = canonical(
            Dialect::OpenAi,
            r#"{"model":"m","messages":[{"role":"user","content":"  "}]}"#,
        );
        assert_eq!(last_user_text(&blank), None);
    }

    #[test]
    fn keys_print_and_parse_as_hex() {
        let key = key_of(Dialect::OpenAi, OPENAI_TOOLS).exact;
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(CacheKey::from_hex(&hex), Some(key));
        assert_eq!(key.to_string(), hex);
        assert_eq!(CacheKey::from_hex("abc"), None);
        assert_eq!(CacheKey::from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn a_body_that_is_not_an_object_has_no_key() {
        let request = Request::default();
        let err = request_key(&SCOPE, Dialect::OpenAi, b"[1]", &request).unwrap_err();
        assert!(matches!(err, CacheError::InvalidBody(_)));
    }
}
