//! Per-request attempt bookkeeping: which candidate of the plan to try next after a
//! failure, after how long a wait, and a history for logs and error messages.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use tollgate_config::{RetryConfig, RetryOn};

use crate::router::{Candidate, Plan};

// === impl RetryPolicy ===

/// A route's retry settings in the form the hot path uses (`Copy`, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per candidate, the first included; at least 1.
    pub attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub max_retry_after: Duration,
    on_rate_limited: bool,
    on_server_error: bool,
    on_timeout: bool,
    on_connect: bool,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(cfg: &RetryConfig) -> Self {
        Self {
            attempts: cfg.attempts.max(1),
            backoff: cfg.backoff,
            backoff_max: cfg.backoff_max,
            max_retry_after: cfg.max_retry_after,
            on_rate_limited: cfg.on.contains(&RetryOn::RateLimited),
            on_server_error: cfg.on.contains(&RetryOn::ServerError),
            on_timeout: cfg.on.contains(&RetryOn::Timeout),
            on_connect: cfg.on.contains(&RetryOn::Connect),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from(&RetryConfig::default())
    }
}

impl RetryPolicy {
    /// Whether the route's `retry.on` covers this failure.
    pub fn retries(&self, failure: &Failure) -> bool {
        match failure {
            Failure::Connect => self.on_connect,
            Failure::Timeout(_) => self.on_timeout,
            Failure::Status { code: 429, .. } => self.on_rate_limited,
            Failure::Status { code, .. } => (500..600).contains(code) && self.on_server_error,
            Failure::ContextTooLong | Failure::Other => false,
        }
    }

    /// Full-jitter exponential backoff before retry number `retry` (1 = first retry):
    /// uniform in `[0, min(backoff_max, backoff * 2^(retry-1))]`.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let doubling = 1u32 << retry.saturating_sub(1).min(31);
        let cap = self.backoff.saturating_mul(doubling).min(self.backoff_max);
        let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=cap_ns))
    }
}

// === Failure ===

/// Which deadline of an attempt ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    FirstToken,
    Idle,
    Total,
}

/// How an upstream attempt failed, as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused, reset or TLS failure before a response.
    Connect,
    Timeout(TimeoutKind),
    /// An error status; `retry_after` from the response's `Retry-After`.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// The upstream refused the prompt as too long: a candidate with a larger window may
    /// still take it, the same one never will.
    ContextTooLong,
    /// Anything else (a malformed response, a gateway-side error); not retried.
    Other,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect => f.write_str("connect error"),
            Failure::Timeout(TimeoutKind::Connect) => f.write_str("connect timeout"),
            Failure::Timeout(TimeoutKind::FirstToken) => f.write_str("first-token timeout"),
            Failure::Timeout(TimeoutKind::Idle) => f.write_str("idle timeout"),
            Failure::Timeout(TimeoutKind::Total) => f.write_str("total timeout"),
            Failure::Status { code, .. } => write!(f, "{code}"),
            Failure::ContextTooLong => f.write_str("context too long"),
            Failure::Other => f.write_str("error"),
        }
    }
}

// === impl Attempts ===

/// What to do for the next upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextAttempt {
    /// Index into `Plan::candidates`.
    pub candidate: usize,
    /// 1 for the first attempt on this candidate, 2 for its first retry, ...
    pub attempt: u32,
    /// Sleep this long before sending.
    pub wait: Duration,
}

/// One finished attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub candidate: usize,
    /// Index into the provider's endpoints, when one was picked.
    pub endpoint: Option<usize>,
    /// `None` when the attempt succeeded.
    pub failure: Option<Failure>,
}

/// The attempt state of one request; the gateway keeps one per request.
#[derive(Debug, Clone)]
pub struct Attempts {
    candidates: Vec<Candidate>,
    retry: RetryPolicy,
    /// Candidate in use and attempts made on it; `None` before the first attempt.
    current: Option<(usize, u32)>,
    finished: bool,
    history: Vec<AttemptRecord>,
}

impl Attempts {
    pub fn new(plan: &Plan) -> Self {
        Self {
            candidates: plan.candidates.clone(),
            retry: plan.retry,
            current: None,
            finished: false,
            history: Vec::new(),
        }
    }

    /// Called before each upstream attempt with the previous attempt's failure (`None` before
    /// the first). The first call gives candidate 0 at once. After a failure covered by
    /// `retry.on`, the same candidate is retried while it has attempts left, after a
    /// full-jitter backoff; a Retry-After up to `max_retry_after` is waited out (at least),
    /// a longer one moves on. Otherwise the next candidate is tried at once. `None` when the
    /// plan is exhausted or the failure is not retryable (e.g. a 400); a call without a
    /// failure after the first counts as not retryable.
    pub fn next(&mut self, last: Option<&Failure>, rng: &mut impl Rng) -> Option<NextAttempt> {
        if self.finished {
            return None;
        }
        let Some((candidate, made)) = self.current else {
            return self.move_to(0);
        };
        let Some(failure) = last else {
            return self.finish();
        };
        if *failure == Failure::ContextTooLong {
            return self.move_to(candidate + 1);
        }
        if !self.retry.retries(failure) {
            return self.finish();
        }
        let retry_after = match failure {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        };
        if retry_after.is_some_and(|ra| ra > self.retry.max_retry_after)
            || made >= self.retry.attempts
        {
            return self.move_to(candidate + 1);
        }
        let wait = self
            .retry
            .backoff(made, rng)
            .max(retry_after.unwrap_or(Duration::ZERO));
        self.current = Some((candidate, made + 1));
        Some(NextAttempt {
            candidate,
            attempt: made + 1,
            wait,
        })
    }

    fn move_to(&mut self, candidate: usize) -> Option<NextAttempt> {
        if candidate >= self.candidates.len() {
            return self.finish();
        }
        self.current = Some((candidate, 1));
        Some(NextAttempt {
            candidate,
            attempt: 1,
            wait: Duration::ZERO,
        })
    }

    fn finish(&mut self) -> Option<NextAttempt> {
        self.finished = true;
        None
    }

    pub fn record(&mut self, rec: AttemptRecord) {
        self.history.push(rec);
    }

    pub fn history(&self) -> &[AttemptRecord] {
        &self.history
    }

    /// `"3 attempts: gpt-4o-mini@openai#0 500, gpt-4o-mini@openai#1 connect error, ..."`,
    /// for logs and the message of a 502/503/504.
    pub fn summary(&self) -> String {
        let n = self.history.len();
        if n == 0 {
            return "no upstream attempt was made".to_owned();
        }
        let mut out = format!("{n} attempt{}: ", if n == 1 { "" } else { "s" });
        for (i, rec) in self.history.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match self.candidates.get(rec.candidate) {
                Some(c) => {
                    out.push_str(&c.model);
                    out.push('@');
                    out.push_str(&c.provider);
                }
                None => out.push('?'),
            }
            if let Some(ep) = rec.endpoint {
                out.push_str(&format!("#{ep}"));
            }
            match &rec.failure {
                Some(f) => out.push_str(&format!(" {f}")),
                None => out.push_str(" ok"),
            }
        }
        out
    }

    /// The candidate an attempt index refers to.
    pub fn candidate(&self, index: usize) -> Option<&Candidate> {
        self.candidates.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use tollgate_config::TimeoutsConfig;

    fn candidate(model: &str, provider: &str) -> Candidate {
        Candidate {
            model: Arc::from(model),
            provider: Arc::from(provider),
            upstream_model: Arc::from(model),
        }
    }

    fn plan(n: usize, retry: RetryConfig) -> Plan {
        Plan {
            route: Arc::from("r"),
            candidates: (0..n)
                .map(|i| candidate(&format!("m{i}"), &format!("p{i}")))
                .collect(),
            retry: RetryPolicy::from(&retry),
            timeouts: TimeoutsConfig::default(),
        }
    }

    fn retry(attempts: u32, on: &[RetryOn]) -> RetryConfig {
        RetryConfig {
            attempts,
            on: on.to_vec(),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
        }
    }

    const ALL: [RetryOn; 4] = [
        RetryOn::RateLimited,
        RetryOn::ServerError,
        RetryOn::Timeout,
        RetryOn::Connect,
    ];

    fn status(code: u16) -> Failure {
        Failure::Status {
            code,
            retry_after: None,
        }
    }

    fn seq(a: &mut Attempts, rng: &mut StdRng, f: &Failure) -> Option<(usize, u32)> {
        a.next(Some(f), rng).map(|n| (n.candidate, n.attempt))
    }

    #[test]
    fn retries_same_candidate_then_falls_back_then_stops() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Attempts::new(&plan(2, retry(2, &ALL)));
        let first = a.next(None, &mut rng).unwrap();
        assert_eq!(
            first,
            NextAttempt {
                candidate: 0,
                attempt: 1,
                wait: Duration::ZERO
            }
        );
        let second = a.next(Some(&status(500)), &mut rng).unwrap();
        assert_eq!((second.candidate, second.attempt), (0, 2));
        assert!(second.wait <= Duration::from_millis(100));
        let third = a.next(Some(&Failure::Connect), &mut rng).unwrap();
        assert_eq!(
            third,
            NextAttempt {
                candidate: 1,
                attempt: 1,
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            seq(&mut a, &mut rng, &Failure::Timeout(TimeoutKind::FirstToken)),
            Some((1, 2))
        );
        assert_eq!(seq(&mut a, &mut rng, &status(503)), None);
        assert_eq!(a.next(None, &mut rng), None);
    }

    #[test]
    fn non_retryable_failures_stop() {
        let mut rng = StdRng::seed_from_u64(1);
        for f in [status(400), status(401), status(404), Failure::Other] {
            let mut a = Attempts::new(&plan(3, retry(3, &ALL)));
            a.next(None, &mut rng).unwrap();
            assert_eq!(seq(&mut a, &mut rng, &f), None, "{f}");
            assert_eq!(
                seq(&mut a, &mut rng, &status(500)),
                None,
                "finished stays finished"
            );
        }
        // Covered by nothing in `on`.
        let mut a = Attempts::new(&plan(3, retry(3, &[RetryOn::ServerError])));
        a.next(None, &mut rng).unwrap();
        assert_eq!(seq(&mut a, &mut rng, &status(429)), None);
        // A repeated `None` is not a failure to retry.
        let mut a = Attempts::new(&plan(3, retry(3, &ALL)));
        a.next(None, &mut rng).unwrap();
        assert_eq!(a.next(None, &mut rng), None);
    }

    #[test]
    fn retry_on_classes() {
        let p = RetryPolicy::from(&retry(2, &[RetryOn::Timeout]));
        assert!(p.retries(&Failure::Timeout(TimeoutKind::Connect)));
        assert!(!p.retries(&Failure::Connect));
        assert!(!p.retries(&status(500)));
        let p = RetryPolicy::from(&retry(2, &[RetryOn::ServerError, RetryOn::Connect]));
        assert!(p.retries(&status(500)) && p.retries(&status(599)) && p.retries(&Failure::Connect));
        assert!(!p.retries(&status(429)) && !p.retries(&status(499)) && !p.retries(&status(600)));
    }

    #[test]
    fn context_too_long_moves_on_even_if_not_in_on() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Attempts::new(&plan(2, retry(3, &[])));
        a.next(None, &mut rng).unwrap();
        assert_eq!(
            seq(&mut a, &mut rng, &Failure::ContextTooLong),
            Some((1, 1))
        );
        assert_eq!(seq(&mut a, &mut rng, &Failure::ContextTooLong), None);
    }

    #[test]
    fn single_attempt_goes_straight_to_fallback() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Attempts::new(&plan(3, retry(1, &ALL)));
        a.next(None, &mut rng).unwrap();
        assert_eq!(seq(&mut a, &mut rng, &status(502)), Some((1, 1)));
        assert_eq!(seq(&mut a, &mut rng, &status(502)), Some((2, 1)));
        assert_eq!(seq(&mut a, &mut rng, &status(502)), None);
        // Zero attempts in config still allow one.
        assert_eq!(RetryPolicy::from(&retry(0, &ALL)).attempts, 1);
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut a = Attempts::new(&plan(2, retry(3, &ALL)));
        a.next(None, &mut rng).unwrap();
        let f = Failure::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(3)),
        };
        let n = a.next(Some(&f), &mut rng).unwrap();
        assert_eq!(
            (n.candidate, n.attempt, n.wait),
            (0, 2, Duration::from_secs(3))
        );
        // Backoff larger than a tiny Retry-After wins.
        let p = RetryPolicy::from(&RetryConfig {
            backoff: Duration::from_secs(5),
            backoff_max: Duration::from_secs(5),
            ..retry(3, &ALL)
        });
        let mut b = Attempts::new(&Plan {
            retry: p,
            ..plan(2, retry(3, &ALL))
        });
        b.next(None, &mut rng).unwrap();
        let tiny = Failure::Status {
            code: 503,
            retry_after: Some(Duration::from_millis(1)),
        };
        let wait = b.next(Some(&tiny), &mut rng).unwrap().wait;
        assert!(wait >= Duration::from_millis(1) && wait <= Duration::from_secs(5));
    }

    #[test]
    fn retry_after_over_the_cap_moves_on_without_waiting() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut a = Attempts::new(&plan(2, retry(3, &ALL)));
        a.next(None, &mut rng).unwrap();
        let f = Failure::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(11)),
        };
        assert_eq!(
            a.next(Some(&f), &mut rng),
            Some(NextAttempt {
                candidate: 1,
                attempt: 1,
                wait: Duration::ZERO
            })
        );
        assert_eq!(a.next(Some(&f), &mut rng), None);
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_is_capped() {
        let mut rng = StdRng::seed_from_u64(42);
        let p = RetryPolicy::from(&retry(10, &ALL));
        for (retry_no, cap_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let cap = Duration::from_millis(cap_ms);
            let draws: Vec<_> = (0..2000).map(|_| p.backoff(retry_no, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= cap), "retry {retry_no}");
            let max = draws.iter().max().unwrap();
            let min = draws.iter().min().unwrap();
            assert!(*max > cap * 9 / 10, "retry {retry_no}: max {max:?}");
            assert!(*min < cap / 10, "retry {retry_no}: min {min:?}");
        }
        let zero = RetryPolicy::from(&RetryConfig {
            backoff: Duration::ZERO,
            ..retry(2, &ALL)
        });
        assert_eq!(zero.backoff(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn summary_names_every_attempt() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Attempts::new(&plan(2, retry(2, &ALL)));
        assert_eq!(a.summary(), "no upstream attempt was made");
        a.next(None, &mut rng).unwrap();
        a.record(AttemptRecord {
            candidate: 0,
            endpoint: Some(0),
            failure: Some(status(500)),
        });
        assert_eq!(a.summary(), "1 attempt: m0@p0#0 500");
        a.record(AttemptRecord {
            candidate: 0,
            endpoint: Some(1),
            failure: Some(Failure::Connect),
        });
        a.record(AttemptRecord {
            candidate: 1,
            endpoint: None,
            failure: Some(Failure::Timeout(TimeoutKind::FirstToken)),
        });
        a.record(AttemptRecord {
            candidate: 1,
            endpoint: Some(0),
            failure: None,
        });
        assert_eq!(
            a.summary(),
            "4 attempts: m0@p0#0 500, m0@p0#1 connect error, m1@p1 first-token timeout, m1@p1#0 ok"
        );
        assert_eq!(a.history().len(), 4);
        assert_eq!(a.candidate(1).unwrap().to_string(), "m1@p1");
    }

    #[test]
    fn empty_plan_has_no_attempt() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Attempts::new(&plan(0, retry(2, &ALL)));
        assert_eq!(a.next(None, &mut rng), None);
    }
}
