//! The ledger crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::record::UsageRecord;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another process holds the spool directory; two writers would interleave segments.
    #[error("spool directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("usage record {request_id} encodes to {bytes} bytes, above the limit")]
    RecordTooLarge { request_id: String, bytes: usize },
    #[error("usage record does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    /// The spool's queue is full; the record is handed back so the caller keeps it.
    #[error("the spool queue is full")]
    QueueFull(Box<UsageRecord>),
    #[error("the ledger is closed")]
    Closed,
    /// Writing or syncing a batch failed; the records of that batch are not durable.
    #[error("spool write failed: {0}")]
    WriteFailed(String),
    #[error("timed out after {0:?} waiting for the sink")]
    Timeout(std::time::Duration),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// A value read back from a sink is not what the ledger wrote (e.g. a cost column
    /// edited by hand).
    #[error("sink returned a bad value: {0}")]
    BadValue(String),
}

impl LedgerError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            context,
            path,
            source,
        }
    }
}
