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

    let out = std::process::Command::new(bin_dir().join("tollgate"))
        .args(["usage", "--by", "team", "-c"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
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
    let conn = rusqlite::Connection::open(dir.0.join("usage.db")).unwrap();
    let (total, distinct): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage_records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(total, distinct, "duplicated records");
    eprintln!(
        "sigkill: {} answers completed before the kill, all {} recorded once ({} records in all)",
        completed.len(),
        completed.len(),
        total
    );
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_with_the_ledger_fields() {
    let mock = Mock::start(&["--tokens", "3", "--token-delay", "1ms"]);
    let gw = Gateway::start_logging(&priced_config(&mock)).await;
    let url = gw.chat_url();
    let resp = client()
        .post(&url)
        .bearer_auth(TEST_KEY)
        .header("x-request-id", "logged-1")
        .json(&chat_body("m-gemini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = {
        let mut found = None;
        for _ in 0..100 {
            let text = std::fs::read_to_string(gw.log_path()).unwrap();
            found = text
                .lines()
                .find(|l| l.contains("\"logged-1\""))
                .map(str::to_owned);
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        found.expect("no access log line")
    };
    let entry: Value = serde_json::from_str(&line).unwrap();
    let fields = &entry["fields"];
    assert_eq!(entry["target"], "access", "{line}");
    for (field, want) in [
        ("status", json!(200)),
        ("key", json!("test")),
        ("requested_model", json!("m-gemini")),
        ("model", json!("m-gemini")),
        ("provider", json!("p-gemini")),
        ("output_tokens", json!(3)),
        ("estimated", json!(false)),
    ] {
        assert_eq!(fields[field], want, "{field} in {line}");
    }
    assert!(
        fields["cost_usd"]
            .as_str()
            .is_some_and(|c| c.parse::<f64>().unwrap() > 0.0),
        "{line}"
    );
    assert!(
        !line.contains("Say hello"),
        "prompt text in the access log: {line}"
    );
    assert!(
        !line.contains(TEST_KEY) && !line.contains("g-key"),
        "a secret in the access log: {line}"
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
