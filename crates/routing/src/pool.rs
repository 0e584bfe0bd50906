//! Runtime state of every provider: its endpoints (passive circuit breaker, requests in
//! flight, EWMA time to first byte, active health) and its API keys (round-robin with 429
//! cool-downs). Built once from the config and shared behind an `Arc`; every method is
//! synchronous and takes at most one short lock.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tollgate_config::{parse_endpoint, Config, ProviderConfig};

use crate::breaker::{Admission, CircuitBreaker, CircuitState};
use crate::health::{EndpointHealth, ProbeAuth, ProviderHealth};
use crate::tls::UpstreamTls;
use crate::RoutingError;

/// Weight of a new sample in the time-to-first-byte average: 0.3 follows a shift in
/// latency within a handful of requests without letting one slow request dominate.
const EWMA_WEIGHT: f64 = 0.3;

// === impl Upstreams ===

/// Every provider's runtime state.
#[derive(Debug)]
pub struct Upstreams {
    providers: BTreeMap<String, Arc<ProviderPool>>,
}

impl Upstreams {
    pub fn from_config(cfg: &Config) -> Result<Self, RoutingError> {
        let providers = cfg
            .providers
            .iter()
            .map(|(name, p)| Ok((name.clone(), Arc::new(ProviderPool::from_config(name, p)?))))
            .collect::<Result<_, RoutingError>>()?;
        Ok(Self { providers })
    }

    /// Takes over the pools of `previous` (a config reload's predecessor) whose provider
    /// definition, TLS files included, did not change, so their circuit breakers, health,
    /// latency averages, key cool-downs and requests in flight carry on. Returns the names
    /// of the providers kept.
    pub fn keep_unchanged(&mut self, previous: &Upstreams) -> Vec<String> {
        let mut kept = Vec::new();
        for (name, pool) in &mut self.providers {
            if let Some(old) = previous.providers.get(name) {
                if old.definition == pool.definition && old.tls == pool.tls {
                    *pool = old.clone();
                    kept.push(name.clone());
                }
            }
        }
        kept
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderPool> {
        self.providers.get(name).map(|p| &**p)
    }

    /// Providers in name order.
    pub fn providers(&self) -> impl Iterator<Item = (&str, &ProviderPool)> {
        self.providers.iter().map(|(n, p)| (n.as_str(), &**p))
    }

    /// A snapshot for `/admin/upstreams`. Secrets never appear in it.
    pub fn status(&self, now: Instant) -> UpstreamsStatus {
        UpstreamsStatus {
            providers: self
                .providers
                .iter()
                .map(|(name, pool)| pool.status(name, now))
                .collect(),
        }
    }
}

// === impl ProviderPool ===

/// The endpoints and keys of one provider.
pub struct ProviderPool {
    /// The config it was built from, to tell an unchanged provider on reload.
    definition: ProviderConfig,
    tls: Option<Arc<UpstreamTls>>,
    endpoints: Vec<EndpointState>,
    keys: Vec<KeyState>,
    next_endpoint: AtomicUsize,
    next_key: AtomicUsize,
    health: Option<Arc<ProviderHealth>>,
}

struct EndpointState {
    url: String,
    tls: bool,
    host: Arc<str>,
    port: u16,
    path_prefix: Arc<str>,
    breaker: CircuitBreaker,
    in_flight: Arc<AtomicU64>,
    /// Microseconds; 0 while unmeasured.
    ewma_ttfb_us: AtomicU64,
    health: Option<EndpointHealth>,
    /// With HTTP/2, taken while a stream is opened, see [`ProviderPool::http2_gate`].
    http2_gate: tokio::sync::Mutex<()>,
}

impl EndpointState {
    fn healthy(&self) -> bool {
        self.health.as_ref().is_none_or(EndpointHealth::healthy)
    }

    fn usable(&self, now: Instant) -> bool {
        self.healthy() && self.breaker.allows(now)
    }
}

struct KeyState {
    secret: Arc<str>,
    cooling_until: Mutex<Option<Instant>>,
}

impl KeyState {
    fn free_at(&self, now: Instant) -> Result<(), Instant> {
        match *self.cooling_until.lock() {
            Some(until) if now < until => Err(until),
            _ => Ok(()),
        }
    }
}

/// The endpoint chosen for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPick {
    /// Index into the provider's `endpoints`; report outcomes with it.
    pub index: usize,
    pub tls: bool,
    pub host: Arc<str>,
    pub port: u16,
    /// Prepended to every upstream path; empty or `/prefix` without a trailing slash.
    pub path_prefix: Arc<str>,
    /// An address the active health check found healthy; `None` when the endpoint has no
    /// check (the gateway resolves `host` itself).
    pub addr: Option<SocketAddr>,
    /// This attempt is the half-open circuit's single probe.
    pub probe: bool,
}

/// The API key chosen for one attempt.
#[derive(Clone)]
pub struct KeyPick {
    /// Index into the provider's `api_keys`; cool it down with this.
    pub index: usize,
    pub secret: Arc<str>,
}

impl fmt::Debug for KeyPick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPick")
            .field("index", &self.index)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Counts one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlightGuard(Option<Arc<AtomicU64>>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(counter) = self.0.take() {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for ProviderPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are counted, never shown.
        f.debug_struct("ProviderPool")
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.url).collect::<Vec<_>>(),
            )
            .field("keys", &self.keys.len())
            .field("health_checked", &self.health.is_some())
            .finish()
    }
}

impl ProviderPool {
    fn from_config(name: &str, cfg: &ProviderConfig) -> Result<Self, RoutingError> {
        if cfg.endpoints.is_empty() {
            return Err(RoutingError::config(
                format!("providers.{name}.endpoints"),
                "a provider needs at least one endpoint",
            ));
        }
        let first_key = cfg.api_keys.first().map(|key| ProbeAuth {
            kind: cfg.kind,
            key,
        });
        let tls = cfg
            .tls
            .as_ref()
            .map(UpstreamTls::load)
            .transpose()
            .map_err(|p| RoutingError::config(format!("providers.{name}.tls"), p))?
            .map(Arc::new);
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        for (i, url) in cfg.endpoints.iter().enumerate() {
            let path = format!("providers.{name}.endpoints[{i}]");
            let ep = parse_endpoint(url).map_err(|p| RoutingError::config(&path, p))?;
            let health = cfg
                .health_check
                .as_ref()
                .map(|hc| EndpointHealth::new(&ep, hc, first_key, tls.as_deref()))
                .transpose()
                .map_err(|p| RoutingError::config(format!("providers.{name}.health_check"), p))?;
            endpoints.push(EndpointState {
                url: url.clone(),
                tls: ep.tls,
                host: ep.host.into(),
                port: ep.port,
                path_prefix: ep.path_prefix.into(),
                breaker: CircuitBreaker::new(
                    cfg.circuit_breaker.failures,
                    cfg.circuit_breaker.cooldown,
                ),
                in_flight: Arc::new(AtomicU64::new(0)),
                ewma_ttfb_us: AtomicU64::new(0),
                health,
                http2_gate: tokio::sync::Mutex::new(()),
            });
        }
        let health = cfg.health_check.as_ref().map(|_| {
            Arc::new(ProviderHealth::new(
                endpoints.iter().filter_map(|e| e.health.clone()).collect(),
            ))
        });
        let keys = cfg
            .api_keys
            .iter()
            .map(|k| KeyState {
                secret: k.as_str().into(),
                cooling_until: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            definition: cfg.clone(),
            tls,
            endpoints,
            keys,
            next_endpoint: AtomicUsize::new(0),
            next_key: AtomicUsize::new(0),
            health,
        })
    }

    /// The provider's active health checks; `None` without `health_check`.
    pub fn health(&self) -> Option<Arc<ProviderHealth>> {
        self.health.clone()
    }

    /// What every connection to this provider's `https` endpoints must use beyond the
    /// defaults; `None` without `tls`.
    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.tls.as_deref()
    }

    /// With `http2`, the concurrent streams one connection carries; `None` for HTTP/1.1.
    pub fn http2_streams(&self) -> Option<usize> {
        self.definition
            .http2
            .then_some(self.definition.http2_streams)
    }

    /// With `http2`, waits until no other request opens a stream to endpoint `index`.
    /// Pingora takes an HTTP/2 connection out of its pool while it opens a stream on it
    /// (and a new connection is in no pool until its handshake is done), so requests
    /// arriving meanwhile would each open a connection of their own; one at a time, they
    /// share it. Opening a stream on a pooled connection takes microseconds.
    pub async fn http2_gate(&self, index: usize) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if !self.definition.http2 {
            return None;
        }
        Some(self.endpoints.get(index)?.http2_gate.lock().await)
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Picks an endpoint whose circuit admits a request (half-open: one probe at a time) and
    /// which the active check finds healthy (or has no check). Endpoints not in `avoid`
    /// (already failed in this request) come first, then those with fewest requests in
    /// flight; ties rotate. `None` when no endpoint is usable.
    pub fn pick_endpoint(&self, avoid: &[usize], now: Instant) -> Option<EndpointPick> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        // Another request may take a half-open probe slot between the check and the
        // acquisition; each lost race excludes that endpoint, so this ends within n rounds.
        let mut lost: Vec<usize> = Vec::new();
        for _ in 0..n {
            let mut best: Option<(usize, (bool, u64))> = None;
            for offset in 0..n {
                let i = (start + offset) % n;
                let ep = &self.endpoints[i];
                if lost.contains(&i) || !ep.usable(now) {
                    continue;
                }
                let rank = (avoid.contains(&i), ep.in_flight.load(Ordering::Relaxed));
                if best.is_none_or(|(_, r)| rank < r) {
                    best = Some((i, rank));
                }
            }
            let (i, _) = best?;
            let ep = &self.endpoints[i];
            match ep.breaker.try_acquire(now) {
                Some(admission) => {
                    return Some(EndpointPick {
                        index: i,
                        tls: ep.tls,
                        host: ep.host.clone(),
                        port: ep.port,
                        path_prefix: ep.path_prefix.clone(),
                        addr: ep.health.as_ref().and_then(EndpointHealth::pick_addr),
                        probe: admission == Admission::Probe,
                    })
                }
                None => lost.push(i),
            }
        }
        None
    }

    /// The next API key that is not cooling down, round-robin. `Ok(None)` when the provider
    /// has no keys; `Err(t)` when every key cools down, `t` being the earliest one is free.
    pub fn pick_key(&self, now: Instant) -> Result<Option<KeyPick>, Instant> {
        let n = self.keys.len();
        if n == 0 {
            return Ok(None);
        }
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut earliest: Option<Instant> = None;
        for offset in 0..n {
            let index = (start + offset) % n;
            let key = &self.keys[index];
            match key.free_at(now) {
                Ok(()) => {
                    return Ok(Some(KeyPick {
                        index,
                        secret: key.secret.clone(),
                    }))
                }
                Err(until) => earliest = Some(earliest.map_or(until, |e| e.min(until))),
            }
        }
        Err(earliest.unwrap_or(now))
    }

    /// Rests a key until `until` (a 429's Retry-After). A later deadline already set is kept.
    pub fn cool_key(&self, key: usize, until: Instant) {
        if let Some(k) = self.keys.get(key) {
            let mut cooling = k.cooling_until.lock();
            if cooling.is_none_or(|current| current < until) {
                *cooling = Some(until);
            }
        }
    }

    /// Whether a request could be sent now: some endpoint usable and some key free.
    pub fn is_available(&self, now: Instant) -> bool {
        let keys_ok = self.keys.is_empty() || self.keys.iter().any(|k| k.free_at(now).is_ok());
        keys_ok && self.endpoints.iter().any(|e| e.usable(now))
    }

    /// Counts a request in flight on `endpoint` until the guard is dropped.
    pub fn start(&self, endpoint: usize) -> InFlightGuard {
        InFlightGuard(self.endpoints.get(endpoint).map(|e| {
            e.in_flight.fetch_add(1, Ordering::Relaxed);
            e.in_flight.clone()
        }))
    }

    /// The endpoint answered: closes a half-open circuit, resets its failure count and feeds
    /// the time to first byte into its moving average.
    pub fn record_success(&self, endpoint: usize, ttfb: Duration) {
        let Some(ep) = self.endpoints.get(endpoint) else {
            return;
        };
        ep.breaker.record_success();
        let sample = u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX).max(1);
        // The closure always returns Some, so the update cannot fail.
        let _ = ep
            .ewma_ttfb_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    let next = old as f64 + EWMA_WEIGHT * (sample as f64 - old as f64);
                    (next as u64).max(1)
                })
            });
    }

    /// The endpoint failed (connect error, timeout, 5xx): counts toward opening its circuit.
    pub fn record_failure(&self, endpoint: usize, now: Instant) {
        if let Some(ep) = self.endpoints.get(endpoint) {
            ep.breaker.record_failure(now);
        }
    }

    /// Keeps traffic off `endpoint` until `until` (an endpoint-wide Retry-After); a later
    /// deadline already set is kept.
    pub fn trip_endpoint(&self, endpoint: usize, until: Instant) {
        if let Some(ep) = self.endpoints.get(endpoint) {
            ep.breaker.trip_until(until);
        }
    }

    /// The lowest moving-average time to first byte among usable endpoints; an unmeasured
    /// endpoint counts as zero so that new endpoints get traffic.
    pub fn best_ttfb(&self, now: Instant) -> Duration {
        self.endpoints
            .iter()
            .filter(|e| e.usable(now))
            .map(|e| e.ewma_ttfb_us.load(Ordering::Relaxed))
            .min()
            .map_or(Duration::ZERO, Duration::from_micros)
    }

    /// Requests in flight across all endpoints.
    pub fn in_flight(&self) -> u64 {
        self.endpoints
            .iter()
            .map(|e| e.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    fn status(&self, name: &str, now: Instant) -> ProviderStatus {
        ProviderStatus {
            name: name.to_owned(),
            available: self.is_available(now),
            endpoints: self
                .endpoints
                .iter()
                .enumerate()
                .map(|(index, ep)| {
                    let breaker = ep.breaker.snapshot(now);
                    let ewma = ep.ewma_ttfb_us.load(Ordering::Relaxed);
                    EndpointStatus {
                        index,
                        url: ep.url.clone(),
                        healthy: ep.health.as_ref().map(EndpointHealth::healthy),
                        circuit: breaker.state,
                        open_for_secs: breaker.open_until.map(|u| secs_until(u, now)),
                        consecutive_failures: breaker.consecutive_failures,
                        in_flight: ep.in_flight.load(Ordering::Relaxed),
                        ewma_ttfb_ms: (ewma > 0).then(|| ewma as f64 / 1000.0),
                    }
                })
                .collect(),
            keys: self
                .keys
                .iter()
                .enumerate()
                .map(|(index, k)| KeyStatus {
                    index,
                    cooling_for_secs: k.free_at(now).err().map(|u| secs_until(u, now)),
                })
                .collect(),
        }
    }
}

fn secs_until(until: Instant, now: Instant) -> f64 {
    until.saturating_duration_since(now).as_secs_f64()
}

// === status ===

/// What `/admin/upstreams` shows.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamsStatus {
    pub providers: Vec<ProviderStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub name: String,
    /// Some endpoint usable and some key free.
    pub available: bool,
    pub endpoints: Vec<EndpointStatus>,
    /// By index into `api_keys`; the keys themselves are never shown.
    pub keys: Vec<KeyStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub index: usize,
    pub url: String,
    /// The active check's verdict; `None` without a check.
    pub healthy: Option<bool>,
    pub circuit: CircuitState,
    /// Seconds until an open circuit half-opens.
    pub open_for_secs: Option<f64>,
    pub consecutive_failures: u32,
    pub in_flight: u64,
    /// `None` until a response was measured.
    pub ewma_ttfb_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub index: usize,
    /// Seconds until the key may be used again; `None` when usable.
    pub cooling_for_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> ProviderPool {
        let cfg: ProviderConfig = serde_yaml_ng::from_str(yaml).unwrap();
        ProviderPool::from_config("p", &cfg).unwrap()
    }

    fn three_endpoints() -> ProviderPool {
        pool(
            "kind: openai
endpoints: ['http://a:1', 'http://b:2/x/', 'https://c']
api_keys: [k0, k1, k2]
circuit_breaker: { failures: 2, cooldown: 10s }",
        )
    }

    #[test]
    fn endpoint_pick_carries_the_parsed_url() {
        let p = three_endpoints();
        let now = Instant::now();
        let picks: Vec<_> = (0..3).map(|_| p.pick_endpoint(&[], now).unwrap()).collect();
        let b = picks.iter().find(|e| e.index == 1).unwrap();
        assert_eq!(
            (b.tls, &*b.host, b.port, &*b.path_prefix, b.addr, b.probe),
            (false, "b", 2, "/x", None, false)
        );
        let c = picks.iter().find(|e| e.index == 2).unwrap();
        assert_eq!((c.tls, c.port), (true, 443));
    }

    #[test]
    fn endpoint_ties_rotate() {
        let p = three_endpoints();
        let now = Instant::now();
        let mut seen: Vec<usize> = (0..6)
            .map(|_| p.pick_endpoint(&[], now).unwrap().index)
            .collect();
        assert_eq!(&seen[..3], &seen[3..]);
        seen.truncate(3);
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn endpoint_prefers_fewest_in_flight() {
        let p = three_endpoints();
        let now = Instant::now();
        let _g0 = p.start(0);
        let _g1 = p.start(1);
        let g2 = p.start(2);
        let _g2b = p.start(2);
        assert_eq!(p.in_flight(), 4);
        for _ in 0..3 {
            let i = p.pick_endpoint(&[], now).unwrap().index;
            assert!(i == 0 || i == 1);
        }
        drop(g2);
        drop(_g2b);
        assert_eq!(p.in_flight(), 2);
        assert_eq!(p.pick_endpoint(&[], now).unwrap().index, 2);
    }

    #[test]
    fn endpoint_avoid_list_is_a_preference() {
        let p = three_endpoints();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(p.pick_endpoint(&[0, 2], now).unwrap().index, 1);
        }
        // Even busy, an endpoint not yet tried beats one that already failed.
        let _g = p.start(1);
        assert_eq!(p.pick_endpoint(&[0, 2], now).unwrap().index, 1);
        // All avoided: still pick one rather than none.
        assert!(p.pick_endpoint(&[0, 1, 2], now).is_some());
    }

    #[test]
    fn open_circuits_are_skipped_and_half_open_admits_one() {
        let p = three_endpoints();
        let t0 = Instant::now();
        for i in [0, 1] {
            p.record_failure(i, t0);
            p.record_failure(i, t0);
        }
        for _ in 0..4 {
            assert_eq!(p.pick_endpoint(&[], t0).unwrap().index, 2);
        }
        p.record_failure(2, t0);
        p.record_failure(2, t0);
        assert!(p.pick_endpoint(&[], t0).is_none());
        assert!(!p.is_available(t0));

        let t1 = t0 + Duration::from_secs(10);
        assert!(p.is_available(t1));
        let mut probes: Vec<_> = (0..3)
            .map(|_| p.pick_endpoint(&[], t1).unwrap())
            .inspect(|e| assert!(e.probe))
            .map(|e| e.index)
            .collect();
        probes.sort_unstable();
        assert_eq!(probes, [0, 1, 2]);
        assert!(p.pick_endpoint(&[], t1).is_none());

        p.record_success(1, Duration::from_millis(5));
        let again = p.pick_endpoint(&[], t1).unwrap();
        assert_eq!((again.index, again.probe), (1, false));
    }

    #[test]
    fn trip_endpoint_keeps_the_later_deadline() {
        let p = three_endpoints();
        let t0 = Instant::now();
        p.trip_endpoint(0, t0 + Duration::from_secs(60));
        p.trip_endpoint(0, t0 + Duration::from_secs(1));
        let s = p.status("p", t0 + Duration::from_secs(30));
        assert_eq!(s.endpoints[0].circuit, CircuitState::Open);
        assert_eq!(s.endpoints[0].open_for_secs, Some(30.0));
    }

    #[test]
    fn keys_rotate_and_cool_down() {
        let p = three_endpoints();
        let t0 = Instant::now();
        let mut firsts: Vec<usize> = (0..3)
            .map(|_| p.pick_key(t0).unwrap().unwrap().index)
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, [0, 1, 2]);

        p.cool_key(1, t0 + Duration::from_secs(30));
        for _ in 0..6 {
            assert_ne!(p.pick_key(t0).unwrap().unwrap().index, 1);
        }
        p.cool_key(0, t0 + Duration::from_secs(20));
        p.cool_key(2, t0 + Duration::from_secs(40));
        assert_eq!(p.pick_key(t0).unwrap_err(), t0 + Duration::from_secs(20));
        assert!(!p.is_available(t0));

        // A shorter cool-down never shortens a longer one.
        p.cool_key(2, t0 + Duration::from_secs(5));
        assert_eq!(
            p.pick_key(t0 + Duration::from_secs(25))
                .unwrap()
                .unwrap()
                .index,
            0
        );
        assert!(p.is_available(t0 + Duration::from_secs(25)));
        let t35 = t0 + Duration::from_secs(35);
        for _ in 0..4 {
            assert_ne!(p.pick_key(t35).unwrap().unwrap().index, 2);
        }
        // A longer one extends.
        p.cool_key(0, t0 + Duration::from_secs(100));
        let s = p.status("p", t35);
        let cooling: Vec<_> = s.keys.iter().map(|k| k.cooling_for_secs).collect();
        assert_eq!(cooling, [Some(65.0), None, Some(5.0)]);
        // Out-of-range indexes are ignored.
        p.cool_key(7, t0);
    }

    #[test]
    fn keyless_provider_and_debug_hides_secrets() {
        let p = pool("kind: openai\nendpoints: ['http://127.0.0.1:9']");
        assert!(p.pick_key(Instant::now()).unwrap().is_none());
        assert!(p.is_available(Instant::now()));

        let k = three_endpoints().pick_key(Instant::now()).unwrap().unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&*k.secret), "{shown}");
    }

    #[test]
    fn ewma_and_best_ttfb() {
        let p = three_endpoints();
        let now = Instant::now();
        assert_eq!(p.best_ttfb(now), Duration::ZERO);
        for i in 0..3 {
            p.record_success(i, Duration::from_millis(100 * (i as u64 + 1)));
        }
        assert_eq!(p.best_ttfb(now), Duration::from_millis(100));
        p.record_success(0, Duration::from_millis(200));
        // 100 + 0.3 * (200 - 100)
        assert_eq!(p.best_ttfb(now), Duration::from_millis(130));
        let s = p.status("p", now);
        assert_eq!(s.endpoints[0].ewma_ttfb_ms, Some(130.0));
        // Unusable endpoints do not count.
        p.record_failure(0, now);
        p.record_failure(0, now);
        assert_eq!(p.best_ttfb(now), Duration::from_millis(200));
    }

    #[test]
    fn out_of_range_reports_are_ignored() {
        let p = three_endpoints();
        let now = Instant::now();
        p.record_failure(9, now);
        p.record_success(9, Duration::ZERO);
        p.trip_endpoint(9, now);
        drop(p.start(9));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn status_serializes_without_secrets() {
        let p = three_endpoints();
        let now = Instant::now();
        let _g = p.start(1);
        p.record_failure(2, now);
        let json = serde_json::to_value(p.status("p", now)).unwrap();
        assert_eq!(json["endpoints"][1]["in_flight"], 1);
        assert_eq!(json["endpoints"][2]["consecutive_failures"], 1);
        assert_eq!(json["endpoints"][2]["circuit"], "closed");
        assert_eq!(json["endpoints"][0]["url"], "http://a:1");
        assert!(json["endpoints"][0]["healthy"].is_null());
        let text = json.to_string();
        assert!(!text.contains("k0") && !text.contains("k1"), "{text}");
    }

    #[test]
    fn config_errors_are_reported_not_panicked() {
        let cfg: ProviderConfig =
            serde_yaml_ng::from_str("kind: openai\nendpoints: ['nope']").unwrap();
        let err = ProviderPool::from_config("p", &cfg).unwrap_err();
        assert!(
            err.to_string().starts_with("providers.p.endpoints[0]:"),
            "{err}"
        );
        let cfg: ProviderConfig = serde_yaml_ng::from_str("kind: openai\nendpoints: []").unwrap();
        assert!(ProviderPool::from_config("p", &cfg).is_err());
    }
}
