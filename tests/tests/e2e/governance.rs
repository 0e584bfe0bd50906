//! Governance end to end: rate limits of every kind with OpenAI's headers, queueing and
//! downgrades, budgets (key, team, user, tag) that block and survive a restart, the kill
//! switch, managed keys revoked on every node and capped in requests across restarts, the
//! admin key and the audit trail, counters kept across reloads, and limits shared through
//! a real Redis, also while it is stopped and restarted under load.

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::*;

/// One provider; `chat` and `cheap` models at $1000 per 1M tokens (a tenth of a cent per
/// token, so a few requests spend a budget); `extra` adds limits, budgets and the rest.
fn config(mock: &Mock, extra: &str) -> String {
    format!(
        r#"
providers:
  p: {{ kind: openai, endpoints: ["{url}"], api_keys: ["sk-p"] }}
models:
  chat: {{ provider: p, model: up-chat, price: {{ input: 1000, output: 1000 }} }}
  cheap: {{ provider: p, model: up-cheap, price: {{ input: 1, output: 1 }} }}
keys:
  - {{ name: test, hash: "{k1}", team: core }}
  - {{ name: other, hash: "{k2}", team: guests }}
{extra}
"#,
        url = mock.url,
        k1 = key_hash(TEST_KEY),
        k2 = key_hash(OTHER_KEY),
    )
}

fn small(model: &str) -> Value {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "Say hello"}]})
}

async fn send(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.chat_url())
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn request_limits_answer_with_openai_rate_headers() {
    let mock = Mock::start(&["--tokens", "3"]);
    let gw = Gateway::start(&config(
        &mock,
        "limits:\n  - { name: key-rpm, scope: key, match: { key: test }, rpm: 3 }\n",
    ))
    .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = send(&gw, TEST_KEY, &small("chat")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-ratelimit-limit-requests").as_deref(),
            Some("3")
        );
        remaining.push(header(&resp, "x-ratelimit-remaining-requests").unwrap());
        assert!(header(&resp, "x-ratelimit-reset-requests").is_some());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let resp = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    // Another key is not limited by this one's limit.
    assert_eq!(send(&gw, OTHER_KEY, &small("chat")).await.status(), 200);
}

#[tokio::test]
async fn token_limits_admit_on_the_estimate() {
    let mock = Mock::start(&["--tokens", "3"]);
    let gw = Gateway::start(&config(
        &mock,
        "limits:\n  - { name: team-tpm, scope: team, tpm: 2000 }\n",
    ))
    .await;
    let resp = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-ratelimit-limit-tokens").as_deref(),
        Some("2000")
    );
    // A prompt of about 3,000 tokens cannot fit a 2,000-token minute.
    let mut big = small("chat");
    big["messages"][0]["content"] = json!("lorem ipsum dolor ".repeat(1000));
    let resp = send(&gw, TEST_KEY, &big).await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "x-ratelimit-limit-tokens").is_some());
}

#[tokio::test]
async fn concurrency_limits_reject_or_queue_fairly() {
    let mock = Mock::start(&["--tokens", "20", "--token-delay", "25ms"]);
    let gw = Gateway::start(&config(
        &mock,
        "limits:
  - { name: one-at-a-time, scope: key, match: { key: test }, concurrency: 1 }
  - { name: queued, scope: key, match: { key: other }, concurrency: 1, on_exceed: queue, queue: { max_wait: 10s } }
",
    ))
    .await;
    let mut streamed = small("chat");
    streamed["stream"] = json!(true);
    streamed["max_tokens"] = json!(50);
    for (key, queued) in [(TEST_KEY, false), (OTHER_KEY, true)] {
        let first = send(&gw, key, &streamed).await;
        assert_eq!(first.status(), 200);
        // The first stream is still open: its slot is taken.
        let second_body = small("chat");
        let second = send(&gw, key, &second_body);
        let body = first.text();
        let (second, body) = tokio::join!(second, body);
        assert!(body.unwrap().contains("[DONE]"));
        if queued {
            assert_eq!(second.status(), 200, "queued until the slot was free");
        } else {
            assert_eq!(second.status(), 429);
            assert_eq!(header(&second, "retry-after").as_deref(), Some("1"));
        }
    }
    // Released when the stream ends.
    assert_eq!(send(&gw, TEST_KEY, &small("chat")).await.status(), 200);
}

#[tokio::test]
async fn a_limit_can_downgrade_to_a_cheaper_model() {
    let mock = Mock::start(&["--tokens", "3"]);
    let gw = Gateway::start(&config(
        &mock,
        "limits:\n  - { name: chat-rpm, scope: model, match: { model: chat }, rpm: 1, on_exceed: downgrade, downgrade_to: cheap }\n",
    ))
    .await;
    let first = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(header(&first, "x-tollgate-model").as_deref(), Some("chat"));
    let second = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        header(&second, "x-tollgate-model").as_deref(),
        Some("cheap")
    );
}

#[tokio::test]
async fn budgets_block_within_one_reservation_and_survive_a_restart() {
    let mock = Mock::start(&["--tokens", "5"]);
    let dir = TempDir::new();
    let extra = format!(
        "budgets:\n  - {{ name: core-daily, scope: team, match: {{ team: core }}, usd: 0.05, period: daily, alerts: [0.5] }}\nledger:\n  path: {}\n  spool: {}\n",
        dir.0.join("usage.db").display(),
        dir.0.join("spool").display()
    );
    let gw = Gateway::start(&config(&mock, &extra)).await;
    let mut served = 0;
    let blocked = loop {
        let resp = send(&gw, TEST_KEY, &small("chat")).await;
        if resp.status() != 200 {
            break resp;
        }
        served += 1;
        assert!(served < 50, "the budget never blocked");
    };
    assert_eq!(blocked.status(), 429);
    let error: Value = blocked.json().await.unwrap();
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    // What was spent stays under the budget: each request reserved its worst case.
    let totals = gw.usage("team").await;
    let spent: f64 = totals["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "core")
        .map(|r| r["cost"].as_str().unwrap().parse().unwrap())
        .unwrap();
    // The overspend stays under one request's cost (each reserved close to what it cost).
    let per_request = spent / f64::from(served);
    assert!(
        spent > 0.0 && spent <= 0.05 + per_request,
        "spent {spent} over {served} requests"
    );
    // Another team has its own budget (none).
    assert_eq!(send(&gw, OTHER_KEY, &small("chat")).await.status(), 200);
    let alerted = "tollgate_budget_alerts_total{budget=\"core-daily\"} 1";
    let metrics = gw.metrics_when(|m| m.contains(alerted)).await;
    assert!(metrics.contains(alerted), "{metrics}");
    drop(gw);

    // The memory counters are gone; the ledger rebuilds the day's spend.
    let gw = Gateway::start(&config(&mock, &extra)).await;
    let resp = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(
        resp.status(),
        429,
        "the spend was forgotten across the restart"
    );
}

#[tokio::test]
async fn the_kill_switch_blocks_a_team_at_once_without_limits_or_budgets() {
    let mock = Mock::start(&["--tokens", "3"]);
    let gw = Gateway::start(&config(&mock, "")).await;
    let kill = |killed: bool| {
        client()
            .post(format!("{}/admin/kill", gw.admin_url))
            .json(&json!({"scope": "team:core", "killed": killed}))
            .send()
    };
    assert_eq!(kill(true).await.unwrap().status(), 200);
    let resp = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(resp.status(), 429);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    assert_eq!(send(&gw, OTHER_KEY, &small("chat")).await.status(), 200);
    let killed = get_json(&format!("{}/admin/kill", gw.admin_url)).await;
    assert_eq!(killed, json!(["team:core"]));
    assert_eq!(kill(false).await.unwrap().status(), 200);
    assert_eq!(send(&gw, TEST_KEY, &small("chat")).await.status(), 200);
}

#[tokio::test]
async fn managed_keys_work_and_a_revocation_reaches_every_node_within_a_second() {
    let mock = Mock::start(&["--tokens", "3"]);
    let dir = TempDir::new();
    let extra = format!(
        "managed_keys: {{ store: sqlite, path: {} }}\n",
        dir.0.join("keys.db").display()
    );
    let a = Gateway::start(&config(&mock, &extra)).await;
    let b = Gateway::start(&config(&mock, &extra)).await;
    let admin = |gw: &Gateway, path: &str| format!("{}{path}", gw.admin_url);

    // No admin key yet: the admin listener is open, so the first admin key can be made.
    let created: Value = client()
        .post(admin(&a, "/admin/keys"))
        .json(&json!({"name": "ops", "team": "ops", "role": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin_secret = created["secret"].as_str().unwrap().to_owned();
    // From now on the admin API needs it.
    let anonymous = client().get(admin(&a, "/admin/keys")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let as_user = client()
        .get(admin(&a, "/admin/keys"))
        .bearer_auth(TEST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), 403);

    let resp = client()
        .post(admin(&a, "/admin/keys"))
        .bearer_auth(&admin_secret)
        .json(&json!({"name": "svc", "team": "core", "models": ["chat"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let svc: Value = resp.json().await.unwrap();
    let secret = svc["secret"].as_str().unwrap().to_owned();
    let id = svc["id"].as_str().unwrap().to_owned();
    assert_eq!(svc["team"], "core");
    assert!(!svc.to_string().contains("sha256"), "hashes stay inside");

    // Works on both nodes once the other has polled the store.
    assert_eq!(send(&a, &secret, &small("chat")).await.status(), 200);
    let on_b = eventually(Duration::from_secs(2), || async {
        send(&b, &secret, &small("chat")).await.status() == 200
    })
    .await;
    assert!(on_b);
    // Scoped to its models.
    assert_eq!(send(&a, &secret, &small("cheap")).await.status(), 403);

    let revoked = client()
        .delete(admin(&a, &format!("/admin/keys/{id}")))
        .bearer_auth(&admin_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let started = std::time::Instant::now();
    let refused = eventually(Duration::from_secs(1), || async {
        send(&b, &secret, &small("chat")).await.status() == 401
    })
    .await;
    assert!(
        refused,
        "node b still accepted the key after {:?}",
        started.elapsed()
    );
    assert_eq!(send(&a, &secret, &small("chat")).await.status(), 401);

    let audit: Value = client()
        .get(admin(&a, "/admin/keys/audit"))
        .bearer_auth(&admin_secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("anonymous", "created")), "{audit}");
    assert!(actions.contains(&("ops", "created")), "{audit}");
    assert!(actions.contains(&("ops", "revoked")), "{audit}");
}

#[tokio::test]
async fn redis_shares_one_limit_between_nodes_and_closed_fails_safe() {
    let redis = RedisServer::start().await;
    let mock = Mock::start(&["--tokens", "3"]);
    let extra = format!(
        "limits:\n  - {{ name: team-rpm, scope: team, rpm: 4 }}\nstate: {{ backend: redis, url: \"{}\", on_failure: closed }}\n",
        redis.url
    );
    let a = Gateway::start(&config(&mock, &extra)).await;
    let b = Gateway::start(&config(&mock, &extra)).await;
    let mut ok = 0;
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        if send(gw, TEST_KEY, &small("chat")).await.status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 4, "two nodes admitted {ok} of a shared 4 per minute");
    let port = redis.port;
    drop(redis);
    let refused = eventually(Duration::from_secs(5), || async {
        send(&a, OTHER_KEY, &small("chat")).await.status() == 503
    })
    .await;
    assert!(
        refused,
        "on_failure: closed must refuse while Redis is down"
    );

    // Redis comes back (empty): both nodes recover without a restart.
    let _redis = RedisServer::start_on(port).await;
    for gw in [&a, &b] {
        let recovered = eventually(Duration::from_secs(10), || async {
            send(gw, OTHER_KEY, &small("chat")).await.status() == 200
        })
        .await;
        assert!(recovered, "a node did not recover when Redis came back");
    }
}

/// Concurrent requests in the budget race, over two nodes.
const RACERS: usize = 300;

#[tokio::test]
async fn concurrent_requests_on_two_nodes_cannot_overspend_a_shared_budget() {
    let redis = RedisServer::start().await;
    let mock = Mock::start(&["--tokens", "5"]);
    let extra = format!(
        "budgets:\n  - {{ name: shared, scope: team, usd: 0.2, period: daily }}\nstate: {{ backend: redis, url: \"{}\" }}\n",
        redis.url
    );
    let a = Gateway::start(&config(&mock, &extra)).await;
    let b = Gateway::start(&config(&mock, &extra)).await;
    let mut requests = Vec::new();
    for i in 0..RACERS {
        let gw = if i % 2 == 0 { &a } else { &b };
        requests.push(async move { send(gw, TEST_KEY, &small("chat")).await.status() });
    }
    let statuses = futures::future::join_all(requests).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    let blocked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(served + blocked, RACERS, "{statuses:?}");
    assert!(
        served > 0 && blocked > 0,
        "{served} served, {blocked} blocked"
    );
    // Spend what reservations still held back, until the budget refuses for good.
    let mut more = 0;
    while send(&a, TEST_KEY, &small("chat")).await.status() == 200 {
        more += 1;
        assert!(more < 40, "the budget never ran out");
    }
    assert_eq!(send(&b, TEST_KEY, &small("chat")).await.status(), 429);
    let spent = |totals: Value| -> f64 {
        totals["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["group"] == "core")
            .map(|r| r["cost"].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let total = spent(a.usage("team").await) + spent(b.usage("team").await);
    // One request costs about a cent here; reservations keep the overspend under one.
    let per_request = total / (served + more) as f64;
    assert!(
        total <= 0.2 + per_request,
        "two nodes spent {total} of a 0.2 budget over {} requests",
        served + more
    );
}

#[tokio::test]
async fn a_reload_applies_changed_limits_and_keeps_unchanged_ones() {
    let mock = Mock::start(&["--tokens", "3"]);
    let gw = Gateway::start(&config(
        &mock,
        "limits:
  - { name: key-rpm, scope: key, match: { key: test }, rpm: 1 }
  - { name: other-rpm, scope: key, match: { key: other }, rpm: 2 }
",
    ))
    .await;
    assert_eq!(send(&gw, TEST_KEY, &small("chat")).await.status(), 200);
    assert_eq!(send(&gw, TEST_KEY, &small("chat")).await.status(), 429);
    let first = send(&gw, OTHER_KEY, &small("chat")).await;
    assert_eq!(
        header(&first, "x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    let reload = || async {
        client()
            .post(format!("{}/admin/reload", gw.admin_url))
            .send()
            .await
            .unwrap()
            .status()
    };
    // Reloading the same limits keeps the spent minute.
    assert_eq!(reload().await, 200);
    assert_eq!(send(&gw, TEST_KEY, &small("chat")).await.status(), 429);
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, text.replace("rpm: 1 }", "rpm: 100 }")).unwrap();
    assert_eq!(reload().await, 200);
    // The changed limit starts afresh.
    let resp = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-ratelimit-limit-requests").as_deref(),
        Some("100")
    );
    // The unchanged one kept its count across the reload: one request left of two.
    let second = send(&gw, OTHER_KEY, &small("chat")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        header(&second, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(send(&gw, OTHER_KEY, &small("chat")).await.status(), 429);
}

/// Creates a managed key through the admin API (as `admin`, when given).
async fn create_key(gw: &Gateway, admin: Option<&str>, body: Value) -> Value {
    let mut request = client().post(format!("{}/admin/keys", gw.admin_url));
    if let Some(secret) = admin {
        request = request.bearer_auth(secret);
    }
    let resp = request.json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_managed_keys_request_cap_holds_without_limits_and_across_a_restart() {
    let mock = Mock::start(&["--tokens", "3"]);
    let dir = TempDir::new();
    let keys_db = dir.0.join("keys.db");
    let extra = format!(
        "managed_keys: {{ store: sqlite, path: {} }}\n",
        keys_db.display()
    );
    let gw = Gateway::start(&config(&mock, &extra)).await;
    let key = create_key(
        &gw,
        None,
        json!({"name": "capped", "team": "core", "max_requests": 3}),
    )
    .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(send(&gw, &secret, &small("chat")).await.status(), 200);
    }
    // The count reaches the store within a poll; then the process is killed.
    let stored = || {
        rusqlite::Connection::open(&keys_db)
            .unwrap()
            .query_row("SELECT requests FROM gateway_key_requests", [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap_or(0)
    };
    let durable = eventually(Duration::from_secs(2), || async { stored() == 2 }).await;
    assert!(durable, "the request count was not written");
    drop(gw);

    let gw = Gateway::start(&config(&mock, &extra)).await;
    assert_eq!(send(&gw, &secret, &small("chat")).await.status(), 200);
    let resp = send(&gw, &secret, &small("chat")).await;
    assert_eq!(
        resp.status(),
        429,
        "the cap was forgotten across the restart"
    );
    assert_eq!(header(&resp, "retry-after"), None, "the cap is final");
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded", "{error}");
    let listed = get_json(&format!("{}/admin/keys", gw.admin_url)).await;
    assert_eq!(listed[0]["requests_used"], 3, "{listed}");
    // Config keys have no cap.
    assert_eq!(send(&gw, TEST_KEY, &small("chat")).await.status(), 200);
}

#[tokio::test]
async fn user_and_tag_budgets_survive_a_restart() {
    let mock = Mock::start(&["--tokens", "5"]);
    let dir = TempDir::new();
    let extra = format!(
        "budgets:
  - {{ name: ann-daily, scope: user, usd: 0.05, period: daily }}
  - {{ name: project-daily, scope: tag, tag: project, usd: 0.05, period: daily }}
ledger:
  path: {}
  spool: {}
",
        dir.0.join("usage.db").display(),
        dir.0.join("spool").display()
    );
    // `test` belongs to user ann; `other` has no user and spends on a project tag.
    let config = config(&mock, &extra).replace("team: core }", "team: core, user: ann }");
    let mut tagged = small("chat");
    tagged["metadata"] = json!({"project": "apollo"});
    let gw = Gateway::start(&config).await;
    for (key, body) in [(TEST_KEY, &small("chat")), (OTHER_KEY, &tagged)] {
        let mut served = 0;
        while send(&gw, key, body).await.status() == 200 {
            served += 1;
            assert!(served < 50, "the budget never blocked");
        }
        assert!(served > 0);
    }
    // Other projects are not blocked.
    let mut elsewhere = small("chat");
    elsewhere["metadata"] = json!({"project": "zeus"});
    assert_eq!(send(&gw, OTHER_KEY, &elsewhere).await.status(), 200);
    // Every record in the ledger's database (a crash with records still spooled is the
    // team budget test's), then the process is killed.
    gw.usage("team").await;
    drop(gw);

    let gw = Gateway::start(&config).await;
    let resp = send(&gw, TEST_KEY, &small("chat")).await;
    assert_eq!(resp.status(), 429, "the user's spend was forgotten");
    let resp = send(&gw, OTHER_KEY, &tagged).await;
    assert_eq!(resp.status(), 429, "the tag's spend was forgotten");
    assert_eq!(send(&gw, OTHER_KEY, &elsewhere).await.status(), 200);
}

#[tokio::test]
async fn every_admin_change_is_audited_with_its_admin_key() {
    let mock = Mock::start(&["--tokens", "3"]);
    let dir = TempDir::new();
    let extra = format!(
        "managed_keys: {{ store: sqlite, path: {} }}\ncache: {{}}\n",
        dir.0.join("keys.db").display()
    );
    let gw = Gateway::start_logging(&config(&mock, &extra)).await;
    let admin = create_key(
        &gw,
        None,
        json!({"name": "ops", "team": "ops", "role": "admin"}),
    )
    .await;
    let secret = admin["secret"].as_str().unwrap().to_owned();
    let post = |path: &str, body: Value| {
        client()
            .post(format!("{}{path}", gw.admin_url))
            .bearer_auth(&secret)
            .json(&body)
            .send()
    };
    let kill = post("/admin/kill", json!({"scope": "team:core", "killed": true}));
    assert_eq!(kill.await.unwrap().status(), 200);
    assert_eq!(
        post("/admin/reload", json!({})).await.unwrap().status(),
        200
    );
    let purge = post("/admin/cache/purge", json!({"route": "chat"}));
    assert_eq!(purge.await.unwrap().status(), 200);
    let unkill = post(
        "/admin/kill",
        json!({"scope": "team:core", "killed": false}),
    );
    assert_eq!(unkill.await.unwrap().status(), 200);

    let audit: Value = client()
        .get(format!("{}/admin/audit", gw.admin_url))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trail: Vec<(&str, &str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trail[..4],
        [
            ("ops", "unkilled", "team:core"),
            ("ops", "cache_purged", "route:chat"),
            ("ops", "reloaded", "config"),
            ("ops", "killed", "team:core"),
        ],
        "{audit}"
    );
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["at"].is_string()));
    assert_eq!(trail[4].1, "created", "{audit}");
    // Also in the log, with who did it.
    let logged = eventually(Duration::from_secs(2), || async {
        let log = std::fs::read_to_string(gw.log_path()).unwrap_or_default();
        log.lines()
            .any(|l| l.contains("admin change") && l.contains("killed") && l.contains("ops"))
    })
    .await;
    assert!(logged, "no audit log line");
}

#[tokio::test]
async fn redis_stopped_and_restarted_under_load_fails_open_and_recovers() {
    let redis = RedisServer::start().await;
    let mock = Mock::start(&["--tokens", "3"]);
    let extra = format!(
        "limits:\n  - {{ name: team-rpm, scope: team, rpm: 100000 }}\nstate: {{ backend: redis, url: \"{}\", on_failure: open, timeout: 100ms }}\n",
        redis.url
    );
    let gw = Gateway::start(&config(&mock, &extra)).await;
    let port = redis.port;
    let load = |rounds: usize| {
        let gw = &gw;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..rounds {
                let batch =
                    (0..8).map(|_| async { send(gw, TEST_KEY, &small("chat")).await.status() });
                statuses.extend(futures::future::join_all(batch).await);
            }
            statuses
        }
    };
    assert!(load(2).await.iter().all(|s| *s == 200));
    // Redis goes away while requests keep coming: they are served on local counters.
    let (statuses, ()) = tokio::join!(load(10), async { drop(redis) });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let degraded = load(5).await;
    assert!(degraded.iter().all(|s| *s == 200), "{degraded:?}");
    // Redis returns (empty) under load: the node uses it again without a restart.
    let (statuses, redis) = tokio::join!(load(10), RedisServer::start_on(port));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let shared = eventually(Duration::from_secs(10), || async {
        send(&gw, TEST_KEY, &small("chat")).await.status() == 200 && redis_has_counters(&redis)
    })
    .await;
    assert!(shared, "the node did not write to Redis again");
}

/// Whether Redis holds any rate counter of the gateway's (one `KEYS` command in RESP).
fn redis_has_counters(redis: &RedisServer) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", redis.port)) else {
        return false;
    };
    let pattern = "*rl:team-rpm*";
    let command = format!("*2\r\n$4\r\nKEYS\r\n${}\r\n{pattern}\r\n", pattern.len());
    let mut reply = [0u8; 512];
    let read = conn
        .write_all(command.as_bytes())
        .and_then(|()| conn.read(&mut reply));
    // `*0` is an empty list; `*<n>` with n > 0 lists counters.
    matches!(read, Ok(n) if n > 1 && reply[0] == b'*' && reply[1] != b'0')
}
