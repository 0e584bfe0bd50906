//! The OpenAI-compatible API: completions (plain and streamed), models, embeddings,
//! keys, and the gateway's own error answers.

use serde_json::{json, Value};
use tollgate_tests::*;

const ROUTES: &str = r#"
routes:
  - name: main
    match: { model: chat }
    targets: [{ model: model-a }]
"#;

#[tokio::test]
async fn chat_completion_passes_fields_through_and_rewrites_model() {
    let a = Mock::start(&["--tokens", "5"]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, ROUTES)).await;
    let body = json!({
        "model": "chat",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "text"},
        "stop": ["\n\n"],
        "n": 1,
        "temperature": 0.2,
        "max_tokens": 50,
        "max_completion_tokens": 60,
        "user": "end-user-7",
        "metadata": {"feature": "search"}
    });
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "client-req-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "client-req-1");
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert!(
        out["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    assert_eq!(out["usage"]["completion_tokens"], 5);

    let seen = a.chat_requests().await;
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up["body"]["model"], "upstream-a");
    for field in [
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "stop",
        "n",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "user",
        "metadata",
    ] {
        assert_eq!(
            up["body"][field], body[field],
            "{field} was not passed through"
        );
    }
    let headers = &up["headers"];
    assert_eq!(headers["authorization"], "Bearer sk-provider-a");
    assert_eq!(headers["x-request-id"], "client-req-1");
    assert!(
        !headers.to_string().contains(TEST_KEY),
        "the client's key went upstream"
    );
    assert!(b.chat_requests().await.is_empty());
}

#[tokio::test]
async fn streamed_completion_is_relayed_event_by_event() {
    let a = Mock::start(&["--tokens", "8", "--token-delay", "5ms"]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, ROUTES)).await;
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    let resp = gw.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(resp.headers().contains_key("x-request-id"));
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let content = stream_text(&data);
    assert_eq!(content.split_whitespace().count(), 8, "{content:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn models_lists_what_the_key_may_use() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, ROUTES)).await;
    let ids = |v: Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all: Value = client()
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["object"], "list");
    let all = ids(all);
    for id in ["chat", "model-a", "model-b", "small-a"] {
        assert!(all.contains(&id.to_owned()), "{id} missing from {all:?}");
    }
    let scoped: Value = client()
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(scoped), vec!["model-b".to_owned()]);
}

#[tokio::test]
async fn embeddings_are_routed_to_the_embedding_model() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, ROUTES)).await;
    let resp = client()
        .post(format!("{}/v1/embeddings", gw.url))
        .header("api-key", TEST_KEY)
        .json(&json!({"model": "embed-a", "input": ["hello world", "goodbye"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["data"].as_array().unwrap().len(), 2);
    assert!(!out["data"][0]["embedding"].as_array().unwrap().is_empty());
    let seen = a.requests().await;
    assert_eq!(seen[0]["path"], "/v1/embeddings");
    assert_eq!(seen[0]["body"]["model"], "upstream-embed");
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "error without x-request-id"
    );
    let body: Value = resp.json().await.unwrap();
    for field in ["message", "type", "code", "param"] {
        assert!(
            body["error"].get(field).is_some(),
            "error body lacks {field}: {body}"
        );
    }
    (status, body)
}

#[tokio::test]
async fn gateway_errors_use_openai_schema_and_status() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let gw = Gateway::start(&two_mock_config(&a, &b, ROUTES)).await;
    let c = client();
    let url = gw.chat_url();

    let (s, e) = error_of(c.post(&url).json(&chat_body("chat")).send().await.unwrap()).await;
    assert_eq!(
        (s, e["error"]["type"].as_str().unwrap()),
        (401, "authentication_error")
    );
    let (s, _) = error_of(
        c.post(&url)
            .bearer_auth("tg-wrong")
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let ok = c
        .post(&url)
        .header("x-api-key", TEST_KEY)
        .json(&chat_body("chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let (s, e) = error_of(
        c.post(&url)
            .bearer_auth(TEST_KEY)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["type"].as_str().unwrap()),
        (400, "invalid_request_error")
    );
    let (s, e) = error_of(
        c.post(&url)
            .bearer_auth(TEST_KEY)
            .json(&json!({"model": "chat"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["param"].as_str().unwrap()),
        (400, "messages")
    );
    let (s, e) = error_of(gw.chat(chat_body("no-such-model")).await).await;
    assert_eq!(
        (s, e["error"]["code"].as_str().unwrap()),
        (404, "model_not_found")
    );
    let (s, e) = error_of(
        c.post(&url)
            .bearer_auth(OTHER_KEY)
            .json(&chat_body("model-a"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["type"].as_str().unwrap()),
        (403, "permission_error")
    );
    let (s, _) = error_of(c.get(&url).bearer_auth(TEST_KEY).send().await.unwrap()).await;
    assert_eq!(s, 405);
    let (s, _) = error_of(
        c.post(format!("{}/v1/nothing", gw.url))
            .bearer_auth(TEST_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        a.chat_requests().await.len() == 1,
        "only the accepted request went upstream"
    );
}

#[tokio::test]
async fn body_over_the_cap_gets_413_before_any_upstream_request() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let capped =
        Gateway::start_with_server(&two_mock_config(&a, &b, ROUTES), "  max_body_bytes: 4096\n")
            .await;
    let big = "x".repeat(8 * 1024);
    let mut body = chat_body("chat");
    body["messages"][0]["content"] = json!(big);
    let (s, e) = error_of(capped.chat(body).await).await;
    assert_eq!(
        (s, e["error"]["code"].as_str().unwrap()),
        (413, "request_too_large")
    );
    assert!(a.chat_requests().await.is_empty());
}
