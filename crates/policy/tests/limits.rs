//! Every limit kind and action on the memory backend, with the answers' headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_policy::{
    Admission, LimitKind, Limiter, Permit, PolicyConfig, Rejection, State, Subject,
};

fn limiter(yaml: &str) -> Limiter {
    let config: PolicyConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    Limiter::new(&config.limits, State::memory()).unwrap()
}

fn subject(key: &str, team: &str, model: &str) -> Subject {
    Subject {
        key: key.into(),
        team: Some(team.into()),
        model: model.into(),
        ..Subject::default()
    }
}

async fn granted(limiter: &Limiter, s: &Subject, tokens: u64) -> Permit {
    match limiter.admit(s, tokens).await.unwrap() {
        Admission::Granted(permit) => permit,
        Admission::Rejected(r) => panic!("rejected: {r}"),
    }
}

async fn rejected(limiter: &Limiter, s: &Subject, tokens: u64) -> Rejection {
    match limiter.admit(s, tokens).await.unwrap() {
        Admission::Granted(permit) => panic!("granted: {permit:?}"),
        Admission::Rejected(r) => r,
    }
}

fn header(pairs: &[(&'static str, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
}

#[tokio::test]
async fn requests_per_minute_reject_with_openai_headers() {
    let l = limiter("limits: [{ name: team-rpm, scope: team, match: { team: billing }, rpm: 3 }]");
    let s = subject("svc", "billing", "m");
    for left in [2, 1, 0] {
        let permit = granted(&l, &s, 0).await;
        let pairs = permit.rate().to_pairs();
        assert_eq!(
            header(&pairs, "x-ratelimit-limit-requests").as_deref(),
            Some("3")
        );
        assert_eq!(
            header(&pairs, "x-ratelimit-remaining-requests"),
            Some(left.to_string())
        );
        assert!(header(&pairs, "x-ratelimit-limit-tokens").is_none());
    }
    let r = rejected(&l, &s, 0).await;
    assert_eq!(r.limit, "team-rpm");
    assert_eq!(r.kind, LimitKind::Requests);
    assert!(!r.queued);
    let wait = r.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    let pairs = r.headers();
    assert_eq!(header(&pairs, "retry-after").as_deref(), Some("20"));
    assert_eq!(
        header(&pairs, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let reset = header(&pairs, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s') && reset != "0s", "{reset}");
    assert!(r.to_string().contains("requests per minute"), "{r}");

    // Other teams do not match the limit; the scope is per team.
    granted(&l, &subject("svc", "ops", "m"), 0).await;
}

#[tokio::test]
async fn every_scope_has_its_own_counters() {
    let l = limiter(
        "limits:
  - { name: per-key, scope: key, rpm: 1 }
  - { name: all, scope: global, rpm: 3 }",
    );
    let _a = granted(&l, &subject("a", "t", "m"), 0).await;
    let r = rejected(&l, &subject("a", "t", "m"), 0).await;
    assert_eq!(r.limit, "per-key");
    let _b = granted(&l, &subject("b", "t", "m"), 0).await;
    let _c = granted(&l, &subject("c", "t", "m"), 0).await;
    let r = rejected(&l, &subject("d", "t", "m"), 0).await;
    assert_eq!(r.limit, "all", "the global counter is shared");
    // A rejection charges nothing: after `a`'s refusal the global counter still had room
    // for `b` and `c`.
}

#[tokio::test]
async fn tokens_are_admitted_on_the_estimate_and_corrected() {
    let l = limiter("limits: [{ name: tpm, scope: key, tpm: 1000 }]");
    let s = subject("svc", "t", "m");
    let mut permit = granted(&l, &s, 400).await;
    let pairs = permit.rate().to_pairs();
    assert_eq!(
        header(&pairs, "x-ratelimit-limit-tokens").as_deref(),
        Some("1000")
    );
    assert_eq!(
        header(&pairs, "x-ratelimit-remaining-tokens").as_deref(),
        Some("600")
    );
    // The answer used 900 tokens: 500 more than estimated.
    permit.correct(900);
    drop(permit);
    let r = rejected(&l, &s, 200).await;
    assert_eq!(r.kind, LimitKind::Tokens);
    assert_eq!(
        header(&r.headers(), "x-ratelimit-remaining-tokens").as_deref(),
        Some("100")
    );
    // A request larger than a minute's tokens can never pass: no retry-after.
    let r = rejected(&l, &s, 1001).await;
    assert_eq!(r.retry_after, None);
    assert!(header(&r.headers(), "retry-after").is_none());
    assert!(r.to_string().contains("larger than the limit"), "{r}");

    let l = limiter("limits: [{ name: tpm, scope: key, tpm: 1000 }]");
    let mut permit = granted(&l, &s, 900).await;
    // It used only 100: the unused estimate is given back.
    permit.correct(100);
    let permit = granted(&l, &s, 800).await;
    assert_eq!(
        header(&permit.rate().to_pairs(), "x-ratelimit-remaining-tokens").as_deref(),
        Some("100")
    );
}

#[tokio::test]
async fn concurrency_slots_are_released_when_the_permit_drops() {
    let l = limiter("limits: [{ name: conc, scope: team, concurrency: 2 }]");
    let s = subject("svc", "t", "m");
    let first = granted(&l, &s, 0).await;
    let _second = granted(&l, &s, 0).await;
    let r = rejected(&l, &s, 0).await;
    assert_eq!(r.kind, LimitKind::Concurrency);
    assert_eq!(
        r.retry_after,
        Some(tollgate_policy::CONCURRENCY_RETRY_AFTER)
    );
    drop(first);
    let _third = granted(&l, &s, 0).await;
}

#[tokio::test]
async fn downgrade_serves_the_named_model_instead() {
    let l = limiter(
        "limits:
  - { name: big-rpm, scope: model, match: { model: big }, rpm: 1, on_exceed: downgrade, downgrade_to: small }
  - { name: small-rpm, scope: model, match: { model: small }, rpm: 1 }",
    );
    let s = subject("svc", "t", "big");
    let permit = granted(&l, &s, 0).await;
    assert_eq!(permit.model(), None);
    let permit = granted(&l, &s, 0).await;
    assert_eq!(permit.model(), Some("small"));
    // The small model has its own limit, which rejects.
    let r = rejected(&l, &s, 0).await;
    assert_eq!(r.limit, "small-rpm");
}

#[tokio::test]
async fn queued_requests_wait_for_room_until_their_deadline() {
    let l = limiter(
        "limits: [{ name: q, scope: key, rpm: 600, on_exceed: queue, queue: { max_wait: 2s, max_depth: 10 } }]",
    );
    let s = subject("svc", "t", "m");
    // A full bucket of 600 per minute refills one request per 100 ms.
    for _ in 0..600 {
        granted(&l, &s, 0).await;
    }
    let started = Instant::now();
    let permit = granted(&l, &s, 0).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(permit.waited() >= Duration::from_millis(50));

    let l = limiter(
        "limits: [{ name: q, scope: key, rpm: 1, on_exceed: queue, queue: { max_wait: 200ms } }]",
    );
    granted(&l, &s, 0).await;
    let started = Instant::now();
    let r = rejected(&l, &s, 0).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a hopeless wait is cut short"
    );
    assert!(r.queued);
    assert!(r.retry_after.unwrap() > Duration::from_secs(50));
}

#[tokio::test]
async fn a_full_queue_rejects_at_once() {
    let l = Arc::new(limiter(
        "limits: [{ name: q, scope: global, concurrency: 1, on_exceed: queue, queue: { max_wait: 5s, max_depth: 1 } }]",
    ));
    let s = subject("svc", "t", "m");
    let holder = granted(&l, &s, 0).await;
    let waiter = {
        let l = Arc::clone(&l);
        let s = s.clone();
        tokio::spawn(async move { l.admit(&s, 0).await.unwrap() })
    };
    // Wait until the first waiter is queued (a second one would then find the queue full).
    let mut r = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        match l.admit(&subject("other", "t", "m"), 0).await.unwrap() {
            Admission::Rejected(rej) if rej.queued => {
                r = Some(rej);
                break;
            }
            Admission::Rejected(_) => {}
            Admission::Granted(p) => panic!("granted while the slot is held: {p:?}"),
        }
    }
    let r = r.expect("the queue never filled");
    assert_eq!(r.kind, LimitKind::Concurrency);
    drop(holder);
    let Admission::Granted(_) = waiter.await.unwrap() else {
        panic!("the queued request did not get the freed slot");
    };
}

#[tokio::test]
async fn queue_turns_are_fair_across_keys() {
    // One slot at a time; a key floods the queue with 20 requests, then a quiet key
    // queues one. Round-robin turns serve the quiet key within the next two turns.
    let l = Arc::new(limiter(
        "limits: [{ name: q, scope: global, concurrency: 1, on_exceed: queue, queue: { max_wait: 20s, max_depth: 100 } }]",
    ));
    let holder = granted(&l, &subject("flood", "t", "m"), 0).await;
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let spawn = |key: &'static str| {
        let l = Arc::clone(&l);
        let order = Arc::clone(&order);
        tokio::spawn(async move {
            let Admission::Granted(permit) = l.admit(&subject(key, "t", "m"), 0).await.unwrap()
            else {
                panic!("{key} rejected");
            };
            order.lock().push(key);
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(permit);
        })
    };
    for _ in 0..20 {
        tasks.push(spawn("flood"));
    }
    // Let the flood queue up before the quiet key arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tasks.push(spawn("quiet"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(holder);
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().clone();
    assert_eq!(order.len(), 21);
    let quiet_at = order.iter().position(|k| *k == "quiet").unwrap();
    assert!(
        quiet_at <= 2,
        "quiet key served at turn {quiet_at}: {order:?}"
    );
}

#[tokio::test]
async fn a_refusal_by_one_limit_charges_none_of_the_others() {
    let l = limiter(
        "limits:
  - { name: wide, scope: global, rpm: 2 }
  - { name: narrow, scope: key, match: { key: a }, rpm: 1 }",
    );
    granted(&l, &subject("a", "t", "m"), 0).await;
    rejected(&l, &subject("a", "t", "m"), 0).await;
    rejected(&l, &subject("a", "t", "m"), 0).await;
    // `wide` was charged once only: one request of another key still fits.
    granted(&l, &subject("b", "t", "m"), 0).await;
    rejected(&l, &subject("b", "t", "m"), 0).await;
}

#[test]
fn an_invalid_config_is_refused_with_every_problem() {
    let config: PolicyConfig =
        serde_yaml_ng::from_str("limits: [{ name: x, scope: key, rpm: 0, on_exceed: downgrade }]")
            .unwrap();
    let err = Limiter::new(&config.limits, State::memory()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("limits[0].rpm: must be at least 1"), "{text}");
    assert!(text.contains("limits[0].downgrade_to"), "{text}");
}
