//! Starting and stopping the systems under test: the mock provider, nginx, the bare
//! Pingora baseline, LiteLLM and Tollgate, each from a generated configuration in its
//! own temporary directory, pinned to its CPU with `taskset`; and the Redis server a
//! scenario's Tollgate variants may keep their counters in.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::conn::{Pool, Target};
use crate::error::BenchError;
use crate::scenario::{MockSpec, SystemKind, SystemOptions};

/// The gateway key the bench presents; the generated Tollgate config holds its hash.
pub const BENCH_KEY: &str = "tg-bench-key";
/// LiteLLM's master key: LiteLLM refuses to start without one, and checking it is the
/// same work the gateway does with its keys.
pub const LITELLM_KEY: &str = "sk-bench-6f1c2a9e4b7d3058a1e2c4f6b8d0e2a4";
/// The model name every request asks for.
pub const BENCH_MODEL: &str = "bench-model";
/// The path every request goes to.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// Longest wait for a system to answer its first request. LiteLLM imports for a long
/// time on one core; the others are ready in well under a second.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT_LITELLM: Duration = Duration::from_secs(180);
/// Pause between readiness probes.
const READY_POLL: Duration = Duration::from_millis(100);
/// Longest wait for a stopped process to exit after SIGINT before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the binaries are and which CPUs to use.
#[derive(Debug, Clone)]
pub struct Env {
    /// Directory holding `tollgate`, `tollgate-mock`, `tollgate-pingora-baseline`.
    pub bin_dir: PathBuf,
    pub nginx: PathBuf,
    /// LiteLLM's `litellm` executable, when installed.
    pub litellm: Option<PathBuf>,
    /// CPU list for the proxy under test (`taskset -c`), e.g. `1`.
    pub proxy_cpu: Option<String>,
    /// CPU list for the mock (shared with the load generator), e.g. `0`.
    pub load_cpu: Option<String>,
    /// File that gets one PID per started process, so a wrapper script can clean up
    /// after a crash.
    pub pid_file: Option<PathBuf>,
    /// The `redis-server` binary, for scenarios with `redis: true`.
    pub redis_server: PathBuf,
    /// `redis://127.0.0.1:PORT` of the scenario's Redis, passed to Tollgate as
    /// `BENCH_REDIS_URL`.
    pub redis_url: Option<String>,
}

/// A started process; stopped (SIGINT, then SIGKILL) when dropped.
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGINT is a fast stop for every system here; SIGTERM would make Pingora wait
        // out its 300 s grace period.
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("{}: killed after {STOP_GRACE:?}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running system: where to send requests, and what to sample.
pub struct Running {
    /// `http://IP:port/v1/chat/completions` over HTTP/1.1.
    pub url: String,
    /// The same over HTTP/2 cleartext, when the system accepts it.
    pub h2_url: Option<String>,
    /// The bearer key the system expects.
    pub key: &'static str,
    /// The process whose memory and CPU are sampled (`None` for the mock, owned by the
    /// suite).
    proc: Option<Proc>,
    sampled_pid: u32,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.sampled_pid
    }

    /// Whether the system still runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.proc {
            Some(p) => matches!(p.child.try_wait(), Ok(None)),
            None => true,
        }
    }
}

/// A free loopback port (bound and released; the race with other programs is benign
/// on a bench machine).
pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| BenchError::io("bind a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("bind a free port", e))
}

fn command(program: &Path, cpu: Option<&String>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn spawn(env: &Env, name: &str, mut cmd: Command, log: &Path) -> Result<Proc, BenchError> {
    let log_file = std::fs::File::create(log)
        .map_err(|e| BenchError::io(format!("create {}", log.display()), e))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| BenchError::io(format!("start {name}"), e))?;
    record_pid(env, child.id());
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

fn record_pid(env: &Env, pid: u32) {
    if let Some(path) = &env.pid_file {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{pid}");
        }
    }
}

// === The mock ===

/// Starts `tollgate-mock` and returns it with its address.
pub fn start_mock(env: &Env, spec: &MockSpec) -> Result<(Proc, SocketAddr), BenchError> {
    let mut cmd = command(&env.bin_dir.join("tollgate-mock"), env.load_cpu.as_ref());
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--tokens")
        .arg(spec.tokens.to_string())
        .arg("--token-delay")
        .arg(format!("{}us", spec.token_delay.as_micros()))
        .arg("--first-token-delay")
        .arg(format!("{}us", spec.first_token_delay.as_micros()));
    if let Some(reply) = spec.reply_text() {
        cmd.arg("--reply").arg(reply);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::io("start tollgate-mock", e))?;
    record_pid(env, child.id());
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let proc = Proc {
        name: "mock".to_owned(),
        child,
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| BenchError::System {
            system: "mock".to_owned(),
            message: format!("unexpected first line {line:?}"),
        })?;
    Ok((proc, addr))
}

// === Redis ===

/// A running Redis server, stopped when dropped.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// Starts `redis-server` on a free loopback port, without persistence, on the load
/// generator's CPU (a deployment runs it on other machines: its CPU is not the gateway's),
/// and waits until it answers `PING`.
pub fn start_redis(env: &Env) -> Result<RedisServer, BenchError> {
    let dir = tempdir()?;
    let port = free_port()?;
    let mut cmd = command(&env.redis_server, env.load_cpu.as_ref());
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--dir")
        .arg(dir.path());
    let mut proc = spawn(env, "redis", cmd, &dir.path().join("stderr.log"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if redis_ping(port) {
            return Ok(RedisServer {
                url: format!("redis://127.0.0.1:{port}"),
                _proc: proc,
                _dir: dir,
            });
        }
        if Instant::now() >= deadline || matches!(proc.child.try_wait(), Ok(Some(_))) {
            return Err(BenchError::System {
                system: "redis".to_owned(),
                message: format!("no PONG on port {port}"),
            });
        }
        std::thread::sleep(READY_POLL);
    }
}

/// One `PING` over a fresh connection; true on `+PONG`.
fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(READY_POLL));
    let mut answer = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

// === Generated configurations ===

/// Tollgate's configuration: one OpenAI-dialect provider (the mock), one priced model,
/// the bench key, the ledger in `data_dir`, one worker thread; `extra` merged over it.
pub fn tollgate_config(
    listen: u16,
    admin: u16,
    mock: SocketAddr,
    data_dir: &Path,
    extra: Option<&serde_json::Value>,
) -> serde_json::Value {
    let hash = hex::encode(Sha256::digest(BENCH_KEY.as_bytes()));
    let mut config = json!({
        "server": {
            "listen": [format!("127.0.0.1:{listen}")],
            "admin_listen": format!("127.0.0.1:{admin}"),
            "threads": 1,
        },
        "providers": {
            "mock": {
                "kind": "openai",
                "endpoints": [format!("http://{mock}")],
                "api_keys": ["mock-key"],
            },
        },
        "models": {
            BENCH_MODEL: {
                "provider": "mock",
                "model": "mock-model",
                "context_window": 128000,
                "price": { "input": 0.15, "output": 0.60 },
            },
        },
        "keys": [{ "name": "bench", "hash": format!("sha256:{hash}"), "team": "bench" }],
        "ledger": {
            "sink": "sqlite",
            "path": data_dir.join("usage.db").display().to_string(),
            "spool": data_dir.join("spool").display().to_string(),
        },
    });
    if let Some(extra) = extra {
        merge(&mut config, extra);
    }
    config
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// nginx as a reverse proxy tuned the usual way for an LLM gateway: one worker, no
/// master, upstream keepalive, no response buffering (streams flow through), no access
/// log; HTTP/1.1 on `port` and cleartext HTTP/2 on `h2_port`.
pub fn nginx_conf(prefix: &Path, port: u16, h2_port: u16, mock: SocketAddr) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 19000;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream mock {{
        server {mock};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{h2_port} http2 backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"#
    )
}

/// LiteLLM's proxy configuration: the bench model served by the mock over the OpenAI
/// dialect, no telemetry.
pub fn litellm_config(mock: SocketAddr) -> serde_json::Value {
    json!({
        "model_list": [{
            "model_name": BENCH_MODEL,
            "litellm_params": {
                "model": "openai/mock-model",
                "api_base": format!("http://{mock}/v1"),
                "api_key": "mock-key",
            },
        }],
        "litellm_settings": { "telemetry": false, "drop_params": true },
        "general_settings": { "master_key": LITELLM_KEY },
    })
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

fn yaml(value: &serde_json::Value) -> Result<String, BenchError> {
    serde_yaml_ng::to_string(value).map_err(|e| BenchError::Encode {
        what: "a configuration",
        message: e.to_string(),
    })
}

// === Starting systems ===

/// Starts `opts` in front of the mock at `mock` and waits until it answers a chat
/// completion. `mock_pid` is sampled for the `direct` system.
pub async fn start(
    env: &Env,
    opts: &SystemOptions,
    mock: SocketAddr,
    mock_pid: u32,
) -> Result<Running, BenchError> {
    let name = opts.name();
    let sys_err = |message: String| BenchError::System {
        system: name.clone(),
        message,
    };
    let url = |port: u16| format!("http://127.0.0.1:{port}{CHAT_PATH}");
    let (proc, url_h1, h2_url, dir) = match opts.kind {
        SystemKind::Direct => (None, format!("http://{mock}{CHAT_PATH}"), None, None),
        SystemKind::Pingora => {
            let dir = tempdir()?;
            let port = free_port()?;
            let mut cmd = command(
                &env.bin_dir.join("tollgate-pingora-baseline"),
                env.proxy_cpu.as_ref(),
            );
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--upstream")
                .arg(mock.to_string())
                .arg("--threads")
                .arg("1")
                .arg("--h2c");
            if opts.upstream_h2 {
                cmd.arg("--upstream-h2");
            }
            let p = spawn(env, &name, cmd, &dir.path().join("stderr.log"))?;
            (Some(p), url(port), Some(url(port)), Some(dir))
        }
        SystemKind::Nginx => {
            let dir = tempdir()?;
            let (port, h2_port) = (free_port()?, free_port()?);
            let conf = dir.path().join("nginx.conf");
            write(&conf, &nginx_conf(dir.path(), port, h2_port, mock))?;
            let mut cmd = command(&env.nginx, env.proxy_cpu.as_ref());
            cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
            let p = spawn(env, &name, cmd, &dir.path().join("stderr.log"))?;
            (Some(p), url(port), Some(url(h2_port)), Some(dir))
        }
        SystemKind::Litellm => {
            let Some(litellm) = &env.litellm else {
                return Err(sys_err(
                    "LiteLLM is not installed (no --litellm)".to_owned(),
                ));
            };
            let dir = tempdir()?;
            let port = free_port()?;
            let conf = dir.path().join("litellm.yaml");
            write(&conf, &yaml(&litellm_config(mock))?)?;
            let mut cmd = command(litellm, env.proxy_cpu.as_ref());
            cmd.arg("--config")
                .arg(&conf)
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .arg("--num_workers")
                .arg("1")
                .env("LITELLM_LOG", "ERROR")
                .env("LITELLM_TELEMETRY", "False")
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("DISABLE_SCHEMA_UPDATE", "True")
                .current_dir(dir.path());
            let p = spawn(env, &name, cmd, &dir.path().join("stderr.log"))?;
            (Some(p), url(port), None, Some(dir))
        }
        SystemKind::Tollgate => {
            let dir = tempdir()?;
            let (port, admin) = (free_port()?, free_port()?);
            let mut extra = match &opts.config {
                Some(v) => Some(serde_json::to_value(v).map_err(|e| sys_err(e.to_string()))?),
                None => None,
            };
            if opts.upstream_h2 {
                let h2 = json!({ "providers": { "mock": { "http2": true } } });
                match &mut extra {
                    Some(extra) => merge(extra, &h2),
                    None => extra = Some(h2),
                }
            }
            let config = tollgate_config(port, admin, mock, dir.path(), extra.as_ref());
            let conf = dir.path().join("tollgate.yaml");
            write(&conf, &yaml(&config)?)?;
            let mut cmd = command(&env.bin_dir.join("tollgate"), env.proxy_cpu.as_ref());
            cmd.arg("run")
                .arg("-c")
                .arg(&conf)
                .env("TOLLGATE_LOG", opts.log.as_deref().unwrap_or("info"))
                .current_dir(dir.path());
            if let Some(url) = &env.redis_url {
                cmd.env("BENCH_REDIS_URL", url);
            }
            // The access log goes to a file that is thrown away with the directory:
            // formatting and writing it is part of what a deployment pays.
            let p = spawn(env, &name, cmd, &dir.path().join("stderr.log"))?;
            (Some(p), url(port), None, Some(dir))
        }
    };
    let sampled_pid = proc.as_ref().map_or(mock_pid, Proc::pid);
    let mut running = Running {
        key: if opts.kind == SystemKind::Litellm {
            LITELLM_KEY
        } else {
            BENCH_KEY
        },
        url: url_h1,
        h2_url,
        proc,
        sampled_pid,
        _dir: dir,
    };
    let timeout = if opts.kind == SystemKind::Litellm {
        READY_TIMEOUT_LITELLM
    } else {
        READY_TIMEOUT
    };
    let key = running.key;
    wait_ready(&mut running, key, timeout).await.map_err(|m| {
        let log = running
            ._dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("stderr.log")).ok())
            .unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        sys_err(format!("{m}\n{tail}"))
    })?;
    Ok(running)
}

fn tempdir() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("tollgate-bench-")
        .tempdir()
        .map_err(|e| BenchError::io("create a temporary directory", e))
}

/// Polls with a real chat completion until one succeeds.
async fn wait_ready(system: &mut Running, key: &str, timeout: Duration) -> Result<(), String> {
    let target = Target::parse(&system.url).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if !system.alive() {
            return Err("exited during start-up".to_owned());
        }
        match probe(&target, key).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(READY_POLL).await;
    }
    Err(format!("not ready after {timeout:?}: {last}"))
}

/// One plain chat completion; `Ok` on a 200.
pub async fn probe(target: &Target, key: &str) -> Result<(), String> {
    let pool = Pool::new(target.clone(), false, 1, 1, 1)
        .await
        .map_err(|e| e.to_string())?;
    let mut lease = pool.lease().await.map_err(|e| e.to_string())?;
    let body = json!({
        "model": BENCH_MODEL,
        "messages": [{"role": "user", "content": "ready?"}],
    })
    .to_string();
    let req = http::Request::post(target.path.as_str())
        .header(http::header::HOST, &target.authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), lease.sender.send(req))
        .await
        .map_err(|_| "probe timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn merges_maps_and_replaces_the_rest() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(&mut base, &json!({"a": {"c": [3], "e": true}, "f": "x"}));
        assert_eq!(
            base,
            json!({"a": {"b": 1, "c": [3], "e": true}, "d": 1, "f": "x"})
        );
    }

    #[test]
    fn tollgate_config_points_at_the_mock_with_the_bench_key() {
        let mock: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let extra = json!({"server": {"threads": 2}});
        let c = tollgate_config(1000, 1001, mock, Path::new("/tmp/x"), Some(&extra));
        assert_eq!(c["server"]["threads"], 2);
        assert_eq!(c["server"]["listen"][0], "127.0.0.1:1000");
        assert_eq!(
            c["providers"]["mock"]["endpoints"][0],
            "http://127.0.0.1:9999"
        );
        assert_eq!(
            c["keys"][0]["hash"],
            // sha256("tg-bench-key")
            format!("sha256:{}", hex::encode(Sha256::digest(b"tg-bench-key")))
        );
        assert_eq!(c["ledger"]["spool"], "/tmp/x/spool");
        assert!(yaml(&c).unwrap().contains("bench-model"));
    }

    #[test]
    fn nginx_conf_has_the_tuning() {
        let conf = nginx_conf(Path::new("/p"), 81, 82, "127.0.0.1:9".parse().unwrap());
        for needle in [
            "worker_processes 1;",
            "master_process off;",
            "keepalive 128;",
            "proxy_buffering off;",
            "listen 127.0.0.1:82 http2",
            "server 127.0.0.1:9;",
            "pid /p/nginx.pid;",
        ] {
            assert!(conf.contains(needle), "{needle}");
        }
    }

    #[test]
    fn litellm_config_names_the_mock() {
        let c = litellm_config("127.0.0.1:7".parse().unwrap());
        assert_eq!(c["model_list"][0]["model_name"], BENCH_MODEL);
        assert_eq!(
            c["model_list"][0]["litellm_params"]["api_base"],
            "http://127.0.0.1:7/v1"
        );
        assert_eq!(c["general_settings"]["master_key"], LITELLM_KEY);
    }
}
