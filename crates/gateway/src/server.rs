//! Builds the Pingora server: the proxy service on the client listeners, the admin
//! service, and the health-check background services; then serves until stopped.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use tollgate_config::{Config, LedgerConfig, LedgerSink};
use tollgate_ledger::{Ledger, PostgresSink, Sink, SqliteSink};

use crate::admin::Admin;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;

pub fn run_file(path: &Path) -> ExitCode {
    init_logging();
    match tollgate_config::load(path) {
        Ok(config) => run(config),
        Err(errors) => {
            eprintln!("{errors}");
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

/// Serves `config` until the process is told to stop. Never returns on success: Pingora
/// exits the process when it has shut down.
pub fn run(config: Config) -> ExitCode {
    let snapshot = match Snapshot::build(config) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let listen = snapshot.config.server.listen.clone();
    let admin_listen = snapshot.config.server.admin_listen.clone();
    let threads = snapshot
        .config
        .server
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(err) => {
            eprintln!("could not set up metrics: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ledger = match open_ledger(&snapshot.config.ledger) {
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
    let health = tollgate_routing::health_services(&snapshot.upstreams);
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));

    let conf = ServerConf {
        threads,
        // Tollgate retries on its own plan; Pingora's proxy loop runs each request once.
        max_retries: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(snapshot.clone(), metrics.clone(), ledger.clone(), telemetry),
        "tollgate",
    );
    for addr in &listen {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);

    if let Some(addr) = admin_listen {
        let mut admin = Service::new(
            "tollgate admin".to_owned(),
            Admin {
                snapshot,
                metrics,
                ledger,
            },
        );
        admin.add_tcp(&addr);
        server.add_service(admin);
    }
    if let Some(telemetry) = telemetry_flush {
        server.add_service(pingora_core::services::background::background_service(
            "tollgate telemetry flush",
            crate::telemetry::FlushOnShutdown(telemetry),
        ));
    }
    for service in health {
        server.add_service(service);
    }
    tracing::info!(listen = ?listen, threads, "tollgate serving");
    server.run_forever()
}

/// The spool and the sink named by the config.
fn open_ledger(cfg: &LedgerConfig) -> Result<Ledger, String> {
    let sink: Arc<dyn Sink> = match cfg.sink {
        LedgerSink::Sqlite => Arc::new(
            SqliteSink::open(&cfg.path).map_err(|e| format!("{}: {e}", cfg.path.display()))?,
        ),
        LedgerSink::Postgres => {
            let url = cfg.url.as_deref().unwrap_or_default();
            Arc::new(PostgresSink::connect(url).map_err(|e| format!("postgres: {e}"))?)
        }
    };
    Ledger::open(&cfg.spool, sink).map_err(|e| format!("{}: {e}", cfg.spool.display()))
}
