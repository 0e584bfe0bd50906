//! Where shipped records end up, and the aggregation queries over them. Both sinks key
//! rows by record id (minted by the gateway for every request) and skip ids they already
//! hold, which makes replaying the spool after a crash harmless; the client's request id
//! is an ordinary column, since clients may reuse theirs.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::record::UsageRecord;

mod postgres;
mod sqlite;

pub use self::postgres::PostgresSink;
pub use self::sqlite::SqliteSink;

/// A store of usage records. Calls block (disk or network); from async code run them on
/// a blocking thread.
pub trait Sink: Send + Sync {
    /// Stores the records in one transaction, skipping record ids already stored;
    /// returns how many were new. Returns only once the transaction is durable.
    fn write_batch(&self, records: &[UsageRecord]) -> Result<u64, LedgerError>;

    /// Totals per group over records whose `time_ms` is in `[since_ms, until_ms)`,
    /// ordered by group (records without a group first).
    fn aggregate(&self, query: &AggregateQuery) -> Result<Vec<AggregateRow>, LedgerError>;
}

/// Longest tag name [`GroupBy::Tag`] accepts, in bytes: the gateway records no longer tag
/// names, so a longer one could only ever match nothing.
pub const MAX_GROUP_TAG_BYTES: usize = 128;

/// What to total usage by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Team,
    Key,
    /// The end user named by the request (`user` field or header).
    User,
    /// The serving model, or the requested one when nothing served it.
    Model,
    Route,
    /// UTC calendar day, `YYYY-MM-DD`.
    Day,
    /// UTC calendar month, `YYYY-MM`.
    Month,
    /// The value of one tag (request metadata entry), by the tag's name; written
    /// `tag:<name>`. Tags are the client's own labels, unbounded in number, which is why
    /// they are totalled here rather than as a metric label.
    Tag(String),
}

impl GroupBy {
    pub const ALL: [GroupBy; 7] = [
        Self::Team,
        Self::Key,
        Self::User,
        Self::Model,
        Self::Route,
        Self::Day,
        Self::Month,
    ];

    /// The grouping's name: `tag` for every tag.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Key => "key",
            Self::User => "user",
            Self::Model => "model",
            Self::Route => "route",
            Self::Day => "day",
            Self::Month => "month",
            Self::Tag(_) => "tag",
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(name) => write!(f, "tag:{name}"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("tag:") {
            if name.is_empty() || name.len() > MAX_GROUP_TAG_BYTES {
                return Err(format!(
                    "grouping '{text}': a tag name of 1 to {MAX_GROUP_TAG_BYTES} bytes follows 'tag:'"
                ));
            }
            return Ok(Self::Tag(name.to_owned()));
        }
        Self::ALL
            .into_iter()
            .find(|by| by.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown grouping '{text}', expected one of team, key, user, model, route, \
                     day, month, tag:<name>"
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateQuery {
    pub by: GroupBy,
    /// Inclusive lower bound in ms since the Unix epoch; unbounded when `None`.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound in ms since the Unix epoch; unbounded when `None`.
    pub until_ms: Option<i64>,
}

impl AggregateQuery {
    fn bounds(&self) -> (i64, i64) {
        (
            self.since_ms.unwrap_or(i64::MIN),
            self.until_ms.unwrap_or(i64::MAX),
        )
    }
}

/// Totals of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// The team, key, model, route, day, month or tag value; `None` for records without
    /// one.
    pub group: Option<String>,
    pub requests: u64,
    /// Requests whose counts are (partly) the gateway's estimates.
    pub estimated_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// USD, exact.
    pub cost: Decimal,
}

/// Tokens and latencies are u64 in records and BIGINT in both databases; counts beyond
/// i64 are not real, so they are clamped rather than refused.
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn row_count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn parse_cost(text: &str) -> Result<Decimal, LedgerError> {
    Decimal::from_str(text).map_err(|err| LedgerError::BadValue(format!("cost '{text}': {err}")))
}

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_round_trip() {
        for by in GroupBy::ALL {
            assert_eq!(by.as_str().parse::<GroupBy>(), Ok(by));
        }
        assert!("week".parse::<GroupBy>().is_err());
        let by_feature = GroupBy::Tag("feature".to_owned());
        assert_eq!("tag:feature".parse::<GroupBy>(), Ok(by_feature.clone()));
        assert_eq!(by_feature.to_string(), "tag:feature");
        assert!("tag:".parse::<GroupBy>().is_err());
        assert!(format!("tag:{}", "x".repeat(MAX_GROUP_TAG_BYTES + 1))
            .parse::<GroupBy>()
            .is_err());
    }
}
