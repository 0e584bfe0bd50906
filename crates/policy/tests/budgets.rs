//! Budgets on the memory backend: the reservation race, settling, alerts and their
//! webhook, block and downgrade, the kill switch and the start-up rebuild.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use parking_lot::Mutex;
use tollgate_policy::{
    Blocked, BudgetDecision, Budgets, Decimal, Period, PolicyConfig, Reservation, Scope, State,
    Subject, WebhookNotifier, WebhookOptions,
};

fn budgets_on(yaml: &str, state: State) -> Budgets {
    let config: PolicyConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    Budgets::new(&config.budgets, state).unwrap()
}

fn budgets(yaml: &str) -> Budgets {
    budgets_on(yaml, State::memory())
}

fn team(team: &str, model: &str) -> Subject {
    Subject {
        key: format!("{team}-svc"),
        team: Some(team.into()),
        model: model.into(),
        ..Subject::default()
    }
}

fn usd(text: &str) -> Decimal {
    text.parse().unwrap()
}

async fn reserved(b: &Budgets, s: &Subject, amount: &str) -> Reservation {
    match b.reserve(s, usd(amount)).await.unwrap() {
        BudgetDecision::Reserved(r) => r,
        other => panic!("not reserved: {other:?}"),
    }
}

/// Hundreds of concurrent requests against a budget of exactly `k`: the spend stays
/// within `k` plus one reservation, and nothing is granted once the budget is spent.
async fn race(b: Arc<Budgets>, k: Decimal, reservation: Decimal, requests: usize) {
    let subject = team("racers", "m");
    let granted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..requests {
        let b = Arc::clone(&b);
        let subject = subject.clone();
        let granted = Arc::clone(&granted);
        tasks.push(tokio::spawn(async move {
            match b.reserve(&subject, reservation).await.unwrap() {
                BudgetDecision::Reserved(r) => {
                    granted.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    // Every request costs its whole reservation: the worst case.
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
    let status = b.status(&subject).await.unwrap();
    let spent = status[0].spent_usd;
    assert_eq!(status[0].reserved_usd, Decimal::ZERO);
    assert!(
        spent <= k + reservation,
        "spent {spent} > {k} + {reservation}"
    );
    assert!(
        spent >= k,
        "spent {spent} < {k}: requests were refused before the budget was spent"
    );
    assert_eq!(
        spent,
        reservation * Decimal::from(granted.load(Ordering::SeqCst))
    );
    assert!(
        matches!(
            b.reserve(&subject, Decimal::new(1, 9)).await.unwrap(),
            BudgetDecision::Blocked(Blocked::Exhausted { .. })
        ),
        "granted after exhaustion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_overspend_by_less_than_one_reservation() {
    let b = Arc::new(budgets(
        "budgets: [{ name: k, scope: team, usd: 10, period: monthly }]",
    ));
    // 400 requests of $0.30 against $10: 33 fit below $10, the 34th crosses it.
    race(b, usd("10"), usd("0.3"), 400).await;
}

#[tokio::test]
async fn settling_replaces_the_reservation_and_dropping_releases_it() {
    let b = budgets("budgets: [{ name: k, scope: team, usd: 1, period: daily }]");
    let s = team("t", "m");
    let r = reserved(&b, &s, "0.9").await;
    assert_eq!(r.amount(), usd("0.9"));
    let status = b.status(&s).await.unwrap();
    assert_eq!(status[0].reserved_usd, usd("0.9"));
    assert_eq!(status[0].period_start, Period::Daily.start(Utc::now()));
    r.settle(usd("0.000123456789")).await;
    let status = b.status(&s).await.unwrap();
    assert_eq!(status[0].reserved_usd, Decimal::ZERO);
    assert_eq!(status[0].spent_usd, usd("0.000123456789"), "exact decimals");

    let r = reserved(&b, &s, "0.5").await;
    drop(r);
    let status = b.status(&s).await.unwrap();
    assert_eq!(status[0].reserved_usd, Decimal::ZERO);
    assert_eq!(status[0].spent_usd, usd("0.000123456789"));
}

#[tokio::test]
async fn block_and_downgrade_at_exhaustion() {
    let b = budgets(
        "budgets:
  - { name: blocker, scope: team, match: { team: a }, usd: 1, period: daily }
  - { name: saver, scope: team, match: { team: b }, usd: 1, period: weekly, on_exhausted: downgrade, downgrade_to: small }",
    );
    reserved(&b, &team("a", "big"), "1")
        .await
        .settle(usd("1"))
        .await;
    let BudgetDecision::Blocked(blocked) = b.reserve(&team("a", "big"), usd("0.1")).await.unwrap()
    else {
        panic!("not blocked");
    };
    assert!(matches!(&blocked, Blocked::Exhausted { budget, scope, .. }
        if budget == "blocker" && *scope == Scope::Team("a".into())));
    assert!(
        blocked.to_string().contains("exceeded your current quota"),
        "{blocked}"
    );

    reserved(&b, &team("b", "big"), "1")
        .await
        .settle(usd("1.5"))
        .await;
    match b.reserve(&team("b", "big"), usd("0.1")).await.unwrap() {
        BudgetDecision::Downgrade { model, budget } => {
            assert_eq!((model.as_str(), budget.as_str()), ("small", "saver"));
        }
        other => panic!("not downgraded: {other:?}"),
    }
    // The downgraded request is admitted, and its cost still counts.
    reserved(&b, &team("b", "small"), "0.01")
        .await
        .settle(usd("0.01"))
        .await;
    let status = b.status(&team("b", "big")).await.unwrap();
    assert_eq!(status[0].spent_usd, usd("1.51"));
}

#[tokio::test]
async fn the_kill_switch_blocks_at_once_and_lifts() {
    let b = budgets("budgets: []");
    let s = team("billing", "m");
    reserved(&b, &s, "1").await;
    b.set_killed(&Scope::Team("billing".into()), true)
        .await
        .unwrap();
    let BudgetDecision::Blocked(Blocked::Killed { scope }) = b.reserve(&s, usd("1")).await.unwrap()
    else {
        panic!("not killed");
    };
    assert_eq!(scope, Scope::Team("billing".into()));
    reserved(&b, &team("ops", "m"), "1").await;
    assert_eq!(b.killed().await.unwrap(), [Scope::Team("billing".into())]);
    b.set_killed(&Scope::Team("billing".into()), false)
        .await
        .unwrap();
    reserved(&b, &s, "1").await;

    b.set_killed(&Scope::Key("billing-svc".into()), true)
        .await
        .unwrap();
    assert!(matches!(
        b.reserve(&s, usd("1")).await.unwrap(),
        BudgetDecision::Blocked(Blocked::Killed {
            scope: Scope::Key(_)
        })
    ));
}

#[tokio::test]
async fn spend_is_rebuilt_from_the_ledger_totals() {
    let b = budgets(
        "budgets:
  - { name: month, scope: team, usd: 100, period: monthly, alerts: [0.5, 0.9] }
  - { name: day, scope: team, usd: 10, period: daily }
  - { name: per-project, scope: tag, tag: project, usd: 5, period: monthly }",
    );
    let now = Utc::now();
    let month = Period::Monthly.start(now);
    let applied = b
        .rebuild([
            (Scope::Team("t".into()), month, usd("60")),
            (
                Scope::Tag {
                    name: "project".into(),
                    value: "apollo".into(),
                },
                month,
                usd("5"),
            ),
            // An old period's total changes nothing.
            (
                Scope::Team("t".into()),
                month - chrono::Duration::days(40),
                usd("99"),
            ),
        ])
        .await
        .unwrap();
    // The monthly total also fits the daily budget when today is the 1st.
    let expected = if Period::Daily.start(now) == month {
        3
    } else {
        2
    };
    assert_eq!(applied, expected);

    let s = team("t", "m");
    let status = b.status(&s).await.unwrap();
    assert_eq!(status[0].spent_usd, usd("60"));
    // The 50% alert passed before the restart: it does not fire again; 90% does.
    let events = reserved(&b, &s, "1").await.settle(usd("31")).await;
    let thresholds: Vec<Decimal> = events.iter().map(|e| e.threshold).collect();
    assert_eq!(thresholds, [usd("0.9")]);

    let tagged = Subject {
        tags: [("project".to_owned(), "apollo".to_owned())].into(),
        ..team("x", "m")
    };
    assert!(matches!(
        b.reserve(&tagged, usd("0.01")).await.unwrap(),
        BudgetDecision::Blocked(Blocked::Exhausted { budget, .. }) if budget == "per-project"
    ));
}

#[derive(Clone, Default)]
struct Hook {
    failures_left: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn hook(AxumState(hook): AxumState<Hook>, Json(body): Json<serde_json::Value>) -> StatusCode {
    hook.attempts.fetch_add(1, Ordering::SeqCst);
    let fail = hook
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    hook.received.lock().push(body);
    StatusCode::NO_CONTENT
}

/// A webhook on 127.0.0.1:0 that fails its first `failures` calls.
async fn webhook(failures: usize) -> (String, Hook) {
    let state = Hook::default();
    state.failures_left.store(failures, Ordering::SeqCst);
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

#[tokio::test]
async fn alerts_fire_once_per_threshold_and_reach_the_webhook_through_failures() {
    let (url, hook) = webhook(2).await;
    let b = budgets(&format!(
        "budgets: [{{ name: team-month, scope: team, usd: 10, period: monthly, alerts: [0.5, 0.8, 1.0], webhook: \"{url}\" }}]"
    ))
    .with_notifier(WebhookNotifier::new(WebhookOptions {
        attempts: 4,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
    }));
    let s = team("billing", "m");
    assert!(reserved(&b, &s, "1")
        .await
        .settle(usd("4"))
        .await
        .is_empty());
    // $4 -> $8.5 crosses 50% and 80% at once.
    let events = reserved(&b, &s, "1").await.settle(usd("4.5")).await;
    let thresholds: Vec<Decimal> = events.iter().map(|e| e.threshold).collect();
    assert_eq!(thresholds, [usd("0.5"), usd("0.8")]);
    assert_eq!(events[0].scope, "team:billing");
    assert_eq!(events[0].spent_usd, usd("8.5"));
    assert_eq!(events[0].limit_usd, usd("10"));
    // Below the next threshold: nothing; crossing a passed one again: nothing.
    assert!(reserved(&b, &s, "1")
        .await
        .settle(usd("0.5"))
        .await
        .is_empty());
    let events = reserved(&b, &s, "1").await.settle(usd("1")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].threshold, usd("1"));

    assert!(
        support::eventually(Duration::from_secs(10), || hook.received.lock().len() == 3).await,
        "webhook got {:?}",
        hook.received.lock()
    );
    // Two failed attempts were retried.
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 5);
    let mut thresholds: Vec<String> = hook
        .received
        .lock()
        .iter()
        .map(|body| body["threshold"].as_str().unwrap().to_owned())
        .collect();
    thresholds.sort();
    assert_eq!(thresholds, ["0.5", "0.8", "1"]);
    let body = hook.received.lock()[0].clone();
    assert_eq!(body["budget"], "team-month");
    assert_eq!(body["period"], "monthly");
    assert_eq!(body["scope"], "team:billing");
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_is_given_up_after_the_last_attempt() {
    let (url, hook) = webhook(usize::MAX).await;
    let b = budgets(&format!(
        "budgets: [{{ name: x, scope: team, usd: 1, period: daily, alerts: [0.5], webhook: \"{url}\" }}]"
    ))
    .with_notifier(WebhookNotifier::new(WebhookOptions {
        attempts: 3,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    }));
    let events = reserved(&b, &team("t", "m"), "1")
        .await
        .settle(usd("1"))
        .await;
    assert_eq!(events.len(), 1);
    assert!(
        support::eventually(Duration::from_secs(5), || hook
            .attempts
            .load(Ordering::SeqCst)
            == 3)
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hook.attempts.load(Ordering::SeqCst),
        3,
        "no attempt after the last"
    );
}
