//! Managed keys on SQLite and PostgreSQL: two nodes on one database, revocation reaching
//! the other node within a second, rotation, expiry and the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tollgate_policy::{
    hash_secret, AuditAction, KeyStore, Keys, NewKey, PolicyError, PostgresKeyStore, Role,
    SqliteKeyStore,
};

/// Polls until `condition` holds; the time it took, or `None` after `within`.
fn within(within: Duration, condition: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if condition() {
            return Some(started.elapsed());
        }
        if started.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        team: "billing".into(),
        user: Some("ann".into()),
        models: vec!["best-cheap-chat".into()],
        routes: Vec::new(),
        expires_at: None,
        max_requests: Some(1000),
        role: Role::User,
    }
}

/// The behaviour every store shares, on two nodes `a` and `b` over one database.
fn two_nodes(a: &Keys, b: &Keys) {
    let created = a.create(new_key("billing-svc"), "root").unwrap();
    let secret = created.secret.clone();
    assert!(secret.starts_with("tg-"));
    assert_eq!(created.key.hash, hash_secret(secret.as_bytes()));
    let key = a
        .authenticate(secret.as_bytes())
        .expect("visible at once where created");
    assert_eq!(key.team, "billing");
    assert_eq!(key.user.as_deref(), Some("ann"));
    assert_eq!(key.models, ["best-cheap-chat"]);
    assert_eq!(key.max_requests, Some(1000));
    assert_eq!(key.role, Role::User);
    assert!(key.allows_model("best-cheap-chat") && !key.allows_model("gpt-5"));
    let seen = within(Duration::from_secs(1), || {
        b.authenticate(secret.as_bytes()).is_some()
    });
    assert!(seen.is_some(), "the new key never reached node b");
    assert!(b.authenticate(b"tg-wrong").is_none());
    let json = serde_json::to_value(&*key).unwrap();
    assert!(json.get("hash").is_none(), "hashes are not listed: {json}");

    // Names are unique among active keys.
    assert!(matches!(
        b.create(new_key("billing-svc"), "root"),
        Err(PolicyError::InvalidKey(_))
    ));
    assert!(matches!(
        a.create(
            NewKey {
                team: " ".into(),
                ..new_key("x")
            },
            "root"
        ),
        Err(PolicyError::InvalidKey(_))
    ));

    // Rotation on b: the new secret works, the old one stops, on both nodes.
    let rotated = b.rotate(&created.key.id, "ops-admin").unwrap();
    assert_ne!(rotated.key.id, created.key.id);
    assert_eq!(rotated.key.name, "billing-svc");
    assert_eq!(rotated.key.max_requests, Some(1000));
    assert!(b.authenticate(rotated.secret.as_bytes()).is_some());
    assert!(b.authenticate(secret.as_bytes()).is_none());
    let took = within(Duration::from_secs(1), || {
        a.authenticate(secret.as_bytes()).is_none()
            && a.authenticate(rotated.secret.as_bytes()).is_some()
    });
    assert!(took.is_some(), "the rotation never reached node a");

    // Revocation on a reaches b within one second.
    let started = Instant::now();
    a.revoke(&rotated.key.id, "ops-admin").unwrap();
    assert!(a.authenticate(rotated.secret.as_bytes()).is_none());
    let gone = within(Duration::from_secs(2), || {
        b.authenticate(rotated.secret.as_bytes()).is_none()
    });
    let took = started.elapsed();
    assert!(
        gone.is_some() && took < Duration::from_secs(1),
        "revocation took {took:?}"
    );
    assert!(matches!(
        b.revoke(&rotated.key.id, "ops-admin"),
        Err(PolicyError::KeyRevoked(_))
    ));
    assert!(matches!(
        b.revoke("nope", "ops-admin"),
        Err(PolicyError::KeyNotFound(_))
    ));
    assert!(matches!(
        b.rotate("nope", "ops-admin"),
        Err(PolicyError::KeyNotFound(_))
    ));

    // Expired keys do not authenticate; a revoked key's name can be used again.
    let expired = a
        .create(
            NewKey {
                expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                role: Role::Admin,
                ..new_key("billing-svc")
            },
            "root",
        )
        .unwrap();
    assert!(a.authenticate(expired.secret.as_bytes()).is_none());
    assert_eq!(a.get(&expired.key.id).unwrap().role, Role::Admin);

    let listed = a.list();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, expired.key.id, "newest first");
    assert_eq!(listed.iter().filter(|k| k.revoked_at.is_some()).count(), 2);

    let audit = b.audit(10).unwrap();
    let trail: Vec<(AuditAction, &str, &str)> = audit
        .iter()
        .map(|e| (e.action, e.actor.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            (AuditAction::Created, "root", expired.key.id.as_str()),
            (AuditAction::Revoked, "ops-admin", rotated.key.id.as_str()),
            (AuditAction::Rotated, "ops-admin", created.key.id.as_str()),
            (AuditAction::Created, "root", created.key.id.as_str()),
        ]
    );
    assert!(audit
        .windows(2)
        .all(|w| w[0].seq > w[1].seq && w[0].at >= w[1].at));
    assert_eq!(audit[2].detail["replaced_by"], rotated.key.id.as_str());
    assert_eq!(audit[3].detail["name"], "billing-svc");
}

/// A key's `max_requests` on two nodes `a` and `b` over one database: counted durably,
/// given back when a request does not go ahead, carried over by a rotation.
fn lifetime_caps(a: &Keys, b: &Keys) {
    let created = a
        .create(
            NewKey {
                max_requests: Some(3),
                ..new_key("capped")
            },
            "root",
        )
        .unwrap();
    let id = created.key.id.clone();
    a.charge(&id, 3).unwrap().keep();
    // Refused later by a limit: not counted.
    drop(a.charge(&id, 3).unwrap());
    assert_eq!(a.requests_used(&id), 1);
    // Node b learns of a's request within a poll or two, and counts its own.
    assert!(within(Duration::from_secs(2), || b.requests_used(&id) == 1).is_some());
    b.charge(&id, 3).unwrap().keep();
    assert!(within(Duration::from_secs(2), || a.requests_used(&id) == 2).is_some());
    // A rotation keeps the count: one request left for the new secret.
    let rotated = a.rotate(&id, "root").unwrap();
    let new_id = rotated.key.id.clone();
    assert_eq!(a.requests_used(&new_id), 2);
    a.charge(&new_id, 3).unwrap().keep();
    assert!(a.charge(&new_id, 3).is_none(), "the cap is final");
    assert!(within(Duration::from_secs(2), || b.requests_used(&new_id) == 3).is_some());
    assert!(b.charge(&new_id, 3).is_none());
}

#[test]
fn lifetime_caps_on_one_sqlite_file_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let a = Keys::open(Arc::new(SqliteKeyStore::open(&path).unwrap())).unwrap();
    let b = Keys::open(Arc::new(SqliteKeyStore::open(&path).unwrap())).unwrap();
    lifetime_caps(&a, &b);
    drop((a, b));
    // A node starting later knows the count at once.
    let c = Keys::open(Arc::new(SqliteKeyStore::open(&path).unwrap())).unwrap();
    let key = c
        .list()
        .into_iter()
        .find(|k| k.revoked_at.is_none())
        .unwrap();
    assert_eq!(c.requests_used(&key.id), 3);
    assert!(c.charge(&key.id, 3).is_none());
}

#[test]
fn lifetime_caps_on_one_postgres_database() {
    let Some(pg) = support::PgCluster::start() else {
        return;
    };
    let a = Keys::open(Arc::new(PostgresKeyStore::connect(&pg.url()).unwrap())).unwrap();
    let b = Keys::open(Arc::new(PostgresKeyStore::connect(&pg.url()).unwrap())).unwrap();
    lifetime_caps(&a, &b);
}

#[test]
fn admin_changes_other_than_keys_join_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteKeyStore::open(dir.path().join("keys.db")).unwrap());
    let keys = Keys::open(store.clone()).unwrap();
    let before = store.version().unwrap();
    keys.record(
        "ops",
        AuditAction::Killed,
        "team:billing",
        serde_json::json!({}),
    )
    .unwrap();
    let audit = keys.audit(10).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].actor.as_str(),
            audit[0].action,
            audit[0].target.as_str()
        ),
        ("ops", AuditAction::Killed, "team:billing")
    );
    assert_eq!(
        store.version().unwrap(),
        before,
        "keys need no reload for it"
    );
}

#[test]
fn two_nodes_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let a = Keys::open(Arc::new(SqliteKeyStore::open(&path).unwrap())).unwrap();
    let b = Keys::open(Arc::new(SqliteKeyStore::open(&path).unwrap())).unwrap();
    two_nodes(&a, &b);
    // A third node starting later loads everything.
    let c = SqliteKeyStore::open(&path).unwrap();
    let (version, keys) = c.load().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(version, 4, "one version per change");
}

#[test]
fn two_nodes_on_one_postgres_database() {
    let Some(pg) = support::PgCluster::start() else {
        return;
    };
    let a = Keys::open(Arc::new(PostgresKeyStore::connect(&pg.url()).unwrap())).unwrap();
    let b = Keys::open(Arc::new(PostgresKeyStore::connect(&pg.url()).unwrap())).unwrap();
    two_nodes(&a, &b);
}
