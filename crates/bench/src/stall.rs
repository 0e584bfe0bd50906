//! Stalled readers: clients that send a streamed request, read the response head and then
//! never read again. Their receive buffer is tiny and they announce a small segment size,
//! so the server's socket buffers for them fill after a few KiB and its writes block: a
//! server with a write timeout then closes the connection, one without keeps it for ever.
//!
//! The client cannot see that close (the server's FIN waits behind data the client never
//! reads), so a [`StallWatcher`] looks up the server's side of each connection in the
//! kernel's socket table (`/proc/net/tcp`) and reports the moment it leaves ESTABLISHED.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;

use crate::conn::Target;
use crate::schedule::source_addr;
use crate::stats::{Hist, Summary};

/// Receive buffer of a stalled client (`SO_RCVBUF`; the kernel rounds it up to its
/// minimum of about 2 KiB): the smaller, the fewer bytes the server can push before its
/// writes block.
pub const STALL_RCVBUF: u32 = 2048;

/// Segment size a stalled client announces (`TCP_MAXSEG`). Over loopback the server would
/// otherwise size its send buffer for 64 KiB segments (over a MiB); with 536-byte
/// segments it stays near 70 KiB of buffer space (about 35 KiB of payload).
pub const STALL_MSS: u32 = 536;

/// Choices (`n`) a stalled reader asks for, each streamed as its own event: its answer is
/// this many times a normal stream's, so that it outgrows the server's socket buffers
/// for it (measured near 35 KiB of payload over loopback despite the small segments)
/// while the other streams stay light.
pub const STALL_CHOICES: u64 = 4;

/// Largest response head read before the client stops reading.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How often the kernel's socket table is read while stalled connections are watched.
/// Reading it costs a few milliseconds per ten thousand sockets.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// `ESTABLISHED` in the `st` column of `/proc/net/tcp`.
const TCP_ESTABLISHED: u8 = 1;

/// What happened to stalled connections in one load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StallResult {
    /// Stalled requests sent.
    pub started: u64,
    /// Of those, answered with a 200 head (then left unread).
    pub stalled: u64,
    /// Closed by the server while the client still held them.
    pub closed_by_server: u64,
    /// Still open when the client gave up (the load's per-request timeout).
    pub held_to_timeout: u64,
    /// Could not connect, got no head, or a status other than 200.
    pub failed: u64,
    /// Those failures by kind (`connect`, `timeout`, `http`, `status_503`, …).
    pub errors: BTreeMap<String, u64>,
    /// From the response head to the server's close, ms (resolution [`WATCH_INTERVAL`]).
    pub close_after_ms: Summary,
}

/// How one stalled request ended.
pub enum StallOutcome {
    /// The server closed the connection this long after its head arrived.
    Closed(Duration),
    /// The connection was still open at the timeout.
    Held,
    /// No 200 head (the reason as an error kind).
    Failed(String),
}

/// Tallies [`StallOutcome`]s.
pub struct StallTally {
    result: StallResult,
    close_after: Hist,
}

impl StallTally {
    pub fn new() -> Result<Self, crate::error::BenchError> {
        Ok(Self {
            result: StallResult::default(),
            close_after: Hist::new()?,
        })
    }

    pub fn record(&mut self, outcome: &StallOutcome) {
        let r = &mut self.result;
        r.started += 1;
        match outcome {
            StallOutcome::Closed(after) => {
                r.stalled += 1;
                r.closed_by_server += 1;
                self.close_after.record(after.as_millis() as u64);
            }
            StallOutcome::Held => {
                r.stalled += 1;
                r.held_to_timeout += 1;
            }
            StallOutcome::Failed(kind) => {
                r.failed += 1;
                *r.errors.entry(kind.clone()).or_default() += 1;
            }
        }
    }

    pub fn result(&self) -> StallResult {
        StallResult {
            close_after_ms: self.close_after.summary(),
            ..self.result.clone()
        }
    }
}

/// Every `every`-th request (or closed-loop worker) stalls, for a share of `share`
/// (0 to 1): `None` when none does.
pub fn stall_every(share: f64) -> Option<u64> {
    if share.is_nan() || share <= 0.0 {
        return None;
    }
    Some((1.0 / share.min(1.0)).round().max(1.0) as u64)
}

/// Whether request (or worker) `index` stalls.
pub fn is_stalled(index: u64, every: Option<u64>) -> bool {
    every.is_some_and(|k| index % k == k - 1)
}

// === The watcher ===

struct Watch {
    client: SocketAddrV4,
    closed: oneshot::Sender<Instant>,
}

/// Reports when the server at one address closes its side of watched connections.
pub struct StallWatcher {
    server: SocketAddrV4,
    pending: Mutex<Vec<Watch>>,
}

impl StallWatcher {
    /// Starts watching connections to `server` (IPv4 only: the bench runs on loopback);
    /// the polling task ends when the watcher is dropped.
    pub fn start(server: SocketAddr) -> Option<Arc<Self>> {
        let SocketAddr::V4(server) = server else {
            return None;
        };
        let watcher = Arc::new(Self {
            server,
            pending: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&watcher);
        tokio::spawn(poll(weak));
        Some(watcher)
    }

    /// Resolves with the moment the server's side of the connection from `client` was
    /// seen closed.
    fn watch(&self, client: SocketAddrV4) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().push(Watch { client, closed: tx });
        rx
    }
}

async fn poll(watcher: Weak<StallWatcher>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let Some(w) = watcher.upgrade() else { return };
        // Dropped receivers: the client gave up on them.
        w.pending.lock().retain(|p| !p.closed.is_closed());
        if w.pending.lock().is_empty() {
            continue;
        }
        let server = w.server;
        // Reading the table takes a while with tens of thousands of sockets; off the
        // runtime's thread, the streams being timed are not held up.
        let table = tokio::task::spawn_blocking(move || {
            std::fs::read_to_string("/proc/net/tcp")
                .ok()
                .map(|text| server_side_states(&text, server))
        })
        .await
        .ok()
        .flatten();
        let Some(states) = table else { continue };
        let now = Instant::now();
        let mut pending = w.pending.lock();
        let mut open = Vec::with_capacity(pending.len());
        for p in pending.drain(..) {
            if states.get(&p.client) == Some(&TCP_ESTABLISHED) {
                open.push(p);
            } else {
                let _ = p.closed.send(now);
            }
        }
        *pending = open;
    }
}

/// The TCP state of every socket in `/proc/net/tcp` text whose local address is
/// `server`, by its remote (client) address.
pub fn server_side_states(text: &str, server: SocketAddrV4) -> HashMap<SocketAddrV4, u8> {
    let mut states = HashMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if parse_addr(local) != Some(server) {
            continue;
        }
        if let (Some(remote), Ok(state)) = (parse_addr(remote), u8::from_str_radix(state, 16)) {
            states.insert(remote, state);
        }
    }
    states
}

/// `0100007F:1F90` (the address as the kernel's in-memory word, the port in host order).
fn parse_addr(field: &str) -> Option<SocketAddrV4> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

// === One stalled request ===

/// Sends `request` (a whole HTTP/1.1 request) from source address number `source` of
/// `sources`, reads the response head, then holds the connection unread until the server
/// closes it or `deadline` passes.
pub async fn stalled_request(
    target: &Target,
    request: &[u8],
    source: usize,
    sources: usize,
    watcher: &StallWatcher,
    deadline: Instant,
) -> StallOutcome {
    let failed = |kind: &str| StallOutcome::Failed(kind.to_owned());
    let mut stream =
        match tokio::time::timeout_at(deadline.into(), connect(target, source, sources)).await {
            Err(_) => return failed("timeout"),
            Ok(Err(_)) => return failed("connect"),
            Ok(Ok(stream)) => stream,
        };
    let Ok(SocketAddr::V4(client)) = stream.local_addr() else {
        return failed("connect");
    };
    let head = async {
        stream.write_all(request).await?;
        read_head(&mut stream).await
    };
    let head = match tokio::time::timeout_at(deadline.into(), head).await {
        Err(_) => return failed("timeout"),
        Ok(Err(_)) => return failed("http"),
        Ok(Ok(head)) => head,
    };
    if !head.starts_with(b"HTTP/1.1 200") {
        let status = head.get(9..12).and_then(|s| std::str::from_utf8(s).ok());
        return failed(&format!("status_{}", status.unwrap_or("unknown")));
    }
    let head_at = Instant::now();
    match tokio::time::timeout_at(deadline.into(), watcher.watch(client)).await {
        Ok(Ok(closed_at)) => StallOutcome::Closed(closed_at.saturating_duration_since(head_at)),
        // Dropping the connection now, with unread data, resets it: the server frees
        // what it still held for it.
        _ => StallOutcome::Held,
    }
}

async fn connect(
    target: &Target,
    source: usize,
    sources: usize,
) -> std::io::Result<tokio::net::TcpStream> {
    let IpAddr::V4(ip) = target.addr.ip() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "stalled readers need an IPv4 target",
        ));
    };
    let socket = TcpSocket::new_v4()?;
    // Both must be set before the handshake: the window scale and the announced segment
    // size are fixed by the SYN.
    socket.set_recv_buffer_size(STALL_RCVBUF)?;
    socket2::SockRef::from(&socket).set_tcp_mss(STALL_MSS)?;
    if ip.is_loopback() {
        socket.bind(SocketAddr::new(IpAddr::V4(source_addr(source, sources)), 0))?;
    }
    socket.connect(target.addr).await
}

/// Reads until the end of the response head; what follows it stays unread (but for the
/// few body bytes that came in the same reads).
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0300007F:D432 04 00004000:00000000 01:00000010 00000000     0        0 0 1 0 20 4 30 10 -1
   3: 0200007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";

    #[test]
    fn reads_the_server_side_of_each_connection() {
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
        let states = server_side_states(TABLE, server);
        let client = |last, port| SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), port);
        assert_eq!(states.get(&client(2, 0xD431)), Some(&TCP_ESTABLISHED));
        // Closed by the server (FIN_WAIT1): not established any more.
        assert_eq!(states.get(&client(3, 0xD432)), Some(&4));
        // The listener and the client's own side are not the server's connections.
        assert_eq!(states.len(), 3);
        assert!(server_side_states(TABLE, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)).is_empty());
    }

    #[test]
    fn one_in_every_n_stalls() {
        assert_eq!(stall_every(0.0), None);
        assert_eq!(stall_every(0.01), Some(100));
        assert_eq!(stall_every(0.3), Some(3));
        assert_eq!(stall_every(2.0), Some(1));
        let stalled = (0..1000).filter(|&i| is_stalled(i, Some(100))).count();
        assert_eq!(stalled, 10);
        assert!(!is_stalled(5, None));
        assert!(is_stalled(0, Some(1)));
    }

    #[test]
    fn tallies_outcomes() {
        let mut t = StallTally::new().unwrap();
        t.record(&StallOutcome::Closed(Duration::from_secs(12)));
        t.record(&StallOutcome::Held);
        t.record(&StallOutcome::Failed("connect".to_owned()));
        let r = t.result();
        assert_eq!((r.started, r.stalled, r.closed_by_server), (3, 2, 1));
        assert_eq!((r.held_to_timeout, r.failed), (1, 1));
        assert_eq!(r.errors.get("connect"), Some(&1));
        assert!(r.close_after_ms.p50 >= 11_900 && r.close_after_ms.p50 <= 12_100);
    }
}
