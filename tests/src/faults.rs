//! A fault-injecting TCP proxy for the end-to-end tests: it sits between the gateway and a
//! mock provider and, per accepted connection, passes bytes through or breaks the
//! connection in one planned way (refuse, reset, stall, delay, cut after N response bytes,
//! corrupt an SSE line). The mock's own faults speak HTTP; these break the transport.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes copied per read in either direction.
const COPY_BUFFER: usize = 16 * 1024;

/// What the proxy does to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    Pass,
    /// Close the connection as soon as it is accepted, before reading anything.
    Refuse,
    /// Read the request, then reset the connection (RST, not FIN).
    Reset,
    /// Read the request and never answer; the connection stays open until the proxy stops.
    Stall,
    /// Wait this long before forwarding the request, then pass.
    Delay(Duration),
    /// Forward the first N bytes of the response, then close.
    CutAfter(usize),
    /// Forward, but break the JSON of the response's n-th SSE `data: {` line (from 0).
    CorruptSse(usize),
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`, for a provider's `endpoints`.
    pub url: String,
    plan: Arc<Mutex<VecDeque<Fault>>>,
    accepted: Arc<AtomicUsize>,
    /// The accept loop and one task per connection; aborted on drop, so stalled
    /// connections close with the proxy.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let plan: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (plan, accepted, tasks) = (plan.clone(), accepted.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let fault = plan.lock().unwrap().pop_front().unwrap_or(Fault::Pass);
                    let task = tokio::spawn(serve(client, upstream.clone(), fault));
                    let mut tasks = tasks.lock().unwrap();
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(task);
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        FaultProxy {
            url,
            plan,
            accepted,
            tasks,
        }
    }

    /// Queues faults for the next connections, in order; later ones pass.
    pub fn plan(&self, faults: impl IntoIterator<Item = Fault>) {
        self.plan.lock().unwrap().extend(faults);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Reads what the client sent so far (the request head at least), for faults that act
/// after the request.
async fn read_some(client: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let n = client.read(&mut buf).await.unwrap_or(0);
    buf.truncate(n);
    buf
}

async fn serve(mut client: TcpStream, upstream: String, fault: Fault) {
    match fault {
        Fault::Refuse => drop(client),
        Fault::Reset => {
            read_some(&mut client).await;
            // Linger 0: close sends RST. Tokio deprecates set_linger because a positive
            // linger blocks the thread in close; zero never does.
            #[allow(deprecated)]
            let _ = client.set_linger(Some(Duration::ZERO));
            drop(client);
        }
        Fault::Stall => {
            read_some(&mut client).await;
            // Hold the connection, reading and discarding, until the peer or the proxy ends.
            let mut buf = vec![0u8; COPY_BUFFER];
            while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Fault::Delay(wait) => {
            tokio::time::sleep(wait).await;
            pipe(client, &upstream, None, None).await;
        }
        Fault::Pass => pipe(client, &upstream, None, None).await,
        Fault::CutAfter(n) => pipe(client, &upstream, Some(n), None).await,
        Fault::CorruptSse(line) => pipe(client, &upstream, None, Some(line)).await,
    }
}

/// Copies both ways; the response stops after `cut` bytes, or has its `corrupt`-th SSE
/// `data: {` line broken.
async fn pipe(client: TcpStream, upstream: &str, cut: Option<usize>, corrupt: Option<usize>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let upload = async move {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        let _ = server_tx.shutdown().await;
    };
    let download = async move {
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut sent = 0usize;
        let mut data_lines = 0usize;
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &mut buf[..n];
            if let Some(line) = corrupt {
                data_lines += corrupt_data_line(chunk, data_lines, line);
            }
            let take = cut.map_or(n, |cut| n.min(cut.saturating_sub(sent)));
            if client_tx.write_all(&chunk[..take]).await.is_err() {
                break;
            }
            sent += take;
            if cut.is_some_and(|cut| sent >= cut) {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    // The response decides the end: a cut closes the connection even if the client still
    // sends.
    tokio::select! {
        _ = download => {}
        _ = async { upload.await; std::future::pending::<()>().await } => {}
    }
}

/// Replaces the `{` of the `target`-th `data: {` line overall (counting `seen` earlier
/// ones) with `#`, so that event's JSON no longer parses; returns how many such lines
/// `chunk` held. A line split across reads is not seen: the mock writes each event whole.
fn corrupt_data_line(chunk: &mut [u8], seen: usize, target: usize) -> usize {
    const NEEDLE: &[u8] = b"data: {";
    let mut found = 0;
    let mut at = 0;
    while let Some(pos) = chunk[at..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let start = at + pos;
        if seen + found == target {
            chunk[start + NEEDLE.len() - 1] = b'#';
        }
        found += 1;
        at = start + NEEDLE.len();
    }
    found
}
