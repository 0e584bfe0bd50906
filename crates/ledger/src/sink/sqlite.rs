//! The embedded sink: one SQLite file in WAL mode, for a single node.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::{params, Connection};
use rust_decimal::Decimal;

use super::{db_int, parse_cost, row_count, AggregateQuery, AggregateRow, GroupBy, Sink};
use crate::error::LedgerError;
use crate::record::UsageRecord;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_records (
    request_id TEXT PRIMARY KEY NOT NULL,
    time_ms INTEGER NOT NULL,
    key_name TEXT,
    team TEXT,
    user_name TEXT,
    route TEXT,
    requested_model TEXT NOT NULL,
    served_model TEXT,
    provider TEXT,
    endpoint TEXT,
    status INTEGER NOT NULL,
    error TEXT,
    stream INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost TEXT NOT NULL,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    cache TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_time ON usage_records (time_ms);
";

const INSERT: &str = "
INSERT INTO usage_records (
    request_id, time_ms, key_name, team, user_name, route, requested_model, served_model,
    provider, endpoint, status, error, stream, input_tokens, output_tokens,
    cached_input_tokens, reasoning_tokens, estimated, cost, latency_ms, ttft_ms, cache, record
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23)
ON CONFLICT (request_id) DO NOTHING
";

pub struct SqliteSink {
    conn: Mutex<Connection>,
}

impl SqliteSink {
    /// Opens or creates the database (and its parent directory) and the table.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(LedgerError::io("creating directory", parent))?;
        }
        let conn = Connection::open(path)?;
        // FULL, not NORMAL: a shipped record's spool segment is deleted once the commit
        // returns, so the commit itself must survive power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.create_aggregate_function(
            "decimal_sum",
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            DecimalSum,
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

fn group_expr(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Team => "team",
        GroupBy::Key => "key_name",
        GroupBy::Model => "COALESCE(served_model, requested_model)",
        GroupBy::Route => "route",
        GroupBy::Day => "strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch')",
        GroupBy::Month => "strftime('%Y-%m', time_ms / 1000, 'unixepoch')",
    }
}

impl Sink for SqliteSink {
    fn write_batch(&self, records: &[UsageRecord]) -> Result<u64, LedgerError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut inserted = 0;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for r in records {
                let json = serde_json::to_string(r)?;
                inserted += insert.execute(params![
                    r.request_id,
                    r.time_ms,
                    r.key,
                    r.team,
                    r.user,
                    r.route,
                    r.requested_model,
                    r.served_model,
                    r.provider,
                    r.endpoint,
                    r.status,
                    r.error,
                    r.stream,
                    db_int(r.usage.input_tokens),
                    db_int(r.usage.output_tokens),
                    db_int(r.usage.cached_input_tokens),
                    db_int(r.usage.reasoning_tokens),
                    r.usage.estimated,
                    r.cost.to_string(),
                    db_int(r.latency_ms),
                    r.ttft_ms.map(db_int),
                    r.cache.as_str(),
                    json,
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    fn aggregate(&self, query: &AggregateQuery) -> Result<Vec<AggregateRow>, LedgerError> {
        let sql = format!(
            "SELECT {} AS grp, COUNT(*), SUM(estimated), SUM(input_tokens), SUM(output_tokens),
                    SUM(cached_input_tokens), SUM(reasoning_tokens), decimal_sum(cost)
             FROM usage_records WHERE time_ms >= ?1 AND time_ms < ?2
             GROUP BY grp ORDER BY grp NULLS FIRST",
            group_expr(query.by)
        );
        let (since, until) = query.bounds();
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![since, until], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                [
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                ],
                row.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (group, [requests, estimated, input, output, cached, reasoning], cost) = row?;
            out.push(AggregateRow {
                group,
                requests: row_count(requests),
                estimated_requests: row_count(estimated),
                input_tokens: row_count(input),
                output_tokens: row_count(output),
                cached_input_tokens: row_count(cached),
                reasoning_tokens: row_count(reasoning),
                cost: parse_cost(&cost)?,
            });
        }
        Ok(out)
    }
}

/// `decimal_sum(text)`: exact sum of decimal strings, as text. SQLite has no decimal
/// type and its `SUM` over text goes through floating point.
struct DecimalSum;

impl Aggregate<Decimal, String> for DecimalSum {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Decimal> {
        Ok(Decimal::ZERO)
    }

    fn step(&self, ctx: &mut Context<'_>, sum: &mut Decimal) -> rusqlite::Result<()> {
        let text: String = ctx.get(0)?;
        let value =
            parse_cost(&text).map_err(|err| rusqlite::Error::UserFunctionError(Box::new(err)))?;
        *sum = sum
            .checked_add(value)
            .ok_or_else(|| rusqlite::Error::UserFunctionError("decimal_sum overflows".into()))?;
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, sum: Option<Decimal>) -> rusqlite::Result<String> {
        Ok(sum.unwrap_or(Decimal::ZERO).normalize().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::suite;

    #[test]
    fn sqlite_sink_passes_the_sink_suite() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SqliteSink::open(dir.path().join("sub/usage.db")).unwrap();
        suite::run(&sink);
    }

    #[test]
    fn rows_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let records = [crate::test_support::record("a", 0)];
        assert_eq!(
            SqliteSink::open(&path)
                .unwrap()
                .write_batch(&records)
                .unwrap(),
            1
        );
        let sink = SqliteSink::open(&path).unwrap();
        assert_eq!(sink.write_batch(&records).unwrap(), 0);
        let conn = sink.conn.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
