//! `tollgate-mock`: runs the mock LLM provider on one address until SIGTERM or Ctrl-C.
//!
//! After binding it prints exactly one line, `listening on <addr>`, so a harness that
//! asked for port 0 learns the port.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use tollgate_mock::{serve, MockConfig, UsageReport};

/// Mock LLM provider speaking the OpenAI, Azure OpenAI, Anthropic, Gemini and Bedrock HTTP
/// dialects, with latency and fault knobs.
#[derive(Debug, Parser)]
#[command(name = "tollgate-mock", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Fixed reply text (split into tokens at whitespace).
    #[arg(long)]
    reply: Option<String>,
    /// Words in the generated reply "tok0 tok1 …" when --reply is not given.
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Pause between streamed tokens.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    token_delay: Duration,
    /// Pause before the first streamed token.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    first_token_delay: Duration,
    /// Prepended to every model id the mock reports.
    #[arg(long, default_value = "")]
    model_prefix: String,
    /// Leave usage out of every answer, plain and streamed.
    #[arg(long)]
    no_usage: bool,
    /// Prompt tokens every answer reports as read from the provider's cache.
    #[arg(long, default_value_t = 0)]
    cached_tokens: u64,
    /// Reasoning tokens every answer reports on top of the reply's.
    #[arg(long, default_value_t = 0)]
    reasoning_tokens: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let listener = tollgate_mock::bind(cli.listen.as_str()).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let cfg = MockConfig {
        reply: cli.reply,
        tokens: cli.tokens,
        token_delay: cli.token_delay,
        first_token_delay: cli.first_token_delay,
        model_prefix: cli.model_prefix,
        usage: UsageReport {
            omit: cli.no_usage,
            cached_tokens: cli.cached_tokens,
            reasoning_tokens: cli.reasoning_tokens,
        },
    };
    tokio::select! {
        served = serve(listener, cfg) => served,
        signalled = shutdown_signal() => signalled,
    }
}

/// Resolves on SIGTERM or SIGINT; open streams are simply cut, as a killed provider would.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
