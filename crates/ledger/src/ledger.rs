//! The ledger as the gateway sees it: record on the request path (memory only), ship in
//! the background, query totals.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::LedgerError;
use crate::record::UsageRecord;
use crate::shipper;
use crate::sink::{AggregateQuery, AggregateRow, Sink};
use crate::spool::{Durable, Spool, SpoolSync, Stop, SEGMENT_TARGET_BYTES, SPOOL_QUEUE_CAPACITY};

/// Records per sink transaction. Larger batches amortize the commit (one fsync on the
/// database side) but hold more records in memory and redo more work after a failure.
pub const SHIP_BATCH_RECORDS: usize = 500;

#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// See [`SEGMENT_TARGET_BYTES`].
    pub segment_bytes: u64,
    /// See [`SPOOL_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// See [`SHIP_BATCH_RECORDS`].
    pub ship_batch_records: usize,
    /// Default [`SpoolSync::EveryCommit`].
    pub sync: SpoolSync,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_TARGET_BYTES,
            queue_capacity: SPOOL_QUEUE_CAPACITY,
            ship_batch_records: SHIP_BATCH_RECORDS,
            sync: SpoolSync::EveryCommit,
        }
    }
}

/// Counters for metrics and `/admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    /// Records written to the spool since open.
    pub committed_records: u64,
    /// Records written to the sink since open (replays after a crash included).
    pub shipped_records: u64,
    /// Spooled bytes not yet in the sink.
    pub unshipped_bytes: u64,
    /// `try_record` calls refused because the queue was full.
    pub queue_full: u64,
    pub sink_failures: u64,
    pub last_sink_error: Option<String>,
}

/// One request, one record: appended to the local spool, then shipped to the sink.
///
/// A record is durable once its [`Durable`] resolves; from then on neither a crash nor a
/// kill loses it, and replaying the spool never duplicates it in the sink (rows are keyed
/// by record id).
pub struct Ledger {
    spool: Spool,
    sink: Arc<dyn Sink>,
    shipper: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    pub fn open(dir: impl AsRef<Path>, sink: Arc<dyn Sink>) -> Result<Self, LedgerError> {
        Self::open_with(dir, sink, LedgerOptions::default())
    }

    /// Opens the spool in `dir` (replaying whatever a previous run left unshipped) and
    /// starts the writer and shipper threads.
    pub fn open_with(
        dir: impl AsRef<Path>,
        sink: Arc<dyn Sink>,
        options: LedgerOptions,
    ) -> Result<Self, LedgerError> {
        let dir = dir.as_ref();
        let spool = Spool::open(
            dir,
            options.segment_bytes,
            options.queue_capacity,
            options.sync,
        )?;
        let reader = spool.reader();
        let shipping = Arc::clone(&sink);
        let batch = options.ship_batch_records.max(1);
        let handle = thread::Builder::new()
            .name("tollgate-ledger-ship".to_owned())
            .spawn(move || shipper::run(reader, shipping, batch))
            .map_err(LedgerError::io("starting the ledger shipper for", dir))?;
        Ok(Self {
            spool,
            sink,
            shipper: Mutex::new(Some(handle)),
        })
    }

    /// Queues the record without blocking: for synchronous code on the request path.
    ///
    /// When the queue is full (the disk has fallen [`SPOOL_QUEUE_CAPACITY`] records
    /// behind) the record comes back in [`LedgerError::QueueFull`] and the refusal is
    /// counted in [`LedgerStats::queue_full`]; the caller still owns it and should hand
    /// it to [`Ledger::record`] from an async context rather than drop it.
    pub fn try_record(&self, record: UsageRecord) -> Result<Durable, LedgerError> {
        self.spool.try_append(record)
    }

    /// Queues the record, waiting while the queue is full: backpressure instead of loss.
    /// Returns once queued; await the [`Durable`] to know it is on disk.
    pub async fn record(&self, record: UsageRecord) -> Result<Durable, LedgerError> {
        self.spool.append(record).await
    }

    /// [`Ledger::record`] for threads that may block (CLI, tests).
    pub fn record_blocking(&self, record: UsageRecord) -> Result<Durable, LedgerError> {
        futures::executor::block_on(self.spool.append(record))
    }

    /// Totals from the sink. Blocks on the database: from async code call it inside
    /// `spawn_blocking`. Records still in the spool are not counted yet.
    pub fn aggregate(&self, query: &AggregateQuery) -> Result<Vec<AggregateRow>, LedgerError> {
        self.sink.aggregate(query)
    }

    /// Blocks until every record queued before the call is in the sink (records whose
    /// write failed excepted); for shutdown, the CLI and tests. On a closed ledger,
    /// waits for what was committed.
    pub fn sync(&self, timeout: Duration) -> Result<(), LedgerError> {
        let deadline = Instant::now() + timeout;
        match self.spool.flush() {
            Ok(()) | Err(LedgerError::Closed) => {}
            Err(other) => return Err(other),
        }
        let shared = self.spool.shared();
        let mut state = shared.state.lock();
        let target = state.durable_end();
        state.sync_waiters += 1;
        shared.urge.notify_all();
        let mut result = Ok(());
        while state.unshipped_bytes(target) > 0 {
            if shared.changed.wait_until(&mut state, deadline).timed_out()
                && state.unshipped_bytes(target) > 0
            {
                result = Err(LedgerError::Timeout(timeout));
                break;
            }
        }
        state.sync_waiters -= 1;
        result
    }

    pub fn stats(&self) -> LedgerStats {
        let shared = self.spool.shared();
        let state = shared.state.lock();
        LedgerStats {
            committed_records: state.committed_records,
            shipped_records: state.shipped_records,
            unshipped_bytes: state.unshipped_bytes(state.durable_end()),
            queue_full: shared.queue_full.load(Ordering::Relaxed),
            sink_failures: state.sink_failures,
            last_sink_error: state.last_sink_error.clone(),
        }
    }

    /// Stops taking records, commits those queued, and ships for at most `drain`; what
    /// is left stays in the spool for the next start. Later calls return at once.
    pub fn close(&self, drain: Duration) {
        self.spool.close();
        self.stop_shipper(Stop::Drain(Instant::now() + drain));
    }

    fn stop_shipper(&self, stop: Stop) {
        let shared = self.spool.shared();
        {
            let mut state = shared.state.lock();
            if state.stop.is_none() {
                state.stop = Some(stop);
            }
        }
        shared.changed.notify_all();
        shared.urge.notify_all();
        if let Some(handle) = self.shipper.lock().take() {
            if handle.join().is_err() {
                tracing::error!("ledger shipper thread panicked");
            }
        }
    }
}

impl Drop for Ledger {
    /// Commits what is queued and stops; an in-flight sink write is waited for.
    fn drop(&mut self) {
        self.spool.close();
        self.stop_shipper(Stop::Now);
    }
}
