//! The usage ledger: one record per request, durable before anything trusts it.
//!
//! The request path only queues a [`UsageRecord`] in memory ([`Ledger::try_record`] or
//! [`Ledger::record`]). A writer thread appends queued records to checksummed segment
//! files and acknowledges each through its [`Durable`] once written: fsynced first, one
//! fsync per batch ([`SpoolSync::EveryCommit`]), or fsynced in the background at an
//! interval ([`SpoolSync::Interval`]). A shipper
//! thread copies durable records to a [`Sink`] ([`SqliteSink`] by default,
//! [`PostgresSink`] for several nodes) and then deletes what it shipped. After a crash the
//! spool's torn tail is cut and everything unshipped is sent again; the sinks key rows by
//! the record id the gateway mints for every request, so nothing is lost and nothing
//! doubles, and a client that reuses its `x-request-id` still gets a record per request.

mod error;
mod frame;
mod ledger;
mod record;
mod shipper;
mod sink;
mod spool;

pub use error::LedgerError;
pub use frame::MAX_RECORD_BYTES;
pub use ledger::{Ledger, LedgerOptions, LedgerStats, SHIP_BATCH_RECORDS};
pub use record::{Attempt, CacheStatus, GuardrailAction, UsageRecord};
pub use rust_decimal::Decimal;
pub use sink::{AggregateQuery, AggregateRow, GroupBy, PostgresSink, Sink, SqliteSink};
pub use spool::{
    Durable, SpoolSync, MAX_COMMIT_RECORDS, SEGMENT_TARGET_BYTES, SPOOL_QUEUE_CAPACITY,
};

#[cfg(test)]
mod test_support;
