//! Stream translation per event: an OpenAI stream relayed to an OpenAI client
//! (pass-through), an Anthropic stream to an OpenAI client, and an OpenAI stream to an
//! Anthropic client. Throughput is upstream events per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_providers::{
    Dialect, IngressRequest, Operation, ProviderKind, ResponseMeta, StreamTranslator,
};
use tollgate_sse::SseEvent;

/// Token events per benchmark stream.
const TOKENS: usize = 256;

fn data(text: String) -> SseEvent {
    SseEvent {
        data: text,
        ..SseEvent::default()
    }
}

fn named(event: &str, text: String) -> SseEvent {
    SseEvent {
        event: Some(event.to_owned()),
        data: text,
        ..SseEvent::default()
    }
}

fn openai_stream() -> Vec<SseEvent> {
    let chunk = |delta: &str, finish: &str| {
        data(format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}],"usage":null}}"#
        ))
    };
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    for i in 0..TOKENS {
        events.push(chunk(&format!(r#"{{"content":"tok{i} "}}"#), "null"));
    }
    events.push(chunk("{}", r#""stop""#));
    events.push(data(format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":{TOKENS},"total_tokens":{}}}}}"#,
        TOKENS + 9
    )));
    events.push(data("[DONE]".to_owned()));
    events
}

fn anthropic_stream() -> Vec<SseEvent> {
    let mut events = vec![
        named(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}"#.to_owned(),
        ),
        named(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
        ),
    ];
    for i in 0..TOKENS {
        events.push(named(
            "content_block_delta",
            format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"tok{i} "}}}}"#),
        ));
    }
    events.push(named(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#.to_owned(),
    ));
    events.push(named(
        "message_delta",
        format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{TOKENS}}}}}"#),
    ));
    events.push(named(
        "message_stop",
        r#"{"type":"message_stop"}"#.to_owned(),
    ));
    events
}

fn ingress(dialect: Dialect) -> IngressRequest {
    let body: &[u8] = match dialect {
        Dialect::OpenAi => {
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}"#
        }
        Dialect::Anthropic => {
            br#"{"model":"m","stream":true,"max_tokens":512,"messages":[{"role":"user","content":"hello"}]}"#
        }
    };
    match IngressRequest::parse(dialect, Operation::ChatCompletions, body) {
        Ok(request) => request,
        Err(err) => unreachable_request(&err),
    }
}

/// A fixed, valid request body that does not parse is a broken benchmark: stop loudly.
fn unreachable_request(err: &dyn std::fmt::Display) -> ! {
    eprintln!("benchmark request does not parse: {err}");
    std::process::exit(2)
}

fn translate(c: &mut Criterion) {
    let meta = ResponseMeta {
        request_id: "req-1",
        created: 1,
        model: "m",
    };
    let cases = [
        (
            "openai_to_openai",
            ProviderKind::OpenAi,
            Dialect::OpenAi,
            openai_stream(),
        ),
        (
            "anthropic_to_openai",
            ProviderKind::Anthropic,
            Dialect::OpenAi,
            anthropic_stream(),
        ),
        (
            "openai_to_anthropic",
            ProviderKind::OpenAi,
            Dialect::Anthropic,
            openai_stream(),
        ),
    ];
    let mut group = c.benchmark_group("stream_translation");
    for (name, kind, dialect, events) in cases {
        let request = ingress(dialect);
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(64 * 1024);
            b.iter(|| {
                out.clear();
                let mut translator = StreamTranslator::new(kind, &request, &meta);
                for event in &events {
                    black_box(translator.on_event(black_box(event), &mut out));
                }
                translator.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
