//! Spend per user and per tag value from the usage ledger's records, for rebuilding user
//! and tag budgets after a restart. The ledger's own aggregates group by key, team, model,
//! route and time only, so these totals are read from its `usage_records` table (each row
//! holds the request's user, and its tags inside the record's JSON).
//!
//! Reads block on the database: call them off the async workers. Money is summed exactly
//! (`Decimal` in Rust for SQLite, `NUMERIC` in PostgreSQL).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use tollgate_config::{LedgerConfig, LedgerSink};

/// How long a read waits for the ledger's writer to let go of the SQLite file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to PostgreSQL may take before the rebuild gives up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spend per user since `since_ms` (Unix milliseconds).
pub fn by_user(ledger: &LedgerConfig, since_ms: i64) -> Result<Vec<(String, Decimal)>, String> {
    match ledger.sink {
        LedgerSink::Sqlite => sqlite_totals(
            ledger,
            "SELECT user_name, cost FROM usage_records
             WHERE time_ms >= ?1 AND user_name IS NOT NULL",
            rusqlite::params![since_ms],
        ),
        LedgerSink::Postgres => postgres_totals(
            ledger,
            "SELECT user_name, SUM(cost)::text FROM usage_records
             WHERE time_ms >= $1 AND user_name IS NOT NULL GROUP BY user_name",
            &[&since_ms],
        ),
    }
}

/// Spend per value of tag `name` since `since_ms` (Unix milliseconds).
pub fn by_tag(
    ledger: &LedgerConfig,
    name: &str,
    since_ms: i64,
) -> Result<Vec<(String, Decimal)>, String> {
    match ledger.sink {
        LedgerSink::Sqlite => sqlite_totals(
            ledger,
            "SELECT t.value, u.cost FROM usage_records u, json_each(u.record, '$.tags') t
             WHERE u.time_ms >= ?1 AND t.key = ?2",
            rusqlite::params![since_ms, name],
        ),
        LedgerSink::Postgres => postgres_totals(
            ledger,
            "SELECT record->'tags'->>$2 AS value, SUM(cost)::text FROM usage_records
             WHERE time_ms >= $1 AND record->'tags'->>$2 IS NOT NULL GROUP BY value",
            &[&since_ms, &name],
        ),
    }
}

/// Sums `(group, cost)` rows of a SQLite query.
fn sqlite_totals(
    ledger: &LedgerConfig,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, Decimal)>, String> {
    if !ledger.path.exists() {
        return Ok(Vec::new());
    }
    let read = || -> rusqlite::Result<HashMap<String, Decimal>> {
        let conn = rusqlite::Connection::open_with_flags(
            &ledger.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        let mut totals: HashMap<String, Decimal> = HashMap::new();
        while let Some(row) = rows.next()? {
            let group: String = row.get(0)?;
            let cost: String = row.get(1)?;
            *totals.entry(group).or_default() += Decimal::from_str(&cost).unwrap_or_default();
        }
        Ok(totals)
    };
    read()
        .map(|totals| totals.into_iter().collect())
        .map_err(|err| format!("{}: {err}", ledger.path.display()))
}

/// `(group, total)` rows of a PostgreSQL query that sums in the database.
fn postgres_totals(
    ledger: &LedgerConfig,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<(String, Decimal)>, String> {
    let url = ledger.url.as_deref().unwrap_or_default();
    let read = || -> Result<Vec<(String, String)>, postgres::Error> {
        let mut config = url.parse::<postgres::Config>()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut client = config.connect(postgres::NoTls)?;
        client
            .query(sql, params)?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    };
    let rows = read().map_err(|err| format!("postgres: {err}"))?;
    Ok(rows
        .into_iter()
        .map(|(group, total)| (group, Decimal::from_str(&total).unwrap_or_default()))
        .collect())
}
