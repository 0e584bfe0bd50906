//! Canary keys planted in every place a secret could travel: provider keys (one echoed
//! back by an upstream 401, one carried in a Gemini URL to a dead endpoint) and gateway
//! keys (valid and invalid). None may appear in error bodies, the access log, the usage
//! ledger, `/metrics`, the admin API or the trace spans exported over OTLP.

use std::time::Duration;

use serde_json::json;
use tollgate_tests::*;

use crate::telemetry::{otlp_receiver, spans};

const PROVIDER_KEY: &str = "sk-canary-provider-7f3e9c41";
const GEMINI_KEY: &str = "AIzaCanaryGemini44f2a9d0";
const GATEWAY_KEY: &str = "tg-canary-gateway-5d1b82e7";
const WRONG_KEY: &str = "tg-canary-wrong-91ac0b3f";
const CANARIES: [&str; 4] = [PROVIDER_KEY, GEMINI_KEY, GATEWAY_KEY, WRONG_KEY];

fn leaks(text: &str) -> Vec<&'static str> {
    CANARIES
        .iter()
        .copied()
        .filter(|c| text.contains(c))
        .collect()
}

/// Every column of every usage record, as text.
fn ledger_dump(db: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT * FROM usage_records").unwrap();
    let columns = stmt.column_count();
    let rows = stmt
        .query_map([], |row| {
            (0..columns)
                .map(|i| {
                    row.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    rows.map(|r| r.unwrap().join("|"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn canary_keys_appear_in_no_body_log_ledger_metric_or_trace() {
    let (collector, otlp) = otlp_receiver().await;
    let a = Mock::start(&[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = format!(
        r#"
providers:
  a: {{ kind: openai, endpoints: ["{a}"], api_keys: ["{PROVIDER_KEY}"] }}
  g: {{ kind: gemini, endpoints: ["{dead}"], api_keys: ["{GEMINI_KEY}"] }}
models:
  model-a: {{ provider: a, model: upstream-a }}
  model-g: {{ provider: g, model: gemini-2.0-flash }}
keys:
  - {{ name: canary, hash: "{hash}" }}
telemetry:
  otlp_endpoint: "{collector}"
  service_name: tollgate-secrets
"#,
        a = a.url,
        hash = key_hash(GATEWAY_KEY),
    );
    let gw = Gateway::start_logging(&config).await;
    let call = |key: &'static str, body: serde_json::Value| {
        let url = gw.chat_url();
        async move {
            let resp = client()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    let mut answers = Vec::new();

    // An unknown gateway key.
    answers.push(call(WRONG_KEY, chat_body("model-a")).await);
    // An upstream 401 that echoes the provider key, on a JSON call and on a stream.
    let echo = json!({"error": {
        "message": format!("Incorrect API key provided: {PROVIDER_KEY}. You can find your API key at https://platform.openai.com/account/api-keys?key={PROVIDER_KEY}"),
        "type": "invalid_request_error",
        "code": "invalid_api_key"
    }})
    .to_string();
    a.faults(json!([{"status": 401, "body": echo, "times": 10}]))
        .await;
    answers.push(call(GATEWAY_KEY, chat_body("model-a")).await);
    let mut stream = chat_body("model-a");
    stream["stream"] = json!(true);
    answers.push(call(GATEWAY_KEY, stream).await);
    // A dead Gemini endpoint: the key rides in the request URL.
    answers.push(call(GATEWAY_KEY, chat_body("model-g")).await);
    // A malformed body with a valid key, and the key in the body itself.
    let mut with_key = chat_body("model-nope");
    with_key["user"] = json!(GATEWAY_KEY);
    answers.push(call(GATEWAY_KEY, with_key).await);

    // The echoing upstream did get the key, so it was there to leak.
    let seen = a.chat_requests().await;
    assert!(seen.len() >= 2);
    assert!(seen[0]["headers"].to_string().contains(PROVIDER_KEY));
    for (status, body) in &answers {
        println!("{status} {body}");
        assert!(*status >= 400, "{status} {body}");
        assert!(
            leaks(body).is_empty(),
            "error body leaks {:?}: {body}",
            leaks(body)
        );
    }
    let db = gw.dir.0.join("usage.db");
    let recorded = eventually(Duration::from_secs(10), || {
        let db = db.clone();
        async move { db.exists() && ledger_rows(&db).len() >= 3 }
    })
    .await;
    assert!(recorded, "the failed calls were not recorded");
    let ledger = ledger_dump(&db);
    let metrics = client()
        .get(format!("{}/metrics", gw.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage = gw.usage("key").await.to_string();
    let upstreams = gw.upstreams().await.to_string();
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    // The span of every call that got past authentication: the two 401s, the dead
    // endpoint and the unknown model.
    let traced = eventually(Duration::from_secs(20), || async {
        spans(&otlp.lock().unwrap()).len() >= 4
    })
    .await;
    let exported = otlp.lock().unwrap().clone();
    let span_count = spans(&exported).len();
    assert!(traced, "{span_count} spans exported");
    let traces = serde_json::to_string(&exported).unwrap();
    // The spans do describe the failed upstream calls, so there was something to leak into.
    assert!(traces.contains("\"bad_gateway\""), "{traces:.2000}");
    println!(
        "secrets: {} error answers, {} ledger rows, {} log bytes, {} metric bytes, {span_count} spans ({} bytes of OTLP) checked for {} canaries",
        answers.len(),
        ledger.lines().count(),
        log.len(),
        metrics.len(),
        traces.len(),
        CANARIES.len()
    );
    for (place, text) in [
        ("ledger", &ledger),
        ("access log", &log),
        ("metrics", &metrics),
        ("admin usage", &usage),
        ("admin upstreams", &upstreams),
        ("trace spans", &traces),
    ] {
        assert!(leaks(text).is_empty(), "{place} leaks {:?}", leaks(text));
    }
}
