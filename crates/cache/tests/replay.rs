//! Replays of stored answers, checked as a client would read them: bodies decoded by the
//! providers' own decoders, streams parsed with the SSE decoder and checked event by event
//! against each dialect's grammar, then recorded back into an entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use tollgate_cache::{CacheEntry, Replay, StreamRecorder, REPLAY_DELTA_BYTES};
use tollgate_core::Usage;
use tollgate_providers::canonical::{Part, Response, StopReason, ToolCall};
use tollgate_providers::{anthropic, openai, Dialect};
use tollgate_sse::{SseDecoder, SseEvent};

const REPLAY: Replay<'static> = Replay {
    request_id: "req-42",
    created: 1_700_000_000,
    include_usage: true,
};

fn usage() -> Usage {
    Usage {
        input_tokens: 31,
        output_tokens: 17,
        cached_input_tokens: 4,
        reasoning_tokens: 0,
        estimated: false,
    }
}

fn text_entry(text: &str) -> CacheEntry {
    CacheEntry::from_response(&Response {
        id: "chatcmpl-orig".into(),
        model: "gpt-4o-mini".into(),
        content: vec![Part::Text(text.into())],
        stop_reason: Some(StopReason::EndTurn),
        stop_sequence: None,
        usage: usage(),
    })
    .unwrap()
}

fn tool_entry() -> CacheEntry {
    CacheEntry::from_response(&Response {
        id: "msg_orig".into(),
        model: "claude-3-5-haiku".into(),
        content: vec![
            Part::Text("Checking both.".into()),
            Part::ToolCall(ToolCall {
                id: "toolu_1".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            }),
            Part::ToolCall(ToolCall {
                id: "toolu_2".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Bergen"}"#.into(),
            }),
        ],
        stop_reason: Some(StopReason::ToolUse),
        stop_sequence: None,
        usage: usage(),
    })
    .unwrap()
}

/// Decodes a whole stream; the decoder must end idle (no event cut short).
fn events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut out = Vec::new();
    // Fed in small pieces, as a client reads them off the wire.
    for chunk in bytes.chunks(7) {
        decoder.feed(chunk, &mut out).expect("well-formed SSE");
    }
    decoder.finish().expect("no event left open");
    out
}

fn json(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// A tool call as a client assembles it: id, name, arguments.
type Call = (String, String, String);

/// What a client reads from a stream: the text, the tool calls, why it stopped and the
/// usage it was given.
struct Seen {
    text: String,
    calls: Vec<Call>,
    stop: String,
    usage: Option<Value>,
}

/// Checks an OpenAI stream's grammar and returns what it carries.
fn check_openai(events: &[SseEvent]) -> Seen {
    let (last, chunks) = events.split_last().expect("events");
    assert_eq!(last.data, "[DONE]", "the stream ends with [DONE]");
    let mut text = String::new();
    let mut calls: Vec<Call> = Vec::new();
    let mut finish = None;
    let mut usage = None;
    for (i, event) in chunks.iter().enumerate() {
        assert_eq!(event.event, None, "OpenAI chunks have no event name");
        let chunk = json(event);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], "chatcmpl-req-42");
        assert_eq!(chunk["created"], 1_700_000_000);
        let choices = chunk["choices"].as_array().expect("choices");
        if choices.is_empty() {
            assert!(usage.is_none(), "one usage chunk");
            assert_eq!(i, chunks.len() - 1, "usage is the last chunk");
            usage = Some(chunk["usage"].clone());
            continue;
        }
        assert!(finish.is_none(), "nothing but usage after the finish chunk");
        let choice = &choices[0];
        let delta = &choice["delta"];
        if i == 0 {
            assert_eq!(delta["role"], "assistant", "the first chunk gives the role");
        }
        if let Some(piece) = delta["content"].as_str() {
            text.push_str(piece);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(id) = call["id"].as_str() {
                assert_eq!(index, calls.len(), "tool calls are numbered in order");
                calls.push((
                    id.to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            if let Some(args) = call["function"]["arguments"].as_str() {
                calls[index].2.push_str(args);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    Seen {
        text,
        calls,
        stop: finish.expect("a finish chunk"),
        usage,
    }
}

/// Checks an Anthropic stream's grammar and returns what it carries.
fn check_anthropic(events: &[SseEvent]) -> Seen {
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let mut open: Option<u64> = None;
    let mut next_index = 0;
    let mut text = String::new();
    let mut calls: Vec<Call> = Vec::new();
    for event in &events[1..events.len() - 2] {
        let data = json(event);
        assert_eq!(
            data["type"],
            event.event.as_deref().unwrap(),
            "type matches the name"
        );
        match event.event.as_deref().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "blocks do not nest");
                assert_eq!(data["index"], next_index, "blocks are numbered in order");
                open = Some(next_index);
                next_index += 1;
                let block = &data["content_block"];
                if block["type"] == "tool_use" {
                    calls.push((
                        block["id"].as_str().unwrap().to_owned(),
                        block["name"].as_str().unwrap().to_owned(),
                        String::new(),
                    ));
                }
            }
            "content_block_delta" => {
                assert_eq!(
                    Some(data["index"].as_u64().unwrap()),
                    open,
                    "delta of the open block"
                );
                let delta = &data["delta"];
                match delta["type"].as_str().unwrap() {
                    "text_delta" => text.push_str(delta["text"].as_str().unwrap()),
                    "input_json_delta" => calls
                        .last_mut()
                        .unwrap()
                        .2
                        .push_str(delta["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(Some(data["index"].as_u64().unwrap()), open);
                open = None;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(open, None, "every block closed");
    let start = json(&events[0]);
    assert_eq!(start["message"]["id"], "msg_req-42");
    assert_eq!(start["message"]["role"], "assistant");
    let delta = json(&events[events.len() - 2]);
    Seen {
        text,
        calls,
        stop: delta["delta"]["stop_reason"].as_str().unwrap().to_owned(),
        usage: Some(delta["usage"].clone()),
    }
}

fn recorded(dialect: Dialect, events: &[SseEvent]) -> CacheEntry {
    let mut recorder = StreamRecorder::new(dialect);
    for event in events {
        recorder.push_sse(event);
    }
    recorder
        .finish(Some(usage()))
        .expect("a replay records back")
}

#[test]
fn openai_stream_replay_is_well_formed_and_records_back() {
    for entry in [text_entry("Paris is the capital of France."), tool_entry()] {
        let stream = entry.replay_stream(Dialect::OpenAi, &REPLAY);
        let events = events(&stream);
        let Seen {
            text,
            calls,
            stop: finish,
            usage,
        } = check_openai(&events);
        let expected = entry.to_response(String::new());
        let expected_text: String = expected
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, expected_text);
        let expected_calls: Vec<Call> = expected
            .content
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall(c) => Some((c.id.clone(), c.name.clone(), c.arguments.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(calls, expected_calls);
        let want_finish = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        assert_eq!(finish, want_finish);
        let usage = usage.expect("usage chunk when asked");
        assert_eq!(usage["prompt_tokens"], 31);
        assert_eq!(usage["completion_tokens"], 17);
        assert_eq!(recorded(Dialect::OpenAi, &events), entry);
    }
}

#[test]
fn openai_stream_replay_leaves_out_usage_unless_asked() {
    let entry = text_entry("Hi.");
    let quiet = Replay {
        include_usage: false,
        ..REPLAY
    };
    let events = events(&entry.replay_stream(Dialect::OpenAi, &quiet));
    let seen = check_openai(&events);
    assert_eq!(seen.text, "Hi.");
    assert_eq!(seen.usage, None);
}

#[test]
fn anthropic_stream_replay_is_well_formed_and_records_back() {
    for entry in [text_entry("Paris is the capital of France."), tool_entry()] {
        let stream = entry.replay_stream(Dialect::Anthropic, &REPLAY);
        let events = events(&stream);
        let Seen {
            text,
            calls,
            stop,
            usage,
        } = check_anthropic(&events);
        let expected = entry.to_response(String::new());
        let first_text = match &expected.content[0] {
            Part::Text(t) => t.clone(),
            _ => String::new(),
        };
        assert_eq!(text, first_text);
        assert_eq!(calls.len(), expected.content.len() - 1);
        let want_stop = if calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        assert_eq!(stop, want_stop);
        assert_eq!(usage.unwrap()["output_tokens"], 17);
        assert_eq!(recorded(Dialect::Anthropic, &events), entry);
    }
}

#[test]
fn long_answers_replay_in_bounded_events() {
    let long = "Ünïcödé text. ".repeat(REPLAY_DELTA_BYTES / 4);
    let entry = text_entry(&long);
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let events = events(&entry.replay_stream(dialect, &REPLAY));
        assert!(events.len() > 4, "cut into several deltas");
        // A delta event's data is its piece plus JSON framing.
        assert!(events
            .iter()
            .all(|e| e.data.len() < REPLAY_DELTA_BYTES + 512));
        assert_eq!(recorded(dialect, &events), entry);
    }
}

#[test]
fn body_replays_decode_to_the_stored_answer() {
    for entry in [text_entry("Paris."), tool_entry()] {
        let openai_body: Value =
            serde_json::from_slice(&entry.replay_body(Dialect::OpenAi, &REPLAY)).unwrap();
        assert_eq!(openai_body["object"], "chat.completion");
        assert_eq!(openai_body["id"], "chatcmpl-req-42");
        let decoded = openai::decode_response(&openai_body).unwrap();
        let expected = entry.to_response(String::new());
        assert_eq!(decoded.content, expected.content);
        assert_eq!(decoded.model, entry.model());
        assert_eq!(decoded.usage.input_tokens, 31);

        let anthropic_body: Value =
            serde_json::from_slice(&entry.replay_body(Dialect::Anthropic, &REPLAY)).unwrap();
        assert_eq!(anthropic_body["type"], "message");
        assert_eq!(anthropic_body["id"], "msg_req-42");
        let decoded = anthropic::decode_response(&anthropic_body).unwrap();
        assert_eq!(decoded.content, expected.content);
        assert_eq!(decoded.stop_reason, expected.stop_reason);
        assert_eq!(decoded.usage.output_tokens, 17);
    }
}

#[test]
fn cut_and_errored_client_streams_record_nothing() {
    let entry = text_entry("Paris is the capital of France.");
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let all = events(&entry.replay_stream(dialect, &REPLAY));
        // Cut before the end marker.
        let mut recorder = StreamRecorder::new(dialect);
        for event in &all[..all.len() - 1] {
            recorder.push_sse(event);
        }
        assert_eq!(recorder.finish(Some(usage())), None, "{dialect:?} cut");

        // An error event in the middle (as the gateway ends a broken stream).
        let error = match dialect {
            Dialect::OpenAi => SseEvent {
                data: r#"{"error":{"message":"upstream broke","type":"server_error","code":null}}"#
                    .into(),
                ..SseEvent::default()
            },
            Dialect::Anthropic => SseEvent {
                event: Some("error".into()),
                data: r#"{"type":"error","error":{"type":"api_error","message":"upstream broke"}}"#
                    .into(),
                ..SseEvent::default()
            },
        };
        let mut recorder = StreamRecorder::new(dialect);
        for event in &all[..2] {
            recorder.push_sse(event);
        }
        recorder.push_sse(&error);
        for event in &all[2..] {
            recorder.push_sse(event);
        }
        assert_eq!(recorder.finish(Some(usage())), None, "{dialect:?} errored");
    }
}
