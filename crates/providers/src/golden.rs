//! The shared golden suite: every provider runs the same scenarios, from the fixtures in
//! `tests/fixtures/` (see its README). Requests go both ways between each ingress dialect
//! and each provider, responses and stream transcripts from each provider to both client
//! dialects, and every translation is read back to check that no text, tool call or token
//! count was lost.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use tollgate_core::Usage;
use tollgate_sse::eventstream::{self, EventStreamDecoder, HeaderValue, Message};
use tollgate_sse::{SseDecoder, SseEvent};

use crate::canonical::{Part, Request, Response, StopReason, StreamEvent, UsageTracker};
use crate::{
    anthropic, bedrock, gemini, openai, upstream_request, AwsCredentials, Credentials, Dialect,
    ErrorType, IngressRequest, Operation, ProviderError, ProviderKind, ResponseMeta,
    StreamTranslator, Target, TextFilter, TextPart, UpstreamError, UpstreamErrorClass,
};

const PROVIDERS: [(&str, ProviderKind); 4] = [
    ("openai", ProviderKind::OpenAi),
    ("anthropic", ProviderKind::Anthropic),
    ("gemini", ProviderKind::Gemini),
    ("bedrock", ProviderKind::Bedrock),
];
const DIALECTS: [Dialect; 2] = [Dialect::OpenAi, Dialect::Anthropic];
const REQUEST_SCENARIOS: [&str; 3] = ["text", "tools", "image"];
const RESPONSE_SCENARIOS: [&str; 3] = ["text", "tools", "length"];
const STREAM_SCENARIOS: [&str; 2] = ["text", "tools"];

const META: ResponseMeta<'static> = ResponseMeta {
    request_id: "req_golden",
    created: 1_735_689_600,
    model: "upstream-model",
};

// === fixtures ===

fn fixture_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(fixture_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dialect_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "openai",
        Dialect::Anthropic => "anthropic",
    }
}

fn upstream_model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => "gpt-4o-mini",
        ProviderKind::Anthropic => "claude-3-5-haiku-latest",
        ProviderKind::Gemini => "gemini-2.0-flash",
        ProviderKind::Bedrock => "anthropic.claude-3-5-haiku-20241022-v1:0",
    }
}

/// The client request of `scenario` in `dialect`, as a stream or not.
fn ingress(dialect: Dialect, scenario: &str, stream: bool) -> IngressRequest {
    let mut body = read_json(&format!(
        "{}/{scenario}.request.json",
        dialect_name(dialect)
    ));
    if stream {
        body["stream"] = json!(true);
        if dialect == Dialect::OpenAi {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    let bytes = serde_json::to_vec(&body).unwrap();
    IngressRequest::parse(dialect, Operation::ChatCompletions, &bytes).unwrap()
}

fn translate_request(
    kind: ProviderKind,
    ingress: &IngressRequest,
) -> Result<crate::UpstreamRequest, ProviderError> {
    let aws = AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    };
    let credentials = match kind {
        ProviderKind::Bedrock => Credentials::Aws {
            credentials: &aws,
            region: None,
        },
        _ => Credentials::ApiKey("test-key"),
    };
    upstream_request(
        ingress,
        &Target {
            kind,
            upstream_model: upstream_model(kind),
            path_prefix: "",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            credentials,
            api_version: None,
            extra_headers: &[],
        },
        UNIX_EPOCH + Duration::from_secs(1_735_689_600),
    )
}

// === comparison ===

/// The path of the first difference between two JSON values, or `None` when equal.
fn json_diff(actual: &Value, expected: &Value, path: &str) -> Option<String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for key in a.keys().chain(e.keys()) {
                let inner = format!("{path}.{key}");
                match (a.get(key), e.get(key)) {
                    (Some(av), Some(ev)) => {
                        if let Some(d) = json_diff(av, ev, &inner) {
                            return Some(d);
                        }
                    }
                    (Some(av), None) => return Some(format!("{inner}: unexpected {av}")),
                    (None, Some(ev)) => return Some(format!("{inner}: missing, want {ev}")),
                    (None, None) => {}
                }
            }
            None
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Some(format!("{path}: {} items, want {}", a.len(), e.len()));
            }
            a.iter()
                .zip(e)
                .enumerate()
                .find_map(|(i, (av, ev))| json_diff(av, ev, &format!("{path}[{i}]")))
        }
        (a, e) if a == e => None,
        (a, e) => Some(format!("{path}: got {a}, want {e}")),
    }
}

fn assert_json(actual: &Value, expected: &Value, what: &str) {
    if let Some(diff) = json_diff(actual, expected, "$") {
        panic!("{what}: {diff}\nactual: {actual:#}");
    }
}

fn blessing() -> bool {
    std::env::var_os("TOLLGATE_BLESS").is_some()
}

/// Compares with the golden file, writing it first when blessing and it is missing.
fn golden_json(path: &str, actual: &Value) {
    let file = fixture_path(path);
    if !file.exists() && blessing() {
        let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
        std::fs::write(&file, text).unwrap();
    }
    assert_json(actual, &read_json(path), path);
}

fn decode_sse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    decoder.feed(bytes, &mut events).unwrap();
    decoder.finish().unwrap();
    events
}

/// Compares an SSE transcript with the golden one event by event, data field by field.
fn golden_sse(path: &str, actual: &[u8]) {
    let file = fixture_path(path);
    if !file.exists() && blessing() {
        std::fs::write(&file, actual).unwrap();
    }
    let expected = decode_sse(read(path).as_bytes());
    let actual = decode_sse(actual);
    assert_eq!(
        actual.len(),
        expected.len(),
        "{path}: event count\nactual: {actual:#?}"
    );
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a.event, e.event, "{path}: event {i} name");
        match (
            serde_json::from_str::<Value>(&a.data),
            serde_json::from_str::<Value>(&e.data),
        ) {
            (Ok(av), Ok(ev)) => assert_json(&av, &ev, &format!("{path} event {i}")),
            _ => assert_eq!(a.data, e.data, "{path}: event {i} data"),
        }
    }
}

// === answers, in the terms that must survive translation ===

/// Text, tool calls (id, name, parsed arguments), stop reason and usage of an answer.
#[derive(Debug, PartialEq)]
struct Answer {
    text: String,
    calls: Vec<(String, String, Value)>,
    stop: Option<StopReason>,
    usage: Usage,
}

impl Answer {
    fn of(response: &Response) -> Self {
        let mut answer = Answer {
            text: String::new(),
            calls: Vec::new(),
            stop: response.stop_reason,
            usage: response.usage,
        };
        for part in &response.content {
            match part {
                Part::Text(t) => answer.text.push_str(t),
                Part::ToolCall(call) => answer.calls.push((
                    call.id.clone(),
                    call.name.clone(),
                    serde_json::from_str(&call.arguments).unwrap(),
                )),
                _ => {}
            }
        }
        answer
    }

    /// The answer a stream of canonical events adds up to.
    fn of_stream(events: &[StreamEvent]) -> Self {
        let mut text = String::new();
        let mut calls: Vec<(u64, String, String, String)> = Vec::new();
        let mut stop = None;
        let mut usage = UsageTracker::default();
        for event in events {
            match event {
                StreamEvent::TextDelta(t) => text.push_str(t),
                StreamEvent::ToolCallStart { index, id, name } => {
                    calls.push((*index, id.clone(), name.clone(), String::new()));
                }
                StreamEvent::ToolCallDelta { index, arguments } => {
                    let call = calls.iter_mut().find(|c| c.0 == *index).unwrap();
                    call.3.push_str(arguments);
                }
                StreamEvent::Stop { reason, .. } => stop = Some(*reason),
                StreamEvent::Usage(report) => usage.apply(report),
                _ => {}
            }
        }
        Answer {
            text,
            calls: calls
                .into_iter()
                .map(|(_, id, name, args)| (id, name, serde_json::from_str(&args).unwrap()))
                .collect(),
            stop,
            usage: usage.current(),
        }
    }

    /// What a client of `dialect` can be told: Anthropic has no reasoning count, and its
    /// stop reasons tell a stop sequence apart where OpenAI's do not.
    fn seen_by(mut self, dialect: Dialect) -> Self {
        if dialect == Dialect::Anthropic {
            self.usage.reasoning_tokens = 0;
        }
        self
    }
}

fn expected_usage(kind: ProviderKind, scenario: &str) -> Usage {
    let reasoning = match kind {
        ProviderKind::OpenAi | ProviderKind::Gemini => 2,
        _ => 0,
    };
    let (input, output, cached, reasoning) = match scenario {
        "text" => (25, 8, 10, reasoning),
        "tools" => (60, 20, 0, 0),
        _ => (25, 6, 0, 0),
    };
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        reasoning_tokens: reasoning,
        estimated: false,
    }
}

fn decode_client_response(dialect: Dialect, body: &[u8]) -> Response {
    let value: Value = serde_json::from_slice(body).unwrap();
    match dialect {
        Dialect::OpenAi => openai::decode_response(&value).unwrap(),
        Dialect::Anthropic => anthropic::decode_response(&value).unwrap(),
    }
}

// === requests ===

type DecodeRequest = fn(&Value) -> Result<Request, ProviderError>;

#[test]
fn requests_translate_from_both_dialects_to_every_provider() {
    for scenario in REQUEST_SCENARIOS {
        for dialect in DIALECTS {
            let ingress = ingress(dialect, scenario, false);
            for (name, kind) in PROVIDERS {
                let what = format!("{scenario} from {dialect:?} to {name}");
                let result = translate_request(kind, &ingress);
                if kind == ProviderKind::Bedrock && scenario == "image" {
                    match result {
                        Err(ProviderError::Unsupported { what: w, .. }) => {
                            assert!(w.contains("URL"), "{what}: {w}")
                        }
                        other => panic!("{what}: image URLs must be refused, got {other:?}"),
                    }
                    continue;
                }
                let request = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                let body: Value = serde_json::from_slice(&request.body).unwrap();
                assert_json(
                    &body,
                    &read_json(&format!("{name}/{scenario}.request.json")),
                    &what,
                );
            }
        }
    }
}

#[test]
fn provider_requests_decode_to_the_conversation_they_came_from() {
    for scenario in REQUEST_SCENARIOS {
        let mut want = ingress(Dialect::OpenAi, scenario, false)
            .to_canonical()
            .unwrap();
        want.model.clear();
        let mut from_anthropic = ingress(Dialect::Anthropic, scenario, false)
            .to_canonical()
            .unwrap();
        from_anthropic.model.clear();
        assert_eq!(from_anthropic, want, "{scenario}: anthropic vs openai");

        // Gemini and Converse carry no end-user id nor parallel-call switch.
        let mut lossy = want.clone();
        lossy.user = None;
        lossy.parallel_tool_calls = None;
        let decoded: [(&str, DecodeRequest); 2] = [
            ("gemini", gemini::decode_request),
            ("bedrock", bedrock::decode_request),
        ];
        for (name, decode) in decoded {
            let path = format!("{name}/{scenario}.request.json");
            if !fixture_path(&path).exists() {
                continue;
            }
            let got = decode(&read_json(&path)).unwrap();
            assert_eq!(got, lossy, "{path}");
        }
    }
}

#[test]
fn native_requests_pass_through_with_only_the_model_rewritten() {
    for (dialect, kind) in [
        (Dialect::OpenAi, ProviderKind::OpenAi),
        (Dialect::OpenAi, ProviderKind::AzureOpenAi),
        (Dialect::Anthropic, ProviderKind::Anthropic),
    ] {
        for scenario in REQUEST_SCENARIOS {
            let request = translate_request(kind, &ingress(dialect, scenario, false)).unwrap();
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let mut want = read_json(&format!(
                "{}/{scenario}.request.json",
                dialect_name(dialect)
            ));
            want["model"] = json!(upstream_model(kind));
            assert_json(&body, &want, &format!("{scenario} to {kind:?}"));
        }
    }
}

#[test]
fn every_provider_gets_its_path_and_credentials() {
    let cases = [
        (
            ProviderKind::OpenAi,
            "/v1/chat/completions",
            ("authorization", "Bearer test-key"),
        ),
        (
            ProviderKind::AzureOpenAi,
            "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            ("api-key", "test-key"),
        ),
        (
            ProviderKind::Anthropic,
            "/v1/messages",
            ("x-api-key", "test-key"),
        ),
        (
            ProviderKind::Gemini,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            ("x-goog-api-key", "test-key"),
        ),
        (
            ProviderKind::Bedrock,
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream",
            ("x-amz-date", "20250101T000000Z"),
        ),
    ];
    for (kind, path, (header, value)) in cases {
        let request = translate_request(kind, &ingress(Dialect::OpenAi, "text", true)).unwrap();
        assert_eq!(request.path, path, "{kind:?}");
        assert!(
            request
                .headers
                .iter()
                .any(|(k, v)| *k == header && v == value),
            "{kind:?}: {:?}",
            request.headers
        );
    }
    let anthropic = translate_request(
        ProviderKind::Anthropic,
        &ingress(Dialect::OpenAi, "text", false),
    )
    .unwrap();
    assert!(anthropic
        .headers
        .iter()
        .any(|(k, v)| *k == "anthropic-version" && v == "2023-06-01"));
    let bedrock = translate_request(
        ProviderKind::Bedrock,
        &ingress(Dialect::OpenAi, "text", true),
    )
    .unwrap();
    let auth = &bedrock
        .headers
        .iter()
        .find(|(k, _)| *k == "authorization")
        .unwrap()
        .1;
    assert!(auth.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature="
    ));
}

#[test]
fn anthropic_requests_get_the_required_max_tokens() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let ingress = IngressRequest::parse(Dialect::OpenAi, Operation::ChatCompletions, body).unwrap();
    let request = translate_request(ProviderKind::Anthropic, &ingress).unwrap();
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["max_tokens"], json!(anthropic::DEFAULT_MAX_TOKENS));
}

// === responses ===

#[test]
fn responses_translate_to_both_dialects() {
    for (name, kind) in PROVIDERS {
        for scenario in RESPONSE_SCENARIOS {
            let body = read(&format!("{name}/{scenario}.response.json"));
            for dialect in DIALECTS {
                let what = format!("{name} {scenario} to {dialect:?}");
                let translated = crate::translate_response(
                    kind,
                    &ingress(dialect, "text", false),
                    body.as_bytes(),
                    &META,
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let usage = translated
                    .usage
                    .unwrap_or_else(|| panic!("{what}: no usage"));
                assert_eq!(usage, expected_usage(kind, scenario), "{what}: usage");
                if kind.native_dialect() == Some(dialect) {
                    assert_eq!(translated.body, body.as_bytes(), "{what}: passthrough");
                    continue;
                }
                let value: Value = serde_json::from_slice(&translated.body).unwrap();
                golden_json(
                    &format!("{name}/{scenario}.response.{}.json", dialect_name(dialect)),
                    &value,
                );

                let provider_value: Value = serde_json::from_str(&body).unwrap();
                let original =
                    crate::response::decode(kind, &provider_value, &META, dialect).unwrap();
                let read_back = decode_client_response(dialect, &translated.body);
                assert_eq!(
                    Answer::of(&read_back),
                    Answer::of(&original).seen_by(dialect),
                    "{what}: read back"
                );
            }
        }
    }
}

#[test]
fn blocked_gemini_answers_are_clear_errors() {
    let body = br#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"modelVersion":"gemini-2.0-flash"}"#;
    let err = crate::translate_response(
        ProviderKind::Gemini,
        &ingress(Dialect::OpenAi, "text", false),
        body,
        &META,
    )
    .unwrap_err();
    let ProviderError::Upstream(upstream) = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(upstream.error_type, ErrorType::ContentPolicy);
    assert_eq!(upstream.class(), UpstreamErrorClass::Client);
    let gateway = tollgate_core::GatewayError::from(err);
    assert_eq!(gateway.status(), 400);
    assert_eq!(gateway.code, Some("content_policy_violation"));
}

// === streams ===

/// Feeds a provider transcript through a translator; returns the client bytes, the index
/// of the first event with output, and whether the end marker came.
fn run_stream(
    name: &str,
    kind: ProviderKind,
    scenario: &str,
    dialect: Dialect,
    filter: Option<Box<dyn TextFilter>>,
) -> (Vec<u8>, Option<usize>, bool, StreamTranslator) {
    let ingress = ingress(dialect, scenario, true);
    let mut translator = match filter {
        Some(filter) => StreamTranslator::filtered(kind, &ingress, &META, filter),
        None => StreamTranslator::new(kind, &ingress, &META),
    };
    let mut out = Vec::new();
    let mut first_output = None;
    let mut done = false;
    let steps: Vec<crate::StreamStep> = if kind == ProviderKind::Bedrock {
        // Through the real binary framing: encode the transcript, decode it in odd-sized
        // chunks, and translate each message as it completes.
        let mut wire = Vec::new();
        for line in read(&format!("{name}/{scenario}.stream.jsonl")).lines() {
            let frame: Value = serde_json::from_str(line).unwrap();
            let mut message = Message::new(serde_json::to_vec(&frame["payload"]).unwrap());
            for (k, v) in frame["headers"].as_object().unwrap() {
                message = message.with_header(k, HeaderValue::String(v.as_str().unwrap().into()));
            }
            eventstream::encode(&message, &mut wire).unwrap();
        }
        let mut decoder = EventStreamDecoder::new();
        let mut steps = Vec::new();
        for chunk in wire.chunks(37) {
            let mut messages = Vec::new();
            decoder.feed(chunk, &mut messages).unwrap();
            for message in &messages {
                steps.push(translator.on_message(message, &mut out));
            }
        }
        decoder.finish().unwrap();
        steps
    } else {
        decode_sse(read(&format!("{name}/{scenario}.stream.sse")).as_bytes())
            .iter()
            .map(|event| translator.on_event(event, &mut out))
            .collect()
    };
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step.error, None, "{name} {scenario}: event {i}");
        if step.has_output && first_output.is_none() {
            first_output = Some(i);
        }
        done |= step.done;
    }
    translator.finish(&mut out);
    (out, first_output, done, translator)
}

/// Reads a client transcript back into canonical events with the reader of its dialect.
fn read_client_stream(dialect: Dialect, bytes: &[u8]) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    let mut openai_reader = openai::stream::ChunkReader::default();
    let mut anthropic_reader = anthropic::stream::EventReader::default();
    for event in decode_sse(bytes) {
        match dialect {
            Dialect::OpenAi => {
                openai_reader.read(&event.data, &mut events);
            }
            Dialect::Anthropic => anthropic_reader.read(&event, &mut events),
        }
    }
    events
}

/// The provider transcript read into canonical events.
fn read_provider_stream(name: &str, kind: ProviderKind, scenario: &str) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    if kind == ProviderKind::Bedrock {
        let mut reader = bedrock::stream::FrameReader::default();
        for line in read(&format!("{name}/{scenario}.stream.jsonl")).lines() {
            let frame: Value = serde_json::from_str(line).unwrap();
            let headers: Vec<(String, String)> = frame["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            reader.read(
                header,
                &serde_json::to_vec(&frame["payload"]).unwrap(),
                &mut events,
            );
        }
        return events;
    }
    let transcript = read(&format!("{name}/{scenario}.stream.sse"));
    let mut openai_reader = openai::stream::ChunkReader::default();
    let mut anthropic_reader = anthropic::stream::EventReader::default();
    let mut gemini_reader = gemini::stream::ChunkReader::default();
    for event in decode_sse(transcript.as_bytes()) {
        match kind {
            ProviderKind::Anthropic => anthropic_reader.read(&event, &mut events),
            ProviderKind::Gemini => gemini_reader.read(&event.data, &mut events),
            _ => {
                openai_reader.read(&event.data, &mut events);
            }
        }
    }
    events
}

#[test]
fn streams_translate_event_by_event_to_both_dialects() {
    for (name, kind) in PROVIDERS {
        for scenario in STREAM_SCENARIOS {
            for dialect in DIALECTS {
                let what = format!("{name} {scenario} stream to {dialect:?}");
                let (out, first_output, done, translator) =
                    run_stream(name, kind, scenario, dialect, None);
                assert!(done, "{what}: no end marker");
                // Gemini's first event already holds text; every other provider opens
                // with lifecycle events that carry no output.
                let lifecycle_first = kind != ProviderKind::Gemini;
                assert!(
                    first_output.is_some_and(|i| (i > 0) == lifecycle_first),
                    "{what}: {first_output:?}"
                );
                assert_eq!(
                    translator.usage(),
                    Some(expected_usage(kind, scenario)),
                    "{what}: usage"
                );
                if kind.native_dialect() == Some(dialect) {
                    assert!(translator.is_passthrough());
                    let relayed = decode_sse(&out);
                    let original =
                        decode_sse(read(&format!("{name}/{scenario}.stream.sse")).as_bytes());
                    assert_eq!(relayed, original, "{what}: passthrough");
                    continue;
                }
                golden_sse(
                    &format!("{name}/{scenario}.stream.{}.sse", dialect_name(dialect)),
                    &out,
                );
                let client = decode_sse(&out);
                match dialect {
                    Dialect::OpenAi => {
                        let finishes = client
                            .iter()
                            .filter(|e| e.data.contains("\"finish_reason\":\""))
                            .count();
                        let usages = client
                            .iter()
                            .filter(|e| e.data.contains("\"usage\":{"))
                            .count();
                        assert_eq!((finishes, usages), (1, 1), "{what}");
                        assert_eq!(client.last().unwrap().data, "[DONE]", "{what}");
                    }
                    Dialect::Anthropic => {
                        let names: Vec<&str> =
                            client.iter().filter_map(|e| e.event.as_deref()).collect();
                        assert_eq!(names.first(), Some(&"message_start"), "{what}");
                        assert_eq!(
                            names.iter().filter(|n| **n == "message_delta").count(),
                            1,
                            "{what}"
                        );
                        assert_eq!(names.last(), Some(&"message_stop"), "{what}");
                    }
                }
                let original = Answer::of_stream(&read_provider_stream(name, kind, scenario));
                let read_back = Answer::of_stream(&read_client_stream(dialect, &out));
                assert_eq!(read_back, original.seen_by(dialect), "{what}: read back");
            }
        }
    }
}

/// Upper-cases generated text and holds back the last character of every part until the
/// part ends, as a redactor holds back a possible entity prefix.
#[derive(Default)]
struct Shout {
    held: Vec<(TextPart, String)>,
}

impl TextFilter for Shout {
    fn push(&mut self, part: TextPart, delta: &str, out: &mut String) -> Result<(), UpstreamError> {
        let held = match self.held.iter_mut().find(|(p, _)| *p == part) {
            Some((_, held)) => held,
            None => {
                self.held.push((part, String::new()));
                &mut self.held.last_mut().unwrap().1
            }
        };
        held.push_str(&delta.to_uppercase());
        if let Some((cut, _)) = held.char_indices().last() {
            out.push_str(&held[..cut]);
            held.replace_range(..cut, "");
        }
        Ok(())
    }

    fn finish(&mut self, part: TextPart, out: &mut String) -> Result<(), UpstreamError> {
        if let Some(i) = self.held.iter().position(|(p, _)| *p == part) {
            out.push_str(&self.held.remove(i).1);
        }
        Ok(())
    }
}

#[test]
fn filtered_streams_keep_framing_order_and_every_held_back_character() {
    for (name, kind) in PROVIDERS {
        for scenario in STREAM_SCENARIOS {
            for dialect in DIALECTS {
                let what = format!("{name} {scenario} filtered stream to {dialect:?}");
                let (out, _, done, translator) = run_stream(
                    name,
                    kind,
                    scenario,
                    dialect,
                    Some(Box::new(Shout::default())),
                );
                assert!(done, "{what}");
                assert!(
                    !translator.is_passthrough(),
                    "{what}: filtered text is re-written"
                );
                let mut expected =
                    Answer::of_stream(&read_provider_stream(name, kind, scenario)).seen_by(dialect);
                expected.text = expected.text.to_uppercase();
                for call in &mut expected.calls {
                    call.2 = serde_json::from_str(&call.2.to_string().to_uppercase()).unwrap();
                }
                let read_back = Answer::of_stream(&read_client_stream(dialect, &out));
                assert_eq!(read_back, expected, "{what}");
                let client = decode_sse(&out);
                match dialect {
                    Dialect::OpenAi => assert_eq!(client.last().unwrap().data, "[DONE]", "{what}"),
                    Dialect::Anthropic => assert_eq!(
                        client.last().unwrap().event.as_deref(),
                        Some("message_stop"),
                        "{what}"
                    ),
                }
            }
        }
    }
}

/// Refuses any text containing `!`.
struct Refuse;

impl TextFilter for Refuse {
    fn push(&mut self, _: TextPart, delta: &str, out: &mut String) -> Result<(), UpstreamError> {
        if delta.contains('!') {
            return Err(UpstreamError::new(ErrorType::ContentPolicy, 200, "refused"));
        }
        out.push_str(delta);
        Ok(())
    }

    fn finish(&mut self, _: TextPart, _: &mut String) -> Result<(), UpstreamError> {
        Ok(())
    }
}

#[test]
fn a_filter_refusal_ends_the_stream_as_an_error() {
    let transcript = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"fine\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bad!\"}}]}\n\n";
    let ingress = ingress(Dialect::OpenAi, "text", true);
    let mut translator =
        StreamTranslator::filtered(ProviderKind::OpenAi, &ingress, &META, Box::new(Refuse));
    let mut out = Vec::new();
    let steps: Vec<_> = decode_sse(transcript.as_bytes())
        .iter()
        .map(|e| translator.on_event(e, &mut out))
        .collect();
    assert_eq!(steps[0].error, None);
    let error = steps[1].error.as_ref().unwrap();
    assert_eq!(error.class(), UpstreamErrorClass::Client);
    let relayed = Answer::of_stream(&read_client_stream(Dialect::OpenAi, &out));
    assert_eq!(relayed.text, "fine");
}

#[test]
fn openai_usage_chunks_reach_only_clients_that_ask() {
    let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let ingress = IngressRequest::parse(Dialect::OpenAi, Operation::ChatCompletions, body).unwrap();
    let request = translate_request(ProviderKind::OpenAi, &ingress).unwrap();
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], json!(true));

    let mut translator = StreamTranslator::new(ProviderKind::OpenAi, &ingress, &META);
    let mut out = Vec::new();
    for event in decode_sse(read("openai/text.stream.sse").as_bytes()) {
        translator.on_event(&event, &mut out);
    }
    let relayed = decode_sse(&out);
    assert!(relayed.iter().all(|e| !e.data.contains("\"usage\":{")));
    assert_eq!(relayed.last().unwrap().data, "[DONE]");
    assert_eq!(
        translator.usage(),
        Some(expected_usage(ProviderKind::OpenAi, "text"))
    );

    let mut translator = StreamTranslator::new(ProviderKind::Anthropic, &ingress, &META);
    let mut out = Vec::new();
    for event in decode_sse(read("anthropic/text.stream.sse").as_bytes()) {
        translator.on_event(&event, &mut out);
    }
    assert!(decode_sse(&out)
        .iter()
        .all(|e| !e.data.contains("\"usage\":{")));
    assert_eq!(translator.usage().unwrap().output_tokens, 8);
}

#[test]
fn an_error_before_any_output_can_fail_over() {
    let transcript = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
        event: ping\ndata: {\"type\":\"ping\"}\n\n\
        event: error\n\
        data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    for dialect in DIALECTS {
        let mut translator = StreamTranslator::new(
            ProviderKind::Anthropic,
            &ingress(dialect, "text", true),
            &META,
        );
        let mut out = Vec::new();
        let steps: Vec<_> = decode_sse(transcript.as_bytes())
            .iter()
            .map(|e| translator.on_event(e, &mut out))
            .collect();
        assert!(steps.iter().all(|s| !s.has_output && !s.done));
        let error = steps[2].error.as_ref().unwrap();
        assert_eq!(error.error_type, ErrorType::Overloaded);
        assert_eq!(error.class(), UpstreamErrorClass::Server);
        assert_eq!(translator.usage().unwrap().input_tokens, 12);

        // Had the gateway already committed, it ends the stream in the client's dialect.
        let mut tail = Vec::new();
        translator.fail(&error.clone(), &mut tail);
        let events = decode_sse(&tail);
        assert_eq!(events.len(), 1);
        let data: Value = serde_json::from_str(&events[0].data).unwrap();
        match dialect {
            Dialect::OpenAi => assert_eq!(data["error"]["type"], "service_unavailable_error"),
            Dialect::Anthropic => {
                assert_eq!(events[0].event.as_deref(), Some("error"));
                assert_eq!(data["error"]["type"], "overloaded_error");
            }
        }
        translator.finish(&mut tail);
        assert_eq!(decode_sse(&tail).len(), 1, "nothing after the error event");
    }
}

#[test]
fn bedrock_exceptions_in_streams_are_classified() {
    let ingress = ingress(Dialect::OpenAi, "text", true);
    let mut translator = StreamTranslator::new(ProviderKind::Bedrock, &ingress, &META);
    let mut out = Vec::new();
    let headers = vec![
        (":message-type".to_owned(), "exception".to_owned()),
        (
            ":exception-type".to_owned(),
            "throttlingException".to_owned(),
        ),
    ];
    let step = translator.on_frame(&headers, br#"{"message":"Too many tokens"}"#, &mut out);
    let error = step.error.unwrap();
    assert_eq!(error.error_type, ErrorType::RateLimited);
    assert!(out.is_empty());
}

#[test]
fn gemini_safety_stops_before_output_are_errors() {
    let ingress = ingress(Dialect::Anthropic, "text", true);
    let mut translator = StreamTranslator::new(ProviderKind::Gemini, &ingress, &META);
    let mut out = Vec::new();
    let event = SseEvent {
        data: r#"{"candidates":[{"finishReason":"SAFETY","index":0}],"modelVersion":"gemini-2.0-flash"}"#.into(),
        ..SseEvent::default()
    };
    let step = translator.on_event(&event, &mut out);
    assert!(!step.has_output);
    assert_eq!(step.error.unwrap().error_type, ErrorType::ContentPolicy);
}
