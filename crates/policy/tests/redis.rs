//! The Redis backend against a real `redis-server` on loopback: several nodes (state
//! instances) enforce one limit and one budget jointly; Redis killed and restarted under
//! both `on_failure` modes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::RedisServer;
use tollgate_policy::{
    Admission, Blocked, BudgetDecision, Budgets, Decimal, Limiter, OnFailure, PolicyConfig,
    PolicyError, Scope, State, StateBackendKind, StateConfig, StateHealth, Subject, Verdict,
};

async fn node(redis: &RedisServer, on_failure: OnFailure) -> State {
    State::connect(&StateConfig {
        backend: StateBackendKind::Redis,
        url: Some(redis.url()),
        on_failure,
        key_prefix: "test:".into(),
        timeout: Duration::from_millis(100),
    })
    .await
    .unwrap()
}

fn config(yaml: &str) -> PolicyConfig {
    let config: PolicyConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

fn subject(key: &str) -> Subject {
    Subject {
        key: key.into(),
        team: Some("billing".into()),
        model: "m".into(),
        ..Subject::default()
    }
}

fn usd(text: &str) -> Decimal {
    text.parse().unwrap()
}

async fn granted(limiter: &Limiter, s: &Subject, tokens: u64) -> bool {
    matches!(
        limiter.admit(s, tokens).await.unwrap(),
        Admission::Granted(_)
    )
}

/// Polls an async `condition` every 20 ms until it holds or `within` is up.
async fn until<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_nodes_enforce_one_rate_limit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = config(
        "limits:
  - { name: shared-rpm, scope: team, rpm: 10 }
  - { name: shared-tpm, scope: key, tpm: 1000 }",
    )
    .limits;
    let a = Limiter::new(&limits, node(&redis, OnFailure::Closed).await).unwrap();
    let b = Limiter::new(&limits, node(&redis, OnFailure::Closed).await).unwrap();
    let mut admitted = 0;
    for i in 0..20 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        if granted(limiter, &subject(&format!("k{i}")), 0).await {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "one combined limit, not one per node");

    // Tokens: node a admits 400 and corrects to 900; node b sees the correction once the
    // batch is written (within the flush interval).
    let limits = config("limits: [{ name: tpm2, scope: key, tpm: 1000 }]").limits;
    let a = Limiter::new(&limits, node(&redis, OnFailure::Closed).await).unwrap();
    let b = Limiter::new(&limits, node(&redis, OnFailure::Closed).await).unwrap();
    let s = subject("tokens");
    let Admission::Granted(mut permit) = a.admit(&s, 400).await.unwrap() else {
        panic!("refused");
    };
    permit.correct(900);
    assert!(
        until(Duration::from_secs(2), || async {
            !granted(&b, &s, 200).await
        })
        .await,
        "the correction never reached the shared counter"
    );
    let Admission::Rejected(r) = b.admit(&s, 200).await.unwrap() else {
        panic!("admitted past the corrected count");
    };
    let remaining = r
        .headers()
        .into_iter()
        .find(|(n, _)| *n == "x-ratelimit-remaining-tokens")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .unwrap();
    assert!(remaining < 200, "{remaining}");
}

#[tokio::test]
async fn a_refused_reservation_undoes_the_admission_in_the_same_script() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let state = node(&redis, OnFailure::Closed).await;
    let config = config(
        "limits:
  - { name: rpm, scope: team, rpm: 2, concurrency: 1 }
budgets:
  - { name: day, scope: team, usd: 1, period: daily }",
    );
    let limiter = Limiter::new(&config.limits, state.clone()).unwrap();
    let budgets = Budgets::new(&config.budgets, state.clone()).unwrap();
    let s = subject("a");
    let worst = |_: &str| usd("1");
    // Spend the budget.
    let Verdict::Granted(permit, reservation) = limiter
        .admit_reserving(&s, 0, &budgets, &worst)
        .await
        .unwrap()
    else {
        panic!("the first request was refused");
    };
    reservation.settle(usd("1")).await;
    drop(permit);
    // Refused by the budget: neither the request nor the slot was charged, so the
    // minute's second request and the slot are still free for a request that fits.
    let wait_for_release = until(Duration::from_secs(2), || async {
        let refused = limiter
            .admit_reserving(&s, 0, &budgets, &worst)
            .await
            .unwrap();
        matches!(refused, Verdict::Blocked(Blocked::Exhausted { .. }))
    });
    assert!(wait_for_release.await);
    for _ in 0..3 {
        let refused = limiter
            .admit_reserving(&s, 0, &budgets, &worst)
            .await
            .unwrap();
        assert!(matches!(
            refused,
            Verdict::Blocked(Blocked::Exhausted { .. })
        ));
    }
    assert!(
        granted(&limiter, &s, 0).await,
        "a refused reservation consumed the rate limit"
    );
    // The kill switch refuses in the same step, and charges nothing either.
    let other = Subject {
        team: Some("ops".into()),
        ..subject("b")
    };
    budgets
        .set_killed(&Scope::Key("b".into()), true)
        .await
        .unwrap();
    for _ in 0..3 {
        let killed = limiter
            .admit_reserving(&other, 0, &budgets, &|_| Decimal::ZERO)
            .await
            .unwrap();
        assert!(matches!(killed, Verdict::Blocked(Blocked::Killed { .. })));
    }
    assert!(granted(&limiter, &other, 0).await);
}

#[tokio::test]
async fn two_nodes_share_concurrency_slots() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = config("limits: [{ name: conc, scope: team, concurrency: 2 }]").limits;
    let a = Limiter::new(&limits, node(&redis, OnFailure::Closed).await).unwrap();
    let b = Limiter::new(&limits, node(&redis, OnFailure::Closed).await).unwrap();
    let s = subject("k");
    let Admission::Granted(_held_a) = a.admit(&s, 0).await.unwrap() else {
        panic!("refused");
    };
    let Admission::Granted(held_b) = b.admit(&s, 0).await.unwrap() else {
        panic!("refused");
    };
    assert!(!granted(&a, &s, 0).await);
    drop(held_b);
    assert!(
        until(Duration::from_secs(2), || async {
            granted(&a, &s, 0).await
        })
        .await,
        "a slot freed on node b never reached node a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_budget_under_a_race() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let budgets = config("budgets: [{ name: k, scope: team, usd: 5, period: monthly }]").budgets;
    let nodes = [
        Arc::new(Budgets::new(&budgets, node(&redis, OnFailure::Closed).await).unwrap()),
        Arc::new(Budgets::new(&budgets, node(&redis, OnFailure::Closed).await).unwrap()),
    ];
    let reservation = usd("0.07");
    let granted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let b = Arc::clone(&nodes[i % 2]);
        let granted = Arc::clone(&granted);
        tasks.push(tokio::spawn(async move {
            match b.reserve(&subject("racer"), reservation).await.unwrap() {
                BudgetDecision::Reserved(r) => {
                    granted.fetch_add(1, Ordering::SeqCst);
                    r.settle(reservation).await;
                }
                BudgetDecision::Blocked(Blocked::Exhausted { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let status = nodes[1].status(&subject("racer")).await.unwrap();
    let spent = status[0].spent_usd;
    assert_eq!(status[0].reserved_usd, Decimal::ZERO);
    assert_eq!(
        spent,
        reservation * Decimal::from(granted.load(Ordering::SeqCst))
    );
    assert!(spent <= usd("5") + reservation, "spent {spent}");
    assert!(spent >= usd("5"), "spent {spent}");
    for b in &nodes {
        assert!(matches!(
            b.reserve(&subject("late"), usd("0.01")).await.unwrap(),
            BudgetDecision::Blocked(Blocked::Exhausted { .. })
        ));
    }
}

#[tokio::test]
async fn the_kill_switch_and_alerts_are_shared() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let budgets =
        config("budgets: [{ name: k, scope: team, usd: 10, period: daily, alerts: [0.5] }]")
            .budgets;
    let a = Budgets::new(&budgets, node(&redis, OnFailure::Closed).await).unwrap();
    let b = Budgets::new(&budgets, node(&redis, OnFailure::Closed).await).unwrap();
    a.set_killed(&Scope::Team("billing".into()), true)
        .await
        .unwrap();
    assert!(matches!(
        b.reserve(&subject("k"), usd("1")).await.unwrap(),
        BudgetDecision::Blocked(Blocked::Killed { .. })
    ));
    assert_eq!(b.killed().await.unwrap(), [Scope::Team("billing".into())]);
    a.set_killed(&Scope::Team("billing".into()), false)
        .await
        .unwrap();

    // Each node crosses the 50% mark in turn; only the first crossing alerts.
    let BudgetDecision::Reserved(ra) = a.reserve(&subject("k"), usd("1")).await.unwrap() else {
        panic!("refused");
    };
    let BudgetDecision::Reserved(rb) = b.reserve(&subject("k"), usd("1")).await.unwrap() else {
        panic!("refused");
    };
    assert_eq!(ra.settle(usd("6")).await.len(), 1);
    assert!(rb.settle(usd("1")).await.is_empty());
}

#[tokio::test]
async fn fail_open_enforces_per_node_and_recovers_when_redis_returns() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let policy = config(
        "limits: [{ name: conc, scope: team, concurrency: 1 }]
budgets: [{ name: k, scope: team, usd: 100, period: monthly }]",
    );
    let state = node(&redis, OnFailure::Open).await;
    let limiter = Limiter::new(&policy.limits, state.clone()).unwrap();
    let budgets = Budgets::new(&policy.budgets, state.clone()).unwrap();
    assert_eq!(state.health(), StateHealth::Ok);
    let Admission::Granted(held) = limiter.admit(&subject("k"), 0).await.unwrap() else {
        panic!("refused");
    };
    let BudgetDecision::Reserved(before) = budgets.reserve(&subject("k"), usd("1")).await.unwrap()
    else {
        panic!("refused");
    };

    redis.stop();
    // The next call notices (within the 100 ms timeout) and enforces on this node.
    let Admission::Granted(local) = limiter.admit(&subject("other-team-key"), 0).await.unwrap()
    else {
        panic!("fail-open refused");
    };
    assert_eq!(state.health(), StateHealth::Degraded);
    assert!(
        !granted(&limiter, &subject("k"), 0).await,
        "the local limit of one in flight holds"
    );
    drop(local);
    let BudgetDecision::Reserved(during) = budgets.reserve(&subject("k"), usd("2")).await.unwrap()
    else {
        panic!("fail-open refused the budget");
    };
    // Settles never fail: this spend is written once Redis is back.
    assert!(before.settle(usd("0.25")).await.is_empty());
    during.settle(usd("0.5")).await;

    redis.restart();
    assert!(
        support::eventually(Duration::from_secs(5), || state.health() == StateHealth::Ok).await,
        "never reconnected"
    );
    // Redis restarted empty: the in-flight request still held here was written back, so
    // a second node sees the slot as taken.
    let other = Limiter::new(&policy.limits, node(&redis, OnFailure::Closed).await).unwrap();
    assert!(
        !granted(&other, &subject("k2"), 0).await,
        "in-flight count was not restored"
    );
    drop(held);
    assert!(
        until(Duration::from_secs(2), || async {
            granted(&other, &subject("k2"), 0).await
        })
        .await
    );
    // Spend settled during the outage reached Redis.
    let other_budgets =
        Budgets::new(&policy.budgets, node(&redis, OnFailure::Closed).await).unwrap();
    assert!(
        until(Duration::from_secs(2), || async {
            let status = other_budgets.status(&subject("k")).await.unwrap();
            status[0].spent_usd == usd("0.75")
        })
        .await,
        "{:?}",
        other_budgets.status(&subject("k")).await.unwrap()
    );
}

#[tokio::test]
async fn fail_closed_refuses_and_recovers_when_redis_returns() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let policy = config(
        "limits: [{ name: rpm, scope: team, rpm: 1000 }]
budgets: [{ name: k, scope: team, usd: 100, period: monthly }]",
    );
    let state = node(&redis, OnFailure::Closed).await;
    let limiter = Limiter::new(&policy.limits, state.clone()).unwrap();
    let budgets = Budgets::new(&policy.budgets, state.clone()).unwrap();
    assert!(granted(&limiter, &subject("k"), 0).await);
    let BudgetDecision::Reserved(before) = budgets.reserve(&subject("k"), usd("1")).await.unwrap()
    else {
        panic!("refused");
    };

    redis.stop();
    let started = Instant::now();
    assert!(matches!(
        limiter.admit(&subject("k"), 0).await,
        Err(PolicyError::StateUnavailable)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failure took {:?}",
        started.elapsed()
    );
    assert_eq!(state.health(), StateHealth::Unavailable);
    assert!(matches!(
        budgets.reserve(&subject("k"), usd("1")).await,
        Err(PolicyError::StateUnavailable)
    ));
    assert!(matches!(
        budgets.set_killed(&Scope::Team("x".into()), true).await,
        Err(PolicyError::StateUnavailable)
    ));
    before.settle(usd("0.3")).await;

    redis.restart();
    assert!(
        until(Duration::from_secs(5), || async {
            limiter.admit(&subject("k"), 0).await.is_ok()
        })
        .await,
        "never recovered"
    );
    assert_eq!(state.health(), StateHealth::Ok);
    assert!(
        until(Duration::from_secs(2), || async {
            budgets.status(&subject("k")).await.unwrap()[0].spent_usd == usd("0.3")
        })
        .await
    );
}
