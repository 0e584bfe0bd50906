//! One harness for the end-to-end tests: starts the real `tollgate` and `tollgate-mock`
//! binaries on loopback ports, waits until they serve, and stops them when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod faults;

/// The gateway key every test config accepts; `hash` is its config entry.
pub const TEST_KEY: &str = "tg-test-key";
pub const OTHER_KEY: &str = "tg-other-key";

pub fn key_hash(secret: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    )
}

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Directory of the built binaries; builds them once if they are missing.
///
/// Tests built with `--release` run against optimised binaries: the full-size load and
/// attack runs measure the gateway (and their own attackers), and unoptimised builds
/// spend several times the CPU per request, which on two cores is the whole machine.
pub fn bin_dir() -> PathBuf {
    static BUILD: Once = Once::new();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    let release = !cfg!(debug_assertions);
    let dir = target.join(if release { "release" } else { "debug" });
    BUILD.call_once(|| {
        let mut build = Command::new(env!("CARGO"));
        build.args([
            "build",
            "-q",
            "-p",
            "tollgate-gateway",
            "-p",
            "tollgate-mock",
            "--bins",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build
            .current_dir(workspace_dir())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when dropped, so a failing test leaves no process behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A count set by environment variable `name` (the full-size runs), else `default` (CI).
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading a process's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// The highest resident memory of a process while it runs, sampled every few milliseconds.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<u64>,
}

impl PeakRss {
    pub fn watch(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak.max(rss_kib(pid))
        });
        PeakRss { stop, sampler }
    }

    /// The peak so far, in KiB; stops sampling.
    pub async fn peak_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.await.expect("the RSS sampler")
    }
}

/// How long [`Gateway::metrics_when`] waits for the metrics a test expects.
pub const METRICS_WAIT: Duration = Duration::from_secs(10);

// === impl Mock ===

/// A `tollgate-mock` process.
pub struct Mock {
    pub url: String,
    pub port: u16,
    _proc: Proc,
}

impl Mock {
    pub fn start(args: &[&str]) -> Mock {
        let mut child = Command::new(bin_dir().join("tollgate-mock"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tollgate-mock");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("mock said {line:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Mock {
            url: format!("http://{addr}"),
            port,
            _proc: Proc(child),
        }
    }

    pub async fn faults(&self, rules: Value) {
        let resp = client()
            .post(format!("{}/__mock/faults", self.url))
            .json(&rules)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "set faults: {}", resp.status());
    }

    pub async fn set_health(&self, status: u16) {
        let resp = client()
            .post(format!("{}/__mock/health", self.url))
            .json(&serde_json::json!({ "status": status }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// The requests this mock received on /v1/*.
    pub async fn requests(&self) -> Vec<Value> {
        client()
            .get(format!("{}/__mock/requests", self.url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the recorded requests (the mock keeps the last 1,000).
    pub async fn clear_requests(&self) {
        let resp = client()
            .delete(format!("{}/__mock/requests", self.url))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "clear requests: {}",
            resp.status()
        );
    }

    /// The mock's counters: `requests`, `active_streams`, `connections`, `pending_faults`.
    pub async fn stats(&self) -> Value {
        get_json(&format!("{}/__mock/stats", self.url)).await
    }

    pub async fn chat_requests(&self) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == "/v1/chat/completions")
            .collect()
    }
}

// === impl Gateway ===

/// A `tollgate run` process with its own config file.
pub struct Gateway {
    pub url: String,
    pub admin_url: String,
    pub config_path: PathBuf,
    // Declared before `dir`: the process stops before its directory is removed.
    _proc: Proc,
    /// Holds the config and, unless the config names another place, the ledger.
    pub dir: TempDir,
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self._proc.0.id()
    }

    /// Starts the gateway with `config` (YAML; `server.listen`/`admin_listen` are added).
    pub async fn start(config: &str) -> Gateway {
        Self::start_with_server(config, "").await
    }

    /// Like [`Gateway::start`], with `server_extra` (indented YAML lines) added under `server:`.
    pub async fn start_with_server(config: &str, server_extra: &str) -> Gateway {
        Self::launch(config, server_extra, false).await
    }

    /// Like [`Gateway::start`], logging at `info` into [`Gateway::log_path`].
    pub async fn start_logging(config: &str) -> Gateway {
        Self::launch(config, "", true).await
    }

    /// Like [`Gateway::start_with_server`], logging at `info` into [`Gateway::log_path`].
    pub async fn start_logging_with_server(config: &str, server_extra: &str) -> Gateway {
        Self::launch(config, server_extra, true).await
    }

    /// The gateway's stderr when started with [`Gateway::start_logging`].
    pub fn log_path(&self) -> PathBuf {
        self.dir.0.join("stderr.log")
    }

    async fn launch(config: &str, server_extra: &str, capture_log: bool) -> Gateway {
        for _ in 0..5 {
            let port = free_port();
            let admin_port = free_port();
            let dir = TempDir::new();
            let path = dir.0.join("tollgate.yaml");
            let full = format!(
                "server:\n  listen: [\"127.0.0.1:{port}\"]\n  admin_listen: \"127.0.0.1:{admin_port}\"\n  threads: 2\n{server_extra}{}\n",
                config.trim_start_matches('\n')
            );
            // Every gateway keeps its usage ledger in its own temporary directory, unless
            // the test chose where (to restart on the same ledger).
            let full = if config.contains("\nledger:") {
                full
            } else {
                format!(
                    "{full}ledger:\n  path: {}\n  spool: {}\n",
                    dir.0.join("usage.db").display(),
                    dir.0.join("spool").display()
                )
            };
            std::fs::write(&path, full).unwrap();
            let (level, stderr) = if capture_log {
                let log = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
                ("info".to_owned(), Stdio::from(log))
            } else {
                let level = std::env::var("TOLLGATE_LOG").unwrap_or_else(|_| "error".into());
                (level, Stdio::inherit())
            };
            let child = Command::new(bin_dir().join("tollgate"))
                .args(["run", "-c"])
                .arg(&path)
                .env("TOLLGATE_LOG", level)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start tollgate");
            let mut proc = Proc(child);
            let gw = format!("http://127.0.0.1:{port}");
            let admin = format!("http://127.0.0.1:{admin_port}");
            if wait_ready(&mut proc, &format!("{admin}/healthz"), &gw).await {
                return Gateway {
                    url: gw,
                    admin_url: admin,
                    config_path: path,
                    dir,
                    _proc: proc,
                };
            }
        }
        panic!("the gateway did not become ready");
    }

    pub fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.url)
    }

    /// POSTs a chat completion with the test key.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        client()
            .post(self.chat_url())
            .bearer_auth(TEST_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The Prometheus text once `ready` holds for it, or after [`METRICS_WAIT`] (for the
    /// caller's asserts to explain): a request is counted as it is logged, just after the
    /// client got its last byte.
    pub async fn metrics_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + METRICS_WAIT;
        loop {
            let text = self.metrics().await;
            if ready(&text) || Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin listener's Prometheus text.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn upstreams(&self) -> Value {
        get_json(&format!("{}/admin/upstreams", self.admin_url)).await
    }
}

async fn wait_ready(proc: &mut Proc, health: &str, gw: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = proc.0.try_wait() {
            return false;
        }
        let admin_ok = client()
            .get(health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let gw_ok = client().get(format!("{gw}/v1/models")).send().await.is_ok();
        if admin_ok && gw_ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Polls `check` until it holds or `timeout` passes; for conditions that settle
/// asynchronously (health checks), never for timing.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A minimal chat body for `model`.
pub fn chat_body(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The concatenated `delta.content` of an OpenAI stream.
pub fn stream_text(data: &[String]) -> String {
    data.iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The standard two-provider config used by most tests. `extra` is appended verbatim.
pub fn two_mock_config(a: &Mock, b: &Mock, extra: &str) -> String {
    format!(
        r#"
providers:
  a:
    kind: openai
    endpoints: ["{a}"]
    api_keys: ["sk-provider-a"]
    circuit_breaker: {{ failures: 3, cooldown: 30s }}
  b:
    kind: openai
    endpoints: ["{b}"]
    api_keys: ["sk-provider-b"]
models:
  model-a: {{ provider: a, model: upstream-a, context_window: 100000 }}
  model-b: {{ provider: b, model: upstream-b, context_window: 100000 }}
  small-a: {{ provider: a, model: upstream-small, context_window: 50 }}
  embed-a: {{ provider: a, model: upstream-embed, mode: embeddings }}
keys:
  - {{ name: test, hash: "{k1}", team: core }}
  - {{ name: other, hash: "{k2}", team: guests, models: [model-b] }}
{extra}
"#,
        a = a.url,
        b = b.url,
        k1 = key_hash(TEST_KEY),
        k2 = key_hash(OTHER_KEY),
    )
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tollgate-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The usage records in a ledger's SQLite database, by request id:
/// (status, input tokens, output tokens, estimated, cost, error).
pub type LedgerRow = (u16, u64, u64, bool, String, Option<String>);

pub fn ledger_rows(db: &Path) -> std::collections::HashMap<String, LedgerRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT request_id, status, input_tokens, output_tokens, estimated, cost, error FROM usage_records")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (
                r.get::<_, u16>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, bool>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
            ),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The record ids in a ledger's SQLite database, by the client's request id. Rows are
/// keyed by record id, so a request recorded twice shows as two ids under one request id.
pub fn record_ids_by_request(db: &Path) -> std::collections::HashMap<String, Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT request_id, record_id FROM usage_records ORDER BY record_id")
        .unwrap();
    let mut by_request: std::collections::HashMap<String, Vec<String>> = Default::default();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (request, record) = row.unwrap();
        by_request.entry(request).or_default().push(record);
    }
    by_request
}

/// Client request ids with more than one record, for tests that send each id once.
pub fn duplicated_requests(db: &Path) -> Vec<(String, Vec<String>)> {
    let mut twice: Vec<_> = record_ids_by_request(db)
        .into_iter()
        .filter(|(_, records)| records.len() > 1)
        .collect();
    twice.sort();
    twice
}

impl Gateway {
    /// Waits until the ledger has shipped every spooled record to the sink, and returns
    /// the totals `/admin/usage` reports by `by`.
    pub async fn usage(&self, by: &str) -> Value {
        get_json(&format!("{}/admin/usage?by={by}", self.admin_url)).await
    }
}

// === Redis ===

/// A `redis-server` on a free loopback port, without persistence; stopped when dropped.
pub struct RedisServer {
    pub url: String,
    pub port: u16,
    _proc: Proc,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_on(free_port()).await
    }

    /// A server on `port`, e.g. to bring back one that was stopped.
    pub async fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (installed by scripts/setup.sh)");
        let proc = Proc(child);
        let ready = eventually(Duration::from_secs(10), || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(ready, "redis-server did not start on port {port}");
        RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            _proc: proc,
        }
    }
}

/// The sample line of `family` whose labels include every one of `labels`
/// (`name="value"`); panics with the whole text when there is none.
pub fn metric_line<'t>(text: &'t str, family: &str, labels: &[&str]) -> &'t str {
    find_metric(text, family, labels)
        .unwrap_or_else(|| panic!("no {family} with {labels:?} in:\n{text}"))
}

/// The value of the first sample of `family` whose line has every one of `labels`.
pub fn metric_value(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    find_metric(text, family, labels)?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

fn find_metric<'t>(text: &'t str, family: &str, labels: &[&str]) -> Option<&'t str> {
    text.lines().find(|l| {
        l.strip_prefix(family)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            && labels.iter().all(|label| l.contains(label))
    })
}
