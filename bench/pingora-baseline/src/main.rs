//! `tollgate-pingora-baseline`: the smallest Pingora 0.9 pass-through proxy, for the bench
//! suite. Every request goes unchanged to one upstream over a pooled HTTP/1.1 connection
//! (or, with `--upstream-h2`, as one stream of a shared cleartext HTTP/2 connection);
//! there is no parsing, no auth and no metering, so what it costs is what Pingora itself
//! costs. Tollgate is measured against it with the same Pingora version and thread count.

use std::process::ExitCode;

use async_trait::async_trait;
use clap::Parser;
use pingora_core::apps::HttpServerOptions;
use pingora_core::protocols::ALPN;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

/// Bare Pingora pass-through proxy (bench baseline).
#[derive(Debug, Parser)]
#[command(name = "tollgate-pingora-baseline", version)]
struct Cli {
    /// Client-facing listen address.
    #[arg(long, default_value = "127.0.0.1:8181")]
    listen: String,
    /// Upstream `IP:port`, plain HTTP/1.1.
    #[arg(long)]
    upstream: String,
    /// Worker threads; the bench pins the proxy to one core and runs one thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Idle upstream connections kept per thread pool (Pingora's default is 128).
    #[arg(long, default_value_t = 128)]
    upstream_pool: usize,
    /// Also accept HTTP/2 over cleartext (prior knowledge) from clients.
    #[arg(long)]
    h2c: bool,
    /// Reach the upstream over cleartext HTTP/2 (prior knowledge), up to
    /// `--upstream-h2-streams` concurrent streams per connection.
    #[arg(long)]
    upstream_h2: bool,
    /// Concurrent streams per upstream HTTP/2 connection (Tollgate's default `http2_streams`).
    #[arg(long, default_value_t = 100)]
    upstream_h2_streams: usize,
}

/// Sends every request to the one upstream.
struct PassThrough {
    upstream: String,
    /// Streams per upstream HTTP/2 connection; HTTP/1.1 when `None`.
    h2_streams: Option<usize>,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if let Some(streams) = self.h2_streams {
            // In the clear, offering only h2 is taken as prior knowledge (h2c).
            peer.options.alpn = ALPN::H2;
            peer.options.max_h2_streams = streams;
        }
        Ok(Box::new(peer))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conf = ServerConf {
        threads: cli.threads,
        upstream_keepalive_pool_size: cli.upstream_pool,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        PassThrough {
            upstream: cli.upstream,
            h2_streams: cli.upstream_h2.then_some(cli.upstream_h2_streams),
        },
        "pingora baseline",
    );
    if cli.h2c {
        if let Some(app) = proxy.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            app.server_options = Some(options);
        }
    }
    proxy.add_tcp(&cli.listen);
    server.add_service(proxy);
    eprintln!("pingora baseline listening on {}", cli.listen);
    server.run_forever()
}
