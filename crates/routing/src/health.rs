//! Active health checks: for every endpoint of a provider with `health_check` configured, a
//! `pingora_load_balancing::LoadBalancer` whose discovery re-resolves the endpoint's host on
//! each update (so DNS changes are followed) and whose HTTP check sends `GET <path>` with the
//! endpoint's `Host` and the provider's first API key. An endpoint is healthy while any of
//! its resolved addresses passes.
//!
//! Each endpoint gets its own balancer rather than sharing one per provider: the check's
//! `Host`, SNI and path prefix differ per endpoint, and two endpoints that resolve to the same
//! address (one CDN in front of two hosts) must not share a health state. One background
//! service follows the current [`Upstreams`] (it changes on config reload) and runs the
//! checks of each of its providers, stopping those of providers a reload replaced.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, Extensions, LoadBalancer};
use tokio::sync::watch;
use tollgate_config::{Endpoint, HealthCheckConfig, ProviderKind};

use crate::pool::Upstreams;
use crate::tls::UpstreamTls;

/// Most addresses kept from one DNS answer. Each is probed every interval, so a large answer
/// would multiply probe traffic; 16 covers any provider's round-robin set while bounding it.
const MAX_RESOLVED_ADDRS: usize = 16;

/// Connect timeout of one probe: long enough for a TLS handshake across regions.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time to read a probe's response head; model listings can take a few seconds to render.
const PROBE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Failed probes in a row before an address is taken out: one lost packet should not drain an
/// endpoint for a whole interval, while a dead one is still out within two intervals.
const FAILURES_TO_UNHEALTHY: usize = 2;

/// Passed probes in a row before an address is put back; the passive circuit breaker guards
/// against an endpoint that passes probes but fails real traffic.
const SUCCESSES_TO_HEALTHY: usize = 1;

// === impl EndpointHealth ===

/// The active health state of one endpoint, shared by its provider pool (read on the request
/// path) and its provider's background service (written by probes).
#[derive(Clone)]
pub(crate) struct EndpointHealth {
    balancer: Arc<LoadBalancer<RoundRobin>>,
}

impl EndpointHealth {
    pub(crate) fn new(
        endpoint: &Endpoint,
        config: &HealthCheckConfig,
        auth: Option<ProbeAuth<'_>>,
        tls: Option<&UpstreamTls>,
    ) -> Result<Self, String> {
        let discovery = HostDiscovery {
            host: endpoint.host.clone(),
            port: endpoint.port,
        };
        let mut balancer =
            LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(discovery)));
        balancer.set_health_check(Box::new(http_check(endpoint, config, auth, tls)?));
        balancer.health_check_frequency = Some(config.interval);
        balancer.update_frequency = Some(config.interval);
        balancer.parallel_health_check = true;
        Ok(Self {
            balancer: Arc::new(balancer),
        })
    }

    /// Healthy while any resolved address passes its probes, and also before the first
    /// resolution: an endpoint nobody has looked at yet is given the benefit of the doubt.
    pub(crate) fn healthy(&self) -> bool {
        let backends = self.balancer.backends();
        let members = backends.get_backend();
        members.is_empty() || members.iter().any(|b| backends.ready(b))
    }

    /// A healthy resolved address, rotating over the healthy ones.
    pub(crate) fn pick_addr(&self) -> Option<std::net::SocketAddr> {
        self.balancer
            .select(b"", MAX_RESOLVED_ADDRS)
            .and_then(|b| b.addr.as_inet().copied())
    }

    /// One discovery and one probe round, now.
    async fn check_now(&self) {
        if let Err(e) = self.balancer.update().await {
            tracing::warn!(error = %e, "health check: resolving endpoint failed");
        }
        self.balancer.backends().run_health_check(true).await;
    }
}

/// How a probe authenticates: the provider's first key in its dialect's header.
#[derive(Clone, Copy)]
pub(crate) struct ProbeAuth<'a> {
    pub kind: ProviderKind,
    pub key: &'a str,
}

impl ProbeAuth<'_> {
    /// Header name and value; `None` for kinds whose requests are signed per request.
    fn header(&self) -> Option<(&'static str, String)> {
        match self.kind {
            ProviderKind::Openai => Some(("authorization", format!("Bearer {}", self.key))),
            ProviderKind::AzureOpenai => Some(("api-key", self.key.to_owned())),
            ProviderKind::Anthropic => Some(("x-api-key", self.key.to_owned())),
            ProviderKind::Gemini => Some(("x-goog-api-key", self.key.to_owned())),
            ProviderKind::Bedrock => None,
        }
    }
}

fn http_check(
    endpoint: &Endpoint,
    config: &HealthCheckConfig,
    auth: Option<ProbeAuth<'_>>,
    tls: Option<&UpstreamTls>,
) -> Result<HttpHealthCheck, String> {
    let mut check = HttpHealthCheck::new(&endpoint.host, endpoint.tls);
    if let (true, Some(tls)) = (endpoint.tls, tls) {
        tls.apply(&mut check.peer_template);
    }
    check.peer_template.options.connection_timeout = Some(PROBE_CONNECT_TIMEOUT);
    check.peer_template.options.read_timeout = Some(PROBE_READ_TIMEOUT);
    check.consecutive_failure = FAILURES_TO_UNHEALTHY;
    check.consecutive_success = SUCCESSES_TO_HEALTHY;

    let path = format!("{}{}", endpoint.path_prefix, config.path);
    let mut req = RequestHeader::build("GET", path.as_bytes(), None)
        .map_err(|_| format!("health check path '{path}' is not a valid request path"))?;
    req.insert_header(http::header::HOST, endpoint.authority())
        .map_err(|_| format!("'{}' is not a valid Host header", endpoint.host))?;
    if let Some((name, value)) = auth.and_then(|a| a.header()) {
        // The error must not echo the value: it is a secret.
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "the provider's first API key is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        req.insert_header(name, value)
            .map_err(|_| "the provider's first API key is not a valid header value".to_owned())?;
        if auth.is_some_and(|a| a.kind == ProviderKind::Anthropic) {
            req.insert_header("anthropic-version", "2023-06-01")
                .map_err(|_| "invalid anthropic-version header".to_owned())?;
        }
    }
    check.req = req;

    let expected = config.expected_status;
    check.validator = Some(Box::new(move |resp: &ResponseHeader| {
        let status = resp.status.as_u16();
        if status == expected {
            Ok(())
        } else {
            Error::e_explain(
                ErrorType::new_code("unexpected health check status", status),
                format!("expected {expected}"),
            )
        }
    }));
    Ok(check)
}

/// Resolves one endpoint's host on every update.
struct HostDiscovery {
    host: String,
    port: u16,
}

#[async_trait]
impl ServiceDiscovery for HostDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Error::because(
                    ErrorType::ConnectNoRoute,
                    format!("resolving {}", self.host),
                    e,
                )
            })?;
        let backends: BTreeSet<Backend> = addrs
            .take(MAX_RESOLVED_ADDRS)
            .map(|addr| Backend {
                addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
                weight: 1,
                ext: Extensions::new(),
            })
            .collect();
        if backends.is_empty() {
            // An error keeps the last known addresses instead of dropping them all.
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                format!("{} resolved to no address", self.host),
            );
        }
        Ok((backends, HashMap::new()))
    }
}

// === impl ProviderHealth ===

/// The background service that keeps one provider's endpoints' health up to date.
pub struct ProviderHealth {
    endpoints: Vec<EndpointHealth>,
}

impl ProviderHealth {
    pub(crate) fn new(endpoints: Vec<EndpointHealth>) -> Self {
        Self { endpoints }
    }

    /// Resolves and probes every endpoint once, now (startup, tests, an admin "check now").
    pub async fn check_now(&self) {
        futures::future::join_all(self.endpoints.iter().map(EndpointHealth::check_now)).await;
    }
}

#[async_trait]
impl BackgroundService for ProviderHealth {
    async fn start(&self, shutdown: ShutdownWatch) {
        futures::future::join_all(
            self.endpoints
                .iter()
                .map(|e| e.balancer.run(shutdown.clone(), None)),
        )
        .await;
    }
}

// === impl HealthCheckService ===

/// Runs the active health checks of every provider in the current [`Upstreams`]. On each
/// change (a config reload) it starts the checks of pools it has not seen and stops those
/// of pools no longer in use; a pool a reload kept goes on being checked without a pause.
pub struct HealthCheckService {
    upstreams: watch::Receiver<Arc<Upstreams>>,
}

impl HealthCheckService {
    pub fn new(upstreams: watch::Receiver<Arc<Upstreams>>) -> Self {
        Self { upstreams }
    }
}

/// The checks of one provider pool, running until `stop` is set.
struct Running {
    health: Arc<ProviderHealth>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for HealthCheckService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut upstreams = self.upstreams.clone();
        let mut running: Vec<Running> = Vec::new();
        loop {
            let current: Vec<Arc<ProviderHealth>> = upstreams
                .borrow_and_update()
                .providers()
                .filter_map(|(_, pool)| pool.health())
                .collect();
            let (keep, gone): (Vec<Running>, Vec<Running>) = running
                .into_iter()
                .partition(|r| current.iter().any(|h| Arc::ptr_eq(h, &r.health)));
            stop_all(gone).await;
            running = keep;
            for health in current {
                if !running.iter().any(|r| Arc::ptr_eq(&r.health, &health)) {
                    let (stop, stopped) = watch::channel(false);
                    let checks = health.clone();
                    let task = tokio::spawn(async move { checks.start(stopped).await });
                    running.push(Running { health, stop, task });
                }
            }
            tokio::select! {
                changed = upstreams.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        stop_all(running).await;
    }
}

async fn stop_all(running: Vec<Running>) {
    for r in &running {
        let _ = r.stop.send(true);
    }
    for r in running {
        if r.task.await.is_err() {
            tracing::warn!("a health check task ended abnormally");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::time::Instant;

    use parking_lot::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tollgate_config::Config;

    use super::*;

    /// A one-route HTTP server answering every request with the current `status` and
    /// remembering each request head.
    struct Server {
        port: u16,
        status: Arc<AtomicU16>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn server() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (st, hd) = (status.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (st, hd) = (st.clone(), hd.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    hd.lock().push(String::from_utf8_lossy(&buf).into_owned());
                    let code = st.load(Ordering::SeqCst);
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        Server {
            port,
            status,
            heads,
        }
    }

    fn upstreams(endpoints: &[String], interval: &str) -> Upstreams {
        let yaml = format!(
            r#"
providers:
  p:
    kind: openai
    endpoints: {endpoints:?}
    api_keys: [sk-first, sk-second]
    health_check: {{ path: /health, interval: {interval}, expected_status: 200 }}
  unchecked:
    kind: openai
    endpoints: ["http://127.0.0.1:1"]
"#
        );
        let cfg: Config = serde_yaml_ng::from_str(&yaml).unwrap();
        Upstreams::from_config(&cfg).unwrap()
    }

    #[tokio::test]
    async fn probes_follow_the_endpoint_status() {
        let srv = server().await;
        let ups = upstreams(&[format!("http://127.0.0.1:{}/prefix/", srv.port)], "1h");
        assert!(ups.provider("unchecked").unwrap().health().is_none());
        let health = ups.provider("p").unwrap().health().unwrap();
        let pool = ups.provider("p").unwrap();
        let now = Instant::now();

        // Nothing known yet: usable, address unknown.
        assert!(pool.is_available(now));
        assert_eq!(pool.pick_endpoint(&[], now).unwrap().addr, None);

        health.check_now().await;
        let pick = pool.pick_endpoint(&[], now).unwrap();
        assert_eq!(
            pick.addr,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], srv.port)))
        );
        let head = srv.heads.lock()[0].to_ascii_lowercase();
        assert!(
            head.starts_with("get /prefix/health http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("host: 127.0.0.1:{}\r\n", srv.port)),
            "{head}"
        );
        assert!(
            head.contains("authorization: bearer sk-first\r\n"),
            "{head}"
        );

        srv.status.store(503, Ordering::SeqCst);
        health.check_now().await;
        assert!(pool.is_available(now), "one failed probe is not enough");
        health.check_now().await;
        assert!(!pool.is_available(now));
        assert!(pool.pick_endpoint(&[], now).is_none());
        let status = ups.status(now);
        assert_eq!(status.providers[0].endpoints[0].healthy, Some(false));
        assert_eq!(status.providers[1].endpoints[0].healthy, None);

        srv.status.store(200, Ordering::SeqCst);
        health.check_now().await;
        assert!(pool.pick_endpoint(&[], now).is_some());
        assert_eq!(
            ups.status(now).providers[0].endpoints[0].healthy,
            Some(true)
        );
    }

    #[tokio::test]
    async fn host_names_are_resolved_and_any_healthy_address_counts() {
        let srv = server().await;
        let ups = upstreams(&[format!("http://localhost:{}", srv.port)], "1h");
        let health = ups.provider("p").unwrap().health().unwrap();
        health.check_now().await;
        let pick = ups
            .provider("p")
            .unwrap()
            .pick_endpoint(&[], Instant::now())
            .unwrap();
        // localhost may also resolve to ::1, where nothing listens: 127.0.0.1 still counts.
        assert_eq!(
            pick.addr,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], srv.port)))
        );
        let head = srv.heads.lock()[0].to_ascii_lowercase();
        assert!(
            head.contains(&format!("host: localhost:{}\r\n", srv.port)),
            "{head}"
        );
    }

    #[tokio::test]
    async fn unhealthy_endpoint_is_avoided_while_another_serves() {
        let good = server().await;
        let bad = server().await;
        bad.status.store(500, Ordering::SeqCst);
        let ups = upstreams(
            &[
                format!("http://127.0.0.1:{}", bad.port),
                format!("http://127.0.0.1:{}", good.port),
            ],
            "1h",
        );
        let health = ups.provider("p").unwrap().health().unwrap();
        health.check_now().await;
        health.check_now().await;
        let pool = ups.provider("p").unwrap();
        for _ in 0..4 {
            assert_eq!(pool.pick_endpoint(&[], Instant::now()).unwrap().index, 1);
        }
    }

    #[tokio::test]
    async fn background_service_probes_until_shutdown() {
        let srv = server().await;
        srv.status.store(503, Ordering::SeqCst);
        let ups = upstreams(&[format!("http://127.0.0.1:{}", srv.port)], "20ms");
        let health = ups.provider("p").unwrap().health().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(async move { health.start(rx).await });
        let pool = ups.provider("p").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.is_available(Instant::now()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!pool.is_available(Instant::now()));
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_service_follows_reloads_and_keeps_unchanged_pools() {
        let first = server().await;
        let second = server().await;
        first.status.store(503, Ordering::SeqCst);
        second.status.store(503, Ordering::SeqCst);
        let before = Arc::new(upstreams(
            &[format!("http://127.0.0.1:{}", first.port)],
            "20ms",
        ));
        let (publish, current) = watch::channel(before.clone());
        let service = HealthCheckService::new(current);
        let (stop, shutdown) = watch::channel(false);
        let run = tokio::spawn(async move { service.start(shutdown).await });
        let unavailable = |ups: Arc<Upstreams>| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ups.provider("p").unwrap().is_available(Instant::now()) {
                assert!(Instant::now() < deadline, "the checks did not run");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        unavailable(before.clone()).await;

        // The same definition keeps its pool (and so its health); a changed one does not.
        let mut same = upstreams(&[format!("http://127.0.0.1:{}", first.port)], "20ms");
        assert_eq!(same.keep_unchanged(&before), ["p", "unchecked"]);
        assert!(!same.provider("p").unwrap().is_available(Instant::now()));
        let mut after = upstreams(&[format!("http://127.0.0.1:{}", second.port)], "20ms");
        assert_eq!(after.keep_unchanged(&before), ["unchecked"]);
        let after = Arc::new(after);
        publish.send(after.clone()).unwrap();
        unavailable(after).await;

        // The replaced pool's checks have stopped: the first server hears no more probes.
        let heard = first.heads.lock().len();
        let probes = second.heads.lock().len();
        while second.heads.lock().len() < probes + 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            first.heads.lock().len() <= heard + 1,
            "old checks still run"
        );

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn invalid_health_settings_are_config_errors() {
        let cfg: Config = serde_yaml_ng::from_str(
            r#"
providers:
  p: { kind: openai, endpoints: ["http://h"], api_keys: ["bad\nkey"], health_check: {} }
"#,
        )
        .unwrap();
        let err = Upstreams::from_config(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("providers.p.health_check:"), "{err}");
        assert!(!err.contains("bad"), "the key must not leak: {err}");
    }
}
