//! `server.client.limits`: what the gateway tolerates from a client before it refuses the
//! request or closes the connection. Pingora alone caps neither header count below 256 nor
//! the time a request takes to arrive in all, and has no write timeout.

use std::time::Duration;

use serde::Deserialize;

/// Limits on one client request and its connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimitsConfig {
    /// Most header fields in one request; more get 431. Default 100 (Pingora refuses more
    /// than 256 itself).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest request header section, in bytes; larger gets 431. Default 32768.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A request head (request line and headers) must arrive whole within this of its
    /// first byte; a slower one closes the connection. Default 10s.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// The whole request body must arrive within this, however it trickles in; a slower
    /// one gets 400 and the connection closes. Default 60s.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a kept-alive HTTP/1.1 connection may wait for its next request (Pingora
    /// waits for ever by default). Default 60s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A write to a client that does not read closes the connection after this. Default
    /// 30s.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Slowest a client may read, in bytes per second: a write of n bytes must finish
    /// within n / rate seconds (at least 1s). Off when absent.
    #[serde(default)]
    pub min_send_rate: Option<usize>,
    /// Deepest nesting of JSON arrays and objects in a request body; deeper gets 400 before
    /// the body is parsed. Default 64.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
    /// A `gzip` or `deflate` request body may inflate to at most this many times its
    /// compressed size (and never past `server.max_body_bytes`); more gets 413 before any
    /// upstream request. Default 100.
    #[serde(default = "default_max_inflate_ratio")]
    pub max_inflate_ratio: usize,
    /// HTTP/2 streams the client opened and reset before the gateway took them up, held at
    /// once on one connection; one more ends the connection with GOAWAY
    /// (`ENHANCE_YOUR_CALM`). Bounds the "rapid reset" attack (CVE-2023-44487). Default 20.
    #[serde(default = "default_h2_max_pending_resets")]
    pub h2_max_pending_resets: usize,
    /// HTTP/2 streams the gateway may reset on one connection because the client broke the
    /// protocol on them (flow-control overflow, frames on a closed stream); one more ends
    /// the connection with GOAWAY. Bounds "MadeYouReset" (CVE-2025-8671). Default 100.
    #[serde(default = "default_h2_max_error_resets")]
    pub h2_max_error_resets: usize,
    /// Most connections open at once from one client IP address; one more is closed as
    /// soon as it is accepted (after its TLS handshake). Off when absent: behind a load
    /// balancer or NAT every client may share one address.
    #[serde(default)]
    pub max_connections_per_address: Option<std::num::NonZeroUsize>,
}

impl Default for ClientLimitsConfig {
    fn default() -> Self {
        Self {
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            write_timeout: default_write_timeout(),
            min_send_rate: None,
            max_json_depth: default_max_json_depth(),
            max_inflate_ratio: default_max_inflate_ratio(),
            h2_max_pending_resets: default_h2_max_pending_resets(),
            h2_max_error_resets: default_h2_max_error_resets(),
            max_connections_per_address: None,
        }
    }
}

fn default_max_headers() -> usize {
    100
}

fn default_max_header_bytes() -> usize {
    32 * 1024
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_json_depth() -> usize {
    64
}

fn default_max_inflate_ratio() -> usize {
    100
}

fn default_h2_max_pending_resets() -> usize {
    20
}

fn default_h2_max_error_resets() -> usize {
    100
}
