//! Transport faults between the gateway and a provider, injected by
//! [`tollgate_tests::faults::FaultProxy`]: before the first byte reached the client every
//! fault fails over to the fallback; after it, a broken stream always ends with an error
//! event, never silently. Every request is bounded in time.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tollgate_tests::faults::{Fault, FaultProxy};
use tollgate_tests::*;

/// Longest one request may take: the route's timeouts are well below it.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// Requests in flight at once.
const PARALLEL: usize = 16;
/// Tokens in every mock answer.
const TOKENS: usize = 20;

fn config(proxy: &FaultProxy, b: &Mock) -> String {
    config_for(&proxy.url, b, "{ attempts: 1 }")
}

/// Provider `a` at `a_url`, whose circuit never opens, tried as `retry` says, falls back
/// to provider `b`.
fn config_for(a_url: &str, b: &Mock, retry: &str) -> String {
    format!(
        r#"
providers:
  # The circuit never opens, so every request meets its planned fault.
  a:
    kind: openai
    endpoints: ["{a}"]
    api_keys: ["sk-provider-a"]
    circuit_breaker: {{ failures: 1000000, cooldown: 1s }}
  b: {{ kind: openai, endpoints: ["{b}"], api_keys: ["sk-provider-b"] }}
models:
  model-a: {{ provider: a, model: upstream-a }}
  model-b: {{ provider: b, model: upstream-b }}
keys:
  - {{ name: test, hash: "{key}" }}
routes:
  - name: main
    match: {{ model: chat }}
    targets: [{{ model: model-a }}]
    fallback: [model-b]
    retry: {retry}
    timeouts: {{ connect: 1s, first_token: 500ms, idle: 500ms, total: 5s }}
"#,
        a = a_url,
        b = b.url,
        key = key_hash(TEST_KEY),
    )
}

async fn setup() -> (Mock, Mock, FaultProxy, Gateway) {
    let tokens = TOKENS.to_string();
    let a = Mock::start(&["--tokens", &tokens, "--token-delay", "2ms"]);
    let b = Mock::start(&["--tokens", &tokens]);
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", a.port)).await;
    let gw = Gateway::start(&config(&proxy, &b)).await;
    (a, b, proxy, gw)
}

fn stream_body() -> Value {
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    body
}

/// Sends `body` to the gateway and reads the whole answer within [`REQUEST_BOUND`].
async fn bounded(gw: &Gateway, body: Value) -> (u16, String, Duration) {
    let started = Instant::now();
    let call = async {
        let resp = gw.chat(body).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    };
    let (status, text) = tokio::time::timeout(REQUEST_BOUND, call)
        .await
        .expect("a request hung");
    (status, text, started.elapsed())
}

#[tokio::test]
async fn transport_faults_before_the_first_byte_fail_over() {
    let (_a, _b, proxy, gw) = setup().await;
    let faults = [
        Fault::Refuse,
        Fault::Reset,
        Fault::Stall,
        Fault::CutAfter(0),
        Fault::CutAfter(40),
        Fault::Delay(Duration::from_secs(2)),
    ];
    const ROUNDS: usize = 20;
    let mut planned = Vec::new();
    for _ in 0..ROUNDS {
        planned.extend(faults.iter().cloned());
    }
    proxy.plan(planned.clone());
    let bodies = (0..planned.len()).map(|i| {
        if i % 2 == 0 {
            chat_body("chat")
        } else {
            stream_body()
        }
    });
    let results: Vec<(u16, String, Duration)> = futures::stream::iter(bodies)
        .map(|body| bounded(&gw, body))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let complete = results
        .iter()
        .filter(|r| r.0 == 200 && answer_is_complete(&r.1))
        .count();
    let mut took: Vec<Duration> = results.iter().map(|r| r.2).collect();
    took.sort();
    let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
    println!(
        "transport faults before the first byte: {} requests, {ok} answered 200, {complete} complete, p99 {p99:?}, slowest {:?}",
        results.len(),
        took.last().unwrap()
    );
    assert_eq!(
        ok,
        results.len(),
        "every request must succeed through the fallback"
    );
    assert_eq!(complete, results.len(), "every answer must be whole");
    assert!(proxy.accepted() >= planned.len(), "every fault was used");
}

/// Whether an answer (JSON or SSE) carries all the mock's tokens and, for a stream, ends
/// with `[DONE]`.
fn answer_is_complete(text: &str) -> bool {
    if let Ok(json) = serde_json::from_str::<Value>(text) {
        let content = json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("");
        return content.split_whitespace().count() == TOKENS;
    }
    let data = sse_data(text);
    data.last().map(String::as_str) == Some("[DONE]")
        && stream_text(&data).split_whitespace().count() == TOKENS
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `[DONE]` after the whole answer.
    Complete,
    /// A well-formed error event last.
    ErrorEvent,
    /// Anything else: a truncated stream that looks finished, or no end at all.
    Silent,
}

fn stream_end(text: &str) -> End {
    let data = sse_data(text);
    match data.last().map(String::as_str) {
        Some("[DONE]") if stream_text(&data).split_whitespace().count() == TOKENS => End::Complete,
        Some(last) => match serde_json::from_str::<Value>(last) {
            Ok(v) if v["error"]["message"].is_string() && v["error"]["type"].is_string() => {
                End::ErrorEvent
            }
            _ => End::Silent,
        },
        None => End::Silent,
    }
}

#[tokio::test]
async fn streams_broken_after_the_first_byte_end_with_an_error_event() {
    let (_a, b, proxy, gw) = setup().await;
    // Cuts at offsets through the whole answer (a 20-token stream is a few KiB), and
    // corrupted events: the first output event (before anything reached the client) and
    // later ones.
    let mut planned: Vec<Fault> = (0..40).map(|i| Fault::CutAfter(300 + i * 80)).collect();
    planned.extend((0..10).map(|i| Fault::CorruptSse(1 + i * 2)));
    proxy.plan(planned.clone());
    let results: Vec<(u16, String, Duration)> = futures::stream::iter(0..planned.len())
        .map(|_| bounded(&gw, stream_body()))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let ends: Vec<End> = results.iter().map(|r| stream_end(&r.1)).collect();
    let count = |e: End| ends.iter().filter(|x| **x == e).count();
    let (complete, errors, silent) = (
        count(End::Complete),
        count(End::ErrorEvent),
        count(End::Silent),
    );
    println!(
        "streams broken after the first byte: {} streams, {complete} complete (failed over or cut after the end), {errors} error events, {silent} silent endings; fallback served {}",
        results.len(),
        b.chat_requests().await.len()
    );
    for (r, end) in results.iter().zip(&ends) {
        if *end == End::Silent {
            println!("silent: status {} body {:?}", r.0, r.1);
        }
    }
    assert!(results.iter().all(|r| r.0 == 200));
    assert_eq!(silent, 0, "a broken stream ended silently");
    assert!(errors > 0, "no cut landed inside a stream");
}

/// Requests of each phase of [`http_faults_before_the_first_byte_fail_over_and_honour_retry_after`].
const HTTP_FAULT_REQUESTS: usize = 600;
/// Retry-After of the rate-limit phase, in seconds.
const RETRY_AFTER_SECS: u64 = 1;
/// How late after a 429, in milliseconds, a request may still reach the provider: one
/// the gateway dispatched before it had read the 429 is not sent against it (generous for
/// a loaded CI machine; a gateway that ignored Retry-After would send all through the
/// window).
const REACTION: u64 = 200;

/// Sends `n` requests, half streamed, `PARALLEL` at a time.
async fn mixed_requests(gw: &Gateway, n: usize) -> Vec<(u16, String, Duration)> {
    futures::stream::iter(0..n)
        .map(|i| {
            bounded(
                gw,
                if i % 2 == 0 {
                    chat_body("chat")
                } else {
                    stream_body()
                },
            )
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

#[tokio::test]
async fn http_faults_before_the_first_byte_fail_over_and_honour_retry_after() {
    let tokens = TOKENS.to_string();
    let a = Mock::start(&["--tokens", &tokens]);
    // Paced streams stretch the rate-limit phase over several Retry-After windows.
    let b = Mock::start(&["--tokens", &tokens, "--token-delay", "10ms"]);
    let retry = format!("{{ attempts: 2, backoff: 10ms, max_retry_after: {RETRY_AFTER_SECS}s }}");
    let gw = Gateway::start(&config_for(&a.url, &b, &retry)).await;

    // Server errors: every request meets one on each of its two attempts on `a` and is
    // answered by `b`.
    let third = (2 * HTTP_FAULT_REQUESTS / 3) as u32;
    a.faults(json!([
        {"status": 500, "times": third},
        {"status": 502, "times": third},
        {"status": 503, "times": third},
    ]))
    .await;
    let errors = mixed_requests(&gw, HTTP_FAULT_REQUESTS).await;
    let stats = a.stats().await;
    let served_by_a = stats["requests"].as_u64().unwrap_or(0) as usize;
    assert_eq!(stats["pending_faults"], 0, "server errors left unused");
    a.clear_requests().await;

    // Rate limits: every answer of `a` is a 429 with Retry-After, so the gateway may send
    // `a` a request only once each window has passed.
    a.faults(json!([{"status": 429, "retry_after": RETRY_AFTER_SECS, "times": 100_000}]))
        .await;
    let limited_started = Instant::now();
    let limited = mixed_requests(&gw, HTTP_FAULT_REQUESTS).await;
    let limited_took = limited_started.elapsed();
    let seen: Vec<Value> = a.chat_requests().await;
    let mut times: Vec<(u64, String)> = seen
        .iter()
        .map(|r| {
            (
                r["time"].as_u64().unwrap_or(0),
                r["headers"]["x-request-id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    times.sort();
    let window = RETRY_AFTER_SECS * 1000;
    // A request that reached `a` while the key was cooling from an earlier 429, whether
    // a retry of the same request or another one.
    let early = times
        .iter()
        .enumerate()
        .filter(|(i, (t, _))| {
            times[..*i]
                .iter()
                .any(|(t0, _)| t0 + REACTION < *t && *t < t0 + window)
        })
        .count();
    // Requests retried on `a` once its window had passed (`max_retry_after` allows the
    // wait).
    let mut ids: Vec<&str> = times.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort();
    let repeated = ids.windows(2).filter(|w| w[0] == w[1]).count();

    let all: Vec<&(u16, String, Duration)> = errors.iter().chain(&limited).collect();
    let ok = all.iter().filter(|r| r.0 == 200).count();
    let whole = all
        .iter()
        .filter(|r| r.0 == 200 && answer_is_complete(&r.1))
        .count();
    println!(
        "HTTP faults before the first byte: {} requests (500, 502, 503, then 429 with \
         Retry-After {RETRY_AFTER_SECS}s), {ok} answered 200, {whole} whole ({:.2}%)",
        all.len(),
        100.0 * whole as f64 / all.len() as f64
    );
    println!(
        "server errors: {served_by_a} attempts met one on the primary; rate limits: {} \
         requests reached the primary in {limited_took:?}, {early} while its key cooled, \
         {repeated} retried on it after waiting out Retry-After",
        seen.len()
    );
    assert_eq!(
        served_by_a,
        2 * HTTP_FAULT_REQUESTS,
        "every request tried the primary twice"
    );
    assert_eq!(
        whole,
        all.len(),
        "every request must succeed through the fallback"
    );
    assert!(!seen.is_empty(), "the primary never rate limited");
    assert_eq!(early, 0, "requests reached a cooling key: {times:?}");
}
