//! A real Prometheus scrapes the gateway after traffic that touches every metric family.
//! Every query of the shipped Grafana dashboards and alert rules must then parse, and every
//! dashboard query over a metric the gateway exports must return numbers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// What Grafana puts in its built-in variables, sized for a test that lasts seconds.
const BUILTINS: [(&str, &str); 3] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
];

/// A series the traffic must leave in every family the gateway exports, so that an empty
/// dashboard panel points at the dashboard rather than at thin traffic.
const SERIES: [&str; 16] = [
    r#"tollgate_requests_total{status="2xx",error=""}"#,
    r#"tollgate_requests_total{error!=""}"#,
    r#"tollgate_request_duration_seconds_bucket{stream="false"}"#,
    r#"tollgate_time_to_first_byte_seconds_bucket{stream="true"}"#,
    r#"tollgate_upstream_attempts_total{outcome="success"}"#,
    r#"tollgate_upstream_attempts_total{outcome="server_error"}"#,
    r#"tollgate_upstream_attempts_total{outcome="rate_limited"}"#,
    r#"tollgate_fallbacks_total{route="main"}"#,
    r#"tollgate_tokens_total{direction="output"}"#,
    r#"tollgate_cost_usd_total{route="main",model="model-a",team="core"}"#,
    "tollgate_ledger_errors_total",
    "tollgate_active_streams",
    "tollgate_circuit_state",
    "tollgate_endpoint_healthy",
    r#"tollgate_guardrail_actions_total{guardrail="pii",entity="pii_email"}"#,
    r#"tollgate_cache_requests_total{route="safe",result="hit"}"#,
];

/// How long Prometheus may take to start, scrape, and evaluate; the test's own budget.
const WAIT: Duration = Duration::from_secs(15);

fn config(a: &Mock, b: &Mock) -> String {
    format!(
        r#"
providers:
  a:
    kind: openai
    endpoints: ["{a}"]
    api_keys: ["sk-a-1", "sk-a-2"]
    circuit_breaker: {{ failures: 10, cooldown: 30s }}
    health_check: {{ path: /health, interval: 200ms }}
  b:
    kind: openai
    endpoints: ["{b}"]
    api_keys: ["sk-b"]
models:
  model-a: {{ provider: a, model: upstream-a, price: {{ input: 1.0, output: 2.0 }} }}
  model-b: {{ provider: b, model: upstream-b, price: {{ input: 3.0, output: 4.0 }} }}
keys:
  - {{ name: test, hash: "{hash}", team: core }}
cache: {{ store: memory }}
guardrails:
  pii: {{ kind: pii, entities: [email] }}
routes:
  - name: safe
    match: {{ model: safe }}
    targets: [{{ model: model-a }}]
    guardrails: [pii]
    cache: {{ ttl: 1h }}
  - name: main
    match: {{ model: chat }}
    targets: [{{ model: model-a }}]
    fallback: [model-b]
    retry: {{ attempts: 2, backoff: 10ms, backoff_max: 50ms, max_retry_after: 3s }}
"#,
        a = a.url,
        b = b.url,
        hash = key_hash(TEST_KEY),
    )
}

// === impl Prometheus ===

/// A `prometheus` server scraping one gateway, with the shipped alert rules loaded.
struct Prometheus {
    url: String,
    dir: TempDir,
    _proc: Proc,
}

impl Prometheus {
    async fn start(admin_url: &str) -> Prometheus {
        let target = admin_url.trim_start_matches("http://");
        let rules = workspace_dir().join("deploy/prometheus/rules/*.yml");
        for _ in 0..3 {
            let dir = TempDir::new();
            let config = dir.0.join("prometheus.yml");
            // The job keeps the shipped config's name: the alert rules select on it.
            std::fs::write(
                &config,
                format!(
                    "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                     rule_files: [\"{}\"]\n\
                     scrape_configs:\n  - job_name: tollgate\n    metrics_path: /metrics\n    \
                     static_configs: [{{ targets: [\"{target}\"] }}]\n",
                    rules.display()
                ),
            )
            .unwrap();
            let port = free_port();
            let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
            let child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let mut proc = Proc(child);
            let url = format!("http://127.0.0.1:{port}");
            let ready = eventually(WAIT, || {
                let exited = matches!(proc.0.try_wait(), Ok(Some(_)));
                let probe = client().get(format!("{url}/-/ready")).send();
                async move { exited || probe.await.is_ok_and(|r| r.status().is_success()) }
            })
            .await;
            if ready && matches!(proc.0.try_wait(), Ok(None)) {
                return Prometheus {
                    url,
                    dir,
                    _proc: proc,
                };
            }
            eprintln!("prometheus did not start:\n{}", log_of(&dir.0));
        }
        panic!("prometheus did not start three times");
    }

    /// The API's whole answer to an instant query, errors included.
    async fn query(&self, expr: &str) -> Value {
        client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The samples of an instant query that must succeed.
    async fn samples(&self, expr: &str) -> Vec<Value> {
        let answer = self.query(expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of an aggregating query, if it has one.
    async fn value(&self, expr: &str) -> Option<f64> {
        let samples = self.samples(expr).await;
        samples.first().and_then(sample_value)
    }

    /// The fewest samples any series of a range selector holds; 0 when none matches.
    async fn fewest_samples(&self, range: &str) -> usize {
        let series = self.samples(range).await;
        let counts = series
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len));
        counts.min().unwrap_or(0)
    }

    async fn api(&self, path: &str) -> Value {
        client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn log(&self) -> String {
        log_of(&self.dir.0)
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
}

fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str().and_then(|v| v.parse().ok())
}

// === traffic ===

/// The gateway's own sum of `tollgate_requests_total`, and whether no stream is open.
async fn requests_counted(gw: &Gateway) -> (u64, bool) {
    let text = gw.metrics().await;
    let total = text
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    (
        total,
        text.lines().any(|l| l == "tollgate_active_streams 0"),
    )
}

/// One round of every kind of request the metrics tell apart; returns the gateway's
/// request count once it has logged them all.
async fn traffic(gw: &Gateway, a: &Mock) -> u64 {
    let (before, _) = requests_counted(gw).await;
    let mut sent = 0;
    for model in ["chat", "model-b"] {
        assert_eq!(gw.chat(chat_body(model)).await.status(), 200);
        let mut body = chat_body(model);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let streamed = gw.chat(body).await.text().await.unwrap();
        assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");
        sent += 2;
    }
    // A guardrail acts on both; the second is a cache hit (after the first round, both).
    for _ in 0..2 {
        let mut body = chat_body("safe");
        body["messages"][0]["content"] = json!("Write to jane@corp.example");
        assert_eq!(gw.chat(body).await.status(), 200);
        sent += 1;
    }
    a.faults(json!([{"status": 500, "times": 2}])).await;
    let resp = gw.chat(chat_body("chat")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-model"], "model-b", "fallback");
    let unknown = gw.chat(chat_body("no-such-model")).await.status();
    assert!(unknown.is_client_error(), "unknown model: {unknown}");
    // The second key of provider a, or the fallback, serves the retry.
    a.faults(json!([{"status": 429, "times": 1}])).await;
    assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    sent += 3;
    let want = before + sent;
    let logged = eventually(Duration::from_secs(5), || async {
        requests_counted(gw).await == (want, true)
    })
    .await;
    assert!(
        logged,
        "the gateway counted {:?}, want {want}",
        requests_counted(gw).await
    );
    want
}

// === queries ===

/// A PromQL expression as shipped, where it comes from, and as sent to Prometheus.
struct Query {
    source: String,
    shipped: String,
    expr: String,
}

/// Every target expression of every dashboard, rows' nested panels included, and every
/// `label_values(metric, label)` variable as (source, metric, label).
fn dashboard_queries() -> (Vec<Query>, Vec<(String, String, String)>) {
    let dir = workspace_dir().join("deploy/grafana/dashboards");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no dashboards in {}", dir.display());
    let mut queries = Vec::new();
    let mut label_values = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut variables = Vec::new();
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let var_name = var["name"].as_str().unwrap().to_owned();
            if var["type"] == "datasource" {
                continue;
            }
            let all = var["allValue"].as_str().unwrap_or(".*").to_owned();
            if let Some(args) = var["query"]
                .as_str()
                .and_then(|q| q.strip_prefix("label_values("))
                .and_then(|q| q.strip_suffix(')'))
            {
                let (metric, label) = args.split_once(',').unwrap();
                label_values.push((
                    format!("{name} ${var_name}"),
                    metric.trim().to_owned(),
                    label.trim().to_owned(),
                ));
            }
            variables.push((var_name, all));
        }
        let before = queries.len();
        collect_targets(
            &name,
            dashboard["panels"].as_array().unwrap(),
            &variables,
            &mut queries,
        );
        assert!(queries.len() > before, "{name} has no queries");
    }
    (queries, label_values)
}

fn collect_targets(
    dashboard: &str,
    panels: &[Value],
    variables: &[(String, String)],
    out: &mut Vec<Query>,
) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let shipped = target["expr"].as_str().unwrap_or_default();
            assert!(
                !shipped.trim().is_empty(),
                "{dashboard} '{title}': empty expr"
            );
            let source = format!("{dashboard} '{title}'");
            out.push(Query {
                expr: substitute(&source, shipped, variables),
                shipped: shipped.to_owned(),
                source,
            });
        }
        if let Some(nested) = panel["panels"].as_array() {
            collect_targets(dashboard, nested, variables, out);
        }
    }
}

/// `expr` with Grafana's built-in variables and the dashboard's "All" values filled in.
/// A template variable must sit alone inside a regex matcher, where "All" means `.*`.
fn substitute(source: &str, expr: &str, variables: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .unwrap_or_else(|| panic!("{source}: unclosed ${{"));
                (&braced[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = if let Some((_, v)) = BUILTINS.iter().find(|(b, _)| *b == name) {
            v.to_string()
        } else if let Some((_, all)) = variables.iter().find(|(v, _)| v == name) {
            assert!(
                out.ends_with("=~\"") && after[len..].starts_with('"'),
                "{source}: ${name} is not the whole of a regex matcher in {expr}"
            );
            all.clone()
        } else {
            panic!("{source}: unknown variable ${name} in {expr}");
        };
        out.push_str(&value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

// === the test ===

#[tokio::test]
async fn prometheus_answers_every_dashboard_query() {
    if !Path::new(PROMETHEUS).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PROMETHEUS} is missing; scripts/setup.sh installs it"
        );
        eprintln!("skipped: {PROMETHEUS} is missing (scripts/setup.sh installs it)");
        return;
    }
    let (queries, label_values) = dashboard_queries();

    let a = Mock::start(&["--tokens", "5", "--token-delay", "1ms"]);
    let b = Mock::start(&["--tokens", "5", "--token-delay", "1ms"]);
    let gw = Gateway::start(&config(&a, &b)).await;
    let checked = eventually(Duration::from_secs(5), || async {
        gw.upstreams()
            .await
            .to_string()
            .contains("\"healthy\":true")
    })
    .await;
    assert!(checked, "no health check ran: {}", gw.upstreams().await);
    let prom = Prometheus::start(&gw.admin_url).await;

    // Two rounds with a scrape between them, so rates and increases are above zero and
    // ratios are numbers, not 0/0.
    let first = traffic(&gw, &a).await;
    let total = "sum(tollgate_requests_total{job=\"tollgate\"})";
    let scraped = eventually(WAIT, || async {
        prom.value(total).await == Some(first as f64)
    })
    .await;
    assert!(
        scraped,
        "prometheus never saw the first round\n{}",
        prom.log()
    );
    let second = traffic(&gw, &a).await;
    let settled = eventually(WAIT, || async {
        prom.value("max(up{job=\"tollgate\"})").await == Some(1.0)
            && prom.value(total).await == Some(second as f64)
            && prom
                .fewest_samples("{__name__=~\"tollgate_.+\",job=\"tollgate\"}[1m]")
                .await
                >= 2
    })
    .await;
    assert!(
        settled,
        "prometheus never saw the second round twice\n{}",
        prom.log()
    );

    for series in SERIES {
        assert!(
            !prom.samples(series).await.is_empty(),
            "the traffic left no {series}"
        );
    }

    let mut empty = Vec::new();
    let mut not_numbers = Vec::new();
    for q in &queries {
        let answer = prom.query(&q.expr).await;
        assert_eq!(
            answer["status"], "success",
            "{}: {}\nsent: {}\n{answer}",
            q.source, q.shipped, q.expr
        );
        let samples = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if samples.is_empty() {
            empty.push(format!("{}: {}", q.source, q.expr));
        } else if !samples
            .iter()
            .all(|s| sample_value(s).is_some_and(f64::is_finite))
        {
            not_numbers.push(format!("{}: {} = {samples:?}", q.source, q.expr));
        }
    }
    assert!(
        empty.is_empty() && not_numbers.is_empty(),
        "of {} dashboard queries, these returned nothing:\n  {}\nthese returned a non-number:\n  {}",
        queries.len(),
        empty.join("\n  "),
        not_numbers.join("\n  ")
    );

    // The variables' dropdowns list what the gateway exports.
    for (source, metric, label) in &label_values {
        let answer = client()
            .get(format!("{}/api/v1/label/{label}/values", prom.url))
            .query(&[("match[]", metric.as_str())])
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let values = answer["data"].as_array().map_or(0, Vec::len);
        assert!(
            values > 0,
            "{source}: label_values({metric}, {label}) is empty: {answer}"
        );
    }

    // The shipped alert rules load and evaluate without error; their expressions parse.
    let evaluated = eventually(WAIT, || async {
        let rules = prom.api("/api/v1/rules").await;
        let all: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        !all.is_empty() && all.iter().all(|r| r["health"] != "unknown")
    })
    .await;
    let rules = prom.api("/api/v1/rules").await;
    assert!(evaluated, "the alert rules were never evaluated: {rules}");
    let mut alerts = 0;
    for rule in rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        assert_eq!(rule["health"], "ok", "{rule}");
        let expr = rule["query"].as_str().unwrap();
        let answer = prom.query(expr).await;
        assert_eq!(answer["status"], "success", "{}: {answer}", rule["name"]);
        alerts += 1;
    }
    eprintln!(
        "{} dashboard queries, {} variables, {alerts} alert rules checked",
        queries.len(),
        label_values.len()
    );
}
