//! Metering and the usage ledger, end to end: what each provider reported is what the
//! ledger holds, priced exactly; cut streams are estimated; a SIGKILL loses no record of
//! an answer the client saw complete.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::*;

use crate::providers;

/// The provider matrix config with prices: $1 per 1M input tokens, $2 per 1M output.
fn priced_config(mock: &Mock) -> String {
    providers::config(mock)
        .lines()
        .map(|line| match line.strip_suffix(" }") {
            Some(model) if line.starts_with("  m-") => {
                format!("{model}, price: {{ input: 1.0, output: 2.0 }} }}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

fn cost_of(input: u64, output: u64) -> f64 {
    (input as f64 * 1.0 + output as f64 * 2.0) / 1_000_000.0
}

#[tokio::test]
async fn the_ledger_holds_what_each_provider_reported_priced_exactly() {
    let mock = Mock::start(&["--tokens", "7", "--token-delay", "1ms"]);
    let config = priced_config(&mock);
    let gw = Gateway::start(&config).await;
    let c = client();
    let mut expected = Vec::new();
    for kind in providers::KINDS {
        for stream in [false, true] {
            let id = format!("ledger-{kind}-{stream}");
            let mut body = chat_body(&format!("m-{kind}"));
            body["stream"] = json!(stream);
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            let resp = c
                .post(gw.chat_url())
                .bearer_auth(TEST_KEY)
                .header("x-request-id", &id)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{id}");
            let header_cost = resp
                .headers()
                .get("x-tollgate-cost")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = resp.text().await.unwrap();
            let usage = if stream {
                let data = sse_data(&text);
                data.iter()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .find(|v| v["usage"].is_object())
                    .map(|v| v["usage"].clone())
                    .unwrap_or_else(|| panic!("{id}: no usage chunk in {text}"))
            } else {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(header_cost.is_some(), "{id}: no x-tollgate-cost");
                v["usage"].clone()
            };
            let input = usage["prompt_tokens"].as_u64().unwrap();
            let output = usage["completion_tokens"].as_u64().unwrap();
            assert_eq!(output, 7, "{id}: {usage}");
            if let Some(cost) = header_cost {
                let cost: f64 = cost.parse().unwrap();
                assert!(
                    (cost - cost_of(input, output)).abs() < 1e-12,
                    "{id}: header cost {cost}"
                );
            }
            expected.push((id, input, output));
        }
    }
    let totals = gw.usage("model").await;
    assert_eq!(totals["rows"].as_array().unwrap().len(), 5, "{totals}");
    let rows = ledger_rows(&gw.dir.0.join("usage.db"));
    for (id, input, output) in expected {
        let (status, in_tok, out_tok, estimated, cost, error) = rows
            .get(&id)
            .unwrap_or_else(|| panic!("no record for {id}: {rows:?}"))
            .clone();
        assert_eq!(
            (status, in_tok, out_tok, estimated, error),
            (200, input, output, false, None),
            "{id}"
        );
        let cost: f64 = cost.parse().unwrap();
        assert!(
            (cost - cost_of(input, output)).abs() < 1e-12,
            "{id}: ledger cost {cost}"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_is_recorded_with_estimated_usage() {
    let mock = Mock::start(&["--tokens", "10", "--token-delay", "1ms"]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    mock.faults(json!([{"cut_after_tokens": 4}])).await;
    let mut body = chat_body("m-anthropic");
    body["stream"] = json!(true);
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "cut-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    gw.usage("team").await;
    let rows = ledger_rows(&gw.dir.0.join("usage.db"));
    let (_, input, output, estimated, _, error) = rows["cut-1"].clone();
    assert!(estimated, "a cut stream's usage is an estimate");
    assert!(input > 0);
    // The mock's tokens are words like "tok0 "; four of them reached the client.
    assert!((4..=12).contains(&output), "output estimate {output}");
    assert_eq!(error.as_deref(), Some("stream_broken"));
}

#[tokio::test]
async fn usage_is_totalled_by_team_on_the_admin_api_and_the_cli() {
    let mock = Mock::start(&["--tokens", "3", "--token-delay", "1ms"]);
    let gw =
        Gateway::start(&priced_config(&mock).replace("name: test,", "name: test, team: search,"))
            .await;
    for _ in 0..3 {
        assert_eq!(gw.chat(chat_body("m-openai")).await.status(), 200);
    }
    let totals = gw.usage("team").await;
    let row = &totals["rows"][0];
    assert_eq!(row["group"], "search", "{totals}");
    assert_eq!(row["requests"], 3, "{totals}");
    let bad = client()
        .get(format!("{}/admin/usage?by=colour", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let printed = usage_cli(&gw, "team");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("search") && l.contains(" 3 ")),
        "{printed}"
    );
}

#[tokio::test]
async fn sigkill_loses_no_record_of_a_completed_answer_and_duplicates_none() {
    let mock = Mock::start(&["--tokens", "5", "--token-delay", "2ms"]);
    let dir = TempDir::new();
    let config = format!(
        "{}ledger:\n  path: {}\n  spool: {}\n",
        priced_config(&mock),
        dir.0.join("usage.db").display(),
        dir.0.join("spool").display()
    );
    let gw = Gateway::start(&config).await;
    let url = gw.chat_url();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..120 {
        let (url, done) = (url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("kill-{i}");
            let mut body = chat_body(if i % 2 == 0 {
                "m-openai"
            } else {
                "m-anthropic"
            });
            body["stream"] = json!(i % 3 == 0);
            // Spread the requests so the kill lands in the middle of the load.
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            let resp = client()
                .post(&url)
                .bearer_auth(TEST_KEY)
                .header("x-request-id", &id)
                .json(&body)
                .send()
                .await
                .ok()?;
            if resp.status() != 200 {
                return None;
            }
            let text = resp.text().await.ok()?;
            let complete = if i % 3 == 0 {
                text.ends_with("data: [DONE]\n\n")
            } else {
                text.contains("\"usage\"")
            };
            done.fetch_add(usize::from(complete), Ordering::Relaxed);
            complete.then_some(id)
        }));
    }
    // The kill lands once some answers are complete, however fast the machine is.
    let begun = eventually(Duration::from_secs(30), || {
        let done = done.clone();
        async move { done.load(Ordering::Relaxed) >= 10 }
    })
    .await;
    assert!(begun, "no answer completed");
    drop(gw); // SIGKILL
    let mut completed = Vec::new();
    for task in tasks {
        if let Some(id) = task.await.unwrap() {
            completed.push(id);
        }
    }
    assert!(
        !completed.is_empty() && completed.len() < 120,
        "the kill did not land mid-load: {}",
        completed.len()
    );

    // Restart on the same spool and ledger: the spool replays into the sink. Replay and
    // shipping take longer on a loaded machine than one /admin/usage sync waits, so wait
    // for the records themselves (bounded).
    let gw = Gateway::start(&config).await;
    let db = dir.0.join("usage.db");
    eventually(Duration::from_secs(60), || async {
        gw.usage("team").await;
        let rows = ledger_rows(&db);
        completed.iter().all(|id| rows.contains_key(id))
    })
    .await;
    let rows = ledger_rows(&db);
    let missing: Vec<&String> = completed
        .iter()
        .filter(|id| !rows.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} completed answers have no record: {missing:?}",
        missing.len(),
        completed.len()
    );
    // Each request id was sent once: a record replayed under a new key would show here.
    let duplicated = duplicated_requests(&db);
    assert!(duplicated.is_empty(), "recorded twice: {duplicated:?}");
    let total: usize = record_ids_by_request(&db).values().map(Vec::len).sum();
    eprintln!(
        "sigkill: {} answers completed before the kill, all {} recorded once ({} records in all)",
        completed.len(),
        completed.len(),
        total
    );
}

/// The access log lines (target `access`) written so far, parsed.
fn access_lines(gw: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(gw.log_path())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

/// Waits until the access log has a line for every one of `ids`, and returns the lines.
async fn access_lines_for(gw: &Gateway, ids: &[&str]) -> Vec<Value> {
    let complete = eventually(Duration::from_secs(10), || async {
        let lines = access_lines(gw);
        ids.iter()
            .all(|id| lines.iter().any(|l| l["fields"]["request_id"] == *id))
    })
    .await;
    assert!(complete, "no access log line for some of {ids:?}");
    access_lines(gw)
}

/// A route that retries, a cached one, and the provider matrix, priced.
fn logged_config(mock: &Mock) -> String {
    format!(
        "{}cache:\n  store: memory\nroutes:\n  \
         - {{ name: retried, match: {{ model: retried }}, targets: [{{ model: m-openai }}], \
         retry: {{ attempts: 2, backoff: 10ms, backoff_max: 50ms }} }}\n  \
         - {{ name: cached, match: {{ model: cached }}, targets: [{{ model: m-openai }}], \
         cache: {{ ttl: 1h }} }}\n",
        priced_config(mock)
    )
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_with_the_ledger_fields() {
    let mock = Mock::start(&["--tokens", "3", "--token-delay", "1ms"]);
    let gw = Gateway::start_logging(&logged_config(&mock)).await;
    let send = |id: &'static str, body: Value| {
        let url = gw.chat_url();
        async move {
            let resp = client()
                .post(&url)
                .bearer_auth(TEST_KEY)
                .header("x-request-id", id)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{id}");
            resp.text().await.unwrap();
        }
    };
    let mut tagged = chat_body("m-gemini");
    tagged["metadata"] = json!({"feature": "search", "tenant": "acme"});
    send("logged-1", tagged).await;
    // The first try fails with a 500, the retry answers.
    mock.faults(json!([{"status": 500, "times": 1}])).await;
    send("logged-retried", chat_body("retried")).await;
    send("logged-miss", chat_body("cached")).await;
    send("logged-hit", chat_body("cached")).await;
    let ids = ["logged-1", "logged-retried", "logged-miss", "logged-hit"];
    // A request after the others: once its line is there, theirs are complete.
    send("logged-last", chat_body("m-openai")).await;
    let lines = access_lines_for(&gw, &["logged-last"]).await;
    for id in ids {
        let count = lines
            .iter()
            .filter(|l| l["fields"]["request_id"] == id)
            .count();
        assert_eq!(count, 1, "{count} access log lines for {id}");
    }
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["request_id"] == id)
            .map(|l| l["fields"].clone())
            .unwrap()
    };

    let fields = line("logged-1");
    let text = fields.to_string();
    for (field, want) in [
        ("status", json!(200)),
        ("key", json!("test")),
        ("requested_model", json!("m-gemini")),
        ("model", json!("m-gemini")),
        ("provider", json!("p-gemini")),
        ("output_tokens", json!(3)),
        ("estimated", json!(false)),
        ("cache", json!("off")),
        ("attempts", json!(1)),
    ] {
        assert_eq!(fields[field], want, "{field} in {text}");
    }
    assert!(
        fields["cost_usd"]
            .as_str()
            .is_some_and(|c| c.parse::<f64>().unwrap() > 0.0),
        "{text}"
    );
    // Tags are a JSON object in a string, as the log line cannot nest.
    let tags: Value = serde_json::from_str(fields["tags"].as_str().unwrap()).unwrap();
    assert_eq!(
        tags,
        json!({"feature": "search", "tenant": "acme"}),
        "{text}"
    );
    let record_id = fields["record_id"].as_str().unwrap();
    assert!(record_id.starts_with("req_"), "{text}");
    let history = fields["attempt_history"].as_str().unwrap();
    assert!(
        history.starts_with("p-gemini/m-gemini:200:ok:") && history.ends_with("ms"),
        "{history}"
    );
    assert!(
        fields.get("prompt").is_none(),
        "prompt text by default: {text}"
    );
    assert!(fields.get("saved_cost_usd").is_none(), "{text}");

    // Every attempt, in order, with its status, outcome and duration.
    let fields = line("logged-retried");
    let history = fields["attempt_history"].as_str().unwrap();
    let attempts: Vec<&str> = history.split(',').collect();
    assert_eq!(attempts.len(), 2, "{history}");
    assert!(
        attempts[0].starts_with("p-openai/m-openai:500:5xx:"),
        "{history}"
    );
    assert!(
        attempts[1].starts_with("p-openai/m-openai:200:ok:"),
        "{history}"
    );
    assert!(attempts.iter().all(|a| a.ends_with("ms")), "{history}");
    assert_eq!(fields["attempts"], 2, "{fields}");

    // A cache hit: its status and what it saved.
    assert_eq!(line("logged-miss")["cache"], "miss");
    let hit = line("logged-hit");
    assert_eq!(hit["cache"], "hit", "{hit}");
    assert_eq!(hit["cost_usd"], "0", "{hit}");
    assert!(
        hit["saved_cost_usd"]
            .as_str()
            .is_some_and(|c| c.parse::<f64>().unwrap() > 0.0),
        "{hit}"
    );

    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    assert!(
        !log.contains("Say hello"),
        "prompt text in the log without access_log.prompt"
    );
    assert!(
        !log.contains(TEST_KEY) && !log.contains("g-key") && !log.contains("sk-openai"),
        "a secret in the log"
    );
}

#[tokio::test]
async fn access_log_prompt_holds_only_the_redacted_text() {
    let mock = Mock::start(&["--tokens", "3", "--token-delay", "1ms"]);
    let config = format!(
        "{}guardrails:\n  pii: {{ kind: pii, entities: [email, phone], action: mask }}\n\
         routes:\n  - {{ name: guarded, match: {{ model: guarded }}, \
         targets: [{{ model: m-openai }}], guardrails: [pii] }}\n\
         access_log:\n  prompt: true\n",
        priced_config(&mock)
    );
    let gw = Gateway::start_logging(&config).await;
    let secret_email = "jane.doe@example.com";
    let body = json!({"model": "guarded", "messages": [
        {"role": "user", "content": format!("Write to {secret_email} or call +1 415 555 0132 about the invoice")}
    ]});
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "prompt-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let lines = access_lines_for(&gw, &["prompt-1"]).await;
    let fields = &lines
        .iter()
        .find(|l| l["fields"]["request_id"] == "prompt-1")
        .unwrap()["fields"];
    let prompt = fields["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("Write to [EMAIL]") && prompt.contains("about the invoice"),
        "{prompt}"
    );
    assert!(!prompt.contains("555"), "{prompt}");
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    assert!(
        !log.contains(secret_email),
        "the unredacted address is in the log"
    );
    assert!(
        !log.contains("555 0132"),
        "the unredacted phone is in the log"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_a_record_with_its_tokens() {
    let mock = Mock::start(&["--tokens", "400", "--token-delay", "5ms"]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    let mut body = chat_body("m-openai");
    body["stream"] = json!(true);
    let mut resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "gone-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    // Read a few chunks, then hang up.
    for _ in 0..3 {
        resp.chunk().await.unwrap();
    }
    drop(resp);
    let recorded = eventually(Duration::from_secs(10), || async {
        gw.usage("team").await;
        ledger_rows(&gw.dir.0.join("usage.db")).contains_key("gone-1")
    })
    .await;
    assert!(recorded, "no record for a client that left");
    let (_, input, output, estimated, cost, error) =
        ledger_rows(&gw.dir.0.join("usage.db"))["gone-1"].clone();
    assert_eq!(error.as_deref(), Some("client_gone"));
    assert!(estimated);
    assert!(
        input > 0 && output > 0 && output < 400,
        "input {input}, output {output}"
    );
    assert!(cost.parse::<f64>().unwrap() > 0.0);
}

#[tokio::test]
async fn a_reused_request_id_gets_a_record_per_request() {
    let mock = Mock::start(&["--tokens", "3", "--token-delay", "1ms"]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    for stream in [false, true, false] {
        let mut body = chat_body("m-openai");
        body["stream"] = json!(stream);
        let resp = client()
            .post(gw.chat_url())
            .bearer_auth(TEST_KEY)
            .header("x-request-id", "sdk-retry-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The client's id is still echoed…
        assert_eq!(resp.headers()["x-request-id"], "sdk-retry-1");
        resp.text().await.unwrap();
    }
    // … and forwarded upstream.
    let forwarded = mock.chat_requests().await;
    assert_eq!(forwarded.len(), 3);
    assert!(
        forwarded
            .iter()
            .all(|r| r.to_string().contains("sdk-retry-1")),
        "{forwarded:?}"
    );
    gw.usage("team").await;
    let by_request = record_ids_by_request(&gw.dir.0.join("usage.db"));
    let records = &by_request["sdk-retry-1"];
    assert_eq!(records.len(), 3, "{by_request:?}");
    let distinct: std::collections::HashSet<_> = records.iter().collect();
    assert_eq!(distinct.len(), 3, "{records:?}");
    assert!(records.iter().all(|r| r.starts_with("req_")), "{records:?}");
    // Without an id from the client, its request id is the record id.
    assert_eq!(gw.chat(chat_body("m-openai")).await.status(), 200);
    gw.usage("team").await;
    let by_request = record_ids_by_request(&gw.dir.0.join("usage.db"));
    assert!(
        by_request
            .iter()
            .any(|(request, records)| records.as_slice() == std::slice::from_ref(request)),
        "{by_request:?}"
    );
}

/// Tokens of one record, by request id: (input, output, cached input, reasoning,
/// estimated, cost).
fn tokens_of(db: &std::path::Path, request_id: &str) -> (u64, u64, u64, u64, bool, String) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, estimated, \
         cost FROM usage_records WHERE request_id = ?1",
        [request_id],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )
    .unwrap_or_else(|err| panic!("no record for {request_id}: {err}"))
}

const ESTIMATED_PROMPT: &str = "Summarise the quarterly report for the finance team: revenue \
    grew in every region, costs of the model providers doubled since spring, and the \
    platform group asks whether a gateway that meters every token would let each team see \
    what its features cost before the budget review in December.";

const ESTIMATED_REPLY: &str = "Revenue grew everywhere while provider costs doubled. A \
    metering gateway would show each team the cost of its features per model and per day, \
    which is what the budget review needs; it also flags counts it had to estimate itself.";

fn within_two_percent(got: u64, want: u64) -> bool {
    got.abs_diff(want) as f64 <= want as f64 * 0.02
}

#[tokio::test]
async fn without_provider_usage_the_ledger_holds_tiktoken_estimates() {
    let mock = Mock::start(&[
        "--no-usage",
        "--reply",
        ESTIMATED_REPLY,
        "--token-delay",
        "1ms",
    ]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    let want_input = tollgate_metering::estimate_tokens(ESTIMATED_PROMPT);
    let want_output = tollgate_metering::estimate_tokens(ESTIMATED_REPLY);
    let mut ids = Vec::new();
    for kind in providers::KINDS {
        for stream in [false, true] {
            let id = format!("estimated-{kind}-{stream}");
            let body = json!({
                "model": format!("m-{kind}"),
                "stream": stream,
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": ESTIMATED_PROMPT}],
            });
            let resp = client()
                .post(gw.chat_url())
                .bearer_auth(TEST_KEY)
                .header("x-request-id", &id)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{id}");
            let text = resp.text().await.unwrap();
            let answer = if stream {
                stream_text(&sse_data(&text))
            } else {
                let v: Value = serde_json::from_str(&text).unwrap();
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(answer.trim_end(), ESTIMATED_REPLY, "{id}");
            ids.push(id);
        }
    }
    gw.usage("team").await;
    let db = gw.dir.0.join("usage.db");
    for id in ids {
        let (input, output, _, _, estimated, cost) = tokens_of(&db, &id);
        assert!(estimated, "{id}: not flagged estimated");
        assert!(
            within_two_percent(input, want_input),
            "{id}: input {input}, tiktoken {want_input}"
        );
        assert!(
            within_two_percent(output, want_output),
            "{id}: output {output}, tiktoken {want_output}"
        );
        let cost: f64 = cost.parse().unwrap();
        assert!(
            (cost - cost_of(input, output)).abs() < 1e-12,
            "{id}: {cost}"
        );
    }
}

#[tokio::test]
async fn a_stream_without_include_usage_is_metered_and_gets_no_usage_chunk() {
    let mock = Mock::start(&["--tokens", "9", "--token-delay", "1ms"]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    // What the provider reports for this request, asked directly.
    let mut direct = chat_body("gpt-4o-mini");
    direct["stream"] = json!(true);
    direct["stream_options"] = json!({"include_usage": true});
    let text = client()
        .post(format!("{}/v1/chat/completions", mock.url))
        .bearer_auth("sk-openai")
        .json(&direct)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reported = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .unwrap();

    let mut body = chat_body("m-openai");
    body["stream"] = json!(true);
    let resp = client()
        .post(gw.chat_url())
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "no-include-usage")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect();
    assert!(
        chunks.iter().all(|c| !c["usage"].is_object()),
        "a usage chunk reached a client that did not ask: {text}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "a chunk without choices reached the client: {text}"
    );
    // The gateway asked for usage upstream all the same.
    let upstream = mock.chat_requests().await;
    assert_eq!(upstream.len(), 2);
    assert!(
        upstream[1].to_string().contains("include_usage"),
        "{}",
        upstream[1]
    );

    gw.usage("team").await;
    let (input, output, cached, reasoning, estimated, cost) =
        tokens_of(&gw.dir.0.join("usage.db"), "no-include-usage");
    assert_eq!(
        (input, output, cached, reasoning, estimated),
        (
            reported["prompt_tokens"].as_u64().unwrap(),
            reported["completion_tokens"].as_u64().unwrap(),
            0,
            0,
            false
        ),
        "provider reported {reported}"
    );
    assert_eq!(output, 9);
    let cost: f64 = cost.parse().unwrap();
    assert!((cost - cost_of(input, output)).abs() < 1e-12);
}

#[tokio::test]
async fn cached_input_and_reasoning_tokens_reach_the_ledger() {
    let mock = Mock::start(&[
        "--tokens",
        "6",
        "--token-delay",
        "1ms",
        "--cached-tokens",
        "4",
        "--reasoning-tokens",
        "5",
    ]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    // Ten words: the mock counts a prompt token per word.
    let prompt = "one two three four five six seven eight nine ten";
    let mut ids = Vec::new();
    for kind in providers::KINDS {
        for stream in [false, true] {
            let id = format!("detail-{kind}-{stream}");
            let body = json!({
                "model": format!("m-{kind}"),
                "stream": stream,
                "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                "max_tokens": 100,
                "messages": [{"role": "user", "content": prompt}],
            });
            let resp = client()
                .post(gw.chat_url())
                .bearer_auth(TEST_KEY)
                .header("x-request-id", &id)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{id}");
            resp.text().await.unwrap();
            ids.push((kind, id));
        }
    }
    gw.usage("team").await;
    let db = gw.dir.0.join("usage.db");
    for (kind, id) in ids {
        let (input, output, cached, reasoning, estimated, _) = tokens_of(&db, &id);
        // Input counts hold the cached tokens and output counts the reasoning in every
        // dialect; only OpenAI's and Gemini's report reasoning on its own.
        let own_reasoning = matches!(kind, "openai" | "azure_openai" | "gemini");
        assert_eq!(
            (input, cached, output, reasoning, estimated),
            (10, 4, 11, if own_reasoning { 5 } else { 0 }, false),
            "{id}"
        );
    }
}

#[tokio::test]
async fn with_estimates_off_an_answer_without_usage_is_recorded_as_unknown() {
    let mock = Mock::start(&["--no-usage", "--tokens", "5", "--token-delay", "1ms"]);
    let config = format!("{}metering:\n  estimate: false\n", priced_config(&mock));
    let gw = Gateway::start(&config).await;
    for stream in [false, true] {
        let id = format!("unknown-{stream}");
        let mut body = chat_body("m-openai");
        body["stream"] = json!(stream);
        let resp = client()
            .post(gw.chat_url())
            .bearer_auth(TEST_KEY)
            .header("x-request-id", &id)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{id}");
        resp.text().await.unwrap();
    }
    gw.usage("team").await;
    let db = gw.dir.0.join("usage.db");
    for id in ["unknown-false", "unknown-true"] {
        let (input, output, _, _, estimated, cost) = tokens_of(&db, id);
        assert_eq!((input, output, estimated), (0, 0, true), "{id}");
        assert_eq!(cost, "0", "{id}");
    }
}

#[tokio::test]
async fn models_without_a_price_are_warned_about_at_start_and_on_reload() {
    let mock = Mock::start(&["--tokens", "3"]);
    // Every model priced but m-bedrock.
    let config = priced_config(&mock).replace(
        "m-bedrock: { provider: p-bedrock, model: anthropic.claude-3-haiku-20240307-v1:0, price: { input: 1.0, output: 2.0 } }",
        "m-bedrock: { provider: p-bedrock, model: anthropic.claude-3-haiku-20240307-v1:0 }",
    );
    assert!(!config.contains("v1:0, price"), "{config}");
    let gw = Gateway::start_logging(&config).await;
    let warnings = |gw: &Gateway| {
        std::fs::read_to_string(gw.log_path())
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["level"] == "WARN" && v["fields"]["message"].to_string().contains("price")
            })
            .map(|v| v["fields"]["model"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(warnings(&gw), ["m-bedrock"]);
    let resp = client()
        .post(format!("{}/admin/reload", gw.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let warned_again = eventually(Duration::from_secs(10), || async {
        warnings(&gw).len() == 2
    })
    .await;
    assert!(warned_again, "{:?}", warnings(&gw));
    assert_eq!(warnings(&gw), ["m-bedrock", "m-bedrock"]);
}

#[tokio::test]
async fn usage_is_totalled_by_tag_value_on_the_admin_api_and_the_cli() {
    let mock = Mock::start(&["--tokens", "3", "--token-delay", "1ms"]);
    let gw = Gateway::start(&priced_config(&mock)).await;
    for feature in [Some("search"), Some("search"), Some("chat"), None] {
        let mut body = chat_body("m-openai");
        if let Some(feature) = feature {
            body["metadata"] = json!({ "feature": feature });
        }
        assert_eq!(gw.chat(body).await.status(), 200);
    }
    let totals = gw.usage("tag:feature").await;
    assert_eq!(totals["by"], "tag:feature", "{totals}");
    assert_eq!(
        gw.usage("tag%3Afeature").await,
        totals,
        "a percent-encoded query"
    );
    let rows: Vec<(Value, u64)> = totals["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["group"].clone(), r["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [(Value::Null, 1), (json!("chat"), 1), (json!("search"), 2)],
        "{totals}"
    );
    let search = &totals["rows"][2];
    let cost: f64 = search["cost"].as_str().unwrap().parse().unwrap();
    let (input, output) = (
        search["input_tokens"].as_u64().unwrap(),
        search["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(output, 6, "{totals}");
    assert!((cost - cost_of(input, output)).abs() < 1e-12, "{totals}");

    let printed = usage_cli(&gw, "tag:feature");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("search") && l.contains(" 2 ")),
        "{printed}"
    );
}

/// What `tollgate usage --by <by>` prints for the gateway's config.
fn usage_cli(gw: &Gateway, by: &str) -> String {
    let out = std::process::Command::new(bin_dir().join("tollgate"))
        .args(["usage", "--by", by, "-c"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
