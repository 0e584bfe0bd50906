//! The shipper thread: moves durable records from the spool to the sink in batches,
//! retrying with backoff while the sink fails, and advances the shipped position only
//! after the sink has committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sink::Sink;
use crate::spool::{SpoolReader, Stop};

/// First wait after a failed sink write; doubles per failure up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long the shipper lets records gather before writing a batch that is not full.
/// Each sink transaction ends in fsyncs whose CPU and disk cost hardly depend on its
/// size; shipping every commit at once cost about a third of a core at 8k requests/s.
/// The spool already holds the records, and `Ledger::sync` (which `/admin/usage` and the
/// budget rebuild call) cuts the wait short.
pub(crate) const SHIP_LINGER: Duration = Duration::from_millis(100);

pub(crate) fn run(mut reader: SpoolReader, sink: Arc<dyn Sink>, batch_records: usize) {
    let shared = Arc::clone(reader.shared());
    let mut backoff = RETRY_MIN;
    let mut retry_at: Option<Instant> = None;
    let mut last_full = false;
    loop {
        {
            let mut state = shared.state.lock();
            loop {
                let now = Instant::now();
                let pending = state.has_unshipped();
                let deadline = match state.stop {
                    Some(Stop::Now) => return,
                    Some(Stop::Drain(deadline)) if !pending || now >= deadline => return,
                    Some(Stop::Drain(deadline)) => Some(deadline),
                    None => None,
                };
                if retry_at.is_some_and(|at| now >= at) {
                    retry_at = None;
                }
                if pending && retry_at.is_none() {
                    break;
                }
                match [retry_at, deadline].into_iter().flatten().min() {
                    Some(until) => {
                        shared.changed.wait_until(&mut state, until);
                    }
                    None => shared.changed.wait(&mut state),
                }
            }
            // A full batch means more are waiting: no linger then.
            if !last_full {
                let until = Instant::now() + SHIP_LINGER;
                while state.stop.is_none()
                    && state.sync_waiters == 0
                    && !shared.urge.wait_until(&mut state, until).timed_out()
                {}
            }
        }

        let failure = match reader.next_batch(batch_records) {
            Ok(batch) if batch.records.is_empty() => {
                // Only damaged or unreadable records were passed over.
                reader.mark_shipped(batch.end, 0);
                None
            }
            Ok(batch) => match sink.write_batch(&batch.records) {
                Ok(_) => {
                    last_full = batch.records.len() >= batch_records;
                    reader.mark_shipped(batch.end, batch.records.len());
                    None
                }
                Err(err) => Some(err.to_string()),
            },
            Err(err) => Some(err.to_string()),
        };
        match failure {
            None => backoff = RETRY_MIN,
            Some(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "usage ledger: shipping failed");
                {
                    let mut state = shared.state.lock();
                    state.sink_failures += 1;
                    state.last_sink_error = Some(error);
                }
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}
