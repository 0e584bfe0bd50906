//! Builds the Pingora server: the proxy service on the client listeners (plain and TLS),
//! the admin service, and the background services (health checks, SIGHUP reload,
//! readiness and drain); then serves until stopped.
//!
//! With `--upgrade` the process first receives the listening sockets of the running one
//! over `server.upgrade_sock` (sent when that one gets SIGQUIT), so no connection is
//! refused while the binary or the fixed settings change; the old process drains.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora_core::apps::HttpServerOptions;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::protocols::TcpKeepalive;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use tollgate_config::{Config, LedgerConfig, LedgerDurability, LedgerSink, ServerConfig};
use tollgate_ledger::{
    Ledger, LedgerError, LedgerOptions, PostgresSink, Sink, SpoolSync, SqliteSink,
};
use tollgate_routing::HealthCheckService;

use crate::admin::Admin;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::{ConfigSource, IdleDrain, Lifecycle, Readiness, ReloadOnSighup, Reloader};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use crate::tls::ListenerTls;

/// Spool directories an upgrading process tries: the configured one, then `<spool>.1`,
/// ... While the old process drains it keeps its spool locked, so the new one writes to
/// the next free slot; each slot's leftovers ship when a later process opens it.
const MAX_SPOOL_SLOTS: usize = 4;

/// `tollgate run`: serves the config file at `path`; with `upgrade`, takes over the
/// listening sockets of the running process first.
pub fn run_file(path: &Path, upgrade: bool) -> ExitCode {
    init_logging();
    let source = match ConfigSource::read(path) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    match source.parse(path) {
        Ok(config) => launch(config, Some((path.to_owned(), source.hash)), upgrade),
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves a config that did not come from a file (the demo); it cannot be reloaded.
pub fn run(config: Config) -> ExitCode {
    launch(config, None, false)
}

/// Serves `config` until the process is told to stop. Never returns on success: the
/// process exits when it has drained. `source` is the file and hash reloads start from.
fn launch(config: Config, source: Option<(PathBuf, String)>, upgrade: bool) -> ExitCode {
    let snapshot = match Snapshot::build(config) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    crate::usage::warn_unpriced(&snapshot.config);
    let server_cfg = snapshot.config.server.clone();
    let listener_tls = match server_cfg.tls.as_ref().map(ListenerTls::load).transpose() {
        Ok(tls) => tls.map(Arc::new),
        Err(err) => {
            eprintln!("server.tls: {err}");
            return ExitCode::FAILURE;
        }
    };
    let threads = server_cfg
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(err) => {
            eprintln!("could not set up metrics: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ledger = match open_ledger(&snapshot.config.ledger, upgrade) {
        Ok(l) => Arc::new(l),
        Err(err) => {
            eprintln!("could not open the usage ledger: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match snapshot
        .config
        .telemetry
        .as_ref()
        .map(Telemetry::start)
        .transpose()
    {
        Ok(t) => t.map(Arc::new),
        Err(err) => {
            eprintln!("could not start tracing: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry_flush = telemetry.clone();
    // The tokenizer takes a noticeable fraction of a second to build: not on a request.
    if !tollgate_metering::warm_up() {
        tracing::warn!("the o200k tokenizer did not load; token estimates fall back to bytes / 4");
    }
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let (path, hash) = source.map_or((None, "embedded".to_owned()), |(p, h)| (Some(p), h));
    let reloader = match Reloader::new(path, snapshot.clone(), hash, listener_tls.clone()) {
        Ok(r) => Arc::new(r),
        Err(err) => {
            eprintln!("could not set up metrics: {err}");
            return ExitCode::FAILURE;
        }
    };
    let readiness = Arc::new(Readiness::default());

    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&server_cfg, threads));
    let phases = server.watch_execution_phase();
    if upgrade {
        tracing::info!(
            sock = %server_cfg.upgrade_sock.display(),
            "waiting for the running process to hand over its sockets (send it SIGQUIT)"
        );
    }
    // Exits the process when an upgrade receives no sockets.
    server.bootstrap();
    if let Some(pid_file) = &server_cfg.pid_file {
        if let Err(err) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            eprintln!("{}: {err}", pid_file.display());
            return ExitCode::FAILURE;
        }
    }

    let mut gateway = Gateway::new(snapshot.clone(), metrics.clone(), ledger.clone(), telemetry);
    gateway.connector = upstream_connector(&server.configuration, &server_cfg);
    gateway.readiness = readiness.clone();
    let cache = gateway.cache.clone();
    let policy = gateway.policy.clone();
    let mut app = pingora_proxy::http_proxy(&server.configuration, gateway);
    app.server_options = Some(server_options(&server_cfg));
    app.h2_options = Some(h2_options(&server_cfg));
    let app = crate::hardening::HeadDeadline::new(app, &server_cfg.client.limits, metrics.clone());
    let idle_drain = server_cfg.idle_drain.min(server_cfg.shutdown_grace);
    let (app, idle_closed) = IdleDrain::new(app, idle_drain);
    let mut proxy = Service::new("tollgate".to_owned(), app);
    if let Err(err) = add_client_listeners(&mut proxy, &server_cfg, listener_tls.as_deref()) {
        eprintln!("server.tls: {err}");
        return ExitCode::FAILURE;
    }
    server.add_service(proxy);

    if let Some(addr) = &server_cfg.admin_listen {
        let mut admin = Service::new(
            "tollgate admin".to_owned(),
            Admin {
                snapshot,
                metrics,
                ledger: ledger.clone(),
                cache,
                policy,
                reloader: reloader.clone(),
                readiness: readiness.clone(),
            },
        );
        admin.add_tcp(addr);
        server.add_service(admin);
    }
    if let Some(telemetry) = telemetry_flush.clone() {
        server.add_service(background_service(
            "tollgate telemetry flush",
            crate::telemetry::FlushOnShutdown(telemetry),
        ));
    }
    server.add_service(background_service(
        "tollgate health checks",
        HealthCheckService::new(reloader.upstreams()),
    ));
    server.add_service(background_service(
        "tollgate reload on SIGHUP",
        ReloadOnSighup(reloader.clone()),
    ));
    server.add_service(background_service(
        "tollgate lifecycle",
        Lifecycle {
            readiness,
            reloader,
            ledger,
            telemetry: telemetry_flush.clone(),
            phases: Mutex::new(Some(phases)),
            idle_closed,
            idle_drain,
        },
    ));
    tracing::info!(
        listen = ?server_cfg.listen,
        tls_listen = ?server_cfg.tls.as_ref().map(|t| &t.listen),
        threads,
        "tollgate serving"
    );
    server.run_forever()
}

/// Pingora's settings from `server:`.
fn server_conf(cfg: &ServerConfig, threads: usize) -> ServerConf {
    let defaults = ServerConf::default();
    ServerConf {
        threads,
        // Tollgate retries on its own plan; Pingora's proxy loop runs each request once.
        max_retries: 1,
        upgrade_sock: cfg.upgrade_sock.display().to_string(),
        pid_file: cfg
            .pid_file
            .as_ref()
            .map_or(defaults.pid_file.clone(), |p| p.display().to_string()),
        grace_period_seconds: Some(cfg.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout.as_secs()),
        ..defaults
    }
}

/// The upstream connector: the keep-alive pool holds `keepalive_pool` idle connections
/// in all (default 128 per worker thread, Pingora's).
fn upstream_connector(conf: &ServerConf, cfg: &ServerConfig) -> Connector {
    let mut options = ConnectorOptions::from_server_conf(conf);
    if let Some(size) = cfg.upstream.keepalive_pool {
        options.keepalive_pool_size = size;
    }
    Connector::new(Some(options))
}

/// HTTP/2 settings of client connections: Pingora's bounded defaults, with the stream
/// count and the reset budgets that end rapid-reset and MadeYouReset floods in GOAWAY.
fn h2_options(cfg: &ServerConfig) -> H2Options {
    let limits = &cfg.client.limits;
    let mut h2 = default_h2_options();
    h2.max_concurrent_streams(cfg.client.h2_max_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
        .max_local_error_reset_streams(Some(limits.h2_max_error_resets));
    h2
}

fn server_options(cfg: &ServerConfig) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2c = cfg.h2c;
    options.keepalive_request_limit = cfg.client.keepalive_requests;
    options.h2_idle_timeout = cfg.client.h2_idle_timeout;
    options
}

/// Plain listeners on `listen`, TLS ones on `tls.listen`, with the client connection
/// settings.
fn add_client_listeners<A>(
    service: &mut Service<A>,
    cfg: &ServerConfig,
    tls: Option<&ListenerTls>,
) -> Result<(), String> {
    let endpoint = |addr: &str| {
        let mut socket = TcpSocketOptions::default();
        socket.tcp_keepalive = cfg.client.tcp_keepalive.as_ref().map(|ka| TcpKeepalive {
            idle: ka.idle,
            interval: ka.interval,
            count: ka.count,
            // The kernel's default.
            user_timeout: std::time::Duration::ZERO,
        });
        ListenerConfig::tcp(addr)
            .tcp_socket_options(socket)
            .l4_buffer(L4BufferSettings::default().read(cfg.client.read_buffer))
    };
    for addr in &cfg.listen {
        service.add_listener(endpoint(addr));
    }
    if let (Some(listeners), Some(tls)) = (&cfg.tls, tls) {
        for addr in &listeners.listen {
            service.add_listener(endpoint(addr).tls(tls.settings()?));
        }
    }
    Ok(())
}

/// The spool and the sink named by the config. An upgrading process takes the first
/// spool slot not locked by another process (the one it replaces).
fn open_ledger(cfg: &LedgerConfig, upgrade: bool) -> Result<Ledger, String> {
    let sink: Arc<dyn Sink> = match cfg.sink {
        LedgerSink::Sqlite => Arc::new(
            SqliteSink::open(&cfg.path).map_err(|e| format!("{}: {e}", cfg.path.display()))?,
        ),
        LedgerSink::Postgres => {
            let url = cfg.url.as_deref().unwrap_or_default();
            Arc::new(PostgresSink::connect(url).map_err(|e| format!("postgres: {e}"))?)
        }
    };
    let options = LedgerOptions {
        sync: match cfg.durability {
            LedgerDurability::Process => SpoolSync::Interval(cfg.fsync_interval),
            LedgerDurability::Machine => SpoolSync::EveryCommit,
        },
        ..LedgerOptions::default()
    };
    let slots = if upgrade { MAX_SPOOL_SLOTS } else { 1 };
    for slot in 0..slots {
        let dir = spool_slot(&cfg.spool, slot);
        match Ledger::open_with(&dir, sink.clone(), options.clone()) {
            Err(LedgerError::Locked(_)) if slot + 1 < slots => continue,
            Ok(ledger) => {
                if slot > 0 {
                    tracing::info!(spool = %dir.display(), "upgrading: spooling to the next free slot");
                }
                return Ok(ledger);
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err(format!(
        "{}: no free spool slot",
        spool_slot(&cfg.spool, slots - 1).display()
    ))
}

/// `spool`, `spool.1`, `spool.2`, ...
fn spool_slot(base: &Path, slot: usize) -> PathBuf {
    if slot == 0 {
        return base.to_owned();
    }
    let mut name = base.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{slot}"));
    base.with_file_name(name)
}
