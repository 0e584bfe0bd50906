//! The ledger end to end on SQLite: shipping, segment cleanup, replay, sink outages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tollgate_core::Usage;
use tollgate_ledger::{
    AggregateQuery, AggregateRow, CacheStatus, Decimal, GroupBy, Ledger, LedgerError,
    LedgerOptions, Sink, SqliteSink, UsageRecord,
};

fn record(id: &str) -> UsageRecord {
    UsageRecord {
        record_id: id.to_owned(),
        request_id: id.to_owned(),
        time_ms: 1_714_521_600_000,
        key: Some("k".to_owned()),
        team: Some("t".to_owned()),
        user: Some("u".to_owned()),
        tags: BTreeMap::new(),
        route: None,
        requested_model: "m".to_owned(),
        served_model: Some("m".to_owned()),
        provider: Some("p".to_owned()),
        endpoint: None,
        attempts: Vec::new(),
        status: 200,
        error: None,
        stream: false,
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        cost: Decimal::new(15, 6),
        latency_ms: 3,
        ttft_ms: None,
        cache: CacheStatus::Off,
        saved_cost: Decimal::ZERO,
        guardrails: Vec::new(),
    }
}

fn by_team() -> AggregateQuery {
    AggregateQuery {
        by: GroupBy::Team,
        since_ms: None,
        until_ms: None,
    }
}

fn requests(ledger: &Ledger) -> u64 {
    ledger
        .aggregate(&by_team())
        .unwrap()
        .iter()
        .map(|row| row.requests)
        .sum()
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .count()
}

fn small_segments() -> LedgerOptions {
    LedgerOptions {
        segment_bytes: 2048,
        ..LedgerOptions::default()
    }
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn records_reach_the_sink_and_shipped_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(SqliteSink::open(dir.path().join("usage.db")).unwrap());
    let spool = dir.path().join("spool");
    let ledger = Ledger::open_with(&spool, sink, small_segments()).unwrap();
    for i in 0..200 {
        ledger
            .record_blocking(record(&format!("r{i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    ledger.sync(WAIT).unwrap();
    assert_eq!(requests(&ledger), 200);
    let stats = ledger.stats();
    assert_eq!(stats.committed_records, 200);
    assert_eq!(stats.shipped_records, 200);
    assert_eq!(stats.unshipped_bytes, 0);
    // 200 records of ~500 bytes make dozens of 2 KiB segments; only the newest remain
    // once the shipper has deleted the shipped ones (right after it ships them).
    let deadline = std::time::Instant::now() + WAIT;
    while segments(&spool) > 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(segments(&spool) <= 2, "{} segments left", segments(&spool));
    let rows = ledger.aggregate(&by_team()).unwrap();
    assert_eq!(rows[0].cost, Decimal::new(15 * 200, 6));
}

#[test]
fn replay_after_a_lost_shipped_marker_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("usage.db");
    let spool = dir.path().join("spool");
    let ledger = Ledger::open(&spool, Arc::new(SqliteSink::open(&db).unwrap())).unwrap();
    for i in 0..50 {
        drop(ledger.try_record(record(&format!("r{i}"))).unwrap());
    }
    ledger.close(WAIT);
    assert_eq!(ledger.stats().shipped_records, 50);
    drop(ledger);
    // As if the process died after the sink commit but before the marker was written.
    std::fs::remove_file(spool.join("shipped")).unwrap();

    let ledger = Ledger::open(&spool, Arc::new(SqliteSink::open(&db).unwrap())).unwrap();
    ledger.sync(WAIT).unwrap();
    assert_eq!(ledger.stats().shipped_records, 50, "the spool was replayed");
    assert_eq!(requests(&ledger), 50);
}

#[test]
fn a_record_left_unshipped_is_shipped_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("usage.db");
    let spool = dir.path().join("spool");
    let ledger = Ledger::open(&spool, Arc::new(Failing::new(u32::MAX, &db))).unwrap();
    ledger
        .record_blocking(record("kept"))
        .unwrap()
        .wait()
        .unwrap();
    assert!(matches!(
        ledger.sync(Duration::from_millis(300)),
        Err(LedgerError::Timeout(_))
    ));
    ledger.close(Duration::ZERO);
    drop(ledger);

    let ledger = Ledger::open(&spool, Arc::new(SqliteSink::open(&db).unwrap())).unwrap();
    ledger.sync(WAIT).unwrap();
    assert_eq!(requests(&ledger), 1);
}

#[test]
fn a_failing_sink_is_retried_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Failing::new(3, &dir.path().join("usage.db")));
    let ledger = Ledger::open(dir.path().join("spool"), sink.clone()).unwrap();
    for i in 0..10 {
        drop(ledger.try_record(record(&format!("r{i}"))).unwrap());
    }
    ledger.sync(WAIT).unwrap();
    let stats = ledger.stats();
    assert_eq!(stats.sink_failures, 3);
    assert!(stats.last_sink_error.unwrap().contains("sink down"));
    assert_eq!(requests(&ledger), 10);
}

#[tokio::test]
async fn async_callers_get_backpressure_not_loss() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(SqliteSink::open(dir.path().join("usage.db")).unwrap());
    let options = LedgerOptions {
        queue_capacity: 2,
        ..LedgerOptions::default()
    };
    let ledger = Arc::new(Ledger::open_with(dir.path().join("spool"), sink, options).unwrap());
    let mut tasks = Vec::new();
    for t in 0..4 {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let durable = ledger.record(record(&format!("t{t}-{i}"))).await.unwrap();
                if i % 10 == 0 {
                    durable.await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let counted = tokio::task::spawn_blocking(move || {
        ledger.sync(WAIT).unwrap();
        requests(&ledger)
    })
    .await
    .unwrap();
    assert_eq!(counted, 400);
}

#[test]
fn a_closed_ledger_refuses_records() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(SqliteSink::open(dir.path().join("usage.db")).unwrap());
    let ledger = Ledger::open(dir.path().join("spool"), sink).unwrap();
    ledger.close(WAIT);
    assert!(matches!(
        ledger.try_record(record("late")),
        Err(LedgerError::Closed)
    ));
}

/// SQLite behind a switch that fails the first `failures` writes.
struct Failing {
    left: AtomicU32,
    inner: SqliteSink,
}

impl Failing {
    fn new(failures: u32, db: &Path) -> Self {
        Self {
            left: AtomicU32::new(failures),
            inner: SqliteSink::open(db).unwrap(),
        }
    }
}

impl Sink for Failing {
    fn write_batch(&self, records: &[UsageRecord]) -> Result<u64, LedgerError> {
        let failing = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(LedgerError::BadValue("sink down".to_owned()));
        }
        self.inner.write_batch(records)
    }

    fn aggregate(&self, query: &AggregateQuery) -> Result<Vec<AggregateRow>, LedgerError> {
        self.inner.aggregate(query)
    }
}

/// SQLite that counts its transactions.
struct Counting {
    batches: AtomicU32,
    inner: SqliteSink,
}

impl Sink for Counting {
    fn write_batch(&self, records: &[UsageRecord]) -> Result<u64, LedgerError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.write_batch(records)
    }

    fn aggregate(&self, query: &AggregateQuery) -> Result<Vec<AggregateRow>, LedgerError> {
        self.inner.aggregate(query)
    }
}

/// Records that arrive one after another are shipped together: a batch that is not full
/// waits a little for more, since each sink transaction costs fsyncs whatever its size.
#[test]
fn records_arriving_one_by_one_share_sink_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Counting {
        batches: AtomicU32::new(0),
        inner: SqliteSink::open(dir.path().join("usage.db")).unwrap(),
    });
    let ledger =
        Ledger::open(dir.path().join("spool"), Arc::clone(&sink) as Arc<dyn Sink>).unwrap();
    for i in 0..100 {
        ledger
            .record_blocking(record(&format!("r{i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    ledger.sync(WAIT).unwrap();
    assert_eq!(requests(&ledger), 100);
    let batches = sink.batches.load(Ordering::SeqCst);
    assert!(batches < 20, "100 records took {batches} transactions");
}
