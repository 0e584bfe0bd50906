//! The shared key store: PostgreSQL, for several gateway nodes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls, Transaction};

use super::sqlite::SELECT_KEYS;
use super::{
    from_list, from_ms, to_list, to_ms, AuditAction, AuditEntry, KeyStore, ManagedKey, Role,
};
use crate::error::PolicyError;

/// Lock id under which nodes starting together create the schema one at a time
/// (`CREATE TABLE IF NOT EXISTS` alone races on the catalog).
const SCHEMA_LOCK_ID: i64 = 0x746f_6c6c_6b65_7973;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateway_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    team TEXT NOT NULL,
    user_name TEXT,
    models TEXT NOT NULL,
    routes TEXT NOT NULL,
    expires_at_ms BIGINT,
    max_requests BIGINT,
    role TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS gateway_keys_active_name
    ON gateway_keys (name) WHERE revoked_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS gateway_key_audit (
    seq BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_key_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO gateway_key_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS gateway_key_requests (
    key_id TEXT PRIMARY KEY,
    requests BIGINT NOT NULL
);
";

/// Managed keys in PostgreSQL. Connects again lazily after the connection breaks. Plain
/// TCP: put the database on a private network or a local socket.
pub struct PostgresKeyStore {
    config: postgres::Config,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresKeyStore").finish_non_exhaustive()
    }
}

impl PostgresKeyStore {
    /// Connects with a libpq-style URL or key=value string and creates the tables.
    pub fn connect(url: &str) -> Result<Self, PolicyError> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let store = Self {
            config,
            client: Mutex::new(None),
        };
        let schema =
            format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID}); {SCHEMA} COMMIT;");
        store.with_client(|client| Ok(client.batch_execute(&schema)?))?;
        Ok(store)
    }

    fn with_client<T>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let mut slot = self.client.lock();
        let client = match slot.take() {
            Some(client) if !client.is_closed() => slot.insert(client),
            _ => slot.insert(self.config.connect(NoTls)?),
        };
        let result = work(client);
        if client.is_closed() {
            *slot = None;
        }
        result
    }
}

fn key_from_row(row: &postgres::Row) -> Result<ManagedKey, PolicyError> {
    let models: String = row.try_get(5)?;
    let routes: String = row.try_get(6)?;
    let expires: Option<i64> = row.try_get(7)?;
    let max_requests: Option<i64> = row.try_get(8)?;
    let role: String = row.try_get(9)?;
    let revoked: Option<i64> = row.try_get(11)?;
    Ok(ManagedKey {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        hash: row.try_get(2)?,
        team: row.try_get(3)?,
        user: row.try_get(4)?,
        models: from_list(&models)?,
        routes: from_list(&routes)?,
        expires_at: expires.map(from_ms).transpose()?,
        max_requests: max_requests.map(|n| n.max(0).unsigned_abs()),
        role: Role::parse(&role)?,
        created_at: from_ms(row.try_get(10)?)?,
        revoked_at: revoked.map(from_ms).transpose()?,
    })
}

fn insert_key(tx: &mut Transaction<'_>, key: &ManagedKey) -> Result<(), PolicyError> {
    let max_requests = key.max_requests.and_then(|n| i64::try_from(n).ok());
    let inserted = tx.execute(
        "INSERT INTO gateway_keys (id, name, hash, team, user_name, models, routes,
            expires_at_ms, max_requests, role, created_at_ms, revoked_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)",
        &[
            &key.id,
            &key.name,
            &key.hash,
            &key.team,
            &key.user,
            &to_list(&key.models),
            &to_list(&key.routes),
            &key.expires_at.map(to_ms),
            &max_requests,
            &key.role.as_str(),
            &to_ms(key.created_at),
        ],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(
            PolicyError::InvalidKey(format!("an active key is already named '{}'", key.name)),
        ),
        Err(err) => Err(err.into()),
    }
}

fn append(client: &mut impl GenericClient, audit: &AuditEntry) -> Result<(), PolicyError> {
    client.execute(
        "INSERT INTO gateway_key_audit (at_ms, actor, action, key_id, detail)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &to_ms(audit.at),
            &audit.actor,
            &audit.action.as_str(),
            &audit.target,
            &audit.detail.to_string(),
        ],
    )?;
    Ok(())
}

fn record(tx: &mut Transaction<'_>, audit: &AuditEntry) -> Result<(), PolicyError> {
    append(tx, audit)?;
    tx.execute(
        "UPDATE gateway_key_version SET version = version + 1 WHERE id = 1",
        &[],
    )?;
    Ok(())
}

impl KeyStore for PostgresKeyStore {
    fn version(&self) -> Result<i64, PolicyError> {
        self.with_client(|client| {
            let row =
                client.query_one("SELECT version FROM gateway_key_version WHERE id = 1", &[])?;
            Ok(row.try_get(0)?)
        })
    }

    fn load(&self) -> Result<(i64, Vec<ManagedKey>), PolicyError> {
        self.with_client(|client| {
            // The version is read first: rows at least as new as it, so a change between
            // the two reads is loaded again on the next poll, never missed.
            let version: i64 = client
                .query_one("SELECT version FROM gateway_key_version WHERE id = 1", &[])?
                .try_get(0)?;
            let keys = client
                .query(SELECT_KEYS, &[])?
                .iter()
                .map(key_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            Ok((version, keys))
        })
    }

    fn insert(&self, key: &ManagedKey, audit: &AuditEntry) -> Result<(), PolicyError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            insert_key(&mut tx, key)?;
            record(&mut tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn revoke(
        &self,
        id: &str,
        at: DateTime<Utc>,
        replacement: Option<&ManagedKey>,
        audit: &AuditEntry,
    ) -> Result<(), PolicyError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let row = tx.query_opt(
                "SELECT revoked_at_ms FROM gateway_keys WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let Some(row) = row else {
                return Err(PolicyError::KeyNotFound(id.to_owned()));
            };
            let revoked: Option<i64> = row.try_get(0)?;
            if revoked.is_some() {
                return Err(PolicyError::KeyRevoked(id.to_owned()));
            }
            tx.execute(
                "UPDATE gateway_keys SET revoked_at_ms = $1 WHERE id = $2",
                &[&to_ms(at), &id],
            )?;
            if let Some(key) = replacement {
                insert_key(&mut tx, key)?;
                tx.execute(
                    "INSERT INTO gateway_key_requests (key_id, requests)
                     SELECT $1, requests FROM gateway_key_requests WHERE key_id = $2",
                    &[&key.id, &id],
                )?;
            }
            record(&mut tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, PolicyError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_client(|client| {
            client
                .query(
                    "SELECT seq, at_ms, actor, action, key_id, detail FROM gateway_key_audit
                     ORDER BY seq DESC LIMIT $1",
                    &[&limit],
                )?
                .iter()
                .map(|row| {
                    let action: String = row.try_get(3)?;
                    let detail: String = row.try_get(5)?;
                    Ok(AuditEntry {
                        seq: row.try_get(0)?,
                        at: from_ms(row.try_get(1)?)?,
                        actor: row.try_get(2)?,
                        action: AuditAction::parse(&action)?,
                        target: row.try_get(4)?,
                        detail: serde_json::from_str(&detail).map_err(|err| {
                            PolicyError::CorruptRow(format!("audit detail: {err}"))
                        })?,
                    })
                })
                .collect()
        })
    }

    fn append_audit(&self, audit: &AuditEntry) -> Result<(), PolicyError> {
        self.with_client(|client| append(client, audit))
    }

    fn add_requests(&self, deltas: &[(String, i64)]) -> Result<(), PolicyError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let add = tx.prepare(
                "INSERT INTO gateway_key_requests (key_id, requests)
                 VALUES ($1, GREATEST($2::bigint, 0))
                 ON CONFLICT (key_id) DO UPDATE
                 SET requests = GREATEST(gateway_key_requests.requests + $2::bigint, 0)",
            )?;
            for (id, delta) in deltas {
                tx.execute(&add, &[id, delta])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn requests(&self) -> Result<HashMap<String, i64>, PolicyError> {
        self.with_client(|client| {
            client
                .query("SELECT key_id, requests FROM gateway_key_requests", &[])?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
    }
}
