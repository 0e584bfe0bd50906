//! Retries, fallbacks, timeouts, circuit breakers and health checks, end to end.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::*;

const FALLBACK: &str = r#"
routes:
  - name: main
    match: { model: chat }
    targets: [{ model: model-a }]
    fallback: [model-b]
    retry: { attempts: 2, backoff: 10ms, backoff_max: 50ms, max_retry_after: 3s }
    timeouts: { connect: 1s, first_token: 500ms, idle: 500ms, total: 20s }
"#;

#[tokio::test]
async fn server_errors_are_retried_then_fall_back() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"status": 503, "times": 1}])).await;
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-tollgate-model"],
        "model-a",
        "the retry on model-a succeeded"
    );
    assert_eq!(a.chat_requests().await.len(), 2);

    a.faults(json!([{"status": 500, "times": 2}])).await;
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-b");
    assert_eq!(a.chat_requests().await.len(), 4, "two attempts on model-a");
    assert_eq!(b.chat_requests().await.len(), 1);
}

#[tokio::test]
async fn rate_limits_honour_retry_after_and_cool_the_key() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"status": 429, "retry_after": 1, "times": 1}]))
        .await;
    let started = Instant::now();
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 200);
    // The only key of provider a cools for 1 s, so the retry goes to the fallback at once
    // or waits for the key; either way no request hit a while its key was cooling.
    let seen_a = a.chat_requests().await.len();
    let seen_b = b.chat_requests().await.len();
    assert_eq!(seen_a + seen_b, 2, "a={seen_a} b={seen_b}");
    if seen_a == 2 {
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "Retry-After was not honoured"
        );
    }

    // Every upstream rate limited: 429 to the client with Retry-After.
    a.faults(json!([{"status": 429, "retry_after": 30, "times": 5}]))
        .await;
    b.faults(json!([{"status": 429, "retry_after": 30, "times": 5}]))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn a_dead_upstream_fails_over_and_all_dead_is_503() {
    let b = Mock::start(&[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = two_mock_config(&Mock::start(&[]), &b, FALLBACK);
    let a_url = config
        .lines()
        .find(|l| l.contains("endpoints:"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_owned();
    let gw = Gateway::start(&config.replacen(&a_url, &dead, 1)).await;
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-b");

    let only_dead = two_mock_config(&b, &b, "").replace(&b.url, &dead);
    let gw = Gateway::start(&only_dead).await;
    let resp = gw.chat(chat_body("model-a")).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attempt"),
        "{body}"
    );
}

#[tokio::test]
async fn a_slow_first_byte_times_out_and_fails_over() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"delay": "3s", "times": 2}])).await;
    let started = Instant::now();
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-b");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    // Streams too: the first token must arrive within first_token.
    a.faults(json!([{"delay": "3s", "times": 2}])).await;
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let resp = gw.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-b");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn all_attempts_timing_out_is_504_with_a_summary() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"delay": "3s", "times": 2}])).await;
    b.faults(json!([{"delay": "3s", "times": 2}])).await;
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("model-a") && message.contains("model-b"),
        "{message}"
    );
}

#[tokio::test]
async fn a_stream_cut_after_output_ends_with_an_error_event() {
    let a = Mock::start(&["--tokens", "10", "--token-delay", "5ms"]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"cut_after_tokens": 3}])).await;
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let resp = gw.chat(body).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert_ne!(
        data.last().unwrap(),
        "[DONE]",
        "a cut stream must not look complete"
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let message = last["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ended unexpectedly"), "{last}");
    assert!(last["error"]["type"].is_string(), "{last}");
    assert_eq!(stream_text(&data).split_whitespace().count(), 3);
    assert!(
        b.chat_requests().await.is_empty(),
        "no failover once output reached the client"
    );
}

#[tokio::test]
async fn an_error_event_before_any_output_fails_over() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"stream_error_after_tokens": 0, "times": 2}]))
        .await;
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let resp = gw.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-b");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data.iter().all(|d| !d.contains("\"error\"")));
}

#[tokio::test]
async fn consecutive_failures_open_the_circuit() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let routes = r#"
routes:
  - name: main
    match: { model: chat }
    targets: [{ model: model-a }]
    fallback: [model-b]
    retry: { attempts: 1, backoff: 1ms, backoff_max: 1ms }
"#;
    let gw = Gateway::start(&two_mock_config(&a, &b, routes)).await;
    a.faults(json!([{"status": 500, "times": 3}])).await;
    for _ in 0..3 {
        assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    }
    let state = gw.upstreams().await.to_string();
    assert!(state.contains("open"), "{state}");
    // While open, model-a is not tried at all.
    for _ in 0..3 {
        assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    }
    assert_eq!(a.chat_requests().await.len(), 3);
    assert_eq!(b.chat_requests().await.len(), 6);
}

#[tokio::test]
async fn active_health_checks_steer_traffic_and_show_on_admin() {
    let a1 = Mock::start(&[]);
    let a2 = Mock::start(&[]);
    let config = format!(
        r#"
providers:
  a:
    kind: openai
    endpoints: ["{}", "{}"]
    health_check: {{ path: /health, interval: 200ms }}
models:
  model-a: {{ provider: a, model: upstream-a }}
keys:
  - {{ name: test, hash: "{}" }}
"#,
        a1.url,
        a2.url,
        key_hash(TEST_KEY)
    );
    let gw = Gateway::start(&config).await;
    a1.set_health(503).await;
    let unhealthy = eventually(Duration::from_secs(10), || async {
        gw.upstreams()
            .await
            .to_string()
            .contains("\"healthy\":false")
    })
    .await;
    assert!(unhealthy, "{}", gw.upstreams().await);
    for _ in 0..6 {
        assert_eq!(gw.chat(chat_body("model-a")).await.status(), 200);
    }
    assert_eq!(a1.chat_requests().await.len(), 0);
    assert_eq!(a2.chat_requests().await.len(), 6);
    let health = client()
        .get(format!("{}/healthz", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn metrics_count_requests_attempts_fallbacks_and_circuits() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, FALLBACK)).await;
    a.faults(json!([{"status": 500, "times": 2}])).await;
    assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let streamed = gw.chat(body).await.text().await.unwrap();
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");
    // The logging phase runs just after the client has the last byte: wait for it.
    let scrape = || async {
        client()
            .get(format!("{}/metrics", gw.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let settled = eventually(Duration::from_secs(5), || async {
        scrape()
            .await
            .lines()
            .any(|l| l == "tollgate_active_streams 0")
    })
    .await;
    assert!(settled, "{}", scrape().await);
    let text = scrape().await;
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(r#"tollgate_requests_total{error="",model="model-b",route="main",status="2xx"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"tollgate_requests_total{error="",model="model-a",route="main",status="2xx"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"tollgate_upstream_attempts_total{outcome="server_error",provider="a"} 2"#),
        "{text}"
    );
    assert!(has(r#"tollgate_fallbacks_total{route="main"} 1"#), "{text}");
    assert!(
        has(r#"tollgate_time_to_first_byte_seconds_count{route="main",stream="true"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"tollgate_circuit_state{endpoint="0",provider="a"} 0"#),
        "{text}"
    );
    assert!(has("tollgate_active_streams 0"), "{text}");
}
