//! State shared by all connections: the reply, counters, the request record, the fault
//! queue and the health switch.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::faults::{Fault, FaultRule};
use crate::MockConfig;

/// Requests kept by the record, oldest dropped first.
///
/// Enough for any single test to inspect its own traffic; at most about
/// `MAX_RECORDED_REQUESTS * MAX_RECORDED_BODY_BYTES` (64 MiB) stays alive under a bench.
pub(crate) const MAX_RECORDED_REQUESTS: usize = 1000;

/// Bodies up to this size are kept verbatim in the record; larger ones only by length
/// and SHA-256, which is all a test needs to check that they arrived whole.
pub(crate) const MAX_RECORDED_BODY_BYTES: usize = 64 * 1024;

/// Distinct model names remembered for `/v1/models`; beyond this, new names are not
/// listed (a bench that sends random names must not grow the set without end).
const MAX_MODELS_SEEN: usize = 1024;

/// Fault rules that may wait in the queue; more are refused with 400.
pub(crate) const MAX_FAULT_RULES: usize = 10_000;

/// The reply every completion is made of, split into tokens once at start-up.
pub(crate) struct Reply {
    text: String,
    /// Byte offset where each token ends; token `i` is `text[ends[i-1]..ends[i]]`.
    ends: Vec<usize>,
}

impl Reply {
    fn new(cfg: &MockConfig) -> Self {
        let text = match &cfg.reply {
            Some(text) => text.clone(),
            None => {
                let mut text = String::new();
                for i in 0..cfg.tokens {
                    text.push_str("tok");
                    text.push_str(&i.to_string());
                    text.push(' ');
                }
                text
            }
        };
        let ends = token_ends(&text);
        Self { text, ends }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The first `n` tokens, concatenated.
    pub(crate) fn prefix(&self, n: usize) -> &str {
        match n.min(self.ends.len()).checked_sub(1) {
            Some(last) => self.text.get(..self.ends[last]).unwrap_or_default(),
            None => "",
        }
    }

    /// Token `i`, with the whitespace that follows it.
    pub(crate) fn token(&self, i: usize) -> &str {
        let start = match i.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(self.text.len()),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or_default()
    }
}

/// Splits after each run of whitespace that follows a word: `"a b  c"` becomes
/// `"a "`, `"b  "`, `"c"`; leading whitespace stays with the first word.
fn token_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut seen_word = false;
    let mut prev_space = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && prev_space && seen_word {
            ends.push(i);
        }
        seen_word |= !space;
        prev_space = space;
    }
    if seen_word {
        ends.push(text.len());
    }
    ends
}

/// Cheap deterministic token count: whitespace-separated words.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// One request as received, kept for `GET /__mock/requests`.
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    /// The body, only when at most [`MAX_RECORDED_BODY_BYTES`].
    pub(crate) body: Option<Bytes>,
    pub(crate) body_len: usize,
    pub(crate) body_sha256: [u8; 32],
    pub(crate) model: Option<String>,
    pub(crate) messages: Option<usize>,
    pub(crate) note: Option<&'static str>,
    pub(crate) time_ms: u64,
}

impl Recorded {
    pub(crate) fn new(
        method: Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        let kept = (body.len() <= MAX_RECORDED_BODY_BYTES && !body.is_empty())
            // A copy, so the record never pins a larger receive buffer.
            .then(|| Bytes::copy_from_slice(body));
        Self {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers.clone(),
            body: kept,
            body_len: body.len(),
            body_sha256: Sha256::digest(body).into(),
            model: None,
            messages: None,
            note: None,
            time_ms: unix_millis(),
        }
    }
}

/// What the recorder needs from a body whose shape the full parse rejected.
#[derive(Deserialize)]
struct Summary {
    model: Option<String>,
    messages: Option<Vec<IgnoredAny>>,
}

impl Recorded {
    /// Fills `model` and `messages` from a body the endpoint could not parse, as far as its
    /// top-level fields allow.
    pub(crate) fn summarize(&mut self, body: &[u8]) {
        if let Ok(summary) = serde_json::from_slice::<Summary>(body) {
            self.model = summary.model;
            self.messages = summary.messages.as_ref().map(Vec::len);
        }
    }
}

impl Serialize for Recorded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let body = self.body.as_ref().map(|b| match serde_json::from_slice(b) {
            Ok(json) => json,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        });
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("method", self.method.as_str())?;
        map.serialize_entry("path", &self.path)?;
        map.serialize_entry("query", &self.query)?;
        map.serialize_entry("headers", &HeadersJson(&self.headers))?;
        map.serialize_entry("body", &body)?;
        map.serialize_entry("body_len", &self.body_len)?;
        map.serialize_entry("body_sha256", &hex::encode(self.body_sha256))?;
        map.serialize_entry("model", &self.model)?;
        map.serialize_entry("messages", &self.messages)?;
        if let Some(note) = self.note {
            map.serialize_entry("note", note)?;
        }
        map.serialize_entry("time", &self.time_ms)?;
        map.end()
    }
}

/// Headers as `{lowercase name: value}`; repeated headers joined with `", "`.
struct HeadersJson<'a>(&'a HeaderMap);

impl Serialize for HeadersJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let joined = self
                .0
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ");
            map.serialize_entry(name.as_str(), &joined)?;
        }
        map.end()
    }
}

/// The state behind every handler.
pub(crate) struct App {
    pub(crate) cfg: MockConfig,
    pub(crate) reply: Reply,
    next_id: AtomicU64,
    total_requests: AtomicU64,
    pub(crate) active_streams: AtomicU64,
    /// TCP connections accepted: with HTTP/2 many requests share one.
    pub(crate) connections: AtomicU64,
    health: AtomicU16,
    records: Mutex<VecDeque<Arc<Recorded>>>,
    faults: Mutex<VecDeque<FaultRule>>,
    models: Mutex<BTreeSet<String>>,
}

impl App {
    pub(crate) fn new(cfg: MockConfig) -> Self {
        Self {
            reply: Reply::new(&cfg),
            cfg,
            next_id: AtomicU64::new(1),
            total_requests: AtomicU64::new(0),
            active_streams: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            health: AtomicU16::new(200),
            records: Mutex::new(VecDeque::with_capacity(MAX_RECORDED_REQUESTS)),
            faults: Mutex::new(VecDeque::new()),
            models: Mutex::new(BTreeSet::new()),
        }
    }

    /// A fresh number for response and tool-call ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record(&self, rec: Recorded) {
        self.total_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(model) = &rec.model {
            let mut models = lock(&self.models);
            if models.len() < MAX_MODELS_SEEN && !models.contains(model) {
                models.insert(model.clone());
            }
        }
        let mut records = lock(&self.records);
        if records.len() >= MAX_RECORDED_REQUESTS {
            records.pop_front();
        }
        records.push_back(Arc::new(rec));
    }

    pub(crate) fn recorded(&self) -> Vec<Arc<Recorded>> {
        lock(&self.records).iter().cloned().collect()
    }

    pub(crate) fn clear_records(&self) -> usize {
        let mut records = lock(&self.records);
        let n = records.len();
        records.clear();
        n
    }

    pub(crate) fn total_requests(&self) -> u64 {
        self.total_requests.load(Ordering::Relaxed)
    }

    pub(crate) fn models_seen(&self) -> Vec<String> {
        lock(&self.models).iter().cloned().collect()
    }

    pub(crate) fn health(&self) -> u16 {
        self.health.load(Ordering::Relaxed)
    }

    pub(crate) fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::Relaxed);
    }

    /// Appends rules; returns the queue length, or `None` (and adds nothing) when the
    /// queue would exceed [`MAX_FAULT_RULES`].
    pub(crate) fn add_faults(&self, rules: Vec<FaultRule>) -> Option<usize> {
        let mut faults = lock(&self.faults);
        if faults.len() + rules.len() > MAX_FAULT_RULES {
            return None;
        }
        faults.extend(rules);
        Some(faults.len())
    }

    pub(crate) fn clear_faults(&self) -> usize {
        let mut faults = lock(&self.faults);
        let n = faults.len();
        faults.clear();
        n
    }

    pub(crate) fn pending_faults(&self) -> usize {
        lock(&self.faults).len()
    }

    /// Consumes one use of the first queued rule matching this request.
    pub(crate) fn take_fault(
        &self,
        path: &str,
        model: Option<&str>,
        endpoint: bool,
    ) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let pos = faults
            .iter()
            .position(|r| r.matches(path, model, endpoint))?;
        let rule = faults.get_mut(pos)?;
        let fault = rule.fault.clone();
        rule.times = rule.times.saturating_sub(1);
        if rule.times == 0 {
            faults.remove(pos);
        }
        Some(fault)
    }
}

/// Counts a stream as active for as long as it lives.
pub(crate) struct StreamGuard(Arc<App>);

impl StreamGuard {
    pub(crate) fn new(app: Arc<App>) -> Self {
        app.active_streams.fetch_add(1, Ordering::Relaxed);
        Self(app)
    }

    pub(crate) fn app(&self) -> &App {
        &self.0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The state stays consistent even if a holder panicked (every critical section is a
/// single push, pop or scan), so a poisoned lock is simply taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn unix_secs() -> u64 {
    unix_millis() / 1000
}
