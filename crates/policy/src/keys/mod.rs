//! Managed gateway keys: created, listed, rotated and revoked at run time (the admin API),
//! stored hashed in SQLite or PostgreSQL behind the [`KeyStore`] trait, with an audit row
//! for every change.
//!
//! [`Keys`] serves lookups from an in-memory map by hash (one SHA-256 and one hash-map
//! probe per request; the store is never on the request path). A background thread polls
//! the store's change counter every [`KEY_POLL_INTERVAL`] and reloads the map when another
//! node (or another process on the same SQLite file) changed a key, so a revocation takes
//! effect everywhere within that interval plus one reload. Changes made through a [`Keys`]
//! apply to it at once.
//!
//! Secrets are `tg-` and 64 hex digits; only `sha256:<hex>` of a secret is stored, the same
//! form `tollgate keys hash` prints, so a secret is shown once, at creation or rotation.
//!
//! A key's lifetime `max_requests` is enforced here, whatever limits, budgets or state
//! backend the config has: [`Keys::charge`] counts a request in memory, and the polling
//! thread adds this node's new requests to the store's durable count and reads every
//! node's totals back, each [`KEY_POLL_INTERVAL`]. So the count survives restarts and
//! Redis losing its data; a crash forgets at most the last interval's requests, and nodes
//! sharing a store may together admit up to one interval's requests past the cap. A
//! rotation carries the count over to the new secret.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::postgres::PostgresKeyStore;
pub use self::sqlite::SqliteKeyStore;
use crate::error::PolicyError;

/// How often each node checks the store for changes; bounds how long a revocation takes to
/// reach every node.
pub const KEY_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Longest key name accepted.
const MAX_NAME_CHARS: usize = 128;

/// Most models or routes one key may list.
const MAX_SCOPE_ENTRIES: usize = 256;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Calls models.
    #[default]
    User,
    /// Also calls the admin API.
    Admin,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, PolicyError> {
        match text {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(PolicyError::CorruptRow(format!("unknown role '{other}'"))),
        }
    }
}

/// A stored gateway key. Serializes without its hash (for the admin API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedKey {
    /// Stable id (a UUIDv7); a rotation makes a new one.
    pub id: String,
    /// Unique among active keys; what limits, budgets and logs know the key by.
    pub name: String,
    /// `sha256:<64 hex digits>` of the secret.
    #[serde(skip_serializing)]
    pub hash: String,
    pub team: String,
    pub user: Option<String>,
    /// Logical models the key may request; empty allows all.
    pub models: Vec<String>,
    /// Routes the key may be served by; empty allows all.
    pub routes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifetime request cap, enforced by [`crate::Limiter`] through
    /// [`crate::Subject::max_requests`].
    pub max_requests: Option<u64>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ManagedKey {
    /// Not revoked and not expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    pub fn allows_route(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }
}

/// The admin API's body for a new key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub team: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Default `user`.
    #[serde(default)]
    pub role: Role,
}

/// A key just created or rotated, with its secret: the only time the secret is known.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ManagedKey,
    pub secret: String,
}

/// What an admin change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A managed key was created.
    Created,
    /// A managed key got a new secret.
    Rotated,
    /// A managed key was revoked.
    Revoked,
    /// The kill switch was set on a scope.
    Killed,
    /// The kill switch was cleared on a scope.
    Unkilled,
    /// The config file was reloaded (or a reload was refused).
    Reloaded,
    /// Response cache entries were purged.
    CachePurged,
}

impl AuditAction {
    /// Every action, for parsing stored rows.
    const ALL: [AuditAction; 7] = [
        AuditAction::Created,
        AuditAction::Rotated,
        AuditAction::Revoked,
        AuditAction::Killed,
        AuditAction::Unkilled,
        AuditAction::Reloaded,
        AuditAction::CachePurged,
    ];

    /// The stored and logged form.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Created => "created",
            AuditAction::Rotated => "rotated",
            AuditAction::Revoked => "revoked",
            AuditAction::Killed => "killed",
            AuditAction::Unkilled => "unkilled",
            AuditAction::Reloaded => "reloaded",
            AuditAction::CachePurged => "cache_purged",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, PolicyError> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| PolicyError::CorruptRow(format!("unknown audit action '{text}'")))
    }
}

/// One admin change: who did what to which target, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Increasing; assigned by the store (0 until stored).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The admin key's name (or `cli`, or whoever the caller says).
    pub actor: String,
    pub action: AuditAction,
    /// The key's id for key changes, the scope for the kill switch (`team:billing`), the
    /// config file for a reload, what was purged for the cache.
    pub target: String,
    /// The key's name and team on creation; the new key's id on rotation; the outcome of
    /// other changes.
    pub detail: serde_json::Value,
}

/// Where managed keys live. Every write is one transaction that also appends its audit
/// entry and bumps the change counter [`KeyStore::version`]. Methods block (call them off
/// the async executor, or let [`Keys`] do it from its thread).
pub trait KeyStore: Send + Sync {
    /// A number that changes with every write by anyone.
    fn version(&self) -> Result<i64, PolicyError>;

    /// Every key, revoked ones included, and a version at most as new as them.
    fn load(&self) -> Result<(i64, Vec<ManagedKey>), PolicyError>;

    /// Stores a new key. A name already used by an active key is
    /// [`PolicyError::InvalidKey`].
    fn insert(&self, key: &ManagedKey, audit: &AuditEntry) -> Result<(), PolicyError>;

    /// Revokes key `id` at `at`, and stores `replacement` (a rotation) in the same
    /// transaction. [`PolicyError::KeyNotFound`] or [`PolicyError::KeyRevoked`] otherwise.
    fn revoke(
        &self,
        id: &str,
        at: DateTime<Utc>,
        replacement: Option<&ManagedKey>,
        audit: &AuditEntry,
    ) -> Result<(), PolicyError>;

    /// The newest `limit` audit entries, newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, PolicyError>;

    /// Appends the audit entry of a change that is not to a key (kill switch, reload,
    /// cache purge); the keys' version stays.
    fn append_audit(&self, audit: &AuditEntry) -> Result<(), PolicyError>;

    /// Adds each `(key id, delta)` to that key's durable lifetime request count. A
    /// rotation ([`KeyStore::revoke`] with a replacement) copies the count to the new key.
    fn add_requests(&self, deltas: &[(String, i64)]) -> Result<(), PolicyError>;

    /// The lifetime request count of every key that has one, by key id.
    fn requests(&self) -> Result<HashMap<String, i64>, PolicyError>;
}

/// `sha256:<hex>` of a secret: the stored form (the same as `tollgate keys hash`).
pub fn hash_secret(secret: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret)))
}

/// A fresh secret: 32 random bytes, hex, after a `tg-` prefix secret scanners recognise.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("tg-{}", hex::encode(bytes))
}

#[derive(Default)]
struct Snapshot {
    version: i64,
    /// Active (not revoked) keys by hash; expiry is checked per lookup.
    by_hash: HashMap<String, Arc<ManagedKey>>,
    /// Every key, newest first.
    all: Vec<Arc<ManagedKey>>,
}

/// One key's lifetime request count on this node.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Every node's total, as last read from the store.
    stored: i64,
    /// This node's requests not yet written (negative after give-backs).
    pending: i64,
    /// This node's requests being written now.
    flushing: i64,
}

impl Count {
    fn used(self) -> u64 {
        (self.stored + self.pending + self.flushing)
            .max(0)
            .unsigned_abs()
    }
}

struct Inner {
    store: Arc<dyn KeyStore>,
    snapshot: ArcSwap<Snapshot>,
    /// Lifetime request counts by key id, of keys with `max_requests`.
    counts: Mutex<HashMap<String, Count>>,
    /// One count write at a time (the polling thread and a rotation).
    syncing: Mutex<()>,
}

impl Inner {
    /// Reloads when the store's version moved; `true` when it did.
    fn refresh(&self) -> Result<bool, PolicyError> {
        if self.store.version()? == self.snapshot.load().version {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    fn reload(&self) -> Result<(), PolicyError> {
        let (version, keys) = self.store.load()?;
        let mut all: Vec<Arc<ManagedKey>> = keys.into_iter().map(Arc::new).collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let by_hash = all
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .map(|k| (k.hash.clone(), Arc::clone(k)))
            .collect();
        self.snapshot.store(Arc::new(Snapshot {
            version,
            by_hash,
            all,
        }));
        Ok(())
    }

    /// Writes this node's new requests to the store and reads every node's totals back;
    /// only while some active key has a `max_requests`.
    fn sync_counts(&self) -> Result<(), PolicyError> {
        let capped = self
            .snapshot
            .load()
            .by_hash
            .values()
            .any(|k| k.max_requests.is_some());
        if !capped {
            return Ok(());
        }
        let _one_at_a_time = self.syncing.lock();
        let deltas: Vec<(String, i64)> = {
            let mut counts = self.counts.lock();
            counts
                .iter_mut()
                .filter(|(_, c)| c.pending != 0)
                .map(|(id, c)| {
                    c.flushing = std::mem::take(&mut c.pending);
                    (id.clone(), c.flushing)
                })
                .collect()
        };
        if !deltas.is_empty() {
            if let Err(err) = self.store.add_requests(&deltas) {
                let mut counts = self.counts.lock();
                for (id, _) in &deltas {
                    if let Some(c) = counts.get_mut(id) {
                        c.pending += std::mem::take(&mut c.flushing);
                    }
                }
                return Err(err);
            }
        }
        let totals = self.store.requests();
        let mut counts = self.counts.lock();
        match totals {
            Ok(totals) => {
                for (id, c) in counts.iter_mut() {
                    c.stored = totals.get(id).copied().unwrap_or(c.stored + c.flushing);
                    c.flushing = 0;
                }
                for (id, total) in totals {
                    counts.entry(id).or_insert(Count {
                        stored: total,
                        ..Count::default()
                    });
                }
                // Counts of keys gone from memory (revoked) are not needed any more.
                let snapshot = self.snapshot.load();
                let live: std::collections::HashSet<&str> =
                    snapshot.by_hash.values().map(|k| k.id.as_str()).collect();
                counts.retain(|id, c| live.contains(id.as_str()) || c.pending != 0);
                Ok(())
            }
            Err(err) => {
                // Written, not read back: count what was written.
                for c in counts.values_mut() {
                    c.stored += std::mem::take(&mut c.flushing);
                }
                Err(err)
            }
        }
    }
}

/// The managed keys of one node: lookups from memory, changes through the store. Clones
/// share one cache; the polling thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.inner.snapshot.load();
        f.debug_struct("Keys")
            .field("version", &snapshot.version)
            .field("keys", &snapshot.all.len())
            .finish()
    }
}

impl Keys {
    /// Loads every key and starts polling `store` for changes every [`KEY_POLL_INTERVAL`].
    pub fn open(store: Arc<dyn KeyStore>) -> Result<Self, PolicyError> {
        let inner = Arc::new(Inner {
            store,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            counts: Mutex::new(HashMap::new()),
            syncing: Mutex::new(()),
        });
        inner.reload()?;
        inner.sync_counts()?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("tollgate-keys".into())
            .spawn(move || poll(&weak))
            .map_err(PolicyError::Spawn)?;
        Ok(Self { inner })
    }

    /// The active key whose secret this is; `None` for unknown, revoked or expired keys.
    pub fn authenticate(&self, secret: &[u8]) -> Option<Arc<ManagedKey>> {
        let hash = hash_secret(secret);
        let key = self.inner.snapshot.load().by_hash.get(&hash).cloned()?;
        key.is_active(Utc::now()).then_some(key)
    }

    /// A key by id, revoked or not.
    pub fn get(&self, id: &str) -> Option<Arc<ManagedKey>> {
        self.inner
            .snapshot
            .load()
            .all
            .iter()
            .find(|k| k.id == id)
            .cloned()
    }

    /// Every key, newest first, revoked ones included.
    pub fn list(&self) -> Vec<Arc<ManagedKey>> {
        self.inner.snapshot.load().all.clone()
    }

    /// Counts one request against key `id`'s lifetime cap `max`; `None` when the key has
    /// used them all. The request is given back when the [`Charge`] drops without
    /// [`Charge::keep`] (a limit or budget refused it after all).
    pub fn charge(&self, id: &str, max: u64) -> Option<Charge> {
        let mut counts = self.inner.counts.lock();
        let count = counts.entry(id.to_owned()).or_default();
        if count.used() >= max {
            return None;
        }
        count.pending += 1;
        Some(Charge {
            inner: Arc::clone(&self.inner),
            id: id.to_owned(),
            kept: false,
        })
    }

    /// Requests key `id` has used of its `max_requests`, as far as this node knows.
    pub fn requests_used(&self, id: &str) -> u64 {
        self.inner
            .counts
            .lock()
            .get(id)
            .map_or(0, |count| count.used())
    }

    /// Records an admin change that is not to a key (the kill switch, a reload, a cache
    /// purge) in the audit trail.
    pub fn record(
        &self,
        actor: &str,
        action: AuditAction,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), PolicyError> {
        self.inner.store.append_audit(&AuditEntry {
            seq: 0,
            at: Utc::now(),
            actor: actor.to_owned(),
            action,
            target: target.to_owned(),
            detail,
        })
    }

    /// Creates a key; the returned secret is not stored anywhere.
    pub fn create(&self, new: NewKey, actor: &str) -> Result<CreatedKey, PolicyError> {
        check_new(&new)?;
        let now = Utc::now();
        let secret = new_secret();
        let key = ManagedKey {
            id: uuid::Uuid::now_v7().to_string(),
            name: new.name,
            hash: hash_secret(secret.as_bytes()),
            team: new.team,
            user: new.user,
            models: new.models,
            routes: new.routes,
            expires_at: new.expires_at,
            max_requests: new.max_requests,
            role: new.role,
            created_at: now,
            revoked_at: None,
        };
        let audit = AuditEntry {
            seq: 0,
            at: now,
            actor: actor.to_owned(),
            action: AuditAction::Created,
            target: key.id.clone(),
            detail: serde_json::json!({
                "name": key.name,
                "team": key.team,
                "role": key.role,
            }),
        };
        self.inner.store.insert(&key, &audit)?;
        self.inner.reload()?;
        Ok(CreatedKey { key, secret })
    }

    /// Replaces key `id` with a new secret: a new key with the same settings and name,
    /// the old one revoked, in one transaction.
    pub fn rotate(&self, id: &str, actor: &str) -> Result<CreatedKey, PolicyError> {
        self.inner.reload()?;
        // The store copies the old key's count to the new one: write this node's first.
        self.inner.sync_counts()?;
        let old = self
            .get(id)
            .ok_or_else(|| PolicyError::KeyNotFound(id.to_owned()))?;
        let now = Utc::now();
        let secret = new_secret();
        let key = ManagedKey {
            id: uuid::Uuid::now_v7().to_string(),
            hash: hash_secret(secret.as_bytes()),
            created_at: now,
            revoked_at: None,
            ..(*old).clone()
        };
        let audit = AuditEntry {
            seq: 0,
            at: now,
            actor: actor.to_owned(),
            action: AuditAction::Rotated,
            target: id.to_owned(),
            detail: serde_json::json!({ "replaced_by": key.id }),
        };
        self.inner.store.revoke(id, now, Some(&key), &audit)?;
        self.inner.reload()?;
        self.inner.sync_counts()?;
        Ok(CreatedKey { key, secret })
    }

    /// Revokes key `id` on every node (within [`KEY_POLL_INTERVAL`] elsewhere, at once
    /// here).
    pub fn revoke(&self, id: &str, actor: &str) -> Result<(), PolicyError> {
        let now = Utc::now();
        let audit = AuditEntry {
            seq: 0,
            at: now,
            actor: actor.to_owned(),
            action: AuditAction::Revoked,
            target: id.to_owned(),
            detail: serde_json::json!({}),
        };
        self.inner.store.revoke(id, now, None, &audit)?;
        self.inner.reload()
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, PolicyError> {
        self.inner.store.audit(limit)
    }
}

fn check_new(new: &NewKey) -> Result<(), PolicyError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(PolicyError::InvalidKey(format!(
            "name must have 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if new.team.trim().is_empty() {
        return Err(PolicyError::InvalidKey("team must not be empty".into()));
    }
    if new.models.len() > MAX_SCOPE_ENTRIES || new.routes.len() > MAX_SCOPE_ENTRIES {
        return Err(PolicyError::InvalidKey(format!(
            "at most {MAX_SCOPE_ENTRIES} models and {MAX_SCOPE_ENTRIES} routes"
        )));
    }
    if new.max_requests == Some(0) {
        return Err(PolicyError::InvalidKey(
            "max_requests must be at least 1".into(),
        ));
    }
    if new.max_requests.is_some_and(|n| i64::try_from(n).is_err()) {
        return Err(PolicyError::InvalidKey("max_requests is too large".into()));
    }
    Ok(())
}

/// A request counted against a key's `max_requests` by [`Keys::charge`].
pub struct Charge {
    inner: Arc<Inner>,
    id: String,
    kept: bool,
}

impl Charge {
    /// The request goes ahead: it stays counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Some(count) = self.inner.counts.lock().get_mut(&self.id) {
            count.pending -= 1;
        }
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charge")
            .field("key", &self.id)
            .field("kept", &self.kept)
            .finish()
    }
}

/// The polling loop of [`Keys::open`]; ends when the cache is gone.
fn poll(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(KEY_POLL_INTERVAL);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(err) = inner.refresh() {
            tracing::warn!(error = %err, "key store poll failed; serving the last loaded keys");
        }
        if let Err(err) = inner.sync_counts() {
            tracing::warn!(error = %err, "key request counts not written; retrying");
        }
    }
}

/// Milliseconds since the Unix epoch, the stores' time format.
pub(crate) fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> Result<DateTime<Utc>, PolicyError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| PolicyError::CorruptRow(format!("time {ms} out of range")))
}

/// A stored JSON list of names.
pub(crate) fn from_list(text: &str) -> Result<Vec<String>, PolicyError> {
    serde_json::from_str(text).map_err(|err| PolicyError::CorruptRow(format!("list: {err}")))
}

pub(crate) fn to_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_the_cli() {
        assert_eq!(
            hash_secret(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let secret = new_secret();
        assert_eq!(secret.len(), 3 + 64);
        assert!(secret.starts_with("tg-"));
    }

    #[test]
    fn expiry_and_scopes() {
        let now = Utc::now();
        let key = ManagedKey {
            id: "1".into(),
            name: "n".into(),
            hash: hash_secret(b"x"),
            team: "t".into(),
            user: None,
            models: vec!["a".into()],
            routes: Vec::new(),
            expires_at: Some(now),
            max_requests: None,
            role: Role::User,
            created_at: now,
            revoked_at: None,
        };
        assert!(!key.is_active(now));
        assert!(key.is_active(now - chrono::Duration::seconds(1)));
        assert!(key.allows_model("a") && !key.allows_model("b"));
        assert!(key.allows_route("any"));
    }
}
