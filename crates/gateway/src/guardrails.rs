//! Guardrails on the request path: what a route's `guardrails:` list does to a request
//! before it is routed upstream, and to the answer on its way back.
//!
//! - Requests: every text (all roles, parts, tool arguments and results) goes through each
//!   `pii` guardrail in turn (mask, hash, pseudonymize, or refuse with 400 and the reason
//!   code); `injection` guardrails score the user and tool texts and flag, refuse or
//!   reroute.
//! - Answers: complete answers are redacted as a whole; streams through a
//!   [`TextFilter`] on the text deltas, so an entity split across chunks or events is
//!   still caught. Pseudonymized values are put back for the client. A `json_output`
//!   guardrail checks the answer to a `response_format` JSON request.
//! - Audit: every action is recorded per request (guardrail, action, reason code,
//!   direction, count) for the ledger, metrics and log; never the value itself.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tollgate_config::{Config, GuardrailConfig, InjectionAction, InjectionConfig, OnInvalidJson};
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_ledger::GuardrailAction;
use tollgate_providers::openai::JsonPromise;
use tollgate_providers::{
    for_each_answer_text_mut, Dialect, ErrorType, IngressRequest, TextFilter, TextPart, TextRole,
    UpstreamError,
};
use tollgate_redact::output::{check_json, OutputProblem, MAX_CHECKED_OUTPUT_BYTES};
use tollgate_redact::{
    Action, Applied, Blocked, Pseudonyms, Redactor, StreamRedactor, StreamRestorer,
};

/// Every route's guardrails, built once per config version.
#[derive(Default)]
pub struct Guardrails {
    routes: HashMap<String, Arc<RouteGuards>>,
}

/// The guardrails one route lists, in its order.
pub struct RouteGuards {
    pii: Vec<Pii>,
    injection: Vec<Injection>,
    json: Option<JsonCheck>,
}

struct Pii {
    name: Arc<str>,
    redactor: Arc<Redactor>,
}

struct Injection {
    name: Arc<str>,
    config: InjectionConfig,
}

struct JsonCheck {
    name: Arc<str>,
    on_invalid: OnInvalidJson,
}

impl Guardrails {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut redactors: HashMap<&str, Arc<Redactor>> = HashMap::new();
        for (name, guardrail) in &config.guardrails {
            if let GuardrailConfig::Pii(redact) = guardrail {
                let redactor =
                    Redactor::new(redact).map_err(|e| format!("guardrails.{name}: {e}"))?;
                redactors.insert(name, Arc::new(redactor));
            }
        }
        let mut routes = HashMap::new();
        for route in config.routes.iter().filter(|r| !r.guardrails.is_empty()) {
            let mut guards = RouteGuards {
                pii: Vec::new(),
                injection: Vec::new(),
                json: None,
            };
            for name in &route.guardrails {
                let label: Arc<str> = Arc::from(name.as_str());
                match config.guardrails.get(name) {
                    Some(GuardrailConfig::Pii(_)) => {
                        if let Some(redactor) = redactors.get(name.as_str()) {
                            guards.pii.push(Pii {
                                name: label,
                                redactor: Arc::clone(redactor),
                            });
                        }
                    }
                    Some(GuardrailConfig::Injection(config)) => guards.injection.push(Injection {
                        name: label,
                        config: config.clone(),
                    }),
                    Some(GuardrailConfig::JsonOutput(config)) => {
                        guards.json = Some(JsonCheck {
                            name: label,
                            on_invalid: config.on_invalid,
                        });
                    }
                    None => {
                        return Err(format!(
                            "route '{}' lists the unknown guardrail '{name}'",
                            route.name
                        ))
                    }
                }
            }
            routes.insert(route.name.clone(), Arc::new(guards));
        }
        Ok(Self { routes })
    }

    pub fn for_route(&self, route: &str) -> Option<Arc<RouteGuards>> {
        self.routes.get(route).cloned()
    }
}

/// What the request checks decided, beyond rewriting the request in place.
pub struct RequestVerdict {
    /// Serve the request with this catalog model instead (an injection guardrail's
    /// `reroute`).
    pub reroute: Option<String>,
    /// What the answer needs: redaction, restoring pseudonyms, the JSON check. `None` when
    /// the answer passes untouched.
    pub answer: Option<AnswerGuard>,
}

impl RouteGuards {
    /// Redacts `request` in place and runs the injection checks. `tenant` scopes hashed
    /// pseudonyms. Refusals come back as the client's 400 error; every action lands in
    /// `audit`.
    pub fn check_request(
        &self,
        request: &mut IngressRequest,
        tenant: &str,
        audit: &mut Vec<GuardrailAction>,
    ) -> Result<RequestVerdict, GatewayError> {
        let mut pseudonyms = Pseudonyms::new();
        for pii in &self.pii {
            let mut applied: Vec<Applied> = Vec::new();
            let mut blocked: Option<Blocked> = None;
            request.for_each_text_mut(|_, text| {
                if blocked.is_some() {
                    return;
                }
                match pii.redactor.redact_request(text, tenant, &mut pseudonyms) {
                    Ok(redacted) => {
                        applied.extend(redacted.applied);
                        if let std::borrow::Cow::Owned(new) = redacted.text {
                            *text = new;
                        }
                    }
                    Err(b) => blocked = Some(b),
                }
            });
            record_applied(audit, &pii.name, "request", &applied);
            if let Some(blocked) = blocked {
                record(audit, &pii.name, "block", blocked.reason_code, "request", 1);
                return Err(GatewayError::invalid_request(format!(
                    "the request was refused by the guardrail '{}': {blocked}",
                    pii.name
                ))
                .with_code(blocked.reason_code));
            }
        }

        let mut reroute = None;
        for injection in &self.injection {
            let mut text = String::new();
            request.for_each_text_mut(|role, t| {
                let scored = match role {
                    TextRole::User | TextRole::Tool | TextRole::Input => true,
                    TextRole::System => injection.config.include_system,
                    TextRole::Assistant => false,
                };
                if scored {
                    text.push_str(t);
                    text.push('\n');
                }
            });
            let score = tollgate_redact::injection::score(&text);
            if !score.exceeds(injection.config.threshold) {
                continue;
            }
            let action = match injection.config.action {
                InjectionAction::Flag => "flag",
                InjectionAction::Block => "block",
                InjectionAction::Reroute => "reroute",
            };
            record(
                audit,
                &injection.name,
                action,
                "prompt_injection",
                "request",
                1,
            );
            tracing::warn!(guardrail = %injection.name, score = score.score,
                signals = ?score.signals, action, "prompt injection suspected");
            match injection.config.action {
                InjectionAction::Flag => {}
                InjectionAction::Block => {
                    return Err(GatewayError::invalid_request(format!(
                        "the request was refused by the guardrail '{}': it looks like a prompt \
                         injection (score {:.2}; signals: {})",
                        injection.name,
                        score.score,
                        score.signals.join(", ")
                    ))
                    .with_code("prompt_injection_detected"));
                }
                InjectionAction::Reroute => {
                    if reroute.is_none() {
                        reroute.clone_from(&injection.config.reroute_to);
                    }
                }
            }
        }

        let json = self.json.as_ref().and_then(|check| {
            request.json_promise().map(|promise| JsonGuard {
                name: Arc::clone(&check.name),
                on_invalid: check.on_invalid,
                schema: match promise {
                    JsonPromise::Object => None,
                    JsonPromise::Schema(schema) => Some(Arc::new(schema.clone())),
                },
            })
        });
        let redactors: Vec<(Arc<str>, Arc<Redactor>)> = self
            .pii
            .iter()
            .filter(|p| p.redactor.is_active(tollgate_redact::Direction::Response))
            .map(|p| (Arc::clone(&p.name), Arc::clone(&p.redactor)))
            .collect();
        let answer =
            (!redactors.is_empty() || !pseudonyms.is_empty() || json.is_some()).then(|| {
                AnswerGuard {
                    redactors,
                    tenant: Arc::from(tenant),
                    pseudonyms: Arc::new(pseudonyms),
                    json,
                    audit: Arc::new(Mutex::new(Vec::new())),
                }
            });
        Ok(RequestVerdict { reroute, answer })
    }
}

/// The JSON check of one request's answer.
#[derive(Clone)]
struct JsonGuard {
    name: Arc<str>,
    on_invalid: OnInvalidJson,
    schema: Option<Arc<Value>>,
}

/// What one request's answer goes through. Shared by every attempt; each stream attempt
/// gets its own [`TextFilter`].
pub struct AnswerGuard {
    redactors: Vec<(Arc<str>, Arc<Redactor>)>,
    tenant: Arc<str>,
    pseudonyms: Arc<Pseudonyms>,
    json: Option<JsonGuard>,
    /// Actions on the answer, from whichever attempt made them.
    audit: Arc<Mutex<Vec<GuardrailAction>>>,
}

/// A complete answer broke its JSON promise.
pub struct InvalidJson {
    pub retry: bool,
    pub error: GatewayError,
}

impl AnswerGuard {
    /// Moves the answer's actions into the request's audit.
    pub fn drain_audit(&self, into: &mut Vec<GuardrailAction>) {
        for a in self.audit.lock().drain(..) {
            merge(into, a);
        }
    }

    /// The request's placeholders and the originals behind them (empty when nothing was
    /// pseudonymized).
    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }

    /// A filter for one stream attempt.
    pub fn stream_filter(&self) -> Box<dyn TextFilter> {
        Box::new(GuardFilter {
            redactors: self.redactors.clone(),
            tenant: Arc::clone(&self.tenant),
            pseudonyms: Arc::clone(&self.pseudonyms),
            json: self.json.clone(),
            json_text: String::new(),
            parts: Vec::new(),
            audit: Arc::clone(&self.audit),
        })
    }

    /// Redacts and restores a complete answer in the client's `dialect` (its JSON body),
    /// then checks its JSON promise. `Ok(None)` when nothing changed.
    pub fn complete_answer(
        &self,
        dialect: Dialect,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, AnswerRefused> {
        let Ok(mut answer) = serde_json::from_slice::<Value>(body) else {
            return Ok(None);
        };
        let mut changed = false;
        let mut blocked: Option<(&str, Blocked)> = None;
        let mut audit = Vec::new();
        let mut first_text: Option<String> = None;
        for_each_answer_text_mut(dialect, &mut answer, |text| {
            if blocked.is_some() {
                return;
            }
            for (name, redactor) in &self.redactors {
                match redactor.redact_response(text, &self.tenant) {
                    Ok(redacted) => {
                        record_applied(&mut audit, name, "response", &redacted.applied);
                        if let std::borrow::Cow::Owned(new) = redacted.text {
                            *text = new;
                            changed = true;
                        }
                    }
                    Err(b) => {
                        blocked = Some((name, b));
                        return;
                    }
                }
            }
            if let std::borrow::Cow::Owned(restored) = self.pseudonyms.restore(text) {
                *text = restored;
                changed = true;
            }
            if first_text.is_none() {
                first_text = Some(text.clone());
            }
        });
        if let Some((name, b)) = blocked {
            record(&mut audit, name, "block", b.reason_code, "response", 1);
            self.audit.lock().extend(audit);
            return Err(AnswerRefused::Blocked(refusal(name, &b).to_gateway_error()));
        }
        if let Some(json) = &self.json {
            let text = first_text.unwrap_or_default();
            if let Err(problem) = check_json(&text, json.schema.as_deref()) {
                record(
                    &mut audit,
                    &json.name,
                    "reject",
                    "invalid_json_output",
                    "response",
                    1,
                );
                self.audit.lock().extend(audit);
                return Err(AnswerRefused::InvalidJson(InvalidJson {
                    retry: json.on_invalid == OnInvalidJson::Retry,
                    error: invalid_json_error(&json.name, &problem),
                }));
            }
        }
        self.audit.lock().extend(audit);
        Ok(changed.then(|| serde_json::to_vec(&answer).unwrap_or_default()))
    }
}

/// Why a complete answer is not relayed.
pub enum AnswerRefused {
    /// A `block` rule matched in the answer.
    Blocked(GatewayError),
    InvalidJson(InvalidJson),
}

fn invalid_json_error(guardrail: &str, problem: &OutputProblem) -> GatewayError {
    GatewayError::new(
        ErrorKind::BadGateway,
        format!("the model broke the JSON promise of response_format (guardrail '{guardrail}'): {problem}"),
    )
    .with_code("invalid_json_output")
}

/// The stream error of a refusal: a content-policy error the client sees in its dialect
/// (a 400 before any output, an error event after).
fn refusal(guardrail: &str, blocked: &Blocked) -> UpstreamError {
    UpstreamError::new(
        ErrorType::ContentPolicy,
        200,
        &format!("the answer was stopped by the guardrail '{guardrail}': {blocked}"),
    )
}

// === impl GuardFilter ===

/// Redacts (each `pii` guardrail in turn) and restores one stream's text deltas, part by
/// part, and checks the answer's JSON promise when its text ends.
struct GuardFilter {
    redactors: Vec<(Arc<str>, Arc<Redactor>)>,
    tenant: Arc<str>,
    pseudonyms: Arc<Pseudonyms>,
    json: Option<JsonGuard>,
    /// The answer's text so far, for the JSON check; bounded by
    /// [`MAX_CHECKED_OUTPUT_BYTES`] (past it the check is skipped).
    json_text: String,
    parts: Vec<(TextPart, PartFilter)>,
    audit: Arc<Mutex<Vec<GuardrailAction>>>,
}

/// The redactors and restorer of one part, with buffers reused between deltas.
struct PartFilter {
    redactors: Vec<StreamRedactor>,
    restorer: Option<StreamRestorer>,
    a: String,
    b: String,
}

impl GuardFilter {
    fn part(&mut self, part: TextPart) -> &mut PartFilter {
        let index = match self.parts.iter().position(|(p, _)| *p == part) {
            Some(i) => i,
            None => {
                let filter = PartFilter {
                    redactors: self
                        .redactors
                        .iter()
                        .map(|(_, r)| r.stream(&self.tenant))
                        .collect(),
                    restorer: (!self.pseudonyms.is_empty())
                        .then(|| (*self.pseudonyms).clone().into_restorer()),
                    a: String::new(),
                    b: String::new(),
                };
                self.parts.push((part, filter));
                self.parts.len() - 1
            }
        };
        &mut self.parts[index].1
    }

    fn blocked(&self, index: usize, blocked: &Blocked) -> UpstreamError {
        let name = self
            .redactors
            .get(index)
            .map_or_else(|| Arc::from("pii"), |(n, _)| Arc::clone(n));
        let mut audit = self.audit.lock();
        merge(
            &mut audit,
            action(&name, "block", blocked.reason_code, "response", 1),
        );
        refusal(&name, blocked)
    }

    fn keep_json_text(&mut self, part: TextPart, text: &str) {
        if part == TextPart::Answer && self.json.is_some() {
            if self.json_text.len() + text.len() <= MAX_CHECKED_OUTPUT_BYTES {
                self.json_text.push_str(text);
            } else {
                // Too long to check: the check is skipped, as for a complete answer.
                self.json = None;
                self.json_text = String::new();
            }
        }
    }
}

impl TextFilter for GuardFilter {
    fn push(&mut self, part: TextPart, delta: &str, out: &mut String) -> Result<(), UpstreamError> {
        let state = self.part(part);
        let mut input = std::mem::take(&mut state.a);
        input.clear();
        input.push_str(delta);
        let mut output = std::mem::take(&mut state.b);
        let mut failed = None;
        for (i, redactor) in state.redactors.iter_mut().enumerate() {
            output.clear();
            if let Err(b) = redactor.push(&input, &mut output) {
                failed = Some((i, b));
                break;
            }
            std::mem::swap(&mut input, &mut output);
        }
        if failed.is_none() {
            match &mut state.restorer {
                Some(restorer) => restorer.push(&input, out),
                None => out.push_str(&input),
            }
        }
        state.a = input;
        state.b = output;
        if let Some((i, b)) = failed {
            return Err(self.blocked(i, &b));
        }
        self.keep_json_text(part, out);
        Ok(())
    }

    fn finish(&mut self, part: TextPart, out: &mut String) -> Result<(), UpstreamError> {
        let Some(index) = self.parts.iter().position(|(p, _)| *p == part) else {
            return Ok(());
        };
        let (_, mut state) = self.parts.remove(index);
        // Each redactor's tail flows through the ones after it before they finish.
        let mut tail = String::new();
        for i in 0..state.redactors.len() {
            let mut next = String::new();
            let redactor = &mut state.redactors[i];
            let pushed = if tail.is_empty() {
                Ok(())
            } else {
                redactor.push(&tail, &mut next)
            };
            if let Err(b) = pushed.and_then(|()| redactor.finish(&mut next)) {
                self.record_redactors(&state);
                return Err(self.blocked(i, &b));
            }
            tail = next;
        }
        match &mut state.restorer {
            Some(restorer) => {
                restorer.push(&tail, out);
                restorer.finish(out);
            }
            None => out.push_str(&tail),
        }
        self.record_redactors(&state);
        self.keep_json_text(part, out);
        match (part, self.json.take()) {
            (TextPart::Answer, Some(json)) => {
                let checked = check_json(&self.json_text, json.schema.as_deref());
                self.json_text = String::new();
                match checked {
                    Ok(()) => Ok(()),
                    Err(problem) => {
                        merge(
                            &mut self.audit.lock(),
                            action(&json.name, "reject", "invalid_json_output", "response", 1),
                        );
                        let error = invalid_json_error(&json.name, &problem);
                        Err(UpstreamError::new(ErrorType::Server, 502, &error.message))
                    }
                }
            }
            (_, json) => {
                self.json = json;
                Ok(())
            }
        }
    }
}

impl GuardFilter {
    fn record_redactors(&self, state: &PartFilter) {
        let mut audit = self.audit.lock();
        for ((name, _), redactor) in self.redactors.iter().zip(&state.redactors) {
            for applied in redactor.applied() {
                merge(&mut audit, applied_action(name, "response", applied));
            }
        }
    }
}

// === audit ===

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Mask => "mask",
        Action::Hash => "hash",
        Action::Pseudonymize => "pseudonymize",
        Action::Block => "block",
        Action::Allow => "allow",
    }
}

fn action(
    guardrail: &str,
    action: &str,
    reason: &str,
    direction: &str,
    count: u32,
) -> GuardrailAction {
    GuardrailAction {
        guardrail: guardrail.to_owned(),
        action: action.to_owned(),
        reason: reason.to_owned(),
        direction: direction.to_owned(),
        count,
    }
}

fn applied_action(guardrail: &str, direction: &str, applied: &Applied) -> GuardrailAction {
    action(
        guardrail,
        action_name(applied.action),
        applied.reason_code,
        direction,
        applied.count,
    )
}

/// Adds `entry` to `audit`, summing counts of the same guardrail, action, reason and
/// direction.
fn merge(audit: &mut Vec<GuardrailAction>, entry: GuardrailAction) {
    match audit.iter_mut().find(|a| {
        a.guardrail == entry.guardrail
            && a.action == entry.action
            && a.reason == entry.reason
            && a.direction == entry.direction
    }) {
        Some(existing) => existing.count = existing.count.saturating_add(entry.count),
        None => audit.push(entry),
    }
}

fn record(
    audit: &mut Vec<GuardrailAction>,
    guardrail: &str,
    act: &str,
    reason: &str,
    direction: &str,
    count: u32,
) {
    merge(audit, action(guardrail, act, reason, direction, count));
}

fn record_applied(
    audit: &mut Vec<GuardrailAction>,
    guardrail: &str,
    direction: &str,
    applied: &[Applied],
) {
    for a in applied {
        merge(audit, applied_action(guardrail, direction, a));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! The route's real redactor and restorer on tool-call argument deltas, through the
    //! real stream translator, for both client dialects.

    use tollgate_providers::{Operation, ProviderKind, ResponseMeta, StreamTranslator};
    use tollgate_sse::SseEvent;

    use super::*;

    const EMAIL: &str = "jane.doe@corp.example";

    fn guards() -> Arc<RouteGuards> {
        let config = tollgate_config::parse(
            r#"
providers:
  p: { kind: openai, endpoints: ["http://127.0.0.1:1"] }
models:
  m: { provider: p, model: up-m }
guardrails:
  pii:
    kind: pii
    entities: [email]
    actions: { email: { request: pseudonymize, response: mask } }
routes:
  - { name: r, match: { model: m }, targets: [{ model: m }], guardrails: [pii] }
"#,
            "t.yaml",
        )
        .unwrap();
        Guardrails::from_config(&config)
            .unwrap()
            .for_route("r")
            .unwrap()
    }

    /// A request naming the client's address, in `dialect`.
    fn request(dialect: Dialect) -> IngressRequest {
        let body = match dialect {
            Dialect::OpenAi => serde_json::json!({"model": "m", "stream": true,
                "messages": [{"role": "user", "content": format!("Mail {EMAIL} the invoice")}],
                "tools": [{"type": "function", "function": {"name": "send_mail",
                    "parameters": {"type": "object"}}}]}),
            Dialect::Anthropic => serde_json::json!({"model": "m", "stream": true,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": format!("Mail {EMAIL} the invoice")}],
                "tools": [{"name": "send_mail", "input_schema": {"type": "object"}}]}),
        };
        IngressRequest::parse(
            dialect,
            Operation::ChatCompletions,
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    /// An OpenAI upstream stream calling `send_mail` with `arguments` cut into `pieces`.
    fn upstream(pieces: &[&str]) -> Vec<SseEvent> {
        let chunk = |delta: Value, finish: Option<&str>| SseEvent {
            data: serde_json::json!({"id": "c1", "object": "chat.completion.chunk",
                "created": 1, "model": "up-m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
            ..SseEvent::default()
        };
        let mut events = vec![chunk(
            serde_json::json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1",
                "type": "function", "function": {"name": "send_mail", "arguments": ""}}]}),
            None,
        )];
        for piece in pieces {
            events.push(chunk(
                serde_json::json!({"tool_calls": [{"index": 0,
                    "function": {"arguments": piece}}]}),
                None,
            ));
        }
        events.push(chunk(serde_json::json!({}), Some("tool_calls")));
        events.push(SseEvent {
            data: "[DONE]".into(),
            ..SseEvent::default()
        });
        events
    }

    /// The tool arguments the client of `dialect` receives, joined, after the answer guard.
    fn client_arguments(dialect: Dialect, pieces: &[&str]) -> String {
        let mut ingress = request(dialect);
        let mut audit = Vec::new();
        let verdict = guards()
            .check_request(&mut ingress, "team:core", &mut audit)
            .unwrap();
        let mut sent = String::new();
        ingress.for_each_text_mut(|_, text| sent.push_str(text));
        assert!(
            !sent.contains(EMAIL) && sent.contains("[EMAIL_1]"),
            "{sent}"
        );
        let guard = verdict.answer.expect("the answer is guarded");
        let meta = ResponseMeta {
            request_id: "req-1",
            created: 1,
            model: "up-m",
        };
        let mut translator = StreamTranslator::filtered(
            ProviderKind::OpenAi,
            &ingress,
            &meta,
            guard.stream_filter(),
        );
        let mut out = Vec::new();
        for event in upstream(pieces) {
            let step = translator.on_event(&event, &mut out);
            assert_eq!(step.error, None);
        }
        translator.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        let mut arguments = String::new();
        for data in out.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let piece = match dialect {
                Dialect::OpenAi => {
                    &v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                }
                Dialect::Anthropic => &v["delta"]["partial_json"],
            };
            if let Some(piece) = piece.as_str() {
                arguments.push_str(piece);
            }
        }
        arguments
    }

    #[test]
    fn an_address_split_across_tool_argument_deltas_is_masked_for_both_dialects() {
        // The model writes an address of its own, split inside its local part and domain.
        let pieces = [
            r#"{"to": "john.sm"#,
            "ith@exa",
            "mple.org",
            r#"", "cc": "x"}"#,
        ];
        for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
            let arguments = client_arguments(dialect, &pieces);
            assert!(
                !arguments.contains("john.smith"),
                "{dialect:?}: {arguments}"
            );
            assert!(
                !arguments.contains("example.org"),
                "{dialect:?}: {arguments}"
            );
            let parsed: Value = serde_json::from_str(&arguments).unwrap();
            assert_eq!(parsed["to"], "[EMAIL]", "{dialect:?}");
            assert_eq!(parsed["cc"], "x", "{dialect:?}");
        }
    }

    #[test]
    fn a_placeholder_split_across_tool_argument_deltas_is_restored_for_both_dialects() {
        let pieces = [r#"{"to": "[EM"#, "AIL", r#"_1]"}"#];
        for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
            let arguments = client_arguments(dialect, &pieces);
            let parsed: Value = serde_json::from_str(&arguments).unwrap();
            assert_eq!(parsed["to"], EMAIL, "{dialect:?}: {arguments}");
        }
    }
}
