//! `tollgate`: the AI gateway binary. Parses the command line and hands over to the
//! subcommand; everything with Pingora in it lives in this crate only.

mod admin;
mod admin_policy;
mod allocator;
mod auth;
mod cache;
mod demo;
mod forward;
mod guardrails;
mod hardening;
mod metrics;
mod policy;
mod proxy;
mod reload;
mod resolve;
mod server;
mod snapshot;
mod telemetry;
mod tls;
mod tokens;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An AI gateway: one API for every LLM provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration file. SIGHUP reloads it; SIGTERM drains and
    /// stops; SIGQUIT hands the listening sockets to a process started with --upgrade.
    Run {
        #[arg(short, long, default_value = "conf/tollgate.yaml")]
        config: PathBuf,
        /// Take over the listening sockets of the running gateway (which must then get
        /// SIGQUIT within a few seconds) instead of binding them.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file; prints every problem with file, line and key.
    Check {
        #[arg(short, long, default_value = "conf/tollgate.yaml")]
        config: PathBuf,
    },
    /// Manage gateway keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Total the usage ledger by team, key, user, model, route, day, month or tag.
    Usage {
        #[arg(short, long, default_value = "conf/tollgate.yaml")]
        config: PathBuf,
        /// team, key, user, model, route, day, month, or tag:<name> (by that tag's value).
        #[arg(long, default_value = "team")]
        by: String,
        /// From this date or RFC 3339 time (inclusive).
        #[arg(long)]
        since: Option<String>,
        /// Until this date or RFC 3339 time (exclusive).
        #[arg(long)]
        until: Option<String>,
    },
    /// Start mock providers and the gateway with the embedded demo configuration.
    Demo {
        /// Client-facing listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Admin listen address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh secret key and the hash to put in the config.
    New,
    /// Print the config hash of an existing secret read from standard input.
    Hash,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. } | Command::Demo { .. }) {
        if let Err(err) = allocator::tune() {
            // The gateway still serves; it only keeps freed memory longer.
            eprintln!("warning: the allocator could not be tuned: {err}");
        }
    }
    match cli.command {
        Command::Run { config, upgrade } => server::run_file(&config, upgrade),
        Command::Check { config } => check(&config),
        Command::Keys { command } => keys(command),
        Command::Usage {
            config,
            by,
            since,
            until,
        } => usage::print_usage(&config, &by, since.as_deref(), until.as_deref()),
        Command::Demo {
            listen,
            admin_listen,
        } => demo::run(&listen, &admin_listen),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match tollgate_config::load(path) {
        Ok(config) => match snapshot::Snapshot::build(config) {
            // Every catalog model needs a price, so no request is ever billed at zero by
            // accident.
            Ok(snapshot) if !tollgate_metering::missing_prices(&snapshot.config).is_empty() => {
                for model in tollgate_metering::missing_prices(&snapshot.config) {
                    eprintln!(
                        "{}: models.{model}.price: every model needs a price (USD per 1M \
                         tokens, e.g. price: {{ input: 0.15, output: 0.60 }})",
                        path.display()
                    );
                }
                ExitCode::FAILURE
            }
            Ok(snapshot) => match snapshot
                .config
                .server
                .tls
                .as_ref()
                .map(tls::ListenerTls::load)
            {
                Some(Err(err)) => {
                    eprintln!("{}: server.tls: {err}", path.display());
                    ExitCode::FAILURE
                }
                _ => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
            },
            Err(err) => {
                eprintln!("{}: {err}", path.display());
                ExitCode::FAILURE
            }
        },
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::New => {
            let secret = auth::new_secret();
            println!("secret: {secret}");
            println!("hash:   {}", tollgate_config::hash_key(&secret));
            ExitCode::SUCCESS
        }
        KeysCommand::Hash => {
            let mut secret = String::new();
            if std::io::stdin().read_line(&mut secret).is_err() {
                eprintln!("could not read the secret from standard input");
                return ExitCode::FAILURE;
            }
            println!("{}", tollgate_config::hash_key(secret.trim()));
            ExitCode::SUCCESS
        }
    }
}
