//! Helpers shared by the store tests: requests in either dialect, answers, and waiting
//! for a condition instead of sleeping for a guessed time.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::{Duration, Instant};

use tollgate_cache::{request_key, CacheEntry, RequestKey, Scope};
use tollgate_core::Usage;
use tollgate_providers::canonical::{Part, Request, Response, StopReason};
use tollgate_providers::{Dialect, IngressRequest, Operation};

/// A chat request's canonical form and keys.
pub struct Asked {
    pub canonical: Request,
    pub key: RequestKey,
}

pub fn ask(scope: &Scope<'_>, dialect: Dialect, body: &str) -> Asked {
    let ingress =
        IngressRequest::parse(dialect, Operation::ChatCompletions, body.as_bytes()).unwrap();
    let canonical = ingress.to_canonical().unwrap();
    let key = request_key(scope, dialect, body.as_bytes(), &canonical).unwrap();
    Asked { canonical, key }
}

/// An OpenAI body with a system prompt and one user turn.
pub fn openai_question(question: &str) -> String {
    serde_json::json!({
        "model": "best-cheap-chat",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": question},
        ],
    })
    .to_string()
}

pub fn answer(text: &str) -> CacheEntry {
    CacheEntry::from_response(&Response {
        id: "chatcmpl-x".into(),
        model: "gpt-4o-mini".into(),
        content: vec![Part::Text(text.into())],
        stop_reason: Some(StopReason::EndTurn),
        stop_sequence: None,
        usage: Usage {
            input_tokens: 20,
            output_tokens: 10,
            ..Usage::default()
        },
    })
    .unwrap()
}

pub fn text_of(entry: &CacheEntry) -> String {
    match &entry.to_response(String::new()).content[0] {
        Part::Text(text) => text.clone(),
        other => panic!("not text: {other:?}"),
    }
}

/// Polls `check` until it holds, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
