//! Drives the mock over HTTP, in-process, on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tollgate_mock::{spawn, MockConfig};

struct Mock {
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Mock {
    async fn start(cfg: MockConfig) -> Self {
        let (addr, _task) = spawn(cfg).await.unwrap();
        Self {
            addr,
            client: reqwest::Client::new(),
        }
    }

    async fn fast() -> Self {
        Self::start(MockConfig {
            tokens: 4,
            token_delay: Duration::from_millis(1),
            ..MockConfig::default()
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn faults(&self, rules: Value) {
        let res = self.post("/__mock/faults", &rules).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    /// Streams a chat request and returns the `data:` payloads (as text) in order.
    async fn stream_events(&self, body: &Value) -> Vec<String> {
        let res = self.post("/v1/chat/completions", body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        sse_payloads(&res.text().await.unwrap())
    }
}

fn sse_payloads(text: &str) -> Vec<String> {
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated event: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello there mock"}]}
    ]})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let a = a.as_array().unwrap();
    let b = b.as_array().unwrap();
    a.iter()
        .zip(b)
        .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
        .sum()
}

// === chat ===

#[tokio::test]
async fn plain_completion_has_openai_shape() {
    let mock = Mock::start(MockConfig {
        tokens: 3,
        model_prefix: "m1/".into(),
        ..MockConfig::default()
    })
    .await;
    let res = mock
        .post("/v1/chat/completions", &chat("gpt-4o-mini"))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_mock_"));
    let v: Value = res.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "m1/gpt-4o-mini");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(choices[0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(choices[0]["finish_reason"], "stop");
    // "be brief" + "hello there mock": five words.
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 8);
}

#[tokio::test]
async fn fixed_reply_and_max_tokens_truncate_with_length() {
    let mock = Mock::start(MockConfig {
        reply: Some("The quick  brown fox.".into()),
        ..MockConfig::default()
    })
    .await;
    let v: Value = mock
        .post("/v1/chat/completions", &chat("m"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The quick  brown fox."
    );
    assert_eq!(v["usage"]["completion_tokens"], 4);

    for key in ["max_tokens", "max_completion_tokens"] {
        let body = with(chat("m"), json!({ key: 2 }));
        let v: Value = mock
            .post("/v1/chat/completions", &body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "The quick  ");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }
}

#[tokio::test]
async fn n_returns_that_many_choices() {
    let mock = Mock::fast().await;
    let v: Value = mock
        .post("/v1/chat/completions", &with(chat("m"), json!({"n": 2})))
        .await
        .json()
        .await
        .unwrap();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["message"]["content"], "tok0 tok1 tok2 tok3 ");
    assert_eq!(v["usage"]["completion_tokens"], 8);

    let events = mock
        .stream_events(&with(chat("m"), json!({"n": 2, "stream": true})))
        .await;
    let mut text = [String::new(), String::new()];
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e).unwrap();
        let choice = &chunk["choices"][0];
        if let Some(t) = choice["delta"]["content"].as_str() {
            text[choice["index"].as_u64().unwrap() as usize].push_str(t);
        }
    }
    assert_eq!(text[0], "tok0 tok1 tok2 tok3 ");
    assert_eq!(text[1], text[0]);

    let res = mock
        .post("/v1/chat/completions", &with(chat("m"), json!({"n": 0})))
        .await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn stream_follows_openai_chunk_sequence() {
    let mock = Mock::fast().await;
    let events = mock
        .stream_events(&with(chat("gpt"), json!({"stream": true})))
        .await;
    // role, 4 tokens, finish, [DONE]
    assert_eq!(events.len(), 7, "{events:#?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-mock-"));
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt");
        assert!(c.get("usage").is_none());
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    let text: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn stream_usage_chunk_when_asked() {
    let mock = Mock::fast().await;
    let body = with(
        chat("gpt"),
        json!({"stream": true, "stream_options": {"include_usage": true}, "max_tokens": 3}),
    );
    let events = mock.stream_events(&body).await;
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let finish: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(finish["usage"], Value::Null);
    let usage: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["total_tokens"], 8);
}

#[tokio::test]
async fn stream_is_paced_per_token() {
    let delay = Duration::from_millis(30);
    let mock = Mock::start(MockConfig {
        tokens: 5,
        token_delay: delay,
        first_token_delay: Duration::from_millis(60),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let res = mock
        .post(
            "/v1/chat/completions",
            &with(chat("m"), json!({"stream": true})),
        )
        .await;
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains("\"role\":\"assistant\""));
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    // First token after 60 ms, then four gaps of 30 ms, all after the role chunk.
    assert!(
        total - first_at >= Duration::from_millis(60) + delay * 4,
        "{first_at:?} {total:?}"
    );
    assert!(String::from_utf8(rest)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn client_disconnect_stops_the_stream() {
    let mock = Mock::start(MockConfig {
        tokens: 100_000,
        token_delay: Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await;
    let res = mock
        .post(
            "/v1/chat/completions",
            &with(chat("m"), json!({"stream": true})),
        )
        .await;
    let mut body = res.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(mock.get_json("/__mock/stats").await["active_streams"], 1);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if mock.get_json("/__mock/stats").await["active_streams"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stream still running after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn forced_tool_calls_plain_and_streamed() {
    let mock = Mock::fast().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
                       {"type": "function", "function": {"name": "lookup"}}]);
    let required = with(
        chat("m"),
        json!({"tools": tools, "tool_choice": "required"}),
    );
    let v: Value = mock
        .post("/v1/chat/completions", &required)
        .await
        .json()
        .await
        .unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_mock_"));
    assert_eq!(call["type"], "function");
    assert_eq!(
        call["function"],
        json!({"name": "get_weather", "arguments": "{}"})
    );

    let named = with(
        chat("m"),
        json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "lookup"}}}),
    );
    let v: Value = mock
        .post("/v1/chat/completions", &named)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );

    let auto = with(chat("m"), json!({"tools": tools, "tool_choice": "auto"}));
    let v: Value = mock
        .post("/v1/chat/completions", &auto)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let events = mock
        .stream_events(&with(named, json!({"stream": true})))
        .await;
    assert_eq!(events.len(), 4);
    let head: Value = serde_json::from_str(&events[0]).unwrap();
    let delta = &head["choices"][0]["delta"];
    assert_eq!(delta["role"], "assistant");
    assert_eq!(delta["content"], Value::Null);
    assert_eq!(delta["tool_calls"][0]["index"], 0);
    assert_eq!(delta["tool_calls"][0]["type"], "function");
    assert_eq!(
        delta["tool_calls"][0]["function"],
        json!({"name": "lookup", "arguments": ""})
    );
    let args: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(
        args["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
    );
    let finish: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events[3], "[DONE]");
}

#[tokio::test]
async fn invalid_requests_get_openai_errors() {
    let mock = Mock::fast().await;
    let res = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    let err = v["error"].as_object().unwrap();
    assert_eq!(err["type"], "invalid_request_error");
    assert!(err["message"].as_str().unwrap().contains("JSON"));
    assert_eq!(err["code"], Value::Null);
    assert_eq!(err["param"], Value::Null);

    let res = mock
        .post("/v1/chat/completions", &json!({"messages": []}))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["param"],
        "model"
    );

    let res = mock.client.get(mock.url("/v1/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
}

// === embeddings and models ===

#[tokio::test]
async fn embeddings_are_similar_for_similar_texts() {
    let mock = Mock::fast().await;
    let body = json!({"model": "text-embedding-3-small", "input": [
        "How do I reset my password?",
        "how can i reset my account password",
        "Quarterly revenue grew by ten percent in Europe",
    ]});
    let res = mock.post("/v1/embeddings", &body).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 64);
        assert!((cosine(&d["embedding"], &d["embedding"]) - 1.0).abs() < 1e-4);
    }
    let near = cosine(&data[0]["embedding"], &data[1]["embedding"]);
    let far = cosine(&data[0]["embedding"], &data[2]["embedding"]);
    assert!(near > far + 0.3, "paraphrase {near} vs unrelated {far}");
    assert_eq!(v["usage"]["prompt_tokens"], 6 + 7 + 8);
    assert_eq!(v["usage"]["total_tokens"], 21);

    let again: Value = mock
        .post("/v1/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"], v["data"]);
}

#[tokio::test]
async fn embeddings_inputs_dimensions_and_base64() {
    let mock = Mock::fast().await;
    let v: Value = mock
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": "one text", "dimensions": 256}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 256);

    let v: Value = mock
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": [[1, 2, 3], [4]]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    let v: Value = mock
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": [5, 6], "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    // 64 little-endian f32 = 256 bytes = 344 base64 characters.
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 344);

    for bad in [
        json!({"model": "e", "input": "x", "dimensions": 4000}),
        json!({"model": "e", "input": []}),
    ] {
        assert_eq!(mock.post("/v1/embeddings", &bad).await.status(), 400);
    }
}

#[tokio::test]
async fn models_lists_the_default_and_used_models() {
    let mock = Mock::fast().await;
    mock.post("/v1/chat/completions", &chat("gpt-test")).await;
    let v = mock.get_json("/v1/models").await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"mock-model") && ids.contains(&"gpt-test"),
        "{ids:?}"
    );
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "tollgate-mock");
}

// === faults ===

#[tokio::test]
async fn status_faults_use_openai_errors_and_retry_after() {
    let mock = Mock::fast().await;
    mock.faults(json!([{"status": 429, "retry_after": 2}, {"status": 500, "times": 2}]))
        .await;

    let res = mock.post("/v1/chat/completions", &chat("m")).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "2");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");

    for _ in 0..2 {
        let res = mock
            .post("/v1/embeddings", &json!({"model": "e", "input": "x"}))
            .await;
        assert_eq!(res.status(), 500);
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["type"],
            "server_error"
        );
    }
    assert_eq!(
        mock.post("/v1/chat/completions", &chat("m")).await.status(),
        200
    );
    assert_eq!(mock.get_json("/__mock/stats").await["pending_faults"], 0);
}

#[tokio::test]
async fn faults_match_model_and_path_and_can_be_cleared() {
    let mock = Mock::fast().await;
    mock.faults(json!([
        {"status": 503, "match_model": "flaky"},
        {"status": 502, "path": "/v1/models"},
        {"status": 200, "body": "not json"},
    ]))
    .await;
    // The first rule waits for its model; the third catches this request.
    let res = mock.post("/v1/chat/completions", &chat("steady")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "not json");
    assert_eq!(
        mock.post("/v1/chat/completions", &chat("flaky"))
            .await
            .status(),
        503
    );
    assert_eq!(
        mock.client
            .get(mock.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );

    mock.faults(json!({"status": 500, "times": 5})).await;
    let res = mock
        .client
        .delete(mock.url("/__mock/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["cleared"], 1);
    assert_eq!(
        mock.post("/v1/chat/completions", &chat("m")).await.status(),
        200
    );

    let bad = mock.post("/__mock/faults", &json!([{"stauts": 500}])).await;
    assert_eq!(bad.status(), 400);
    let bad = mock
        .post("/__mock/faults", &json!([{"delay": "soon"}]))
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn delay_fault_holds_the_headers() {
    let mock = Mock::fast().await;
    mock.faults(json!([{"delay": "150ms"}])).await;
    let started = Instant::now();
    let res = mock.post("/v1/chat/completions", &chat("m")).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(res.status(), 200);
}

/// Reads a streamed answer until it ends or breaks; returns the events and whether it broke.
async fn read_until_break(res: reqwest::Response) -> (Vec<String>, bool) {
    let mut body = res.bytes_stream();
    let mut received = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => return (sse_payloads(std::str::from_utf8(&received).unwrap()), true),
        }
    }
    (sse_payloads(std::str::from_utf8(&received).unwrap()), false)
}

#[tokio::test]
async fn cut_after_tokens_drops_the_connection() {
    let mock = Mock::fast().await;
    mock.faults(
        json!([{"cut_after_tokens": 2}, {"cut_after_tokens": 99}, {"cut_after_tokens": 1}]),
    )
    .await;
    let streamed = with(chat("m"), json!({"stream": true}));
    let res = mock.post("/v1/chat/completions", &streamed).await;
    assert_eq!(res.status(), 200);
    let (events, broke) = read_until_break(res).await;
    assert!(broke, "the body should end in an error");
    assert_eq!(events.len(), 3, "role + 2 tokens: {events:#?}");

    // A count beyond the reply cuts after the last token, before the finish chunk.
    let res = mock.post("/v1/chat/completions", &streamed).await;
    let (events, broke) = read_until_break(res).await;
    assert!(broke);
    assert_eq!(events.len(), 1 + 4, "{events:#?}");
    assert!(events.iter().all(|e| e != "[DONE]"));

    // A plain request is cut in the middle of its JSON.
    let res = mock.post("/v1/chat/completions", &chat("m")).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err());
}

#[tokio::test]
async fn stream_error_after_tokens_ends_with_error_event() {
    let mock = Mock::fast().await;
    mock.faults(json!([{"stream_error_after_tokens": 1}, {"stream_error_after_tokens": 1}]))
        .await;
    let events = mock
        .stream_events(&with(chat("m"), json!({"stream": true})))
        .await;
    assert_eq!(events.len(), 3, "{events:#?}");
    let err: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert!(err["error"]["message"].is_string());

    let res = mock.post("/v1/chat/completions", &chat("m")).await;
    assert_eq!(res.status(), 500);
}

#[tokio::test]
async fn health_switch() {
    let mock = Mock::fast().await;
    let res = mock.client.get(mock.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
    mock.post("/__mock/health", &json!({"status": 503})).await;
    assert_eq!(
        mock.client
            .get(mock.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    mock.post("/__mock/health", &json!({"status": 200})).await;
    assert_eq!(
        mock.client
            .get(mock.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

// === recording ===

#[tokio::test]
async fn requests_are_recorded_with_headers_and_bodies() {
    let mock = Mock::fast().await;
    mock.client
        .post(mock.url("/v1/chat/completions?trace=1"))
        .header("Authorization", "Bearer sk-test")
        .header("X-Custom", "a")
        .json(&chat("rec-model"))
        .send()
        .await
        .unwrap();
    let big_text = "word ".repeat(1024 * 1024 / 5);
    let big = json!({"model": "big", "messages": [{"role": "user", "content": big_text}, {"role": "user", "content": "x"}]});
    let big_bytes = serde_json::to_vec(&big).unwrap();
    let res = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(big_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    mock.client
        .post(mock.url("/v1/chat/completions"))
        .body("oops")
        .send()
        .await
        .unwrap();

    let records = mock.get_json("/__mock/requests").await;
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 3);
    let first = &records[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions");
    assert_eq!(first["query"], "trace=1");
    assert_eq!(first["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(first["headers"]["x-custom"], "a");
    assert_eq!(first["body"], chat("rec-model"));
    assert_eq!(first["model"], "rec-model");
    assert_eq!(first["messages"], 2);
    assert!(first["time"].as_u64().unwrap() > 1_600_000_000_000);

    let second = &records[1];
    assert_eq!(second["body"], Value::Null);
    assert_eq!(second["body_len"], big_bytes.len());
    assert_eq!(
        second["body_sha256"],
        hex::encode(Sha256::digest(&big_bytes))
    );
    assert_eq!(second["model"], "big");
    assert_eq!(second["messages"], 2);

    assert_eq!(records[2]["body"], "oops");
    assert_eq!(records[2]["model"], Value::Null);

    assert_eq!(mock.get_json("/__mock/stats").await["requests"], 3);
    let res = mock
        .client
        .delete(mock.url("/__mock/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["cleared"], 3);
    assert_eq!(mock.get_json("/__mock/requests").await, json!([]));
    assert_eq!(mock.get_json("/__mock/stats").await["requests"], 3);
}

#[tokio::test]
async fn record_keeps_only_the_latest_requests() {
    let mock = Mock::fast().await;
    for _ in 0..1005 {
        mock.client
            .get(mock.url("/v1/models"))
            .send()
            .await
            .unwrap();
    }
    let records = mock.get_json("/__mock/requests").await;
    assert_eq!(records.as_array().unwrap().len(), 1000);
    assert_eq!(mock.get_json("/__mock/stats").await["requests"], 1005);
}
