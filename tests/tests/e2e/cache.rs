//! The response cache end to end: hits and misses, TTL, `Cache-Control`, tenant isolation,
//! hits replayed as streams to both ingress dialects, nothing stored from failures, the
//! semantic cache over the mock's embeddings, a Redis store shared by two gateways, purge,
//! and what hits save in the ledger and metrics.

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::*;

const THIRD_KEY: &str = "tg-test-third-key";

/// The semantic threshold the tests use with the mock's embeddings. They are a hashed bag
/// of words and trigrams: the paraphrase below scores 0.84 against its question and the
/// unrelated prompts below 0.2, but the question about Germany instead of France scores
/// 0.83 too; a real embedding model tells those apart, and suits the default of 0.95.
const MOCK_THRESHOLD: &str = "0.8";

/// Two teams' keys (`core`: TEST_KEY, `guests`: OTHER_KEY and THIRD_KEY's team `core`),
/// one cached route, one semantic route, and `store` as the cache's store block.
fn config(mock: &Mock, store: &str, ttl: &str) -> String {
    format!(
        r#"
providers:
  p: {{ kind: openai, endpoints: ["{url}"], api_keys: ["sk-p"] }}
models:
  chat: {{ provider: p, model: up-chat, price: {{ input: 1.0, output: 2.0 }} }}
  embed: {{ provider: p, model: up-embed, mode: embeddings, price: {{ input: 0.1, output: 0 }} }}
keys:
  - {{ name: test, hash: "{k1}", team: core }}
  - {{ name: other, hash: "{k2}", team: guests }}
  - {{ name: third, hash: "{k3}", team: core }}
cache:
  {store}
  semantic: {{ embedding_model: embed }}
routes:
  - {{ name: cached, match: {{ model: cached }}, targets: [{{ model: chat }}], cache: {{ ttl: {ttl} }} }}
  - {{ name: similar, match: {{ model: similar }}, targets: [{{ model: chat }}], cache: {{ ttl: 1h, semantic: {{ threshold: {threshold} }} }} }}
  - {{ name: private, match: {{ model: private }}, targets: [{{ model: chat }}], cache: {{ enabled: false }} }}
"#,
        url = mock.url,
        k1 = key_hash(TEST_KEY),
        k2 = key_hash(OTHER_KEY),
        k3 = key_hash(THIRD_KEY),
        threshold = MOCK_THRESHOLD,
    )
}

fn question(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]})
}

async fn ask(
    gw: &Gateway,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut request = client().post(gw.chat_url()).bearer_auth(key).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-tollgate-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, resp.text().await.unwrap())
}

fn answer_text(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn exact_hits_misses_ttl_bypass_and_tenants() {
    let mock = Mock::start(&["--tokens", "6"]);
    let gw = Gateway::start(&config(&mock, "store: memory", "2s")).await;
    let upstream = || async { mock.chat_requests().await.len() };
    let q = question("cached", "What is the capital of France?");

    let (status, cache, first) = ask(&gw, TEST_KEY, &q, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    let (status, cache, second) = ask(&gw, TEST_KEY, &q, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(answer_text(&first), answer_text(&second));
    assert_eq!(upstream().await, 1);

    // Another key of the same team shares the entry; another team does not.
    assert_eq!(ask(&gw, THIRD_KEY, &q, &[]).await.1, "hit");
    assert_eq!(ask(&gw, OTHER_KEY, &q, &[]).await.1, "miss");
    assert_eq!(upstream().await, 2);

    // Any change to what shapes the answer is another entry; `user` and `stream` are not.
    let mut warmer = q.clone();
    warmer["temperature"] = json!(1.5);
    assert_eq!(ask(&gw, TEST_KEY, &warmer, &[]).await.1, "miss");
    let mut tagged = q.clone();
    tagged["user"] = json!("someone");
    assert_eq!(ask(&gw, TEST_KEY, &tagged, &[]).await.1, "hit");

    // no-cache skips the lookup (and refreshes the entry); no-store keeps an answer out.
    let before = upstream().await;
    assert_eq!(
        ask(&gw, TEST_KEY, &q, &[("cache-control", "no-cache")])
            .await
            .1,
        "bypass"
    );
    assert_eq!(upstream().await, before + 1);
    let fresh = question("cached", "Never stored");
    assert_eq!(
        ask(&gw, TEST_KEY, &fresh, &[("cache-control", "no-store")])
            .await
            .1,
        "miss"
    );
    assert_eq!(ask(&gw, TEST_KEY, &fresh, &[]).await.1, "miss");

    // A route that opts out is never looked up.
    let private = question("private", "What is the capital of France?");
    assert_eq!(ask(&gw, TEST_KEY, &private, &[]).await.1, "");
    assert_eq!(ask(&gw, TEST_KEY, &private, &[]).await.1, "");

    // Entries expire after the route's TTL.
    let expired = eventually(Duration::from_secs(10), || async {
        ask(&gw, TEST_KEY, &q, &[]).await.1 == "miss"
    })
    .await;
    assert!(expired, "the entry outlived its 2s TTL");
}

#[tokio::test]
async fn a_hit_counts_against_the_request_limits_and_says_so_in_its_headers() {
    let mock = Mock::start(&["--tokens", "6"]);
    let limits = "limits:\n  - { name: key-rpm, scope: key, match: { key: test }, rpm: 100 }\n";
    let gw = Gateway::start(&(config(&mock, "store: memory", "1h") + limits)).await;
    let q = question("cached", "What is the capital of Italy?");
    let mut remaining = Vec::new();
    for want in ["miss", "hit"] {
        let resp = client()
            .post(gw.chat_url())
            .bearer_auth(TEST_KEY)
            .json(&q)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("x-tollgate-cache").as_deref(), Some(want));
        assert_eq!(header("x-ratelimit-limit-requests").as_deref(), Some("100"));
        remaining.push(header("x-ratelimit-remaining-requests").unwrap());
    }
    assert_eq!(remaining, ["99", "98"]);
}

#[tokio::test]
async fn a_hit_replays_as_a_stream_to_both_dialects_and_records_what_it_saved() {
    let mock = Mock::start(&["--tokens", "5"]);
    let gw = Gateway::start(&config(&mock, "store: memory", "1h")).await;
    let q = question("cached", "Tell me a fact");
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "cache-fill")
        .json(&q)
        .send()
        .await
        .unwrap();
    let stored = answer_text(&resp.text().await.unwrap());

    // OpenAI ingress, streamed, with the usage chunk.
    let mut streamed = q.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "cache-hit")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-tollgate-cache"], "hit");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(stream_text(&data), stored);
    assert!(data.iter().any(|d| d.contains("\"usage\":{")));

    // Anthropic ingress: the same conversation is the same entry.
    for stream in [false, true] {
        let resp = client()
            .post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", TEST_KEY)
            .json(
                &json!({"model": "cached", "max_tokens": 64, "stream": stream,
                "messages": [{"role": "user", "content": "Tell me a fact"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-tollgate-cache"], "hit", "stream={stream}");
        let text = resp.text().await.unwrap();
        let got: String = if stream {
            let events: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("event: "))
                .collect();
            assert_eq!(events.first(), Some(&"message_start"));
            assert_eq!(events.last(), Some(&"message_stop"));
            sse_data(&text)
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
                .collect()
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            v["content"][0]["text"].as_str().unwrap().to_owned()
        };
        assert_eq!(got, stored, "stream={stream}");
    }
    assert_eq!(mock.chat_requests().await.len(), 1);

    // The hit's record: no cost, the tokens and cost it saved.
    gw.usage("model").await;
    let rows = ledger_rows(&gw.dir.0.join("usage.db"));
    let (_, fill_in, fill_out, _, fill_cost, _) = rows["cache-fill"].clone();
    let (status, hit_in, hit_out, _, hit_cost, _) = rows["cache-hit"].clone();
    assert_eq!(status, 200);
    assert_eq!((hit_in, hit_out), (fill_in, fill_out));
    assert_eq!(hit_cost.parse::<f64>().unwrap(), 0.0);
    let conn = rusqlite::Connection::open(gw.dir.0.join("usage.db")).unwrap();
    let (cache, record): (String, String) = conn
        .query_row(
            "SELECT cache, record FROM usage_records WHERE request_id = 'cache-hit'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(cache, "hit");
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        record["saved_cost"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        fill_cost.parse::<f64>().unwrap()
    );

    let metrics = gw
        .metrics_when(|m| {
            metric_value(
                m,
                "tollgate_cache_requests_total",
                &["result=\"hit\"", "route=\"cached\""],
            ) == Some(3.0)
        })
        .await;
    let hits = metric_line(
        &metrics,
        "tollgate_cache_requests_total",
        &["result=\"hit\"", "route=\"cached\""],
    );
    assert!(hits.ends_with(" 3"), "{hits}");
    assert!(metrics
        .contains("tollgate_cache_saved_tokens_total{direction=\"output\",route=\"cached\"}"));
    // Three hits of one entry saved three times its cost.
    let saved = metric_value(
        &metrics,
        "tollgate_cache_saved_cost_usd_total",
        &["route=\"cached\""],
    )
    .unwrap();
    let fill_cost = fill_cost.parse::<f64>().unwrap();
    assert!(fill_cost > 0.0);
    assert!(
        (saved - 3.0 * fill_cost).abs() < 1e-9,
        "{saved} vs 3 × {fill_cost}"
    );
}

#[tokio::test]
async fn failed_and_cut_answers_are_never_stored() {
    let mock = Mock::start(&["--tokens", "8", "--token-delay", "2ms"]);
    let gw = Gateway::start(&config(&mock, "store: memory", "1h")).await;
    let q = question("cached", "Fails first");
    mock.faults(json!([{"status": 500, "times": 10}])).await;
    assert_eq!(ask(&gw, TEST_KEY, &q, &[]).await.0, 502);
    client()
        .delete(format!("{}/__mock/faults", mock.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ask(&gw, TEST_KEY, &q, &[]).await.1,
        "miss",
        "a failure was stored"
    );

    let mut streamed = question("cached", "Cut first");
    streamed["stream"] = json!(true);
    mock.faults(json!([{"cut_after_tokens": 3, "times": 1}]))
        .await;
    let (status, cache, body) = ask(&gw, TEST_KEY, &streamed, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert!(!body.contains("[DONE]"), "{body}");
    let (_, cache, body) = ask(&gw, TEST_KEY, &streamed, &[]).await;
    assert_eq!(cache, "miss", "a cut stream was stored");
    assert!(body.contains("[DONE]"));
    // The complete stream was stored.
    assert_eq!(ask(&gw, TEST_KEY, &streamed, &[]).await.1, "hit");
}

#[tokio::test]
async fn similar_questions_hit_the_semantic_cache_and_unrelated_ones_miss() {
    let mock = Mock::start(&["--tokens", "6"]);
    let gw = Gateway::start(&config(&mock, "store: memory", "1h")).await;
    let ask_similar = |text: &str| {
        let body = question("similar", text);
        let gw = &gw;
        async move { ask(gw, TEST_KEY, &body, &[]).await.1 }
    };
    assert_eq!(
        ask_similar("What is the capital city of France?").await,
        "miss"
    );
    // A paraphrase: other words, other order.
    assert_eq!(
        ask_similar("Which city is the capital of France?").await,
        "semantic-hit"
    );
    assert_eq!(
        ask_similar("Write a short poem about ocean waves").await,
        "miss"
    );
    // Another tenant never gets the semantic answer either.
    let body = question("similar", "Which city is the capital of France?");
    assert_eq!(ask(&gw, OTHER_KEY, &body, &[]).await.1, "miss");
    // Nor does the same question under a system prompt, worded either way (each under
    // its own, so neither finds the other).
    for (system, text) in [
        (
            "Answer in French, in one word.",
            "What is the capital city of France?",
        ),
        (
            "Answer in German, in one word.",
            "Which city is the capital of France?",
        ),
    ] {
        let mut body = question("similar", text);
        body["messages"] = json!([
            {"role": "system", "content": system},
            {"role": "user", "content": text}
        ]);
        assert_eq!(ask(&gw, TEST_KEY, &body, &[]).await.1, "miss", "{text}");
    }
    let embeddings = mock
        .requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/v1/embeddings")
        .count();
    assert_eq!(embeddings, 6, "one embedding per lookup");
}

#[tokio::test]
async fn a_redis_store_is_shared_by_two_gateways_and_purged_by_route() {
    let redis = RedisServer::start().await;
    let mock = Mock::start(&["--tokens", "4"]);
    let store = format!("store: redis\n  redis_url: \"{}\"", redis.url);
    let a = Gateway::start(&config(&mock, &store, "1h")).await;
    let b = Gateway::start(&config(&mock, &store, "1h")).await;
    let q = question("cached", "Shared across nodes");
    assert_eq!(ask(&a, TEST_KEY, &q, &[]).await.1, "miss");
    let shared = eventually(Duration::from_secs(5), || async {
        ask(&b, TEST_KEY, &q, &[]).await.1 == "hit"
    })
    .await;
    assert!(
        shared,
        "the second gateway did not see the first one's entry"
    );
    assert_eq!(mock.chat_requests().await.len(), 1);

    let purged: Value = client()
        .post(format!("{}/admin/cache/purge", a.admin_url))
        .json(&json!({"route": "cached"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purged["purged"], 1, "{purged}");
    assert_eq!(ask(&b, TEST_KEY, &q, &[]).await.1, "miss");
    let bad = client()
        .post(format!("{}/admin/cache/purge", a.admin_url))
        .json(&json!({"route": "cached", "tag": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// `ask` that also returns the `x-tollgate-cache-key` header.
async fn ask_keyed(gw: &Gateway, key: &str, body: &Value) -> (String, String, String) {
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (cache, key) = (header("x-tollgate-cache"), header("x-tollgate-cache-key"));
    (cache, key, resp.text().await.unwrap())
}

async fn purge(gw: &Gateway, what: Value) -> u64 {
    let purged: Value = client()
        .post(format!("{}/admin/cache/purge", gw.admin_url))
        .json(&what)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    purged["purged"].as_u64().unwrap()
}

#[tokio::test]
async fn pseudonymized_answers_never_cross_requests_through_the_cache() {
    // The upstream sees only the placeholder, so both questions below share one key; the
    // reply names the placeholder, which each client must get back as its own address.
    let mock = Mock::start(&["--reply", "Noted: we will write to [EMAIL_1] today."]);
    let guarded = "  - { name: pseudo, match: { model: pseudo }, targets: [{ model: chat }], cache: { ttl: 1h }, guardrails: [pii] }
guardrails:
  pii: { kind: pii, entities: [email], actions: { email: { request: pseudonymize, response: mask } } }
";
    let gw = Gateway::start(&(config(&mock, "store: memory", "1h") + guarded)).await;
    let (alice, bob) = ("alice@corp.example", "bob@corp.example");
    let asks = |who: &str, stream: bool| {
        let mut body = question("pseudo", &format!("I am {who}, please confirm my address."));
        body["stream"] = json!(stream);
        body
    };
    let text_of = |body: &str, stream: bool| {
        if stream {
            stream_text(&sse_data(body))
        } else {
            answer_text(body)
        }
    };

    // Filled by a complete answer, hit as a complete answer and as a stream.
    let (cache, key_a, body) = ask_keyed(&gw, TEST_KEY, &asks(alice, false)).await;
    assert_eq!(cache, "miss");
    assert!(text_of(&body, false).contains(alice), "{body}");
    for stream in [false, true] {
        let (cache, key_b, body) = ask_keyed(&gw, THIRD_KEY, &asks(bob, stream)).await;
        assert_eq!(cache, "hit", "stream={stream}");
        assert_eq!(key_b, key_a, "both questions are one entry");
        let text = text_of(&body, stream);
        assert!(!body.contains(alice), "Alice's address reached Bob: {body}");
        assert!(
            text.contains(&format!("write to {bob} today")),
            "stream={stream}: {text}"
        );
    }

    // Filled by a stream, hit by the other key.
    let streamed = |who: &str, stream: bool| {
        let mut body = asks(who, stream);
        body["messages"][0]["content"] = json!(format!("Mail {who} the invoice."));
        body
    };
    let (cache, _, body) = ask_keyed(&gw, THIRD_KEY, &streamed(bob, true)).await;
    assert_eq!(cache, "miss");
    assert!(text_of(&body, true).contains(bob), "{body}");
    for stream in [false, true] {
        let (cache, _, body) = ask_keyed(&gw, TEST_KEY, &streamed(alice, stream)).await;
        assert_eq!(cache, "hit", "stream={stream}");
        assert!(!body.contains(bob), "Bob's address reached Alice: {body}");
        assert!(text_of(&body, stream).contains(alice), "{body}");
    }
    assert_eq!(mock.chat_requests().await.len(), 2);
    for request in mock.requests().await {
        let sent = request["body"].to_string();
        assert!(!sent.contains(alice) && !sent.contains(bob), "{sent}");
    }
}

#[tokio::test]
async fn a_fallback_answer_is_stored_for_its_own_model_only() {
    let a = Mock::start(&["--reply", "primary answer"]);
    let b = Mock::start(&["--reply", "fallback answer"]);
    let extra = r#"
cache: { store: memory }
routes:
  - name: main
    match: { model: chat }
    targets: [{ model: model-a }]
    fallback: [model-b]
    retry: { attempts: 2, backoff: 10ms, backoff_max: 50ms }
    cache: { ttl: 1h }
  - { name: direct-b, match: { model: direct-b }, targets: [{ model: model-b }], cache: { ttl: 1h } }
"#;
    let gw = Gateway::start(&two_mock_config(&a, &b, extra)).await;
    let ask_model = |body: Value| {
        let gw = &gw;
        async move {
            let resp = client()
                .post(gw.chat_url())
                .bearer_auth(TEST_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
            let (cache, model) = (
                header("x-tollgate-cache"),
                resp.headers()
                    .get("x-tollgate-model")
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            (cache, model, answer_text(&resp.text().await.unwrap()))
        }
    };
    let q = question("chat", "Which answer do I get?");

    // The primary fails twice: the fallback answers and its answer is stored as its own.
    a.faults(json!([{"status": 500, "times": 2}])).await;
    let (cache, model, text) = ask_model(q.clone()).await;
    assert_eq!(
        (cache.as_str(), model.as_deref()),
        ("miss", Some("model-b"))
    );
    assert_eq!(text, "fallback answer");

    // The primary is back: the request is not answered with the fallback's entry.
    let (cache, model, text) = ask_model(q.clone()).await;
    assert_eq!(
        (cache.as_str(), model.as_deref()),
        ("miss", Some("model-a"))
    );
    assert_eq!(text, "primary answer");
    let (cache, _, text) = ask_model(q.clone()).await;
    assert_eq!((cache.as_str(), text.as_str()), ("hit", "primary answer"));
    assert_eq!(a.chat_requests().await.len(), 3);
    assert_eq!(b.chat_requests().await.len(), 1);
}

#[tokio::test]
async fn purge_by_key_and_by_tag_remove_only_their_entries() {
    let mock = Mock::start(&["--tokens", "4"]);
    let gw = Gateway::start(&config(&mock, "store: memory", "1h")).await;
    let tagged = |text: &str, project: &str| {
        let mut body = question("cached", text);
        body["metadata"] = json!({ "project": project });
        body
    };
    let (one, two, three) = (
        tagged("First question", "apollo"),
        tagged("Second question", "apollo"),
        tagged("Third question", "gemini"),
    );
    let mut keys = Vec::new();
    for q in [&one, &two, &three] {
        let (cache, key, _) = ask_keyed(&gw, TEST_KEY, q).await;
        assert_eq!(cache, "miss");
        assert_eq!(key.len(), 64, "{key}");
        let (cache, hit_key, _) = ask_keyed(&gw, TEST_KEY, q).await;
        assert_eq!((cache.as_str(), hit_key.as_str()), ("hit", key.as_str()));
        keys.push(key);
    }

    // By key: that entry only.
    assert_eq!(purge(&gw, json!({ "key": keys[0] })).await, 1);
    assert_eq!(purge(&gw, json!({ "key": keys[0] })).await, 0);
    assert_eq!(ask_keyed(&gw, TEST_KEY, &one).await.0, "miss");
    assert_eq!(ask_keyed(&gw, TEST_KEY, &two).await.0, "hit");

    // By tag: every entry of that tag (`one` is stored again by now), none of another.
    assert_eq!(purge(&gw, json!({ "tag": "project=apollo" })).await, 2);
    assert_eq!(ask_keyed(&gw, TEST_KEY, &two).await.0, "miss");
    assert_eq!(ask_keyed(&gw, TEST_KEY, &three).await.0, "hit");

    let bad = client()
        .post(format!("{}/admin/cache/purge", gw.admin_url))
        .json(&json!({ "key": "not-hex" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
