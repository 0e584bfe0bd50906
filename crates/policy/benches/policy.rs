//! The policy work of one request on the gateway's hot path: authenticate a managed key,
//! admit (requests, tokens and concurrency of two limits) and reserve a budget in one step,
//! settle it and release the permit; on the memory backend and, when `/usr/bin/redis-server` exists, on a
//! Redis started for the bench on a free loopback port.

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_policy::{
    Budgets, Decimal, Keys, Limiter, NewKey, OnFailure, PolicyConfig, SqliteKeyStore, State,
    StateBackendKind, StateConfig, Subject, Verdict,
};

const POLICY: &str = "
limits:
  - { name: team, scope: team, rpm: 1000000000, tpm: 1000000000, concurrency: 100000 }
  - { name: key, scope: key, rpm: 1000000000 }
budgets:
  - { name: team-month, scope: team, usd: 1000000000, period: monthly, alerts: [0.8] }
";

fn subject() -> Subject {
    Subject {
        key: "bench-svc".into(),
        team: Some("bench".into()),
        model: "gpt-4o-mini".into(),
        ..Subject::default()
    }
}

async fn one_request(limiter: &Limiter, budgets: &Budgets, subject: &Subject) {
    let worst_case = |_: &str| Decimal::new(25, 4);
    let Ok(Verdict::Granted(mut permit, reservation)) = limiter
        .admit_reserving(subject, 1200, budgets, &worst_case)
        .await
    else {
        return;
    };
    permit.correct(1350);
    black_box(reservation.settle(Decimal::new(11, 6)).await);
    drop(permit);
}

fn bench_backend(c: &mut Criterion, name: &str, state: &State, runtime: &tokio::runtime::Runtime) {
    let config: PolicyConfig = serde_yaml_ng::from_str(POLICY).unwrap_or_default();
    let (Ok(limiter), Ok(budgets)) = (
        Limiter::new(&config.limits, state.clone()),
        Budgets::new(&config.budgets, state.clone()),
    ) else {
        return;
    };
    let subject = subject();
    c.bench_function(&format!("request/{name}"), |b| {
        b.iter(|| runtime.block_on(one_request(&limiter, &budgets, &subject)));
    });
}

/// A `redis-server` for the bench, killed on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self(child, port))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn policy(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        return;
    };
    bench_backend(c, "memory", &State::memory(), &runtime);
    if let Some(redis) = Redis::start() {
        let config = StateConfig {
            backend: StateBackendKind::Redis,
            url: Some(format!("redis://127.0.0.1:{}", redis.1)),
            on_failure: OnFailure::Closed,
            ..StateConfig::default()
        };
        if let Ok(state) = runtime.block_on(State::connect(&config)) {
            bench_backend(c, "redis", &state, &runtime);
        }
    }
}

fn authenticate(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let Ok(store) = SqliteKeyStore::open(dir.path().join("keys.db")) else {
        return;
    };
    let Ok(keys) = Keys::open(Arc::new(store)) else {
        return;
    };
    let mut secret = String::new();
    for i in 0..200 {
        let new = NewKey {
            name: format!("svc-{i}"),
            team: "bench".into(),
            ..NewKey::default()
        };
        if let Ok(created) = keys.create(new, "bench") {
            secret = created.secret;
        }
    }
    c.bench_function("authenticate/200-keys", |b| {
        b.iter(|| black_box(keys.authenticate(secret.as_bytes())));
    });
}

criterion_group!(benches, policy, authenticate);
criterion_main!(benches);
