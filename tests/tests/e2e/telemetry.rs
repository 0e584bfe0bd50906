//! OpenTelemetry: one span per request, exported over OTLP/HTTP (JSON), a child of the
//! client's `traceparent`, with the GenAI attributes, and propagated to the provider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tollgate_tests::*;

use crate::providers;

/// Largest OTLP body the receiver accepts; a test's spans are a few KiB.
const MAX_OTLP_BODY: usize = 4 * 1024 * 1024;

/// A minimal OTLP/HTTP receiver: stores every JSON body posted to `/v1/traces`.
pub(crate) async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length.min(MAX_OTLP_BODY)];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                        store.lock().unwrap().push(value);
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

pub(crate) fn spans(bodies: &[Value]) -> Vec<Value> {
    bodies
        .iter()
        .flat_map(|b| b["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn each_request_is_a_span_under_the_clients_trace_and_is_propagated() {
    let (collector, bodies) = otlp_receiver().await;
    let mock = Mock::start(&["--tokens", "4", "--token-delay", "1ms"]);
    let config = format!(
        "{}telemetry:\n  otlp_endpoint: \"{collector}\"\n  service_name: tollgate-test\n",
        providers::config(&mock)
    );
    let gw = Gateway::start(&config).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .json(&json!({"model": "m-anthropic", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let exported = eventually(Duration::from_secs(10), || async {
        spans(&bodies.lock().unwrap())
            .iter()
            .any(|s| s["traceId"] == trace_id)
    })
    .await;
    assert!(exported, "no span exported: {:?}", bodies.lock().unwrap());
    let all = spans(&bodies.lock().unwrap());
    let span = all.iter().find(|s| s["traceId"] == trace_id).unwrap();
    assert_eq!(span["parentSpanId"], parent_id, "{span}");
    assert_eq!(span["name"], "chat m-anthropic");
    assert_eq!(
        attribute(span, "gen_ai.operation.name")["stringValue"],
        "chat"
    );
    assert_eq!(
        attribute(span, "gen_ai.request.model")["stringValue"],
        "m-anthropic"
    );
    assert_eq!(
        attribute(span, "gen_ai.response.model")["stringValue"],
        "claude-3-5-haiku-latest"
    );
    assert_eq!(
        attribute(span, "gen_ai.provider.name")["stringValue"],
        "anthropic"
    );
    assert_eq!(
        attribute(span, "gen_ai.usage.output_tokens")["intValue"],
        "4",
        "{span}"
    );
    assert_eq!(
        attribute(span, "gen_ai.request.max_tokens")["intValue"],
        "50",
        "{span}"
    );

    // The provider's request carries the gateway span as its parent, in the same trace.
    let seen = mock.requests().await;
    let upstream = seen.iter().find(|r| r["path"] == "/v1/messages").unwrap();
    let traceparent = upstream["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default();
    let span_id = span["spanId"].as_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{trace_id}-{span_id}-01"),
        "{upstream}"
    );
}

#[tokio::test]
async fn no_traceparent_goes_upstream_when_tracing_is_off() {
    let mock = Mock::start(&["--tokens", "2", "--token-delay", "1ms"]);
    let gw = Gateway::start(&providers::config(&mock)).await;
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&chat_body("m-openai"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.requests().await;
    assert!(
        seen[0]["headers"].get("traceparent").is_none(),
        "{}",
        seen[0]
    );
}
