//! Drives the Anthropic, Gemini, Azure OpenAI and Bedrock dialects over HTTP, in-process,
//! on port 0: answers, stream transcripts, forced tool calls, front-door checks and faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tollgate_mock::{spawn, MockConfig};
use tollgate_sse::eventstream::{EventStreamDecoder, EventStreamError, Message};

const ANTHROPIC: &[(&str, &str)] = &[
    ("x-api-key", "sk-ant-test"),
    ("anthropic-version", "2023-06-01"),
];
const GEMINI: &[(&str, &str)] = &[("x-goog-api-key", "g-test")];
const AZURE: &[(&str, &str)] = &[("api-key", "az-test")];
const BEDROCK_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc123";
const BEDROCK: &[(&str, &str)] = &[
    ("authorization", BEDROCK_AUTH),
    ("x-amz-date", "20240101T000000Z"),
];

const GEMINI_GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";
const GEMINI_STREAM: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
const AZURE_CHAT: &str = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";
const BEDROCK_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const BEDROCK_CONVERSE: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
const BEDROCK_STREAM: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream";

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
            model_prefix: "m1/".into(),
            ..MockConfig::default()
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.unwrap()
    }

    async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Value {
        let res = self.post(path, headers, body).await;
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.unwrap()
    }

    async fn faults(&self, rules: Value) {
        let res = self.post("/__mock/faults", &[], &rules).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    async fn records(&self) -> Vec<Value> {
        let res = self
            .client
            .get(self.url("/__mock/requests"))
            .send()
            .await
            .unwrap();
        res.json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Reads a body until it ends or breaks; returns the bytes and whether it broke.
async fn read_all(res: reqwest::Response) -> (Vec<u8>, bool) {
    let mut body = res.bytes_stream();
    let mut received = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

/// SSE events as (event name, data), for `\n\n` or `\r\n\r\n` framing.
fn sse_events(text: &str) -> Vec<(Option<String>, Value)> {
    let text = text.replace("\r\n", "\n");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, data.unwrap())
        })
        .collect()
}

fn event_stream(bytes: &[u8]) -> (Vec<Message>, Result<(), EventStreamError>) {
    let mut decoder = EventStreamDecoder::new();
    let mut messages = Vec::new();
    let fed = decoder.feed(bytes, &mut messages);
    (messages, fed.and_then(|()| decoder.finish()))
}

fn payload(message: &Message) -> Value {
    serde_json::from_slice(&message.payload).unwrap()
}

// === Anthropic ===

fn anthropic_request(extra: Value) -> Value {
    let mut body = json!({
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there mock"}]}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

const WEATHER_TOOLS: &str = "get_weather";

fn anthropic_tools(choice: Value) -> Value {
    json!({
        "tools": [
            {"name": WEATHER_TOOLS, "description": "w", "input_schema": {"type": "object"}},
            {"name": "get_time", "input_schema": {"type": "object"}},
        ],
        "tool_choice": choice,
    })
}

#[tokio::test]
async fn anthropic_front_door_checks() {
    let mock = Mock::fast().await;
    let body = anthropic_request(json!({}));
    let res = mock
        .post(
            "/v1/messages",
            &[("anthropic-version", "2023-06-01")],
            &body,
        )
        .await;
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "authentication_error");
    assert_eq!(err["error"]["message"], "x-api-key header is required");

    let res = mock
        .post("/v1/messages", &[("x-api-key", "k")], &body)
        .await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));

    let mut no_max = body.clone();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let res = mock.post("/v1/messages", ANTHROPIC, &no_max).await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["error"]["message"], "max_tokens: Field required");

    let res = mock
        .client
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    // Refused requests are recorded too, headers included.
    let records = mock.records().await;
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["path"], "/v1/messages");
    assert_eq!(records[0]["model"], "claude-3-5-haiku-latest");
    assert_eq!(records[0]["messages"], 1);
    assert_eq!(records[1]["headers"]["x-api-key"], "k");
}

#[tokio::test]
async fn anthropic_message_shape_and_max_tokens() {
    let mock = Mock::fast().await;
    let res = mock
        .post("/v1/messages", ANTHROPIC, &anthropic_request(json!({})))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_mock_"));
    let v: Value = res.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "m1/claude-3-5-haiku-latest");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 tok3 "}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    // "be brief" + "hello there mock".
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 5, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 0, "output_tokens": 4})
    );

    let v = mock
        .post_json(
            "/v1/messages",
            ANTHROPIC,
            &anthropic_request(json!({"max_tokens": 2, "system": "one two three"})),
        )
        .await;
    assert_eq!(v["content"][0]["text"], "tok0 tok1 ");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert_eq!(v["usage"]["input_tokens"], 6);
}

#[tokio::test]
async fn anthropic_stream_follows_the_event_sequence() {
    let mock = Mock::fast().await;
    let res = mock
        .post(
            "/v1/messages",
            ANTHROPIC,
            &anthropic_request(json!({"stream": true})),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let events = sse_events(&res.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_deref().unwrap());
    }
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["model"], "m1/claude-3-5-haiku-latest");
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..7]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    let delta = &events[8].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4, "cumulative total");
}

#[tokio::test]
async fn anthropic_forced_tool_use_plain_and_streamed() {
    let mock = Mock::fast().await;
    let v = mock
        .post_json(
            "/v1/messages",
            ANTHROPIC,
            &anthropic_request(anthropic_tools(json!({"type": "any"}))),
        )
        .await;
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], WEATHER_TOOLS);
    assert_eq!(block["input"], json!({}));
    assert_eq!(v["usage"]["output_tokens"], 1);

    let named = anthropic_tools(json!({"type": "tool", "name": "get_time"}));
    let v = mock
        .post_json("/v1/messages", ANTHROPIC, &anthropic_request(named.clone()))
        .await;
    assert_eq!(v["content"][0]["name"], "get_time");

    // "auto" leaves the choice to the model: the mock answers in text.
    let v = mock
        .post_json(
            "/v1/messages",
            ANTHROPIC,
            &anthropic_request(anthropic_tools(json!({"type": "auto"}))),
        )
        .await;
    assert_eq!(v["content"][0]["type"], "text");

    let mut streamed = anthropic_request(named);
    streamed["stream"] = json!(true);
    let res = mock.post("/v1/messages", ANTHROPIC, &streamed).await;
    let events = sse_events(&res.text().await.unwrap());
    let start = &events[1].1["content_block"];
    assert_eq!(start["type"], "tool_use");
    assert_eq!(start["name"], "get_time");
    assert_eq!(start["input"], json!({}));
    let pieces: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| &d["delta"])
        .collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    let joined: String = pieces
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "input_json_delta");
            d["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), json!({}));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 1);
}

#[tokio::test]
async fn anthropic_status_faults_use_anthropic_errors() {
    let mock = Mock::fast().await;
    mock.faults(json!([
        {"status": 429, "retry_after": 3},
        {"status": 500},
        {"status": 529, "match_model": "busy"},
    ]))
    .await;
    let body = anthropic_request(json!({}));
    let res = mock.post("/v1/messages", ANTHROPIC, &body).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "rate_limit_error");

    let res = mock.post("/v1/messages", ANTHROPIC, &body).await;
    assert_eq!(res.status(), 500);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "api_error"
    );

    assert_eq!(
        mock.post("/v1/messages", ANTHROPIC, &body).await.status(),
        200
    );
    let busy = anthropic_request(json!({"model": "busy"}));
    let res = mock.post("/v1/messages", ANTHROPIC, &busy).await;
    assert_eq!(res.status(), 529);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );
}

#[tokio::test]
async fn anthropic_stream_faults() {
    let mock = Mock::fast().await;
    mock.faults(json!([
        {"stream_error_after_tokens": 2},
        {"cut_after_tokens": 1},
        {"stream_error_after_tokens": 1},
        {"delay": "120ms"},
    ]))
    .await;
    let streamed = anthropic_request(json!({"stream": true}));
    let res = mock.post("/v1/messages", ANTHROPIC, &streamed).await;
    let events = sse_events(&res.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[5].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    let res = mock.post("/v1/messages", ANTHROPIC, &streamed).await;
    let (bytes, broke) = read_all(res).await;
    assert!(broke);
    let events = sse_events(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(events.len(), 4, "start, block start, ping, one delta");

    // A plain request gets the error the stream would have reported.
    let res = mock
        .post("/v1/messages", ANTHROPIC, &anthropic_request(json!({})))
        .await;
    assert_eq!(res.status(), 529);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );

    let started = Instant::now();
    let res = mock
        .post("/v1/messages", ANTHROPIC, &anthropic_request(json!({})))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!(res.status(), 200);
}

// === Gemini ===

fn gemini_request(extra: Value) -> Value {
    let mut body = json!({
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "hello there mock"}]}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn gemini_tools(mode: &str, allowed: Option<&str>) -> Value {
    let mut config = json!({"mode": mode});
    if let Some(name) = allowed {
        config["allowedFunctionNames"] = json!([name]);
    }
    json!({
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "parameters": {"type": "object"}},
            {"name": "get_time"},
        ]}],
        "toolConfig": {"functionCallingConfig": config},
    })
}

#[tokio::test]
async fn gemini_requires_a_key() {
    let mock = Mock::fast().await;
    let res = mock
        .post(GEMINI_GENERATE, &[], &gemini_request(json!({})))
        .await;
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], 403);
    assert_eq!(err["error"]["status"], "PERMISSION_DENIED");
    assert!(err["error"]["message"].is_string());

    let with_query = format!("{GEMINI_GENERATE}?key=g-test");
    let v = mock
        .post_json(&with_query, &[], &gemini_request(json!({})))
        .await;
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let records = mock.records().await;
    assert_eq!(records[1]["query"], "key=g-test");
    assert_eq!(records[1]["model"], "gemini-2.0-flash");
    assert_eq!(records[1]["messages"], 1);
}

#[tokio::test]
async fn gemini_generate_content_shape() {
    let mock = Mock::fast().await;
    let v = mock
        .post_json(GEMINI_GENERATE, GEMINI, &gemini_request(json!({})))
        .await;
    assert_eq!(
        v["candidates"],
        json!([{
            "content": {"parts": [{"text": "tok0 tok1 tok2 tok3 "}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }])
    );
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9})
    );
    assert_eq!(v["modelVersion"], "m1/gemini-2.0-flash");
    assert!(v["responseId"].is_string());

    let limited = gemini_request(json!({"generationConfig": {"maxOutputTokens": 3}}));
    let v = mock
        .post_json(
            "/v1/models/gemini-1.5-pro:generateContent",
            GEMINI,
            &limited,
        )
        .await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "tok0 tok1 tok2 "
    );
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["modelVersion"], "m1/gemini-1.5-pro");

    let res = mock
        .post(GEMINI_GENERATE, GEMINI, &json!({"contents": []}))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["status"],
        "INVALID_ARGUMENT"
    );
    let res = mock
        .post(
            "/v1beta/models/gemini-2.0-flash:unknownMethod",
            GEMINI,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["status"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn gemini_stream_sends_one_chunk_per_token() {
    let mock = Mock::fast().await;
    let res = mock
        .post(GEMINI_STREAM, GEMINI, &gemini_request(json!({})))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("\r\n\r\n"), "Gemini frames events with CRLF");
    let chunks: Vec<Value> = sse_events(&text).into_iter().map(|(_, d)| d).collect();
    assert_eq!(chunks.len(), 4);
    let joined: String = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["candidates"][0]["content"]["role"], "model");
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(joined, "tok0 tok1 tok2 tok3 ");
    for chunk in &chunks[..3] {
        assert!(chunk.get("usageMetadata").is_none());
        assert!(chunk["candidates"][0].get("finishReason").is_none());
    }
    assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        chunks[3]["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9})
    );

    // Without alt=sse the same chunks arrive as one JSON array.
    let res = mock
        .post(
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            GEMINI,
            &gemini_request(json!({})),
        )
        .await;
    let array: Vec<Value> = res.json().await.unwrap();
    assert_eq!(array.len(), 4);
    for (a, b) in array.iter().zip(&chunks) {
        assert_eq!(a["candidates"], b["candidates"]);
    }
}

#[tokio::test]
async fn gemini_forced_function_calls() {
    let mock = Mock::fast().await;
    let v = mock
        .post_json(
            GEMINI_GENERATE,
            GEMINI,
            &gemini_request(gemini_tools("ANY", None)),
        )
        .await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {}}}])
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 1);

    let v = mock
        .post_json(
            GEMINI_GENERATE,
            GEMINI,
            &gemini_request(gemini_tools("AUTO", None)),
        )
        .await;
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());

    let res = mock
        .post(
            GEMINI_STREAM,
            GEMINI,
            &gemini_request(gemini_tools("ANY", Some("get_time"))),
        )
        .await;
    let chunks = sse_events(&res.text().await.unwrap());
    assert_eq!(chunks.len(), 1);
    let chunk = &chunks[0].1;
    assert_eq!(
        chunk["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );
    assert_eq!(chunk["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunk["usageMetadata"]["totalTokenCount"], 6);
}

#[tokio::test]
async fn gemini_faults() {
    let mock = Mock::fast().await;
    mock.faults(json!([
        {"status": 429, "retry_after": 7},
        {"finish_reason": "SAFETY"},
        {"finish_reason": "SAFETY"},
        {"stream_error_after_tokens": 1},
        {"cut_after_tokens": 2},
        {"status": 503, "path": "/v1beta/models/gemini-2.0-flash:embedContent"},
    ]))
    .await;
    let body = gemini_request(json!({}));
    let res = mock.post(GEMINI_GENERATE, GEMINI, &body).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": {"code": 429, "message": "mock fault: HTTP 429", "status": "RESOURCE_EXHAUSTED"}})
    );

    // A blocked candidate has no content, says why, and counts no output.
    let v = mock.post_json(GEMINI_GENERATE, GEMINI, &body).await;
    let candidate = &v["candidates"][0];
    assert!(candidate.get("content").is_none());
    assert_eq!(candidate["finishReason"], "SAFETY");
    let ratings = candidate["safetyRatings"].as_array().unwrap();
    assert!(ratings.iter().any(|r| r["blocked"] == true));
    assert!(v["usageMetadata"].get("candidatesTokenCount").is_none());
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 5);

    let res = mock.post(GEMINI_STREAM, GEMINI, &body).await;
    let chunks = sse_events(&res.text().await.unwrap());
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].1["candidates"][0]["finishReason"], "SAFETY");
    assert!(chunks[0].1["candidates"][0].get("content").is_none());

    let res = mock.post(GEMINI_STREAM, GEMINI, &body).await;
    let chunks = sse_events(&res.text().await.unwrap());
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].1["error"]["code"], 503);
    assert_eq!(chunks[1].1["error"]["status"], "UNAVAILABLE");

    let res = mock.post(GEMINI_STREAM, GEMINI, &body).await;
    let (bytes, broke) = read_all(res).await;
    assert!(broke);
    assert_eq!(sse_events(std::str::from_utf8(&bytes).unwrap()).len(), 2);

    // The path rule waits for its endpoint.
    let embed = json!({"content": {"parts": [{"text": "hi"}]}});
    let res = mock
        .post(
            "/v1beta/models/gemini-2.0-flash:embedContent",
            GEMINI,
            &embed,
        )
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["status"],
        "UNAVAILABLE"
    );
}

#[tokio::test]
async fn gemini_embeddings_match_the_openai_vectors() {
    let mock = Mock::fast().await;
    let openai = mock
        .post_json(
            "/v1/embeddings",
            &[],
            &json!({"model": "e", "input": ["How do I reset my password?", "weather"], "dimensions": 32}),
        )
        .await;
    let one = mock
        .post_json(
            "/v1beta/models/text-embedding-004:embedContent",
            GEMINI,
            &json!({"content": {"parts": [{"text": "How do I reset my password?"}]}, "outputDimensionality": 32}),
        )
        .await;
    assert_eq!(one["embedding"]["values"], openai["data"][0]["embedding"]);

    let batch = mock
        .post_json(
            "/v1beta/models/text-embedding-004:batchEmbedContents",
            GEMINI,
            &json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "How do I reset my password?"}]}, "outputDimensionality": 32},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "weather"}]}, "outputDimensionality": 32},
            ]}),
        )
        .await;
    let embeddings = batch["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    assert_eq!(embeddings[1]["values"], openai["data"][1]["embedding"]);

    let default = mock
        .post_json(
            "/v1beta/models/text-embedding-004:embedContent",
            GEMINI,
            &json!({"content": {"parts": [{"text": "x"}]}}),
        )
        .await;
    assert_eq!(default["embedding"]["values"].as_array().unwrap().len(), 64);
}

// === Azure OpenAI ===

#[tokio::test]
async fn azure_front_door_checks() {
    let mock = Mock::fast().await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let res = mock.post(AZURE_CHAT, &[], &body).await;
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "401");
    assert!(err["error"]["message"].is_string());

    let res = mock
        .post(
            "/openai/deployments/gpt4o-prod/chat/completions",
            AZURE,
            &body,
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
    let res = mock
        .post(
            "/openai/deployments/gpt4o-prod/completions?api-version=2024-10-21",
            AZURE,
            &body,
        )
        .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn azure_chat_and_embeddings_use_the_deployment_as_model() {
    let mock = Mock::fast().await;
    let body = json!({"messages": [{"role": "user", "content": "hello there"}]});
    let res = mock.post(AZURE_CHAT, AZURE, &body).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_mock_"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m1/gpt4o-prod");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 "
    );
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let res = mock.post(AZURE_CHAT, AZURE, &streamed).await;
    let events = res.text().await.unwrap();
    assert!(events.ends_with("data: [DONE]\n\n"));
    assert!(events.contains("\"model\":\"m1/gpt4o-prod\""));

    let tools = json!({
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "required",
    });
    let v = mock.post_json(AZURE_CHAT, AZURE, &tools).await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "f"
    );

    let v = mock
        .post_json(
            "/openai/deployments/embed-small/embeddings?api-version=2024-10-21",
            AZURE,
            &json!({"input": "hello"}),
        )
        .await;
    assert_eq!(v["model"], "m1/embed-small");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 64);

    let records = mock.records().await;
    assert_eq!(records[0]["model"], "gpt4o-prod");
    assert_eq!(records[0]["headers"]["api-key"], "az-test");
    assert_eq!(records[0]["query"], "api-version=2024-10-21");
}

#[tokio::test]
async fn azure_faults() {
    let mock = Mock::fast().await;
    mock.faults(json!([
        {"status": 429, "retry_after": 1, "match_model": "gpt4o-prod"},
        {"stream_error_after_tokens": 1},
    ]))
    .await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let res = mock.post(AZURE_CHAT, AZURE, &body).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "429");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let res = mock.post(AZURE_CHAT, AZURE, &streamed).await;
    let text = res.text().await.unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let err: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
}

// === Bedrock ===

fn converse_request(extra: Value) -> Value {
    let mut body = json!({
        "system": [{"text": "be brief"}],
        "messages": [{"role": "user", "content": [{"text": "hello there mock"}]}],
        "inferenceConfig": {"maxTokens": 100},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn bedrock_tools(choice: Value) -> Value {
    json!({"toolConfig": {
        "tools": [
            {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}},
            {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object"}}}},
        ],
        "toolChoice": choice,
    }})
}

#[tokio::test]
async fn bedrock_front_door_checks() {
    let mock = Mock::fast().await;
    let body = converse_request(json!({}));
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("x-amz-date", "20240101T000000Z")],
            "MissingAuthenticationTokenException",
        ),
        (
            &[
                ("authorization", "Bearer abc"),
                ("x-amz-date", "20240101T000000Z"),
            ],
            "IncompleteSignatureException",
        ),
        (
            &[("authorization", BEDROCK_AUTH)],
            "IncompleteSignatureException",
        ),
    ];
    for (headers, kind) in cases {
        let res = mock.post(BEDROCK_CONVERSE, headers, &body).await;
        assert_eq!(res.status(), 403, "{kind}");
        let errortype = res.headers()["x-amzn-errortype"].to_str().unwrap();
        assert!(errortype.starts_with(&format!("{kind}:")), "{errortype}");
        assert!(res.json::<Value>().await.unwrap()["message"].is_string());
    }
    let res = mock.post("/model/m/invoke", BEDROCK, &json!({})).await;
    assert_eq!(res.status(), 404);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("UnknownOperationException:"));
}

#[tokio::test]
async fn bedrock_converse_shape() {
    let mock = Mock::fast().await;
    let res = mock
        .post(BEDROCK_CONVERSE, BEDROCK, &converse_request(json!({})))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-amzn-requestid"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["output"],
        json!({"message": {"role": "assistant", "content": [{"text": "tok0 tok1 tok2 tok3 "}]}})
    );
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({"inputTokens": 5, "outputTokens": 4, "totalTokens": 9})
    );
    assert!(v["metrics"]["latencyMs"].is_u64());

    let v = mock
        .post_json(
            BEDROCK_CONVERSE,
            BEDROCK,
            &converse_request(json!({"inferenceConfig": {"maxTokens": 1}})),
        )
        .await;
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["output"]["message"]["content"][0]["text"], "tok0 ");

    let res = mock.post(BEDROCK_CONVERSE, BEDROCK, &json!({})).await;
    assert_eq!(res.status(), 400);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ValidationException:"));

    // The signed headers are kept for tests to check; the model id is decoded.
    let records = mock.records().await;
    assert_eq!(records[0]["headers"]["authorization"], BEDROCK_AUTH);
    assert_eq!(records[0]["headers"]["x-amz-date"], "20240101T000000Z");
    assert_eq!(records[0]["model"], BEDROCK_MODEL);
    assert_eq!(records[0]["messages"], 1);
}

#[tokio::test]
async fn bedrock_converse_stream_is_an_event_stream() {
    let mock = Mock::fast().await;
    let res = mock
        .post(BEDROCK_STREAM, BEDROCK, &converse_request(json!({})))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let (bytes, broke) = read_all(res).await;
    assert!(!broke);
    let (messages, end) = event_stream(&bytes);
    assert_eq!(end, Ok(()));
    let types: Vec<&str> = messages
        .iter()
        .map(|m| {
            assert_eq!(m.header_str(":message-type"), Some("event"));
            assert_eq!(m.header_str(":content-type"), Some("application/json"));
            m.header_str(":event-type").unwrap()
        })
        .collect();
    assert_eq!(
        types,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata",
        ]
    );
    assert_eq!(payload(&messages[0])["role"], "assistant");
    let text: String = messages[1..5]
        .iter()
        .map(|m| {
            let p = payload(m);
            assert_eq!(p["contentBlockIndex"], 0);
            assert!(p["p"].is_string(), "padding field");
            p["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert_eq!(payload(&messages[5])["contentBlockIndex"], 0);
    assert_eq!(payload(&messages[6])["stopReason"], "end_turn");
    let metadata = payload(&messages[7]);
    assert_eq!(
        metadata["usage"],
        json!({"inputTokens": 5, "outputTokens": 4, "totalTokens": 9})
    );
    assert!(metadata["metrics"]["latencyMs"].is_u64());
}

#[tokio::test]
async fn bedrock_forced_tool_use_plain_and_streamed() {
    let mock = Mock::fast().await;
    let v = mock
        .post_json(
            BEDROCK_CONVERSE,
            BEDROCK,
            &converse_request(bedrock_tools(json!({"any": {}}))),
        )
        .await;
    assert_eq!(v["stopReason"], "tool_use");
    let tool_use = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(tool_use["name"], "get_weather");
    assert_eq!(tool_use["input"], json!({}));
    assert!(tool_use["toolUseId"]
        .as_str()
        .unwrap()
        .starts_with("tooluse_"));
    assert_eq!(v["usage"]["outputTokens"], 1);

    let v = mock
        .post_json(
            BEDROCK_CONVERSE,
            BEDROCK,
            &converse_request(bedrock_tools(json!({"auto": {}}))),
        )
        .await;
    assert!(v["output"]["message"]["content"][0]["text"].is_string());

    let res = mock
        .post(
            BEDROCK_STREAM,
            BEDROCK,
            &converse_request(bedrock_tools(json!({"tool": {"name": "get_time"}}))),
        )
        .await;
    let (messages, end) = event_stream(&read_all(res).await.0);
    assert_eq!(end, Ok(()));
    let types: Vec<&str> = messages
        .iter()
        .map(|m| m.header_str(":event-type").unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "messageStart",
            "contentBlockStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    let start = payload(&messages[1]);
    assert_eq!(start["start"]["toolUse"]["name"], "get_time");
    assert!(start["start"]["toolUse"]["toolUseId"].is_string());
    let input = payload(&messages[2])["delta"]["toolUse"]["input"].clone();
    assert_eq!(
        serde_json::from_str::<Value>(input.as_str().unwrap()).unwrap(),
        json!({})
    );
    assert_eq!(payload(&messages[4])["stopReason"], "tool_use");
}

#[tokio::test]
async fn bedrock_faults() {
    let mock = Mock::fast().await;
    mock.faults(json!([
        {"status": 429, "retry_after": 2},
        {"status": 500, "path": BEDROCK_CONVERSE.replace("%3A", ":")},
        {"stream_error_after_tokens": 2},
        {"cut_after_tokens": 1},
        {"stream_error_after_tokens": 0},
    ]))
    .await;
    let body = converse_request(json!({}));
    let res = mock.post(BEDROCK_STREAM, BEDROCK, &body).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "2");
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ThrottlingException:"));
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "mock fault: HTTP 429"
    );

    // A rule may name the path decoded; the stream path is not it.
    let res = mock.post(BEDROCK_CONVERSE, BEDROCK, &body).await;
    assert_eq!(res.status(), 500);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("InternalServerException:"));

    let res = mock.post(BEDROCK_STREAM, BEDROCK, &body).await;
    let (messages, end) = event_stream(&read_all(res).await.0);
    assert_eq!(end, Ok(()));
    assert_eq!(messages.len(), 4, "start, two deltas, exception");
    let exception = &messages[3];
    assert_eq!(exception.header_str(":message-type"), Some("exception"));
    assert_eq!(
        exception.header_str(":exception-type"),
        Some("throttlingException")
    );
    assert!(payload(exception)["message"].is_string());

    let res = mock.post(BEDROCK_STREAM, BEDROCK, &body).await;
    let (bytes, broke) = read_all(res).await;
    assert!(broke);
    let (messages, end) = event_stream(&bytes);
    assert_eq!(end, Ok(()), "cut between messages");
    assert_eq!(messages.len(), 2, "start and one delta");

    let res = mock.post(BEDROCK_CONVERSE, BEDROCK, &body).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ThrottlingException:"));
}

// === all dialects ===

#[tokio::test]
async fn a_rule_without_path_catches_every_dialect() {
    let mock = Mock::fast().await;
    mock.faults(json!({"status": 503, "times": 4})).await;
    let statuses = [
        mock.post("/v1/messages", ANTHROPIC, &anthropic_request(json!({})))
            .await
            .status(),
        mock.post(GEMINI_GENERATE, GEMINI, &gemini_request(json!({})))
            .await
            .status(),
        mock.post(AZURE_CHAT, AZURE, &json!({"messages": []}))
            .await
            .status(),
        mock.post(BEDROCK_CONVERSE, BEDROCK, &converse_request(json!({})))
            .await
            .status(),
    ];
    assert_eq!(statuses, [503; 4]);
    let stats: Value = mock
        .client
        .get(mock.url("/__mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["pending_faults"], 0);
    assert_eq!(stats["requests"], 4);

    let bad = mock
        .post("/__mock/faults", &[], &json!({"finish_reason": "nope"}))
        .await;
    assert_eq!(bad.status(), 400);
}
