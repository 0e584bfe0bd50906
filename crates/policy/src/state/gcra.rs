//! The Generic Cell Rate Algorithm for per-minute limits, shared by the memory backend;
//! the Redis scripts compute the same formulas in Lua.
//!
//! A limit of `L` per minute is a bucket of capacity `L` that refills continuously at
//! `L` per minute. The only state is the theoretical arrival time `tat`: the moment the
//! bucket would be full again. A request costing `n` units moves `tat` by `n × T/L`
//! (`T` = one minute) and is admitted iff the new `tat` is at most `T` ahead of now.
//!
//! Accuracy: exact, no windows and no sampling. The long-run rate never exceeds `L` per
//! minute; a burst may take the whole capacity `L` at once, so any sliding 60 s window
//! admits at most `2L` units (a full bucket plus one minute of refill) — the same
//! contract as a token bucket, and as OpenAI's own limits ("replenished continuously").
//! Times are f64 milliseconds; a tolerance of [`EPSILON_MS`] absorbs rounding so that
//! exactly `L` requests fit a full bucket.

use std::time::Duration;

use super::Outcome;

/// The window every limit is expressed in.
pub(crate) const PERIOD_MS: f64 = 60_000.0;

/// Rounding tolerance of the f64 arithmetic (one nanosecond).
pub(crate) const EPSILON_MS: f64 = 1e-6;

/// Checks a request of `cost` units against a counter of `limit` per minute whose stored
/// arrival time is `tat` (0 when absent), at `now`; returns the outcome and, when
/// admitted, the new arrival time to store.
pub(crate) fn check(tat: f64, now: f64, limit: u64, cost: u64) -> (Outcome, Option<f64>) {
    let interval = PERIOD_MS / limit.max(1) as f64;
    let tat = tat.max(now);
    let increment = cost as f64 * interval;
    let new_tat = tat + increment;
    let remaining_at = |t: f64| {
        ((PERIOD_MS - (t - now)) / interval + EPSILON_MS)
            .floor()
            .max(0.0)
    };
    if increment > PERIOD_MS + EPSILON_MS {
        let outcome = Outcome {
            allowed: false,
            remaining: remaining_at(tat) as u64,
            reset: millis(tat - now),
            retry_after: None,
        };
        return (outcome, None);
    }
    let allow_at = new_tat - PERIOD_MS;
    if allow_at <= now + EPSILON_MS {
        let outcome = Outcome {
            allowed: true,
            remaining: remaining_at(new_tat) as u64,
            reset: millis(new_tat - now),
            retry_after: Some(Duration::ZERO),
        };
        (outcome, Some(new_tat))
    } else {
        let outcome = Outcome {
            allowed: false,
            remaining: remaining_at(tat) as u64,
            reset: millis(tat - now),
            retry_after: Some(millis(allow_at - now)),
        };
        (outcome, None)
    }
}

/// The arrival time after adding `delta` units (negative gives back), never before `now`.
pub(crate) fn adjust(tat: f64, now: f64, limit: u64, delta: i64) -> f64 {
    let interval = PERIOD_MS / limit.max(1) as f64;
    (tat.max(now) + delta as f64 * interval).max(now)
}

/// Whole milliseconds, rounded up so a client waiting this long is not refused again.
pub(crate) fn millis(ms: f64) -> Duration {
    Duration::from_millis(ms.max(0.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_exactly_the_limit_then_refills_at_the_rate() {
        for limit in [1, 7, 60, 1000] {
            let mut tat = 0.0;
            let now = 1_000_000.0;
            for i in 0..limit {
                let (outcome, new) = check(tat, now, limit, 1);
                assert!(outcome.allowed, "limit {limit}, request {i}");
                assert_eq!(outcome.remaining, limit - i - 1);
                tat = new.unwrap_or(tat);
            }
            let (outcome, _) = check(tat, now, limit, 1);
            assert!(!outcome.allowed, "limit {limit}: one more than the limit");
            let wait = outcome.retry_after.unwrap_or_default();
            assert_eq!(wait, millis(PERIOD_MS / limit as f64));
            let later = now + wait.as_millis() as f64;
            assert!(check(tat, later, limit, 1).0.allowed, "after retry_after");
        }
    }

    #[test]
    fn requests_larger_than_the_limit_never_fit() {
        let (outcome, new) = check(0.0, 0.0, 100, 101);
        assert!(!outcome.allowed);
        assert_eq!(outcome.retry_after, None);
        assert_eq!(new, None);
        assert!(check(0.0, 0.0, 100, 100).0.allowed);
    }

    #[test]
    fn reset_is_the_time_until_the_bucket_is_full() {
        let (outcome, tat) = check(0.0, 0.0, 60, 30);
        assert_eq!(outcome.reset, Duration::from_secs(30));
        assert_eq!(outcome.remaining, 30);
        let tat = tat.unwrap_or_default();
        assert_eq!(adjust(tat, 0.0, 60, -10), 20_000.0);
        assert_eq!(adjust(tat, 0.0, 60, -100), 0.0, "never before now");
        assert_eq!(adjust(tat, 0.0, 60, 60), 90_000.0, "debt beyond the window");
    }
}
