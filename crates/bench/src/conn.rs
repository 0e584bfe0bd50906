//! Client connections for the load: HTTP/1.1 connections pooled one request at a time,
//! or a few HTTP/2 connections shared by many concurrent streams; each connection from
//! the next loopback source address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::BenchError;
use crate::schedule::source_addr;

/// Longest wait for a TCP connect to the system under test.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where requests go: `http://IP:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `IP:port`, for `Host` and HTTP/2's `:authority`.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

impl Target {
    /// Parses `http://IP:port/path`; names are not resolved (the bench talks to
    /// loopback addresses only).
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = || BenchError::Url(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority.parse().map_err(|_| bad())?;
        Ok(Self {
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The absolute URI HTTP/2 requests carry.
    pub fn uri(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// A connection ready for one request.
pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Sends `req` and returns the response head with its streaming body.
    pub async fn send(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Self::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Self::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// A connection lent by the [`Pool`]; its permit bounds how many are out at once.
pub struct Lease {
    pub sender: Sender,
    _permit: OwnedSemaphorePermit,
}

/// Connections to one target.
pub struct Pool {
    target: Target,
    sources: usize,
    next_source: AtomicUsize,
    /// Limits HTTP/1.1 connections (one request each at a time) or HTTP/2 streams in
    /// flight.
    permits: std::sync::Arc<Semaphore>,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    h2: Vec<http2::SendRequest<Full<Bytes>>>,
    next_h2: AtomicUsize,
    /// TCP connections opened so far.
    pub connects: AtomicU64,
}

impl Pool {
    /// A pool of at most `max_in_flight` requests at a time. HTTP/2 opens
    /// `h2_connections` connections now and spreads streams over them; HTTP/1.1 opens a
    /// connection whenever no idle one is left.
    pub async fn new(
        target: Target,
        http2: bool,
        max_in_flight: usize,
        h2_connections: usize,
        sources: usize,
    ) -> Result<Self, BenchError> {
        let mut pool = Self {
            target,
            sources,
            next_source: AtomicUsize::new(0),
            permits: std::sync::Arc::new(Semaphore::new(max_in_flight.max(1))),
            idle: Mutex::new(Vec::new()),
            h2: Vec::new(),
            next_h2: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
        };
        if http2 {
            for _ in 0..h2_connections.max(1) {
                let io = pool.connect().await?;
                let (sender, conn) =
                    http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| BenchError::System {
                            system: pool.target.authority.clone(),
                            message: format!("HTTP/2 handshake: {e}"),
                        })?;
                tokio::spawn(conn);
                pool.h2.push(sender);
            }
        }
        Ok(pool)
    }

    pub fn is_http2(&self) -> bool {
        !self.h2.is_empty()
    }

    async fn connect(&self) -> Result<TokioIo<tokio::net::TcpStream>, BenchError> {
        let index = self.next_source.fetch_add(1, Ordering::Relaxed);
        let source = match self.target.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(source_addr(index, self.sources)),
            other => other,
        };
        let io_err = |e| BenchError::io(format!("connect to {}", self.target.addr), e);
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(io_err)?;
        if source.is_loopback() && self.target.addr.is_ipv4() {
            socket.bind(SocketAddr::new(source, 0)).map_err(io_err)?;
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(self.target.addr))
            .await
            .map_err(|_| {
                io_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(TokioIo::new(stream))
    }

    /// Waits for a permit, then lends an idle connection or opens one.
    pub async fn lease(&self) -> Result<Lease, BenchError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BenchError::Url("connection pool closed".to_owned()))?;
        if !self.h2.is_empty() {
            let i = self.next_h2.fetch_add(1, Ordering::Relaxed) % self.h2.len();
            return Ok(Lease {
                sender: Sender::H2(self.h2[i].clone()),
                _permit: permit,
            });
        }
        loop {
            let Some(sender) = self.idle.lock().pop() else {
                break;
            };
            if !sender.is_closed() {
                return Ok(Lease {
                    sender: Sender::H1(sender),
                    _permit: permit,
                });
            }
        }
        let io = self.connect().await?;
        let (sender, conn) = http1::handshake(io).await.map_err(|e| BenchError::System {
            system: self.target.authority.clone(),
            message: format!("HTTP/1.1 handshake: {e}"),
        })?;
        tokio::spawn(conn);
        Ok(Lease {
            sender: Sender::H1(sender),
            _permit: permit,
        })
    }

    /// Takes back a connection whose exchange completed; a closed one is dropped.
    pub fn give_back(&self, lease: Lease) {
        if let Sender::H1(sender) = lease.sender {
            if !sender.is_closed() {
                self.idle.lock().push(sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("http://127.0.0.1:8080/v1/chat/completions").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/v1/chat/completions");
        assert_eq!(t.uri(), "http://127.0.0.1:8080/v1/chat/completions");
        assert_eq!(Target::parse("http://127.0.0.1:1").unwrap().path, "/");
        assert!(Target::parse("https://127.0.0.1:1/").is_err());
        assert!(Target::parse("http://localhost:1/").is_err());
    }
}
