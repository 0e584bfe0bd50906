//! `tollgate-bench`: the load generator and bench-suite runner.
//!
//! `tollgate-bench load` drives one load against one URL and prints its JSON result;
//! `tollgate-bench suite` runs scenario files (`bench/scenarios/*.yaml`): it starts the
//! mock provider and every system under test, runs the loads, and writes one JSON file
//! per scenario for `bench/report.py`.

mod conn;
mod error;
mod load;
mod procfs;
mod scenario;
mod schedule;
mod stall;
mod stats;
mod suite;
mod systems;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::conn::Target;
use crate::load::{LoadSpec, RequestTemplate};
use crate::systems::Env;

#[derive(Parser)]
#[command(
    name = "tollgate-bench",
    version,
    about = "Load generator and bench suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one load against one URL and print the result as JSON.
    Load {
        /// `http://IP:port/path` of the chat-completions endpoint.
        #[arg(long)]
        url: String,
        /// Model asked for.
        #[arg(long, default_value = systems::BENCH_MODEL)]
        model: String,
        /// Bearer key sent.
        #[arg(long, default_value = systems::BENCH_KEY)]
        key: String,
        /// Tokens each stream must carry (the mock's `--tokens`).
        #[arg(long, default_value_t = 16)]
        expect_tokens: u64,
        /// Sample this process's memory and CPU during the load.
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        spec: LoadSpec,
    },
    /// Run scenario files and write one JSON result per scenario.
    Suite {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Directory for the JSON results.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Directory with `tollgate`, `tollgate-mock` and `tollgate-pingora-baseline`.
        #[arg(long)]
        bin_dir: PathBuf,
        /// The nginx binary.
        #[arg(long, default_value = "nginx")]
        nginx: PathBuf,
        /// LiteLLM's `litellm` executable; without it LiteLLM is reported as not run.
        #[arg(long)]
        litellm: Option<PathBuf>,
        /// CPUs of the proxy under test (`taskset -c`).
        #[arg(long)]
        proxy_cpu: Option<String>,
        /// CPUs of the mock provider (the load generator pins itself through its caller).
        #[arg(long)]
        load_cpu: Option<String>,
        /// Append the PID of every started process to this file.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// The `redis-server` binary, for scenarios with `redis: true`.
        #[arg(long, default_value = "redis-server")]
        redis_server: PathBuf,
        /// One short run per load instead of the scenario's full runs.
        #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the generator shares its core with the mock, and a single-threaded
    // runtime spends no CPU on work stealing.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Load {
            url,
            model,
            key,
            expect_tokens,
            pid,
            spec,
        } => {
            let template = RequestTemplate::chat(Target::parse(&url)?, &model, Some(key), &spec);
            let result = load::run(&spec, template, expect_tokens, pid).await?;
            eprintln!("{}", suite::progress_line(&url, &spec.name, 1, &result));
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
        Command::Suite {
            scenarios,
            out,
            bin_dir,
            nginx,
            litellm,
            proxy_cpu,
            load_cpu,
            pid_file,
            redis_server,
            quick,
        } => {
            let env = Env {
                bin_dir,
                nginx,
                litellm,
                proxy_cpu,
                load_cpu,
                pid_file,
                redis_server,
                redis_url: None,
            };
            let command: Vec<String> = std::env::args().collect();
            let command = command.join(" ");
            for path in scenarios {
                let written = suite::run_scenario(&path, &env, &out, quick, &command).await?;
                eprintln!("   wrote {}", written.display());
            }
            Ok(())
        }
    }
}
