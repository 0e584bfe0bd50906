//! Config hot reload, readiness and drain.
//!
//! SIGHUP and `POST /admin/reload` re-read the file the process was started with, validate
//! it, build a new [`Snapshot`] and swap it in atomically. A request pins the snapshot it
//! started with, so requests and streams in flight finish on the old config; providers
//! whose definition did not change keep their runtime state; a file with problems changes
//! nothing and every problem is logged. Listeners, threads, connection settings, the
//! ledger and tracing are fixed at start: a reload that changes them says a restart or an
//! upgrade is needed.
//!
//! The process is ready (`/readyz`) from the moment Pingora runs its services until a
//! shutdown or an upgrade hand-over begins; it then drains and exits as soon as no request
//! is in flight, at the latest when Pingora's grace period ends.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};
use tollgate_config::{Config, MAX_CONFIG_BYTES};
use tollgate_routing::Upstreams;

use crate::snapshot::Snapshot;
use crate::tls::ListenerTls;

/// How often a draining process looks whether requests are still in flight; the exit
/// comes at most this long after the last one finished.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// How long a draining process waits for the ledger to ship what is spooled before it
/// exits; what is left is shipped by the next process that opens the spool.
const LEDGER_DRAIN: Duration = Duration::from_secs(5);

// === config source ===

/// A config file's text and the hash that names this version of it.
pub struct ConfigSource {
    pub text: String,
    /// `sha256:` and the hex digest of the text.
    pub hash: String,
}

impl ConfigSource {
    pub fn read(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(format!(
                "{}: larger than {MAX_CONFIG_BYTES} bytes; is this the config file?",
                path.display()
            ));
        }
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
        Ok(Self { text, hash })
    }

    /// Parses and validates the text; one line per problem, each with file and line.
    pub fn parse(&self, path: &Path) -> Result<Config, Vec<String>> {
        tollgate_config::parse(&self.text, &path.display().to_string())
            .map_err(|errors| errors.to_string().lines().map(str::to_owned).collect())
    }
}

// === impl Reloader ===

/// Which config version is serving.
#[derive(Clone, serde::Serialize)]
pub struct Loaded {
    pub hash: String,
    /// Unix seconds.
    pub loaded_at: u64,
    pub reloads: u64,
}

/// What a successful reload did.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    pub hash: String,
    /// Providers whose runtime state carried over.
    pub providers_kept: Vec<String>,
    /// Settings that changed but apply only after a restart or an upgrade.
    pub restart_needed: Vec<&'static str>,
}

pub struct Reloader {
    /// `None` for a config that did not come from a file (the demo).
    path: Option<PathBuf>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    upstreams: watch::Sender<Arc<Upstreams>>,
    tls: Option<Arc<ListenerTls>>,
    /// One reload at a time, so two cannot interleave their swaps.
    busy: Mutex<()>,
    loaded: Mutex<Loaded>,
    /// Every snapshot that may still be pinned by a request, to count requests in flight.
    snapshots: Mutex<Vec<Weak<Snapshot>>>,
    registry: Registry,
    reloads: IntCounterVec,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        hash: String,
        tls: Option<Arc<ListenerTls>>,
    ) -> Result<Self, prometheus::Error> {
        let current = snapshot.load_full();
        let (upstreams, _) = watch::channel(current.upstreams.clone());
        let registry = Registry::new();
        let reloads = IntCounterVec::new(
            Opts::new(
                "tollgate_config_reloads_total",
                "Config reloads by result: ok, or invalid (the running config was kept)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self {
            path,
            snapshot,
            upstreams,
            tls,
            busy: Mutex::new(()),
            loaded: Mutex::new(Loaded {
                hash,
                loaded_at: unix_now(),
                reloads: 0,
            }),
            snapshots: Mutex::new(vec![Arc::downgrade(&current)]),
            registry,
            reloads,
        })
    }

    /// The providers of the current config, for the health-check service.
    pub fn upstreams(&self) -> watch::Receiver<Arc<Upstreams>> {
        self.upstreams.subscribe()
    }

    pub fn loaded(&self) -> Loaded {
        self.loaded.lock().clone()
    }

    /// Re-reads the config file and swaps it in; on problems the running config stays
    /// and every problem is logged and returned. Blocks on file reads: call it from a
    /// thread that may block.
    pub fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let _busy = self.busy.lock();
        match self.try_reload() {
            Ok(done) => {
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    hash = %done.hash,
                    providers_kept = ?done.providers_kept,
                    "config reloaded"
                );
                crate::usage::warn_unpriced(&self.snapshot.load().config);
                for setting in &done.restart_needed {
                    tracing::warn!(
                        setting,
                        "changed in the config file; takes effect after a restart or an upgrade"
                    );
                }
                Ok(done)
            }
            Err(problems) => {
                self.reloads.with_label_values(&["invalid"]).inc();
                for problem in &problems {
                    tracing::error!(%problem, "config reload refused; the running config stays");
                }
                Err(problems)
            }
        }
    }

    fn try_reload(&self) -> Result<Reloaded, Vec<String>> {
        let Some(path) = &self.path else {
            return Err(vec![
                "this process serves a built-in config (tollgate demo): there is no file to reload"
                    .to_owned(),
            ]);
        };
        let source = ConfigSource::read(path).map_err(|e| vec![e])?;
        let config = source.parse(path)?;
        let current = self.snapshot.load_full();
        let (next, providers_kept) =
            Snapshot::build_after(config, Some(&current)).map_err(|e| vec![e])?;
        if let (Some(tls), Some(cfg)) = (&self.tls, &next.config.server.tls) {
            tls.reload_certs(cfg)
                .map_err(|e| vec![format!("server.tls: {e}")])?;
        }
        let restart_needed = restart_needed(&current.config, &next.config);
        let next = Arc::new(next);
        {
            let mut snapshots = self.snapshots.lock();
            snapshots.retain(|s| s.strong_count() > 0);
            snapshots.push(Arc::downgrade(&next));
        }
        self.snapshot.store(next.clone());
        self.upstreams.send_replace(next.upstreams.clone());
        let mut loaded = self.loaded.lock();
        *loaded = Loaded {
            hash: source.hash.clone(),
            loaded_at: unix_now(),
            reloads: loaded.reloads + 1,
        };
        Ok(Reloaded {
            hash: source.hash,
            providers_kept,
            restart_needed,
        })
    }

    /// Requests in flight: each pins the snapshot it started with, and nothing else holds
    /// one but the current-config slot.
    pub fn in_flight(&self) -> usize {
        let _current = self.snapshot.load_full();
        let pinned: usize = self.snapshots.lock().iter().map(Weak::strong_count).sum();
        // Not requests: the current-config slot's reference and `current` here.
        pinned.saturating_sub(2)
    }

    /// `tollgate_config_reloads_total`, in Prometheus' text format.
    pub fn render_metrics(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "reload metrics could not be rendered");
        }
        out
    }
}

/// Settings read only at start that differ between `old` and `new`.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let listener_tls = |c: &Config| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.listen.clone(), t.client_ca.clone(), t.http2))
    };
    let checks = [
        ("server.listen", o.listen != n.listen),
        ("server.admin_listen", o.admin_listen != n.admin_listen),
        ("server.threads", o.threads != n.threads),
        ("server.tls", listener_tls(old) != listener_tls(new)),
        ("server.h2c", o.h2c != n.h2c),
        ("server.client", o.client != n.client),
        (
            "server.upstream.keepalive_pool",
            o.upstream.keepalive_pool != n.upstream.keepalive_pool,
        ),
        (
            "server.shutdown_grace",
            o.shutdown_grace != n.shutdown_grace,
        ),
        (
            "server.shutdown_timeout",
            o.shutdown_timeout != n.shutdown_timeout,
        ),
        ("server.idle_drain", o.idle_drain != n.idle_drain),
        ("server.upgrade_sock", o.upgrade_sock != n.upgrade_sock),
        ("server.pid_file", o.pid_file != n.pid_file),
        ("ledger", ledger_key(old) != ledger_key(new)),
        // The cache's store and the managed-key store are opened once; routes' cache
        // settings (on/off, TTL, threshold) apply on reload.
        ("cache", old.cache != new.cache),
        ("managed_keys", old.managed_keys != new.managed_keys),
        (
            "telemetry",
            old.telemetry
                .as_ref()
                .map(|t| (&t.otlp_endpoint, &t.service_name))
                != new
                    .telemetry
                    .as_ref()
                    .map(|t| (&t.otlp_endpoint, &t.service_name)),
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

fn ledger_key(c: &Config) -> (tollgate_config::LedgerSink, &Path, Option<&str>, &Path) {
    (
        c.ledger.sink,
        &c.ledger.path,
        c.ledger.url.as_deref(),
        &c.ledger.spool,
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reloads on every SIGHUP until shutdown.
pub struct ReloadOnSighup(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for ReloadOnSighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP; reload with POST /admin/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the config");
                    let reloader = self.0.clone();
                    // The outcome is logged by `reload`.
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

// === impl Readiness ===

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Whether this process should get new traffic.
pub struct Readiness(AtomicU8);

impl Default for Readiness {
    fn default() -> Self {
        Self(AtomicU8::new(STARTING))
    }
}

impl Readiness {
    pub fn state(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            READY => "ready",
            DRAINING => "draining",
            _ => "starting",
        }
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed) == READY
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed) == DRAINING
    }

    fn set(&self, state: u8) {
        // Draining never turns back.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old != DRAINING).then_some(state)
            });
    }
}

/// Serves `A` (the proxy); once the listeners stop, keeps idle kept-alive client
/// connections open for `window` before Pingora drops them. Pingora drops them at once,
/// and a client that had just written its next request on one would see it fail; within
/// the window that request is served and answered with `Connection: close` (Pingora stops
/// keep-alive while shutting down), so busy clients move to the new process cleanly.
pub struct IdleDrain<A> {
    inner: Arc<A>,
    window: Duration,
    closed: watch::Sender<bool>,
}

impl<A> IdleDrain<A> {
    /// Also returns what tells that the idle connections are closed.
    pub fn new(inner: A, window: Duration) -> (Self, watch::Receiver<bool>) {
        let (closed, rx) = watch::channel(false);
        let app = Self {
            inner: Arc::new(inner),
            window,
            closed,
        };
        (app, rx)
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for IdleDrain<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.window).await;
        self.inner.cleanup().await;
        self.closed.send_replace(true);
    }
}

/// Follows Pingora's execution phases: ready once it runs, draining from a shutdown or an
/// upgrade hand-over on; once the listeners have stopped, exits the process as soon as
/// no request is in flight (Pingora itself would wait for its whole grace period).
pub struct Lifecycle {
    pub readiness: Arc<Readiness>,
    pub reloader: Arc<Reloader>,
    pub ledger: Arc<tollgate_ledger::Ledger>,
    /// Flushed once drained: spans of the last requests end after the shutdown began.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    /// From [`IdleDrain`]: the idle client connections are closed.
    pub idle_closed: watch::Receiver<bool>,
    /// How long [`IdleDrain`] keeps them open.
    pub idle_drain: Duration,
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let phases = self.phases.lock().take();
        if let Some(mut phases) = phases {
            loop {
                tokio::select! {
                    phase = phases.recv() => match phase {
                        Ok(ExecutionPhase::Running) => self.readiness.set(READY),
                        Ok(ExecutionPhase::GracefulUpgradeTransferringFds
                            | ExecutionPhase::GracefulUpgradeCloseTimeout
                            | ExecutionPhase::GracefulTerminate
                            | ExecutionPhase::ShutdownStarted) => self.readiness.set(DRAINING),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = shutdown.changed() => break,
                }
            }
        } else {
            let _ = shutdown.changed().await;
        }
        self.readiness.set(DRAINING);
        // A request that arrives on an idle connection within the window counts as in
        // flight only once it is read, so the exit waits for the window to close first.
        let mut idle_closed = self.idle_closed.clone();
        let _ = tokio::time::timeout(
            self.idle_drain + DRAIN_POLL * 10,
            idle_closed.wait_for(|closed| *closed),
        )
        .await;
        while self.reloader.in_flight() > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        tracing::info!("drained: no request in flight; exiting");
        let ledger = self.ledger.clone();
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || {
            ledger.close(LEDGER_DRAIN);
            if let Some(telemetry) = telemetry {
                telemetry.flush();
            }
        })
        .await;
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
server: { listen: ["127.0.0.1:0"] }
providers:
  a: { kind: openai, endpoints: ["http://127.0.0.1:1"] }
  b: { kind: openai, endpoints: ["http://127.0.0.1:2"] }
models:
  m: { provider: a, model: up }
"#;

    struct File(PathBuf);

    impl File {
        fn new(tag: &str, text: &str) -> File {
            let path = std::env::temp_dir()
                .join(format!("tollgate-reload-{tag}-{}.yaml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            File(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn reloader(file: &File) -> Reloader {
        let source = ConfigSource::read(&file.0).unwrap();
        let snapshot = Snapshot::build(source.parse(&file.0).unwrap()).unwrap();
        let slot = Arc::new(ArcSwap::from_pointee(snapshot));
        Reloader::new(Some(file.0.clone()), slot, source.hash, None).unwrap()
    }

    #[test]
    fn a_reload_swaps_keeps_unchanged_providers_and_names_start_time_settings() {
        let file = File::new("ok", CONFIG);
        let reloader = reloader(&file);
        let before = reloader.loaded();
        let pinned = reloader.snapshot.load_full();
        assert_eq!(reloader.in_flight(), 1, "one request holds the snapshot");

        let changed = CONFIG
            .replace("127.0.0.1:2", "127.0.0.1:3")
            .replace("127.0.0.1:0", "127.0.0.1:8080");
        std::fs::write(&file.0, changed).unwrap();
        let done = reloader.reload().unwrap();
        assert_eq!(done.providers_kept, ["a"]);
        assert_eq!(done.restart_needed, ["server.listen"]);
        assert_ne!(done.hash, before.hash);
        assert_eq!(reloader.loaded().reloads, 1);
        assert!(std::ptr::eq(
            pinned.upstreams.provider("a").unwrap(),
            reloader.snapshot.load().upstreams.provider("a").unwrap()
        ));
        assert!(Arc::ptr_eq(
            &reloader.upstreams().borrow(),
            &reloader.snapshot.load().upstreams
        ));
        assert_eq!(reloader.in_flight(), 1, "the old snapshot is still pinned");
        drop(pinned);
        assert_eq!(reloader.in_flight(), 0);
    }

    #[test]
    fn a_reload_that_adds_a_cache_or_a_key_store_says_it_needs_a_restart() {
        let file = File::new("stores", CONFIG);
        let reloader = reloader(&file);
        let changed = format!(
            "{CONFIG}cache: {{ store: memory }}\nmanaged_keys: {{ path: {} }}\n",
            std::env::temp_dir()
                .join("tollgate-reload-keys.db")
                .display()
        );
        std::fs::write(&file.0, changed).unwrap();
        let done = reloader.reload().unwrap();
        assert_eq!(done.restart_needed, ["cache", "managed_keys"]);
    }

    #[test]
    fn a_file_with_problems_changes_nothing() {
        let file = File::new("bad", CONFIG);
        let reloader = reloader(&file);
        let before = reloader.loaded();
        std::fs::write(&file.0, CONFIG.replace("provider: a", "provider: nope")).unwrap();
        let problems = reloader.reload().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains(".yaml:7: models.m.provider: unknown provider 'nope'"),
            "{problems:?}"
        );
        assert_eq!(reloader.loaded().hash, before.hash);
        let metrics = String::from_utf8(reloader.render_metrics()).unwrap();
        assert!(
            metrics.contains("tollgate_config_reloads_total{result=\"invalid\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn draining_never_turns_ready_again() {
        let readiness = Readiness::default();
        assert_eq!(readiness.state(), "starting");
        readiness.set(READY);
        assert!(readiness.is_ready());
        readiness.set(DRAINING);
        readiness.set(READY);
        assert_eq!(readiness.state(), "draining");
        assert!(!readiness.is_ready());
    }
}
