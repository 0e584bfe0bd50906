//! Runs one load against one target: closed loop (fixed concurrency, back to back) or
//! open loop (a fixed schedule, latency from each request's intended send time), plain
//! or streamed requests, over HTTP/1.1 or HTTP/2; samples the system's memory and CPU.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tollgate_sse::SseDecoder;

use crate::conn::{Pool, Target};
use crate::error::BenchError;
use crate::procfs::{self, Sample, Usage};
use crate::schedule::{due_count, intended_offset, total_requests};
use crate::stall::{self, StallOutcome, StallResult, StallTally, StallWatcher};
use crate::stats::{Hist, Summary};
use crate::tokens::{EventKind, StreamCheck};

/// Longest body read from one plain response; bench answers are a few hundred bytes, and
/// anything bigger is counted as an error instead of being read on.
const MAX_PLAIN_BODY_BYTES: usize = 1024 * 1024;

/// The response header in which Tollgate says how its cache answered.
const CACHE_HEADER: &str = "x-tollgate-cache";

/// How often the system under test is sampled (memory, CPU, open streams).
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Shortest sleep of the open-loop dispatcher thread: below this, sleeping costs more
/// than it saves and the kernel's timer slack dominates.
const MIN_DISPATCH_SLEEP: Duration = Duration::from_micros(50);

/// Extra time after the last request's own timeout before a load is cut off, so a run
/// always ends even if a task hangs.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Closed loop: `concurrency` workers send back to back. Open loop: requests leave on a
/// fixed schedule, whatever the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Closed,
    Open,
}

fn default_http() -> u8 {
    1
}
fn default_concurrency() -> usize {
    64
}
fn default_duration() -> Duration {
    Duration::from_secs(10)
}
fn default_warmup() -> Duration {
    Duration::from_secs(1)
}
fn default_connections() -> usize {
    256
}
fn default_h2_connections() -> usize {
    4
}
fn default_sources() -> usize {
    8
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_settle() -> Duration {
    Duration::from_secs(1)
}

/// One load, as written in a scenario file or given on the command line.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Name of the load within its scenario.
    #[arg(long, default_value = "load")]
    pub name: String,
    /// `closed` (max throughput) or `open` (constant rate).
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// HTTP version to the system: 1 (HTTP/1.1) or 2 (HTTP/2 over cleartext).
    #[arg(long, default_value_t = 1)]
    #[serde(default = "default_http")]
    pub http: u8,
    /// Ask for streamed (SSE) answers and time every token.
    #[arg(long)]
    #[serde(default)]
    pub stream: bool,
    /// Closed loop: workers sending back to back.
    #[arg(long, default_value_t = 64)]
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Open loop: requests (or streams) started per second.
    #[arg(long)]
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open loop: send exactly this many requests at `rate` (instead of `rate` ×
    /// `duration`), e.g. to hold that many streams open at once.
    #[arg(long)]
    #[serde(default)]
    pub count: Option<u64>,
    /// How long the measured part lasts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    #[serde(default = "default_duration", with = "humantime_serde")]
    pub duration: Duration,
    /// Load sent before the measured part, not recorded (fills connection pools).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    #[serde(default = "default_warmup", with = "humantime_serde")]
    pub warmup: Duration,
    /// Open loop: most HTTP/1.1 connections (or HTTP/2 streams) in flight; a request
    /// waiting for one counts that wait in its latency.
    #[arg(long, default_value_t = 256)]
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// HTTP/2: connections the streams are spread over.
    #[arg(long, default_value_t = 4)]
    #[serde(default = "default_h2_connections")]
    pub h2_connections: usize,
    /// Loopback source addresses used in turn (127.0.0.1, .2, …).
    #[arg(long, default_value_t = 8)]
    #[serde(default = "default_sources")]
    pub sources: usize,
    /// Longest time one request (or stream) may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait after the load before the "after" memory sample.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// `max_tokens` sent in each request (the mock's reply is truncated to it).
    #[arg(long)]
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The user message every request sends (default: a short greeting). A fixed prompt
    /// makes every request after the first a cache hit on a cached route.
    #[arg(long)]
    #[serde(default)]
    pub prompt: Option<String>,
    /// Append a word no other request of any run carries to each request's prompt: every
    /// request is an exact-cache miss, and similar enough to the others for a semantic hit.
    #[arg(long)]
    #[serde(default)]
    pub unique_prompts: bool,
    /// Share of streams (0 to 1) whose client reads the response head and then never
    /// reads again (see `stall.rs`): every n-th closed-loop worker, or every n-th request
    /// of an open loop. Their outcome is reported apart from the other requests'.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub stalled: f64,
    /// Closed loop: start the workers evenly over this time instead of all at once, so
    /// that thousands of them do not connect in the same instant.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    #[serde(default, with = "humantime_serde")]
    pub ramp: Duration,
    /// Scenario files only: the systems this load runs against (default: all).
    #[arg(skip)]
    #[serde(default)]
    pub only: Option<Vec<String>>,
}

/// The prompt sent when a load names none.
const DEFAULT_PROMPT: &str = "Say hello to the bench suite.";

/// The placeholder in a request body that [`LoadSpec::unique_prompts`] replaces with
/// a word of its own per request; it cannot occur in JSON text any other way.
const UNIQUE_MARK: &str = "\u{0}unique\u{0}";

/// What is sent: where, with which body and key.
#[derive(Debug)]
pub struct RequestTemplate {
    pub target: Target,
    /// The body, or (with unique prompts) the text before and after the unique word.
    pub body: Bytes,
    body_tail: Option<Bytes>,
    /// Unique prompts: the run's own prefix of every unique word, and the next number.
    unique: Option<(String, AtomicU64)>,
    pub key: Option<String>,
    /// The body a stalled reader sends: the same request asking for
    /// [`stall::STALL_CHOICES`] choices, so that its answer outgrows the socket buffers.
    stall_body: Bytes,
}

impl RequestTemplate {
    /// A chat completion for `model` with the load's prompt (a short greeting by default).
    pub fn chat(target: Target, model: &str, key: Option<String>, spec: &LoadSpec) -> Self {
        let prompt = spec.prompt.as_deref().unwrap_or(DEFAULT_PROMPT);
        let content = if spec.unique_prompts {
            format!("{prompt} {UNIQUE_MARK}")
        } else {
            prompt.to_owned()
        };
        let mut body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": content}],
        });
        if spec.stream {
            body["stream"] = true.into();
        }
        if let Some(max) = spec.max_tokens {
            body["max_tokens"] = max.into();
        }
        let mut stalled = body.clone();
        stalled["n"] = stall::STALL_CHOICES.into();
        let stall_body = Bytes::from(stalled.to_string());
        let text = body.to_string();
        // serde_json writes the NUL characters of the mark as `\u0000`.
        let mark = serde_json::Value::from(UNIQUE_MARK).to_string();
        let mark = mark.trim_matches('"');
        match text.split_once(mark).filter(|_| spec.unique_prompts) {
            Some((head, tail)) => Self {
                target,
                body: Bytes::from(head.to_owned()),
                body_tail: Some(Bytes::from(tail.to_owned())),
                unique: Some((unique_run_prefix(), AtomicU64::new(0))),
                key,
                stall_body,
            },
            None => Self {
                target,
                body: Bytes::from(text),
                body_tail: None,
                unique: None,
                key,
                stall_body,
            },
        }
    }

    /// This request's body: the fixed one, or one with a fresh unique word.
    fn next_body(&self) -> Bytes {
        match (&self.unique, &self.body_tail) {
            (Some((prefix, next)), Some(tail)) => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let word = format!("{prefix}{n}");
                let mut body = Vec::with_capacity(self.body.len() + word.len() + tail.len());
                body.extend_from_slice(&self.body);
                body.extend_from_slice(word.as_bytes());
                body.extend_from_slice(tail);
                Bytes::from(body)
            }
            _ => self.body.clone(),
        }
    }

    /// A stalled reader's request as whole HTTP/1.1 bytes (it bypasses the pool).
    fn stalled_http1(&self) -> Vec<u8> {
        let body = &self.stall_body;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.target.path,
            self.target.authority,
            body.len()
        );
        if let Some(key) = &self.key {
            head.push_str(&format!("authorization: Bearer {key}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        raw
    }

    fn request(&self, http2: bool) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let uri = if http2 {
            self.target.uri()
        } else {
            self.target.path.clone()
        };
        let body = self.next_body();
        let mut builder = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len());
        if !http2 {
            builder = builder.header(http::header::HOST, &self.target.authority);
        }
        if let Some(key) = &self.key {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        builder.body(Full::new(body))
    }
}

/// A prefix no earlier run used (the wall clock in nanoseconds), so the unique words of
/// one run never repeat another's and a cache warmed by an earlier run stays cold.
fn unique_run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("r{nanos}n")
}

/// Token timing and integrity over every stream of a load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamResult {
    /// Tokens each stream should carry.
    pub expected_tokens: u64,
    /// Streams that got a 200 and were read.
    pub streams: u64,
    /// Streams with every token, one per event, in order, and `[DONE]`.
    pub clean: u64,
    pub tokens: u64,
    /// Tokens missing from streams that ended with `[DONE]`.
    pub lost_tokens: u64,
    /// Events that carried more than one token.
    pub merged_events: u64,
    pub out_of_order: u64,
    pub foreign_words: u64,
    /// Redaction masks (`[EMAIL]`) among the foreign words.
    pub masks: u64,
    /// Streams that ended without `[DONE]`.
    pub incomplete: u64,
    /// Streams with an error event.
    pub errored: u64,
    /// Token events that arrived in the same body read as the token before them: a
    /// proxy that buffers writes several per read.
    pub coalesced_events: u64,
    /// Time to first token from the intended send time, µs.
    pub ttft_us: Summary,
    /// Time between consecutive token events, µs.
    pub gap_us: Summary,
}

/// Everything measured in one load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub spec: LoadSpec,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failures by kind (`status_502`, `timeout`, `connect`, `http`, `body_too_large`).
    pub errors: BTreeMap<String, u64>,
    /// Successful answers per second.
    pub throughput_rps: f64,
    /// Whole-request latency (streams: until the last byte), µs; open loop from the
    /// intended send time.
    pub latency_us: Summary,
    /// From the moment the request was actually written, µs.
    pub service_us: Summary,
    /// Open loop: how late the generator sent, µs.
    pub send_lag_us: Summary,
    pub stream: Option<StreamResult>,
    /// TCP connections the generator opened.
    pub connects: u64,
    pub usage: Option<Usage>,
    /// Samples of the system (kept for streamed loads, for the memory plots).
    pub samples: Vec<Sample>,
    /// Stalled readers (`stalled` > 0): how the system dealt with them.
    pub stalled: Option<StallResult>,
    /// Measured answers by their `x-tollgate-cache` header (`hit`, `semantic-hit`,
    /// `miss`, `bypass`); empty when no answer carried one.
    pub cache: BTreeMap<String, u64>,
}

// === Recording ===

struct Recorder {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    cache: BTreeMap<String, u64>,
    latency: Hist,
    service: Hist,
    lag: Hist,
    ttft: Hist,
    gap: Hist,
    stream: StreamResult,
    stall: StallTally,
}

/// How one request went.
struct Outcome {
    error: Option<String>,
    intended: Instant,
    sent: Instant,
    done: Instant,
    stream: Option<StreamOutcome>,
    /// The answer's `x-tollgate-cache` header.
    cache: Option<String>,
}

struct StreamOutcome {
    check: StreamCheck,
    ttft: Option<Duration>,
    gaps: Vec<u32>,
    coalesced: u64,
}

impl Recorder {
    fn new() -> Result<Self, BenchError> {
        Ok(Self {
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            cache: BTreeMap::new(),
            latency: Hist::new()?,
            service: Hist::new()?,
            lag: Hist::new()?,
            ttft: Hist::new()?,
            gap: Hist::new()?,
            stream: StreamResult::default(),
            stall: StallTally::new()?,
        })
    }

    fn record(&mut self, o: Outcome, expected_tokens: u64) {
        self.sent += 1;
        self.lag
            .record(o.sent.saturating_duration_since(o.intended).as_micros() as u64);
        if let Some(status) = o.cache {
            *self.cache.entry(status).or_default() += 1;
        }
        if let Some(mut s) = o.stream {
            // Tokens missing from a stream that was cut or timed out are counted as an
            // incomplete stream, not as lost chunks of a stream that claimed to be whole.
            if s.check.done {
                s.check.finish(expected_tokens);
            }
            let r = &mut self.stream;
            r.streams += 1;
            r.clean += u64::from(s.check.is_clean());
            r.tokens += s.check.tokens;
            r.lost_tokens += s.check.lost;
            r.merged_events += s.check.merged;
            r.out_of_order += s.check.out_of_order;
            r.foreign_words += s.check.foreign;
            r.masks += s.check.masks;
            r.incomplete += u64::from(!s.check.done);
            r.errored += u64::from(s.check.errored);
            r.coalesced_events += s.coalesced;
            if let Some(t) = s.ttft {
                self.ttft.record(t.as_micros() as u64);
            }
            for g in s.gaps {
                self.gap.record(u64::from(g));
            }
        }
        match o.error {
            Some(kind) => *self.errors.entry(kind).or_default() += 1,
            None => {
                self.ok += 1;
                self.latency
                    .record(o.done.saturating_duration_since(o.intended).as_micros() as u64);
                self.service
                    .record(o.done.saturating_duration_since(o.sent).as_micros() as u64);
            }
        }
    }
}

// === One request ===

async fn one_request(
    pool: &Pool,
    template: &RequestTemplate,
    intended: Instant,
    stream: bool,
    timeout: Duration,
) -> Outcome {
    let mut outcome = Outcome {
        error: None,
        intended,
        sent: intended,
        done: intended,
        stream: stream.then(|| StreamOutcome {
            check: StreamCheck::default(),
            ttft: None,
            gaps: Vec::new(),
            coalesced: 0,
        }),
        cache: None,
    };
    let result = tokio::time::timeout(timeout, exchange(pool, template, &mut outcome)).await;
    outcome.done = Instant::now();
    outcome.error = match result {
        Ok(Ok(())) => None,
        Ok(Err(kind)) => Some(kind),
        Err(_) => Some("timeout".to_owned()),
    };
    outcome
}

async fn exchange(
    pool: &Pool,
    template: &RequestTemplate,
    outcome: &mut Outcome,
) -> Result<(), String> {
    let mut lease = pool.lease().await.map_err(|_| "connect".to_owned())?;
    let req = template
        .request(pool.is_http2())
        .map_err(|_| "request".to_owned())?;
    outcome.sent = Instant::now();
    let response = lease
        .sender
        .send(req)
        .await
        .map_err(|_| "http".to_owned())?;
    let status = response.status();
    outcome.cache = response
        .headers()
        .get(CACHE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut last_token: Option<Instant> = None;
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body".to_owned())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        read += data.len();
        let Some(s) = outcome.stream.as_mut().filter(|_| status.is_success()) else {
            if read > MAX_PLAIN_BODY_BYTES {
                return Err("body_too_large".to_owned());
            }
            continue;
        };
        decoder
            .feed(data, &mut events)
            .map_err(|_| "sse".to_owned())?;
        let mut in_this_read = 0u64;
        for event in events.drain(..) {
            if let EventKind::Tokens(_) = s.check.on_event(&event.data) {
                in_this_read += 1;
                match last_token {
                    None => s.ttft = Some(now.saturating_duration_since(outcome.intended)),
                    Some(prev) => s
                        .gaps
                        .push(now.saturating_duration_since(prev).as_micros() as u32),
                }
                last_token = Some(now);
            }
        }
        s.coalesced += in_this_read.saturating_sub(1);
    }
    pool.give_back(lease);
    if !status.is_success() {
        return Err(format!("status_{}", status.as_u16()));
    }
    if let Some(s) = &outcome.stream {
        if !s.check.done || s.check.errored {
            return Err("stream_incomplete".to_owned());
        }
    }
    Ok(())
}

// === Loads ===

/// What every request task of one load shares.
struct Shared {
    pool: Pool,
    template: RequestTemplate,
    recorder: Mutex<Recorder>,
    /// Requests (or streams) open right now.
    open: AtomicU64,
    expected_tokens: u64,
    /// Stalled readers: every n-th request or worker, and the watcher of their sockets.
    stall: Option<(u64, Arc<StallWatcher>)>,
    /// Source addresses of stalled connections, used in turn.
    stall_source: AtomicUsize,
    sources: usize,
}

impl Shared {
    /// One request: a stalled reader when `index` says so, a measured exchange otherwise;
    /// recorded when `measured`.
    async fn request(&self, index: u64, intended: Instant, spec: &LoadSpec, measured: bool) {
        if let Some((_, watcher)) = self
            .stall
            .as_ref()
            .filter(|(every, _)| stall::is_stalled(index, Some(*every)))
        {
            let raw = self.template.stalled_http1();
            let source = self.stall_source.fetch_add(1, Ordering::Relaxed);
            // Held open by the server too, so counted with the open streams.
            self.open.fetch_add(1, Ordering::Relaxed);
            let outcome = stall::stalled_request(
                &self.template.target,
                &raw,
                source,
                self.sources,
                watcher,
                intended + spec.timeout,
            )
            .await;
            self.open.fetch_sub(1, Ordering::Relaxed);
            if measured {
                self.recorder.lock().stall.record(&outcome);
            }
            if let StallOutcome::Failed(_) = outcome {
                // Do not spin on a refusing server: a stalled worker waits like a slow
                // stream would.
                tokio::time::sleep_until((intended + spec.timeout.min(STALL_RETRY)).into()).await;
            }
            return;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        let outcome = one_request(
            &self.pool,
            &self.template,
            intended,
            spec.stream,
            spec.timeout,
        )
        .await;
        self.open.fetch_sub(1, Ordering::Relaxed);
        if measured {
            self.recorder.lock().record(outcome, self.expected_tokens);
        }
    }
}

/// Least pause before a stalled worker whose request failed tries again.
const STALL_RETRY: Duration = Duration::from_secs(1);

/// Runs `spec` against `template`'s target; samples `pid` when given.
pub async fn run(
    spec: &LoadSpec,
    template: RequestTemplate,
    expected_tokens: u64,
    pid: Option<u32>,
) -> Result<LoadResult, BenchError> {
    let http2 = spec.http == 2;
    let in_flight = match spec.mode {
        Mode::Closed => spec.concurrency,
        Mode::Open => spec.connections,
    };
    let pool = Pool::new(
        template.target.clone(),
        http2,
        in_flight,
        spec.h2_connections,
        spec.sources,
    )
    .await?;
    let stall = match stall::stall_every(spec.stalled) {
        Some(every) => Some((
            every,
            StallWatcher::start(template.target.addr).ok_or_else(|| {
                BenchError::Url(format!(
                    "{}: stalled readers need an IPv4 target",
                    template.target.authority
                ))
            })?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        pool,
        template,
        recorder: Mutex::new(Recorder::new()?),
        open: AtomicU64::new(0),
        expected_tokens,
        stall,
        stall_source: AtomicUsize::new(0),
        sources: spec.sources,
    });

    let start = Instant::now();
    let idle = pid.and_then(|p| sample(p, start, 0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = pid.map(|p| {
        let (sampling, shared) = (sampling.clone(), shared.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                match sample(p, start, shared.open.load(Ordering::Relaxed)) {
                    Some(s) => samples.push(s),
                    None => break,
                }
            }
            samples
        })
    });

    let measure_from = start + spec.warmup;
    let (elapsed, steady_end) = match spec.mode {
        Mode::Closed => (
            closed(spec, &shared, measure_from).await,
            measure_from + spec.duration,
        ),
        Mode::Open => open_loop(spec, &shared, start).await?,
    };
    let load_end_ms = start.elapsed().as_millis() as u64;
    sampling.store(false, Ordering::Relaxed);
    let mut samples = match sampler {
        Some(handle) => handle.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let usage = match (pid, idle) {
        (Some(p), Some(idle)) => {
            tokio::time::sleep(spec.settle).await;
            let after = sample(p, start, 0).unwrap_or_default();
            samples.push(after);
            let steady = (
                spec.warmup.as_millis() as u64,
                steady_end.saturating_duration_since(start).as_millis() as u64,
            );
            Some(procfs::usage(idle, &samples, after, load_end_ms, steady))
        }
        _ => None,
    };
    if !spec.stream {
        samples.clear();
    }

    let r = shared.recorder.lock();
    let failed: u64 = r.errors.values().sum();
    Ok(LoadResult {
        spec: spec.clone(),
        elapsed_s: elapsed.as_secs_f64(),
        sent: r.sent,
        ok: r.ok,
        failed,
        errors: r.errors.clone(),
        throughput_rps: if elapsed.is_zero() {
            0.0
        } else {
            r.ok as f64 / elapsed.as_secs_f64()
        },
        latency_us: r.latency.summary(),
        service_us: r.service.summary(),
        send_lag_us: if spec.mode == Mode::Open {
            r.lag.summary()
        } else {
            Summary::default()
        },
        stream: spec.stream.then(|| StreamResult {
            expected_tokens,
            ttft_us: r.ttft.summary(),
            gap_us: r.gap.summary(),
            ..r.stream.clone()
        }),
        connects: shared.pool.connects.load(Ordering::Relaxed),
        usage,
        samples,
        stalled: shared.stall.is_some().then(|| r.stall.result()),
        cache: r.cache.clone(),
    })
}

fn sample(pid: u32, start: Instant, open: u64) -> Option<Sample> {
    let (rss_kb, cpu_ticks) = procfs::read(pid)?;
    Some(Sample {
        t_ms: start.elapsed().as_millis() as u64,
        rss_kb,
        cpu_ticks,
        open,
    })
}

/// Workers send back to back until the end (worker `i` first waits `i / concurrency` of
/// the ramp); requests started before `measure_from` warm up and are not recorded.
/// Returns the measured time.
async fn closed(spec: &LoadSpec, shared: &Arc<Shared>, measure_from: Instant) -> Duration {
    let end = measure_from + spec.duration;
    let workers_n = spec.concurrency.max(1);
    let ramp_start = Instant::now();
    let mut workers = Vec::with_capacity(workers_n);
    for i in 0..workers_n {
        let (shared, spec) = (shared.clone(), spec.clone());
        let first = ramp_start + spec.ramp.mul_f64(i as f64 / workers_n as f64);
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until(first.into()).await;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                shared
                    .request(i as u64, now, &spec, now >= measure_from)
                    .await;
            }
        }));
    }
    let cutoff = end + spec.timeout + DRAIN_GRACE;
    for w in workers {
        let left = cutoff.saturating_duration_since(Instant::now());
        let abort = w.abort_handle();
        if tokio::time::timeout(left, w).await.is_err() {
            abort.abort();
        }
    }
    // Requests that finished after the end count, so throughput is ok / (end - start)
    // plus the tail they took.
    Instant::now()
        .min(cutoff)
        .saturating_duration_since(measure_from)
        .min(spec.duration + spec.timeout)
        .max(spec.duration)
}

/// Requests leave on schedule from a dispatcher thread (sub-millisecond sleeps, unlike
/// the runtime's 1 ms timer); each request's latency counts from its intended time.
/// Returns the measured time and when the schedule ended.
async fn open_loop(
    spec: &LoadSpec,
    shared: &Arc<Shared>,
    start: Instant,
) -> Result<(Duration, Instant), BenchError> {
    let rate = spec.rate.unwrap_or(1000.0).max(0.001);
    let warmup_n = total_requests(spec.warmup, rate);
    let measured_n = spec
        .count
        .unwrap_or_else(|| total_requests(spec.duration, rate));
    let total = warmup_n + measured_n;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = tokio::runtime::Handle::current();
    let (shared2, spec2) = (shared.clone(), spec.clone());
    let dispatcher = std::thread::Builder::new()
        .name("bench-dispatch".to_owned())
        .spawn(move || {
            let mut next = 0u64;
            while next < total {
                let due = due_count(start.elapsed(), rate, total);
                while next < due {
                    let intended = start + intended_offset(next, rate);
                    let measured = next >= warmup_n;
                    let (shared, spec) = (shared2.clone(), spec2.clone());
                    let index = next;
                    let task = handle.spawn(async move {
                        shared.request(index, intended, &spec, measured).await;
                    });
                    if tx.send(task).is_err() {
                        return;
                    }
                    next += 1;
                }
                let wait =
                    (start + intended_offset(next, rate)).saturating_duration_since(Instant::now());
                std::thread::sleep(wait.max(MIN_DISPATCH_SLEEP));
            }
        })
        .map_err(|e| BenchError::io("start the dispatcher thread", e))?;
    let schedule_end = start + intended_offset(total, rate);
    let cutoff = schedule_end + spec.timeout + DRAIN_GRACE;
    while let Some(task) = rx.recv().await {
        let left = cutoff.saturating_duration_since(Instant::now());
        let abort = task.abort_handle();
        if tokio::time::timeout(left, task).await.is_err() {
            abort.abort();
            let mut r = shared.recorder.lock();
            *r.errors.entry("unfinished".to_owned()).or_default() += 1;
        }
    }
    // The channel closed: the dispatcher has returned.
    let _ = dispatcher.join();
    let measured_start = start + intended_offset(warmup_n, rate);
    Ok((
        Instant::now().saturating_duration_since(measured_start),
        schedule_end,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        spec: LoadSpec,
    }

    fn template(args: &[&str]) -> RequestTemplate {
        let spec = Cli::parse_from([&["load"], args].concat()).spec;
        let target = Target::parse("http://127.0.0.1:1/v1/chat/completions").unwrap();
        RequestTemplate::chat(target, "m", None, &spec)
    }

    fn content(body: &Bytes) -> String {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["messages"][0]["content"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_fixed_prompt_is_the_same_body_every_time() {
        let t = template(&["--prompt", "Hi \"there\""]);
        assert_eq!(t.next_body(), t.next_body());
        assert_eq!(content(&t.next_body()), "Hi \"there\"");
        assert_eq!(content(&template(&[]).next_body()), DEFAULT_PROMPT);
    }

    #[test]
    fn unique_prompts_differ_in_one_last_word() {
        let t = template(&["--prompt", "Say \"hi\"", "--unique-prompts", "--stream"]);
        let (a, b) = (content(&t.next_body()), content(&t.next_body()));
        assert_ne!(a, b);
        for c in [&a, &b] {
            let (prompt, word) = c.rsplit_once(' ').unwrap();
            assert_eq!(prompt, "Say \"hi\"");
            assert!(word.starts_with('r') && !word.contains('\0'), "{word}");
        }
        let other_run = template(&["--unique-prompts"]);
        assert_ne!(
            content(&other_run.next_body()).rsplit_once(' ').unwrap().1,
            a.rsplit_once(' ').unwrap().1
        );
        let v: serde_json::Value = serde_json::from_slice(&t.next_body()).unwrap();
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn a_stalled_request_asks_for_more_choices() {
        let t = template(&["--stream"]);
        let raw = String::from_utf8(t.stalled_http1()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("host: 127.0.0.1:1\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["n"].as_u64(), v["stream"].as_bool()),
            (Some(stall::STALL_CHOICES), Some(true))
        );
    }
}
