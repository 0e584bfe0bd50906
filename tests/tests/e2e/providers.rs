//! Every cell of {OpenAI ingress, Anthropic ingress} x {openai, azure_openai, anthropic,
//! gemini, bedrock} x {stream, non-stream} x {text, tool call}, against the mock's
//! faithful copy of each provider's wire format.

use serde_json::{json, Value};
use tollgate_tests::*;

pub const KINDS: [&str; 5] = ["openai", "azure_openai", "anthropic", "gemini", "bedrock"];

/// One provider of each kind, all served by `mock`, with models `m-<kind>`.
pub fn config(mock: &Mock) -> String {
    format!(
        r#"
providers:
  p-openai: {{ kind: openai, endpoints: ["{url}"], api_keys: ["sk-openai"] }}
  p-azure_openai: {{ kind: azure_openai, endpoints: ["{url}"], api_keys: ["az-key"], api_version: "2024-10-21" }}
  p-anthropic: {{ kind: anthropic, endpoints: ["{url}"], api_keys: ["sk-ant"] }}
  p-gemini: {{ kind: gemini, endpoints: ["{url}"], api_keys: ["g-key"] }}
  p-bedrock:
    kind: bedrock
    endpoints: ["{url}"]
    region: us-east-1
    aws: {{ access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY }}
models:
  m-openai: {{ provider: p-openai, model: gpt-4o-mini }}
  m-azure_openai: {{ provider: p-azure_openai, model: my-deployment }}
  m-anthropic: {{ provider: p-anthropic, model: claude-3-5-haiku-latest }}
  m-gemini: {{ provider: p-gemini, model: gemini-2.0-flash }}
  m-bedrock: {{ provider: p-bedrock, model: anthropic.claude-3-haiku-20240307-v1:0 }}
keys:
  - {{ name: test, hash: "{hash}" }}
"#,
        url = mock.url,
        hash = key_hash(TEST_KEY)
    )
}

fn openai_request(model: &str, stream: bool, tool: bool) -> Value {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the weather in Paris?"}
        ],
        "max_tokens": 64
    });
    if tool {
        body["tools"] = json!([{"type": "function", "function": {
            "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
        body["tool_choice"] = json!("required");
    }
    body
}

fn anthropic_request(model: &str, stream: bool, tool: bool) -> Value {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "max_tokens": 64,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]
    });
    if tool {
        body["tools"] = json!([{"name": "get_weather", "description": "Weather of a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
        body["tool_choice"] = json!({"type": "any"});
    }
    body
}

/// Checks an OpenAI-ingress answer; returns a description of what is wrong.
fn check_openai(status: u16, text: &str, stream: bool, tool: bool) -> Result<(), String> {
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    if stream {
        let data = sse_data(text);
        if data.last().map(String::as_str) != Some("[DONE]") {
            return Err(format!("no [DONE]: {text}"));
        }
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).map_err(|e| format!("{e}: {d}")))
            .collect::<Result<_, _>>()?;
        if tool {
            let named = chunks.iter().any(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
            });
            let finish = chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "tool_calls");
            if !(named && finish) {
                return Err(format!("no tool call in stream: {text}"));
            }
        } else if stream_text(&data).trim().is_empty() {
            return Err(format!("no text in stream: {text}"));
        }
        Ok(())
    } else {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
        let choice = &v["choices"][0];
        if v["object"] != "chat.completion" || !v["usage"]["completion_tokens"].is_u64() {
            return Err(format!("not a completion with usage: {text}"));
        }
        if tool {
            if choice["message"]["tool_calls"][0]["function"]["name"] != "get_weather"
                || choice["finish_reason"] != "tool_calls"
            {
                return Err(format!("no tool call: {text}"));
            }
        } else if choice["message"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err(format!("no text: {text}"));
        }
        Ok(())
    }
}

/// Checks an Anthropic-ingress answer.
fn check_anthropic(status: u16, text: &str, stream: bool, tool: bool) -> Result<(), String> {
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    if stream {
        let events: Vec<(String, Value)> = text
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let name = e
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("")
                    .to_owned();
                let data = e
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("null");
                (name, serde_json::from_str(data).unwrap_or(Value::Null))
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        if names.first() != Some(&"message_start") || names.last() != Some(&"message_stop") {
            return Err(format!("bad event sequence {names:?}"));
        }
        if !names.contains(&"message_delta") {
            return Err(format!("no message_delta in {names:?}"));
        }
        if tool {
            let named = events.iter().any(|(n, v)| {
                n == "content_block_start"
                    && v["content_block"]["type"] == "tool_use"
                    && v["content_block"]["name"] == "get_weather"
            });
            if !named {
                return Err(format!("no tool_use block: {text}"));
            }
        } else {
            let text_out: String = events
                .iter()
                .filter(|(n, _)| n == "content_block_delta")
                .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_owned))
                .collect();
            if text_out.trim().is_empty() {
                return Err(format!("no text deltas: {text}"));
            }
        }
        Ok(())
    } else {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
        if v["type"] != "message" || !v["usage"]["output_tokens"].is_u64() {
            return Err(format!("not a message with usage: {text}"));
        }
        if tool {
            let block = v["content"]
                .as_array()
                .and_then(|c| c.iter().find(|b| b["type"] == "tool_use"));
            if block.is_none_or(|b| b["name"] != "get_weather") || v["stop_reason"] != "tool_use" {
                return Err(format!("no tool_use: {text}"));
            }
        } else if v["content"][0]["text"].as_str().is_none_or(str::is_empty) {
            return Err(format!("no text: {text}"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn every_ingress_reaches_every_provider_kind() {
    let mock = Mock::start(&["--tokens", "4", "--token-delay", "1ms"]);
    let gw = Gateway::start(&config(&mock)).await;
    let c = client();
    let mut failures = Vec::new();
    let mut cells = 0;
    for kind in KINDS {
        let model = format!("m-{kind}");
        for stream in [false, true] {
            for tool in [false, true] {
                let resp = c
                    .post(gw.chat_url())
                    .bearer_auth(TEST_KEY)
                    .json(&openai_request(&model, stream, tool))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                if let Err(why) = check_openai(status, &text, stream, tool) {
                    failures.push(format!(
                        "openai ingress -> {kind} stream={stream} tool={tool}: {why}"
                    ));
                }
                let resp = c
                    .post(format!("{}/v1/messages", gw.url))
                    .header("x-api-key", TEST_KEY)
                    .header("anthropic-version", "2023-06-01")
                    .json(&anthropic_request(&model, stream, tool))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                if let Err(why) = check_anthropic(status, &text, stream, tool) {
                    failures.push(format!(
                        "anthropic ingress -> {kind} stream={stream} tool={tool}: {why}"
                    ));
                }
                cells += 2;
            }
        }
    }
    assert_eq!(cells, 40);
    assert!(
        failures.is_empty(),
        "{} of 40 cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn each_provider_receives_its_own_wire_format_and_credentials() {
    let mock = Mock::start(&["--tokens", "2", "--token-delay", "1ms"]);
    let gw = Gateway::start(&config(&mock)).await;
    for kind in KINDS {
        let resp = gw
            .chat(openai_request(&format!("m-{kind}"), false, false))
            .await;
        assert_eq!(resp.status(), 200, "{kind}");
    }
    let seen = mock.requests().await;
    let find = |prefix: &str| {
        seen.iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no request to {prefix}: {seen:?}"))
            .clone()
    };
    let openai = find("/v1/chat/completions");
    assert_eq!(openai["headers"]["authorization"], "Bearer sk-openai");
    assert_eq!(openai["body"]["model"], "gpt-4o-mini");
    let azure = find("/openai/deployments/my-deployment/chat/completions");
    assert_eq!(azure["headers"]["api-key"], "az-key");
    assert!(
        azure["query"]
            .as_str()
            .unwrap_or_default()
            .contains("api-version=2024-10-21"),
        "{azure}"
    );
    let anthropic = find("/v1/messages");
    assert_eq!(anthropic["headers"]["x-api-key"], "sk-ant");
    assert!(anthropic["headers"]["anthropic-version"].is_string());
    assert_eq!(anthropic["body"]["system"], "You are terse.");
    assert!(anthropic["body"]["max_tokens"].is_u64());
    let gemini = find("/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(gemini["headers"]["x-goog-api-key"], "g-key");
    assert!(gemini["body"]["systemInstruction"].is_object(), "{gemini}");
    let bedrock = find("/model/anthropic.claude-3-haiku-20240307-v1");
    let auth = bedrock["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    assert!(bedrock["headers"]["x-amz-date"].is_string());
    for r in &seen {
        assert!(
            !r.to_string().contains(TEST_KEY),
            "the gateway key went upstream: {r}"
        );
    }
}

#[tokio::test]
async fn anthropic_ingress_errors_use_anthropic_schema() {
    let mock = Mock::start(&[]);
    let gw = Gateway::start(&config(&mock)).await;
    let c = client();
    let resp = c
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", "tg-wrong")
        .json(&anthropic_request("m-anthropic", false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let resp = c
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", TEST_KEY)
        .json(&json!({"model": "m-anthropic", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{body}"
    );
}

/// The matrix config plus a fallback route from each kind to the openai provider.
fn fallback_config(mock: &Mock) -> String {
    let mut routes = String::from("routes:\n");
    for kind in KINDS {
        routes.push_str(&format!(
            "  - name: via-{kind}\n    match: {{ model: via-{kind} }}\n    targets: [{{ model: m-{kind} }}]\n    fallback: [m-openai]\n    retry: {{ attempts: 1, backoff: 1ms, backoff_max: 1ms }}\n"
        ));
    }
    config(mock).replace("keys:\n", &format!("{routes}keys:\n"))
}

#[tokio::test]
async fn provider_errors_map_to_the_client_schema_and_the_right_failover() {
    let mock = Mock::start(&["--tokens", "2", "--token-delay", "1ms"]);
    let gw = Gateway::start(&fallback_config(&mock)).await;
    let c = client();

    // A safety block is the client's problem: no failover, a clear content-policy error in
    // the client's own schema.
    mock.faults(
        json!([{"finish_reason": "SAFETY", "times": 2, "match_model": "gemini-2.0-flash"}]),
    )
    .await;
    let resp = gw.chat(openai_request("m-gemini", false, false)).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation", "{body}");
    let resp = c
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", TEST_KEY)
        .json(&anthropic_request("m-gemini", false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    // Overload and rate limits in each provider's own error format fail over.
    for (kind, status) in [
        ("anthropic", 529),
        ("gemini", 429),
        ("bedrock", 429),
        ("azure_openai", 503),
    ] {
        mock.faults(
            json!([{"status": status, "times": 1, "match_model": match kind {
                "anthropic" => "claude-3-5-haiku-latest",
                "gemini" => "gemini-2.0-flash",
                "bedrock" => "anthropic.claude-3-haiku-20240307-v1:0",
                _ => "my-deployment",
            }}]),
        )
        .await;
        let resp = gw
            .chat(openai_request(&format!("via-{kind}"), false, false))
            .await;
        assert_eq!(resp.status(), 200, "{kind} {status} did not fail over");
        assert_eq!(resp.headers()["x-tollgate-model"], "m-openai", "{kind}");
    }

    // A context-length error is not retried on the same model: the fallback answers.
    mock.faults(json!([{"status": 400, "times": 1, "match_model": "claude-3-5-haiku-latest",
        "body": "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: 250000 tokens > 200000 maximum\"}}"}]))
    .await;
    let resp = gw.chat(openai_request("via-anthropic", false, false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "m-openai");

    // A provider's client error in another dialect reaches an Anthropic client in
    // Anthropic's schema.
    mock.faults(json!([{"status": 400, "times": 1, "match_model": "gpt-4o-mini",
        "body": "{\"error\":{\"message\":\"temperature must be at most 2\",\"type\":\"invalid_request_error\",\"param\":\"temperature\",\"code\":null}}"}]))
    .await;
    let resp = c
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", TEST_KEY)
        .json(&anthropic_request("m-openai", false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("temperature"),
        "{body}"
    );
}

#[tokio::test]
async fn embeddings_reach_openai_family_and_gemini() {
    let mock = Mock::start(&[]);
    let config = config(&mock).replace(
        "models:\n",
        "models:\n  e-openai: { provider: p-openai, model: text-embedding-3-small, mode: embeddings }\n  e-azure: { provider: p-azure_openai, model: embed-deployment, mode: embeddings }\n  e-gemini: { provider: p-gemini, model: text-embedding-004, mode: embeddings }\n",
    );
    let gw = Gateway::start(&config).await;
    let mut vectors = Vec::new();
    for model in ["e-openai", "e-azure", "e-gemini"] {
        let resp = client()
            .post(format!("{}/v1/embeddings", gw.url))
            .bearer_auth(TEST_KEY)
            .json(
                &json!({"model": model, "input": ["the cat sat on the mat", "stock prices fell"]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "list", "{model}: {body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 2, "{model}");
        assert_eq!(data[1]["index"], 1, "{model}");
        vectors.push(data[0]["embedding"].as_array().unwrap().len());
    }
    assert!(vectors.iter().all(|n| *n > 0), "{vectors:?}");
    let seen = mock.requests().await;
    assert!(
        seen.iter()
            .any(|r| r["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r["path"] == "/openai/deployments/embed-deployment/embeddings"),
        "{seen:?}"
    );
}
