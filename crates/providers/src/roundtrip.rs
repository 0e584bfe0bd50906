//! Property tests: a canonical request, response or stream written in a provider's dialect
//! and read back keeps every text, tool call, stop reason and token count that dialect can
//! express. What a dialect cannot carry is spelled out per provider in `carried_*`, so a
//! loss outside those lists fails the test.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tollgate_core::Usage;

use crate::anthropic::stream::{EventReader, EventWriter};
use crate::canonical::{
    Image, Message, Part, Request, Response, ResponseFormat, Role, StopReason, StreamEvent, Tool,
    ToolCall, ToolChoice, ToolResult, UsageReport, UsageTracker,
};
use crate::openai::stream::{ChunkReader, ChunkWriter};
use crate::{anthropic, bedrock, gemini, openai, ProviderError, ProviderKind};

// === generators ===

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,!?]{0,24}",
        "\\PC{0,12}",
        Just("line one\nline two".to_owned()),
    ]
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,10}"
}

/// JSON text of an arguments object, in serde_json's own spelling so that dialects that
/// carry arguments as objects give back the same text.
fn arguments() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        ident(),
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            text().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..3,
    )
    .prop_map(|map| {
        serde_json::to_string(&map.into_iter().collect::<Map<String, Value>>()).unwrap()
    })
}

fn image() -> impl Strategy<Value = Image> {
    prop_oneof![
        (
            "[a-z]{1,8}",
            prop_oneof![Just("png"), Just("jpeg"), Just("gif"), Just("webp")]
        )
            .prop_map(|(path, ext)| Image::Url(format!("https://example.com/{path}.{ext}"))),
        (
            prop_oneof![Just("image/png"), Just("image/jpeg"), Just("image/webp")],
            "[A-Za-z0-9+/]{4,16}"
        )
            .prop_map(|(media_type, data)| Image::Base64 {
                media_type: media_type.to_owned(),
                data: format!("{data}=="),
            }),
    ]
}

fn user_part() -> impl Strategy<Value = Part> {
    prop_oneof![3 => text().prop_map(Part::Text), 1 => image().prop_map(Part::Image)]
}

/// A conversation of alternating turns: assistant turns may call tools, and the user turn
/// after one answers every call first.
fn messages() -> impl Strategy<Value = Vec<Message>> {
    let turn = (
        prop::collection::vec(user_part(), 1..3),
        prop::collection::vec(text().prop_map(Part::Text), 0..2),
        prop::collection::vec((ident(), arguments()), 0..3),
        prop::collection::vec((prop::collection::vec(text(), 0..2), any::<bool>()), 3),
    );
    prop::collection::vec(turn, 1..4).prop_map(|turns| {
        let mut messages = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        let mut call_count = 0;
        let turn_count = turns.len();
        for (t, (user, assistant_text, calls, results)) in turns.into_iter().enumerate() {
            let mut content: Vec<Part> = pending
                .drain(..)
                .zip(results)
                .map(|(call_id, (texts, is_error))| {
                    Part::ToolResult(ToolResult {
                        call_id,
                        content: texts.into_iter().map(Part::Text).collect(),
                        is_error,
                    })
                })
                .collect();
            content.extend(user);
            messages.push(Message {
                role: Role::User,
                content,
            });
            if t + 1 == turn_count {
                break;
            }
            let mut content = assistant_text;
            for (name, args) in calls {
                let id = format!("call_{call_count}");
                call_count += 1;
                pending.push(id.clone());
                content.push(Part::ToolCall(ToolCall {
                    id,
                    name,
                    arguments: args,
                }));
            }
            messages.push(Message {
                role: Role::Assistant,
                content,
            });
        }
        messages
    })
}

fn tool() -> impl Strategy<Value = Tool> {
    (
        ident(),
        prop::option::of(text()),
        prop::collection::vec(ident(), 0..3),
    )
        .prop_map(|(name, description, props)| {
            let properties: Map<String, Value> = props
                .iter()
                .map(|p| (p.clone(), json!({"type": "string"})))
                .collect();
            Tool {
                name,
                description,
                parameters: json!({"type": "object", "properties": properties}),
            }
        })
}

fn request() -> impl Strategy<Value = Request> {
    (
        (
            prop::collection::vec(text(), 0..3),
            messages(),
            prop::collection::vec(tool(), 0..3),
            prop::option::of(prop_oneof![
                Just(ToolChoice::Auto),
                Just(ToolChoice::None),
                Just(ToolChoice::Required),
                ident().prop_map(ToolChoice::Tool),
            ]),
            prop::option::of(any::<bool>()),
        ),
        (
            1u64..100_000,
            prop::option::of((0u32..=100).prop_map(|t| f64::from(t) / 100.0)),
            prop::option::of((1u32..=100).prop_map(|t| f64::from(t) / 100.0)),
            prop::option::of(1u64..500),
            prop::collection::vec("[a-z#]{1,5}", 0..3),
            prop::option::of(any::<i32>().prop_map(i64::from)),
            prop::option::of(prop_oneof![
                Just(ResponseFormat::Text),
                Just(ResponseFormat::JsonObject),
                (ident(), prop::collection::vec(ident(), 0..3)).prop_map(|(name, props)| {
                    let properties: Map<String, Value> = props
                        .iter()
                        .map(|p| (p.clone(), json!({"type": "integer"})))
                        .collect();
                    ResponseFormat::JsonSchema {
                        name,
                        schema: json!({"type": "object", "properties": properties}),
                    }
                }),
            ]),
            prop::option::of(ident()),
        ),
    )
        .prop_map(
            |(
                (system, messages, tools, tool_choice, parallel_tool_calls),
                (max_tokens, temperature, top_p, top_k, stop, seed, response_format, user),
            )| Request {
                model: String::new(),
                system,
                messages,
                tools,
                tool_choice,
                parallel_tool_calls,
                max_tokens: Some(max_tokens),
                temperature,
                top_p,
                top_k,
                stop,
                seed,
                response_format,
                user,
                stream: false,
            },
        )
}

fn usage() -> impl Strategy<Value = Usage> {
    (0u64..100_000, 0u64..100_000, 0u64..=100, 0u64..=100).prop_map(
        |(input, output, cached_pct, reasoning_pct)| Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: input * cached_pct / 100,
            reasoning_tokens: output * reasoning_pct / 100,
            estimated: false,
        },
    )
}

fn response() -> impl Strategy<Value = Response> {
    (
        "[a-z0-9]{4,12}",
        "[a-z0-9.-]{3,12}",
        prop::collection::vec(text(), 0..3),
        prop::collection::vec((ident(), arguments()), 0..3),
        prop_oneof![
            Just(StopReason::EndTurn),
            Just(StopReason::MaxTokens),
            Just(StopReason::StopSequence),
            Just(StopReason::ContentFilter),
        ],
        usage(),
    )
        .prop_map(|(id, model, texts, calls, stop, usage)| {
            let mut content: Vec<Part> = texts.into_iter().map(Part::Text).collect();
            let called = !calls.is_empty();
            for (i, (name, arguments)) in calls.into_iter().enumerate() {
                content.push(Part::ToolCall(ToolCall {
                    id: format!("toolu_{i}"),
                    name,
                    arguments,
                }));
            }
            Response {
                id,
                model,
                content,
                stop_reason: Some(if called { StopReason::ToolUse } else { stop }),
                stop_sequence: (stop == StopReason::StopSequence && !called)
                    .then(|| "##".to_owned()),
                usage,
            }
        })
}

// === what each dialect carries ===

fn has_url_image(req: &Request) -> bool {
    req.messages
        .iter()
        .flat_map(|m| &m.content)
        .any(|p| matches!(p, Part::Image(Image::Url(_))))
}

fn carried_request(kind: ProviderKind, req: &Request) -> Request {
    let mut req = req.clone();
    match kind {
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => {
            req.top_k = None;
            for part in req.messages.iter_mut().flat_map(|m| &mut m.content) {
                if let Part::ToolResult(result) = part {
                    result.is_error = false;
                }
            }
        }
        ProviderKind::Anthropic => {
            req.seed = None;
            req.response_format = None;
            match (&req.tool_choice, req.parallel_tool_calls) {
                (None, Some(true)) => req.parallel_tool_calls = None,
                (None, Some(false)) => req.tool_choice = Some(ToolChoice::Auto),
                _ => {}
            }
        }
        ProviderKind::Gemini => {
            req.model.clear();
            req.user = None;
            req.parallel_tool_calls = None;
            req.response_format = match req.response_format {
                Some(ResponseFormat::JsonSchema { schema, .. }) => {
                    Some(ResponseFormat::JsonSchema {
                        name: "response".to_owned(),
                        schema,
                    })
                }
                Some(ResponseFormat::Text) => None,
                other => other,
            };
            gemini_ids(&mut req.messages);
            for part in req.messages.iter_mut().flat_map(|m| &mut m.content) {
                if let Part::ToolResult(result) = part {
                    result.content = vec![Part::Text(result.text())];
                }
            }
        }
        ProviderKind::Bedrock => {
            req.model.clear();
            req.user = None;
            req.seed = None;
            req.parallel_tool_calls = None;
            req.response_format = None;
            if req.tools.is_empty() || req.tool_choice == Some(ToolChoice::None) {
                req.tool_choice = None;
            }
            for message in &mut req.messages {
                message.content.retain(|p| !is_blank(p));
                for part in &mut message.content {
                    if let Part::ToolResult(result) = part {
                        result.content.retain(|p| !is_blank(p));
                        if result.content.is_empty() {
                            result.content.push(Part::Text(String::new()));
                        }
                    }
                }
            }
        }
    }
    req
}

fn is_blank(part: &Part) -> bool {
    matches!(part, Part::Text(t) if t.trim().is_empty())
}

/// Gemini matches results to calls by name: calls come back as `call_<n>`, and a result
/// answers the latest earlier call of its function.
fn gemini_ids(messages: &mut [Message]) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for message in messages {
        for part in &mut message.content {
            match part {
                Part::ToolCall(call) => {
                    let new_id = format!("call_{}", calls.len());
                    calls.push((call.id.clone(), call.name.clone(), new_id.clone()));
                    call.id = new_id;
                }
                Part::ToolResult(result) => {
                    let name = calls
                        .iter()
                        .rev()
                        .find(|(old, _, _)| *old == result.call_id)
                        .map(|(_, name, _)| name.clone())
                        .unwrap_or_default();
                    result.call_id = calls
                        .iter()
                        .rev()
                        .find(|(_, n, _)| *n == name)
                        .map(|(_, _, new)| new.clone())
                        .unwrap_or_default();
                }
                _ => {}
            }
        }
    }
}

fn round_trip_request(kind: ProviderKind, req: &Request) -> Result<Request, ProviderError> {
    match kind {
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => {
            let body = openai::encode_request(req, &req.model)?;
            openai::decode_request(body.as_object().unwrap())
        }
        ProviderKind::Anthropic => {
            let body = anthropic::encode_request(req, &req.model)?;
            anthropic::decode_request(body.as_object().unwrap())
        }
        ProviderKind::Gemini => gemini::decode_request(&gemini::encode_request(req)?),
        ProviderKind::Bedrock => bedrock::decode_request(&bedrock::encode_request(req)?),
    }
}

fn carried_response(kind: ProviderKind, resp: &Response) -> Response {
    let mut resp = resp.clone();
    match kind {
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => {
            let text: String = resp
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            resp.content.retain(|p| !matches!(p, Part::Text(_)));
            if !text.is_empty() {
                resp.content.insert(0, Part::Text(text));
            }
            if resp.stop_reason == Some(StopReason::StopSequence) {
                resp.stop_reason = Some(StopReason::EndTurn);
            }
            resp.stop_sequence = None;
        }
        ProviderKind::Anthropic => resp.usage.reasoning_tokens = 0,
        ProviderKind::Gemini => {
            resp.stop_sequence = None;
            if resp.stop_reason == Some(StopReason::StopSequence) {
                resp.stop_reason = Some(StopReason::EndTurn);
            }
            let mut n = 0;
            for part in &mut resp.content {
                if let Part::ToolCall(call) = part {
                    call.id = format!("call_{}_{n}", resp.id);
                    n += 1;
                }
            }
        }
        ProviderKind::Bedrock => {
            resp.stop_sequence = None;
            resp.usage.reasoning_tokens = 0;
            resp.content.retain(|p| !is_blank(p));
        }
    }
    resp
}

fn round_trip_response(kind: ProviderKind, resp: &Response) -> Result<Response, ProviderError> {
    match kind {
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => {
            openai::decode_response(&openai::encode_response(resp, 0))
        }
        ProviderKind::Anthropic => anthropic::decode_response(&anthropic::encode_response(resp)),
        ProviderKind::Gemini => gemini::decode_response(&gemini::encode_response(resp)),
        ProviderKind::Bedrock => {
            bedrock::decode_response(&bedrock::encode_response(resp)?, &resp.id, &resp.model)
        }
    }
}

const KINDS: [ProviderKind; 4] = [
    ProviderKind::OpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
    ProviderKind::Bedrock,
];

// === streams ===

/// A streamed answer: text pieces, then tool calls with their arguments cut in pieces.
fn stream_answer() -> impl Strategy<Value = (Vec<StreamEvent>, Usage)> {
    (
        prop::collection::vec("\\PC{1,8}", 0..5),
        prop::collection::vec((ident(), arguments(), 1usize..4), 0..3),
        prop_oneof![
            Just(StopReason::EndTurn),
            Just(StopReason::MaxTokens),
            Just(StopReason::ContentFilter)
        ],
        usage(),
    )
        .prop_map(|(texts, calls, stop, usage)| {
            let mut events = vec![StreamEvent::Start {
                id: Some("msg_1".into()),
                model: Some("m".into()),
            }];
            events.push(StreamEvent::Usage(UsageReport {
                input_tokens: Some(usage.input_tokens),
                cached_input_tokens: Some(usage.cached_input_tokens),
                ..UsageReport::default()
            }));
            events.extend(texts.into_iter().map(StreamEvent::TextDelta));
            let called = !calls.is_empty();
            for (i, (name, args, pieces)) in calls.into_iter().enumerate() {
                let index = i as u64 + 7;
                events.push(StreamEvent::ToolCallStart {
                    index,
                    id: format!("toolu_{i}"),
                    name,
                });
                let chars: Vec<char> = args.chars().collect();
                let size = chars.len().div_ceil(pieces).max(1);
                for piece in chars.chunks(size) {
                    events.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: piece.iter().collect(),
                    });
                }
            }
            events.push(StreamEvent::Stop {
                reason: if called { StopReason::ToolUse } else { stop },
                stop_sequence: None,
            });
            events.push(StreamEvent::Usage(UsageReport::full(&usage)));
            events.push(StreamEvent::End);
            (events, usage)
        })
}

/// Text, calls (id, name, arguments), stop and usage that a stream adds up to.
type Sum = (
    String,
    Vec<(String, String, String)>,
    Option<StopReason>,
    Usage,
);

fn sum_up(events: &[StreamEvent]) -> Sum {
    let mut text = String::new();
    let mut calls: Vec<(u64, String, String, String)> = Vec::new();
    let mut stop = None;
    let mut usage = UsageTracker::default();
    for event in events {
        match event {
            StreamEvent::TextDelta(t) => text.push_str(t),
            StreamEvent::ToolCallStart { index, id, name } => {
                calls.push((*index, id.clone(), name.clone(), String::new()))
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = calls.iter_mut().find(|c| c.0 == *index) {
                    call.3.push_str(arguments);
                }
            }
            StreamEvent::Stop { reason, .. } => stop = Some(*reason),
            StreamEvent::Usage(report) => usage.apply(report),
            _ => {}
        }
    }
    (
        text,
        calls
            .into_iter()
            .map(|(_, id, name, args)| (id, name, args))
            .collect(),
        stop,
        usage.current(),
    )
}

fn through_openai(events: &[StreamEvent]) -> Vec<StreamEvent> {
    let mut writer = ChunkWriter::new("chatcmpl-1".into(), "m".into(), 0, true);
    let mut usage = UsageTracker::default();
    let mut bytes = Vec::new();
    for event in events {
        if let StreamEvent::Usage(report) = event {
            usage.apply(report);
        }
        writer.write(event, &mut bytes);
    }
    writer.close(usage.usage(), &mut bytes);
    let mut reader = ChunkReader::default();
    let mut out = Vec::new();
    for event in sse_events(&bytes) {
        reader.read(&event.data, &mut out);
    }
    out
}

fn through_anthropic(events: &[StreamEvent]) -> Vec<StreamEvent> {
    let mut writer = EventWriter::new("msg_1".into(), "m".into());
    let mut usage = UsageTracker::default();
    let mut bytes = Vec::new();
    for event in events {
        if let StreamEvent::Usage(report) = event {
            usage.apply(report);
        }
        writer.write(event, usage.current(), &mut bytes);
    }
    writer.close(usage.usage(), &mut bytes);
    let mut reader = EventReader::default();
    let mut out = Vec::new();
    for event in sse_events(&bytes) {
        reader.read(&event, &mut out);
    }
    out
}

fn sse_events(bytes: &[u8]) -> Vec<tollgate_sse::SseEvent> {
    let mut decoder = tollgate_sse::SseDecoder::new();
    let mut events = Vec::new();
    decoder.feed(bytes, &mut events).unwrap();
    decoder.finish().unwrap();
    events
}

proptest! {
    #[test]
    fn requests_keep_what_each_provider_carries(req in request()) {
        for kind in KINDS {
            let result = round_trip_request(kind, &req);
            if kind == ProviderKind::Bedrock && has_url_image(&req) {
                let refused = matches!(result, Err(ProviderError::Unsupported { .. }));
                prop_assert!(refused, "image URLs must be refused");
                continue;
            }
            let back = result.map_err(|e| TestCaseError::fail(format!("{kind:?}: {e}")))?;
            prop_assert_eq!(back, carried_request(kind, &req), "{:?}", kind);
        }
    }

    #[test]
    fn responses_keep_what_each_provider_carries(resp in response()) {
        for kind in KINDS {
            if kind == ProviderKind::Gemini
                && resp.stop_reason == Some(StopReason::ContentFilter)
                && resp.content.is_empty()
            {
                // A filtered answer with nothing in it is an error there, see the
                // golden suite.
                continue;
            }
            let back = round_trip_response(kind, &resp)
                .map_err(|e| TestCaseError::fail(format!("{kind:?}: {e}")))?;
            prop_assert_eq!(back, carried_response(kind, &resp), "{:?}", kind);
        }
    }

    #[test]
    fn streams_keep_text_tool_calls_and_usage((events, usage) in stream_answer()) {
        let want = sum_up(&events);
        prop_assert_eq!(want.3, usage);

        let openai = sum_up(&through_openai(&events));
        prop_assert_eq!(&openai, &want);

        let mut anthropic_want = want.clone();
        anthropic_want.3.reasoning_tokens = 0;
        let anthropic = sum_up(&through_anthropic(&events));
        prop_assert_eq!(&anthropic, &anthropic_want);

        let chained = sum_up(&through_openai(&through_anthropic(&events)));
        prop_assert_eq!(&chained, &anthropic_want);
    }
}
