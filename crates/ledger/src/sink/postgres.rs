//! The shared sink: PostgreSQL, for several gateway nodes writing one ledger.

use std::borrow::Cow;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::{Client, NoTls};

use super::{db_int, parse_cost, row_count, AggregateQuery, AggregateRow, GroupBy, Sink};
use crate::error::LedgerError;
use crate::record::UsageRecord;

/// Lock id under which nodes starting together create or migrate the schema one at a
/// time (`CREATE TABLE IF NOT EXISTS` alone races on the catalog).
const SCHEMA_LOCK_ID: i64 = 0x746f_6c6c_6761_7465;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS usage_records (
    record_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
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
    stream BOOLEAN NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    cost NUMERIC NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    cache TEXT NOT NULL,
    record JSON NOT NULL
);
";

const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS usage_records_time ON usage_records (time_ms);
CREATE INDEX IF NOT EXISTS usage_records_request ON usage_records (request_id);
";

/// Whether the table has `record_id`; a table created before it existed has not.
const HAS_RECORD_ID: &str = "
SELECT 1 FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'usage_records'
  AND column_name = 'record_id'
";

/// Re-keys a table created before `record_id` existed: each old row keeps its request id
/// as its record id, the key it had, so replaying its spooled record stays a no-op.
const ADD_RECORD_ID: &str = "
ALTER TABLE usage_records ADD COLUMN record_id TEXT;
UPDATE usage_records SET record_id = request_id;
";

const INSERT: &str = "
INSERT INTO usage_records (
    record_id, request_id, time_ms, key_name, team, user_name, route, requested_model,
    served_model, provider, endpoint, status, error, stream, input_tokens, output_tokens,
    cached_input_tokens, reasoning_tokens, estimated, cost, latency_ms, ttft_ms, cache, record
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
          $19, $20::text::numeric, $21, $22, $23, $24::text::json)
ON CONFLICT (record_id) DO NOTHING
";

/// Creates the table, or moves the key of one created before `record_id` existed, in one
/// transaction under [`SCHEMA_LOCK_ID`].
fn create_or_migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_ID])?;
    tx.batch_execute(TABLES)?;
    if tx.query_opt(HAS_RECORD_ID, &[])?.is_none() {
        tracing::info!("usage ledger: keying the PostgreSQL table by record_id (once)");
        tx.batch_execute(ADD_RECORD_ID)?;
        let key: Option<String> = tx
            .query_opt(
                "SELECT conname::text FROM pg_constraint
                 WHERE conrelid = 'usage_records'::regclass AND contype = 'p'",
                &[],
            )?
            .map(|row| row.get(0));
        if let Some(key) = key {
            tx.batch_execute(&format!(
                "ALTER TABLE usage_records DROP CONSTRAINT \"{}\"",
                key.replace('"', "\"\"")
            ))?;
        }
        tx.batch_execute("ALTER TABLE usage_records ADD PRIMARY KEY (record_id)")?;
    }
    tx.batch_execute(INDEXES)?;
    tx.commit()
}

/// Connects lazily again after the connection breaks. Plain TCP: put the database on a
/// private network or a local socket.
pub struct PostgresSink {
    config: postgres::Config,
    client: Mutex<Option<Client>>,
}

impl PostgresSink {
    /// Connects with a libpq-style URL or key=value string and creates the table.
    pub fn connect(url: &str) -> Result<Self, LedgerError> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let sink = Self {
            config,
            client: Mutex::new(None),
        };
        sink.with_client(create_or_migrate)?;
        Ok(sink)
    }

    fn with_client<T>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let mut slot = self.client.lock();
        let client = match slot.take() {
            Some(client) if !client.is_closed() => slot.insert(client),
            _ => slot.insert(self.config.connect(NoTls)?),
        };
        let result = work(client);
        if client.is_closed() {
            *slot = None;
        }
        Ok(result?)
    }
}

/// PostgreSQL text cannot hold NUL; a client-chosen model name with one must not stall
/// the ledger, so it is replaced.
fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn pg_opt(text: &Option<String>) -> Option<Cow<'_, str>> {
    text.as_deref().map(pg_text)
}

/// The grouping's SQL expression; a tag's value is looked up by the name bound to `$3`.
fn group_expr(by: &GroupBy) -> &'static str {
    match by {
        GroupBy::Team => "team",
        GroupBy::Key => "key_name",
        GroupBy::User => "user_name",
        GroupBy::Model => "COALESCE(served_model, requested_model)",
        GroupBy::Route => "route",
        GroupBy::Day => {
            "to_char(TIMESTAMP '1970-01-01' + time_ms * INTERVAL '1 millisecond', 'YYYY-MM-DD')"
        }
        GroupBy::Month => {
            "to_char(TIMESTAMP '1970-01-01' + time_ms * INTERVAL '1 millisecond', 'YYYY-MM')"
        }
        GroupBy::Tag(_) => "(record -> 'tags' ->> $3::text)",
    }
}

impl Sink for PostgresSink {
    fn write_batch(&self, records: &[UsageRecord]) -> Result<u64, LedgerError> {
        let rows = records
            .iter()
            .map(|r| Ok((r, serde_json::to_string(r)?)))
            .collect::<Result<Vec<_>, LedgerError>>()?;
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let insert = tx.prepare(INSERT)?;
            let mut inserted = 0;
            for (r, json) in &rows {
                inserted += tx.execute(
                    &insert,
                    &[
                        &pg_text(&r.record_id),
                        &pg_text(&r.request_id),
                        &r.time_ms,
                        &pg_opt(&r.key),
                        &pg_opt(&r.team),
                        &pg_opt(&r.user),
                        &pg_opt(&r.route),
                        &pg_text(&r.requested_model),
                        &pg_opt(&r.served_model),
                        &pg_opt(&r.provider),
                        &pg_opt(&r.endpoint),
                        &i32::from(r.status),
                        &pg_opt(&r.error),
                        &r.stream,
                        &db_int(r.usage.input_tokens),
                        &db_int(r.usage.output_tokens),
                        &db_int(r.usage.cached_input_tokens),
                        &db_int(r.usage.reasoning_tokens),
                        &r.usage.estimated,
                        &r.cost.to_string(),
                        &db_int(r.latency_ms),
                        &r.ttft_ms.map(db_int),
                        &r.cache.as_str(),
                        json,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(inserted)
        })
    }

    fn aggregate(&self, query: &AggregateQuery) -> Result<Vec<AggregateRow>, LedgerError> {
        let sql = format!(
            "SELECT {group} AS grp, COUNT(*), COUNT(*) FILTER (WHERE estimated),
                    COALESCE(SUM(input_tokens), 0)::bigint, COALESCE(SUM(output_tokens), 0)::bigint,
                    COALESCE(SUM(cached_input_tokens), 0)::bigint,
                    COALESCE(SUM(reasoning_tokens), 0)::bigint, COALESCE(SUM(cost), 0)::text
             FROM usage_records WHERE time_ms >= $1 AND time_ms < $2
             GROUP BY 1 ORDER BY ({group}) COLLATE \"C\" NULLS FIRST",
            group = group_expr(&query.by)
        );
        let (since, until) = query.bounds();
        let rows = self.with_client(|client| match &query.by {
            GroupBy::Tag(name) => client.query(&sql, &[&since, &until, &pg_text(name)]),
            _ => client.query(&sql, &[&since, &until]),
        })?;
        rows.iter()
            .map(|row| {
                let cost: String = row.try_get(7)?;
                Ok(AggregateRow {
                    group: row.try_get(0)?,
                    requests: row_count(row.try_get(1)?),
                    estimated_requests: row_count(row.try_get(2)?),
                    input_tokens: row_count(row.try_get(3)?),
                    output_tokens: row_count(row.try_get(4)?),
                    cached_input_tokens: row_count(row.try_get(5)?),
                    reasoning_tokens: row_count(row.try_get(6)?),
                    cost: parse_cost(&cost)?.normalize(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sink::suite;
    use crate::test_support::pg::PgCluster;
    use crate::test_support::record;
    use crate::{Ledger, LedgerOptions};

    #[test]
    fn postgres_sink_on_a_real_server() {
        let Some(cluster) = PgCluster::start() else {
            return;
        };
        let sink = PostgresSink::connect(&cluster.url()).unwrap();
        suite::run(&sink);

        // A second node finds the schema in place and the rows shared.
        let other = PostgresSink::connect(&cluster.url()).unwrap();
        assert_eq!(other.write_batch(&[record("a", 0)]).unwrap(), 0);

        // A model name with NUL (client-chosen) is stored, not retried forever.
        let mut odd = record("nul", 0);
        odd.requested_model = "gpt\0x".to_owned();
        assert_eq!(other.write_batch(&[odd]).unwrap(), 1);

        // The server drops every connection; the sink connects again.
        let mut admin = postgres::Client::connect(&cluster.url(), NoTls).unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND usename = 'tollgate'",
                &[],
            )
            .unwrap();
        let reconnected = (0..2).any(|i| sink.write_batch(&[record(&format!("re{i}"), 0)]).is_ok());
        assert!(reconnected);

        // The whole ledger on top: spool, shipper, PostgreSQL.
        let spool = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_with(
            spool.path(),
            Arc::new(PostgresSink::connect(&cluster.url()).unwrap()),
            LedgerOptions {
                segment_bytes: 4096,
                ..LedgerOptions::default()
            },
        )
        .unwrap();
        let acks: Vec<_> = (0..300)
            .map(|i| {
                let mut r = record(&format!("ledger-{i}"), i);
                r.team = Some("ledger".to_owned());
                ledger.try_record(r).unwrap()
            })
            .collect();
        for ack in acks {
            ack.wait().unwrap();
        }
        ledger.sync(std::time::Duration::from_secs(30)).unwrap();
        let rows = ledger
            .aggregate(&crate::AggregateQuery {
                by: GroupBy::Team,
                since_ms: None,
                until_ms: None,
            })
            .unwrap();
        let team = rows
            .iter()
            .find(|row| row.group.as_deref() == Some("ledger"))
            .unwrap();
        assert_eq!(team.requests, 300);
        // sum of 1234 + i for i in 0..300, in units of 1e-8
        assert_eq!(
            team.cost,
            rust_decimal::Decimal::new(300 * 1234 + 299 * 300 / 2, 8)
        );
        assert_eq!(ledger.stats().unshipped_bytes, 0);

        // A table created before record ids existed, in a database of its own.
        admin.batch_execute("CREATE DATABASE legacy").unwrap();
        let legacy_url = cluster.url().replace("dbname=postgres", "dbname=legacy");
        let mut legacy = postgres::Client::connect(&legacy_url, NoTls).unwrap();
        let old_table = TABLES.replace(
            "record_id TEXT PRIMARY KEY,\n    request_id TEXT NOT NULL,",
            "request_id TEXT PRIMARY KEY,",
        );
        assert!(!old_table.contains("record_id"));
        legacy.batch_execute(&old_table).unwrap();
        legacy
            .batch_execute(
                "INSERT INTO usage_records VALUES ('old-1', 1, 'k', 't', NULL, 'r', 'm', 'm', \
                 'p', 'e', 200, NULL, true, 10, 2, 0, 0, false, 0.5, 3, NULL, 'off', '{}')",
            )
            .unwrap();
        let sink = PostgresSink::connect(&legacy_url).unwrap();
        // The old row keeps its request id as its key: its spooled record replays as a no-op.
        let mut replayed = record("old-1", 0);
        replayed.record_id.clear();
        replayed.backfill_record_id();
        assert_eq!(sink.write_batch(&[replayed]).unwrap(), 0);
        // A new request reusing the client's id is a record of its own.
        let mut reused = record("old-1", 0);
        reused.record_id = "req_new".to_owned();
        assert_eq!(sink.write_batch(&[reused.clone()]).unwrap(), 1);
        assert_eq!(sink.write_batch(&[reused]).unwrap(), 0);
        let rows: Vec<(String, String)> = legacy
            .query(
                "SELECT record_id, request_id FROM usage_records ORDER BY record_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(
            rows,
            [
                ("old-1".to_owned(), "old-1".to_owned()),
                ("req_new".to_owned(), "old-1".to_owned())
            ]
        );
        // A second node opening the migrated table changes nothing.
        PostgresSink::connect(&legacy_url).unwrap();
        drop(legacy);
        drop(admin);
    }

    #[test]
    fn nul_is_replaced_for_postgres() {
        assert_eq!(pg_text("gpt\0x"), "gpt\u{FFFD}x");
        assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
    }
}
