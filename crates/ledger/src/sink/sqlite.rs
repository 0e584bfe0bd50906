//! The embedded sink: one SQLite file in WAL mode, for a single node.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::{params, Connection, TransactionBehavior};
use rust_decimal::Decimal;

use super::{db_int, parse_cost, row_count, AggregateQuery, AggregateRow, GroupBy, Sink};
use crate::error::LedgerError;
use crate::record::UsageRecord;

/// The table's columns. `record_id` (minted per request by the gateway) is the key;
/// `request_id` is the client's id and may repeat.
const COLUMNS: &str = "
    record_id TEXT PRIMARY KEY NOT NULL,
    request_id TEXT NOT NULL,
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
";

/// Every column but `record_id`: the whole table as it was before `record_id` existed,
/// when rows were keyed by `request_id`.
const DATA_COLUMNS: &str = "request_id, time_ms, key_name, team, user_name, route, \
    requested_model, served_model, provider, endpoint, status, error, stream, input_tokens, \
    output_tokens, cached_input_tokens, reasoning_tokens, estimated, cost, latency_ms, \
    ttft_ms, cache, record";

const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS usage_records_time ON usage_records (time_ms);
CREATE INDEX IF NOT EXISTS usage_records_request ON usage_records (request_id);
";

const INSERT: &str = "
INSERT INTO usage_records (
    record_id, request_id, time_ms, key_name, team, user_name, route, requested_model,
    served_model, provider, endpoint, status, error, stream, input_tokens, output_tokens,
    cached_input_tokens, reasoning_tokens, estimated, cost, latency_ms, ttft_ms, cache, record
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23, ?24)
ON CONFLICT (record_id) DO NOTHING
";

/// Creates the table, or brings one written before `record_id` existed up to date.
/// SQLite cannot move a primary key, so the old table is copied into a new one (each old
/// row keyed by its request id, as before) in one transaction; a process that opens the
/// file meanwhile waits for it.
fn create_or_migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let columns: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('usage_records')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.is_empty() {
        tx.execute_batch(&format!("CREATE TABLE usage_records ({COLUMNS});"))?;
    } else if !columns.iter().any(|c| c == "record_id") {
        tracing::info!("usage ledger: keying the SQLite table by record_id (once)");
        tx.execute_batch(&format!(
            "CREATE TABLE usage_records_next ({COLUMNS});
             INSERT INTO usage_records_next (record_id, {DATA_COLUMNS})
                 SELECT request_id, {DATA_COLUMNS} FROM usage_records;
             DROP TABLE usage_records;
             ALTER TABLE usage_records_next RENAME TO usage_records;"
        ))?;
    }
    tx.execute_batch(INDEXES)?;
    tx.commit()?;
    Ok(())
}

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
        let mut conn = Connection::open(path)?;
        // FULL, not NORMAL: a shipped record's spool segment is deleted once the commit
        // returns, so the commit itself must survive power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        create_or_migrate(&mut conn)?;
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

/// The grouping's SQL expression; a tag's value is looked up by the name bound to `?3`.
fn group_expr(by: &GroupBy) -> &'static str {
    match by {
        GroupBy::Team => "team",
        GroupBy::Key => "key_name",
        GroupBy::User => "user_name",
        GroupBy::Model => "COALESCE(served_model, requested_model)",
        GroupBy::Route => "route",
        GroupBy::Day => "strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch')",
        GroupBy::Month => "strftime('%Y-%m', time_ms / 1000, 'unixepoch')",
        GroupBy::Tag(_) => "(SELECT value FROM json_each(record, '$.tags') WHERE key = ?3)",
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
                    r.record_id,
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
            group_expr(&query.by)
        );
        let (since, until) = query.bounds();
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut bound: Vec<&dyn rusqlite::ToSql> = vec![&since, &until];
        if let GroupBy::Tag(name) = &query.by {
            bound.push(name);
        }
        let rows = stmt.query_map(bound.as_slice(), |row| {
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

    #[test]
    fn a_table_keyed_by_request_id_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let old = crate::test_support::record("old-1", 0);
        {
            // The table as the previous release created and filled it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE usage_records ({});
                 CREATE INDEX usage_records_time ON usage_records (time_ms);",
                COLUMNS
                    .replace("record_id TEXT PRIMARY KEY NOT NULL,", "")
                    .replace(
                        "request_id TEXT NOT NULL",
                        "request_id TEXT PRIMARY KEY NOT NULL"
                    )
            ))
            .unwrap();
            conn.execute(
                &format!(
                    "INSERT INTO usage_records ({DATA_COLUMNS}) VALUES ('old-1', 1, 'k', 't', \
                     NULL, 'r', 'm', 'm', 'p', 'e', 200, NULL, 1, 10, 2, 0, 0, 0, '0.5', 3, \
                     NULL, 'off', '{{}}')"
                ),
                [],
            )
            .unwrap();
        }
        let sink = SqliteSink::open(&path).unwrap();
        // The old row is kept under its request id: replaying its spooled record (which
        // reads back with that key) stores nothing.
        let mut replayed = old.clone();
        replayed.record_id.clear();
        replayed.backfill_record_id();
        assert_eq!(sink.write_batch(&[replayed]).unwrap(), 0);
        // A new request that reuses the client's id is a record of its own.
        let mut reused = old;
        reused.record_id = "req_new".to_owned();
        assert_eq!(sink.write_batch(&[reused]).unwrap(), 1);
        let conn = sink.conn.lock();
        let rows: Vec<(String, String, String)> = conn
            .prepare("SELECT record_id, request_id, cost FROM usage_records ORDER BY record_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].0, "old-1");
        assert_eq!(rows[0].2, "0.5");
        assert_eq!(
            (rows[1].0.as_str(), rows[1].1.as_str()),
            ("req_new", "old-1")
        );
        drop(conn);
        // Opening again finds the new table and leaves it alone.
        drop(sink);
        let sink = SqliteSink::open(&path).unwrap();
        let count: i64 = sink
            .conn
            .lock()
            .query_row("SELECT COUNT(*) FROM usage_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
    }
}
