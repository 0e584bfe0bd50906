//! The embedded key store: one SQLite file (WAL), shareable by several processes on one
//! machine.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    from_list, from_ms, to_list, to_ms, AuditAction, AuditEntry, KeyStore, ManagedKey, Role,
};
use crate::error::PolicyError;

/// How long a write waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS gateway_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    team TEXT NOT NULL,
    user_name TEXT,
    models TEXT NOT NULL,
    routes TEXT NOT NULL,
    expires_at_ms INTEGER,
    max_requests INTEGER,
    role TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS gateway_keys_active_name
    ON gateway_keys (name) WHERE revoked_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS gateway_key_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_key_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO gateway_key_version (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS gateway_key_requests (
    key_id TEXT PRIMARY KEY,
    requests INTEGER NOT NULL
);
";

pub(super) const SELECT_KEYS: &str = "SELECT id, name, hash, team, user_name, models, routes, \
    expires_at_ms, max_requests, role, created_at_ms, revoked_at_ms FROM gateway_keys";

/// Managed keys in a SQLite file.
pub struct SqliteKeyStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeyStore").finish_non_exhaustive()
    }
}

impl SqliteKeyStore {
    /// Opens (and creates when missing) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

fn key_from_row(row: &rusqlite::Row<'_>) -> Result<ManagedKey, PolicyError> {
    let models: String = row.get(5)?;
    let routes: String = row.get(6)?;
    let expires: Option<i64> = row.get(7)?;
    let max_requests: Option<i64> = row.get(8)?;
    let role: String = row.get(9)?;
    let revoked: Option<i64> = row.get(11)?;
    Ok(ManagedKey {
        id: row.get(0)?,
        name: row.get(1)?,
        hash: row.get(2)?,
        team: row.get(3)?,
        user: row.get(4)?,
        models: from_list(&models)?,
        routes: from_list(&routes)?,
        expires_at: expires.map(from_ms).transpose()?,
        max_requests: max_requests.map(|n| n.max(0).unsigned_abs()),
        role: Role::parse(&role)?,
        created_at: from_ms(row.get(10)?)?,
        revoked_at: revoked.map(from_ms).transpose()?,
    })
}

fn insert_key(tx: &rusqlite::Transaction<'_>, key: &ManagedKey) -> Result<(), PolicyError> {
    let max_requests = key.max_requests.and_then(|n| i64::try_from(n).ok());
    let inserted = tx.execute(
        "INSERT INTO gateway_keys (id, name, hash, team, user_name, models, routes,
            expires_at_ms, max_requests, role, created_at_ms, revoked_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL)",
        params![
            key.id,
            key.name,
            key.hash,
            key.team,
            key.user,
            to_list(&key.models),
            to_list(&key.routes),
            key.expires_at.map(to_ms),
            max_requests,
            key.role.as_str(),
            to_ms(key.created_at),
        ],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(PolicyError::InvalidKey(format!(
                "an active key is already named '{}'",
                key.name
            )))
        }
        Err(err) => Err(err.into()),
    }
}

fn append(conn: &Connection, audit: &AuditEntry) -> Result<(), PolicyError> {
    conn.execute(
        "INSERT INTO gateway_key_audit (at_ms, actor, action, key_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            to_ms(audit.at),
            audit.actor,
            audit.action.as_str(),
            audit.target,
            audit.detail.to_string(),
        ],
    )?;
    Ok(())
}

fn record(tx: &rusqlite::Transaction<'_>, audit: &AuditEntry) -> Result<(), PolicyError> {
    append(tx, audit)?;
    tx.execute(
        "UPDATE gateway_key_version SET version = version + 1 WHERE id = 1",
        [],
    )?;
    Ok(())
}

impl KeyStore for SqliteKeyStore {
    fn version(&self) -> Result<i64, PolicyError> {
        let conn = self.conn.lock();
        Ok(conn.query_row(
            "SELECT version FROM gateway_key_version WHERE id = 1",
            [],
            |row| row.get(0),
        )?)
    }

    fn load(&self) -> Result<(i64, Vec<ManagedKey>), PolicyError> {
        let mut conn = self.conn.lock();
        // One read transaction: the version and the rows come from one snapshot.
        let tx = conn.transaction()?;
        let version = tx.query_row(
            "SELECT version FROM gateway_key_version WHERE id = 1",
            [],
            |row| row.get(0),
        )?;
        let mut keys = Vec::new();
        {
            let mut stmt = tx.prepare(SELECT_KEYS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                keys.push(key_from_row(row)?);
            }
        }
        tx.commit()?;
        Ok((version, keys))
    }

    fn insert(&self, key: &ManagedKey, audit: &AuditEntry) -> Result<(), PolicyError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_key(&tx, key)?;
        record(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    fn revoke(
        &self,
        id: &str,
        at: DateTime<Utc>,
        replacement: Option<&ManagedKey>,
        audit: &AuditEntry,
    ) -> Result<(), PolicyError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at_ms FROM gateway_keys WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        match revoked {
            None => return Err(PolicyError::KeyNotFound(id.to_owned())),
            Some(Some(_)) => return Err(PolicyError::KeyRevoked(id.to_owned())),
            Some(None) => {}
        }
        tx.execute(
            "UPDATE gateway_keys SET revoked_at_ms = ?1 WHERE id = ?2",
            params![to_ms(at), id],
        )?;
        if let Some(key) = replacement {
            insert_key(&tx, key)?;
            tx.execute(
                "INSERT INTO gateway_key_requests (key_id, requests)
                 SELECT ?1, requests FROM gateway_key_requests WHERE key_id = ?2",
                params![key.id, id],
            )?;
        }
        record(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, PolicyError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at_ms, actor, action, key_id, detail FROM gateway_key_audit
             ORDER BY seq DESC LIMIT ?1",
        )?;
        let mut rows = stmt.query([i64::try_from(limit).unwrap_or(i64::MAX)])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            let action: String = row.get(3)?;
            let detail: String = row.get(5)?;
            entries.push(AuditEntry {
                seq: row.get(0)?,
                at: from_ms(row.get(1)?)?,
                actor: row.get(2)?,
                action: AuditAction::parse(&action)?,
                target: row.get(4)?,
                detail: serde_json::from_str(&detail)
                    .map_err(|err| PolicyError::CorruptRow(format!("audit detail: {err}")))?,
            });
        }
        Ok(entries)
    }

    fn append_audit(&self, audit: &AuditEntry) -> Result<(), PolicyError> {
        append(&self.conn.lock(), audit)
    }

    fn add_requests(&self, deltas: &[(String, i64)]) -> Result<(), PolicyError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO gateway_key_requests (key_id, requests) VALUES (?1, MAX(?2, 0))
                 ON CONFLICT (key_id) DO UPDATE SET requests = MAX(requests + ?2, 0)",
            )?;
            for (id, delta) in deltas {
                add.execute(params![id, delta])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn requests(&self) -> Result<HashMap<String, i64>, PolicyError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT key_id, requests FROM gateway_key_requests")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
