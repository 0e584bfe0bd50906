//! Costs on the request path of a hit: making the key, finding a similar question, and
//! rendering the stored answer for the client (body and SSE, both dialects).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_cache::{request_key, CacheEntry, Labels, Replay, Scope, SemanticIndex};
use tollgate_providers::canonical::{Part, Response, StopReason};
use tollgate_providers::{Dialect, IngressRequest, Operation};

const SCOPE: Scope<'static> = Scope {
    tenant: "team:billing",
    route: "faq",
    model: "best-cheap-chat",
};

fn chat_body() -> Vec<u8> {
    let history: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"role":"user","content":"question {i}: {}"}},{{"role":"assistant","content":"answer {i}: {}"}}"#,
                "lorem ipsum ".repeat(40),
                "dolor sit amet ".repeat(60)
            )
        })
        .collect();
    format!(
        r#"{{"model":"best-cheap-chat","temperature":0.2,"max_tokens":512,"messages":[{{"role":"system","content":"You are terse."}},{},{{"role":"user","content":"And now?"}}]}}"#,
        history.join(",")
    )
    .into_bytes()
}

fn entry() -> CacheEntry {
    let response = Response {
        model: "gpt-4o-mini".into(),
        content: vec![Part::Text("word ".repeat(400))],
        stop_reason: Some(StopReason::EndTurn),
        ..Response::default()
    };
    CacheEntry::from_response(&response)
        .unwrap_or_else(|| unreachable!("a plain answer is cacheable"))
}

fn keys(c: &mut Criterion) {
    let body = chat_body();
    let canonical = IngressRequest::parse(Dialect::OpenAi, Operation::ChatCompletions, &body)
        .and_then(|r| r.to_canonical())
        .unwrap_or_else(|e| unreachable!("{e}"));
    c.bench_function(
        &format!("request_key ({} KiB body)", body.len() / 1024),
        |b| b.iter(|| request_key(&SCOPE, Dialect::OpenAi, black_box(&body), &canonical)),
    );
}

fn replay(c: &mut Criterion) {
    let entry = entry();
    let replay = Replay {
        request_id: "req-1",
        created: 1_700_000_000,
        include_usage: true,
    };
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        c.bench_function(&format!("replay_stream {dialect:?} (2 KB answer)"), |b| {
            b.iter(|| black_box(&entry).replay_stream(dialect, &replay))
        });
        c.bench_function(&format!("replay_body {dialect:?} (2 KB answer)"), |b| {
            b.iter(|| black_box(&entry).replay_body(dialect, &replay))
        });
    }
}

fn semantic(c: &mut Criterion) {
    const DIMS: usize = 1536;
    const ENTRIES: usize = 1000;
    let index = SemanticIndex::new(ENTRIES);
    let body = chat_body();
    let canonical = IngressRequest::parse(Dialect::OpenAi, Operation::ChatCompletions, &body)
        .and_then(|r| r.to_canonical())
        .unwrap_or_else(|e| unreachable!("{e}"));
    let scope = request_key(&SCOPE, Dialect::OpenAi, &body, &canonical)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .semantic;
    let labels = Labels::route("faq");
    for i in 0..ENTRIES {
        let vector: Vec<f32> = (0..DIMS).map(|d| ((i * 31 + d * 7) % 97) as f32).collect();
        let key = request_key(
            &Scope {
                route: &format!("r{i}"),
                ..SCOPE
            },
            Dialect::OpenAi,
            &body,
            &canonical,
        )
        .unwrap_or_else(|e| unreachable!("{e}"))
        .exact;
        index.insert(&scope, &vector, key, &labels, Duration::from_secs(3600));
    }
    let query: Vec<f32> = (0..DIMS).map(|d| (d % 13) as f32).collect();
    c.bench_function("semantic lookup (1000 x 1536 dims in scope)", |b| {
        b.iter(|| index.lookup(&scope, black_box(&query), 0.95))
    });
}

criterion_group!(benches, keys, replay, semantic);
criterion_main!(benches);
