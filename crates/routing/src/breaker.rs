//! The passive circuit breaker of one endpoint: it counts consecutive failures reported by
//! the gateway, refuses traffic for a cool-down once they reach the threshold, then lets
//! exactly one probe through before closing again.
//!
//! ```text
//! Closed --N consecutive failures--> Open(until) --time passes--> HalfOpen
//! HalfOpen --probe succeeds--> Closed
//! HalfOpen --probe fails-----> Open(now + cooldown)
//! ```

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// What the breaker currently allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// No traffic until the deadline.
    Open,
    /// The cool-down is over; one probe request may pass.
    HalfOpen,
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed.
    Normal,
    /// The single half-open probe: its outcome closes or re-opens the circuit.
    Probe,
}

/// A point-in-time view of one breaker, for the admin API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSnapshot {
    pub state: CircuitState,
    pub open_until: Option<Instant>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Default)]
struct Inner {
    consecutive_failures: u32,
    /// `Some` while open or half-open: half-open is an open deadline that has passed.
    open_until: Option<Instant>,
    /// When the current half-open probe was admitted. A probe whose outcome is never
    /// reported (the client went away) stops blocking after one cool-down.
    probe_since: Option<Instant>,
}

/// One endpoint's breaker. Every method takes a short lock; none blocks on IO.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// `threshold` consecutive failures open the circuit for `cooldown`. A threshold of 0
    /// is treated as 1.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether a request would be admitted now, without taking the half-open probe slot.
    pub fn allows(&self, now: Instant) -> bool {
        let inner = self.inner.lock();
        match inner.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => self.probe_slot_free(&inner, now),
        }
    }

    /// Admits a request if the circuit allows one; in half-open state this takes the single
    /// probe slot.
    pub fn try_acquire(&self, now: Instant) -> Option<Admission> {
        let mut inner = self.inner.lock();
        match inner.open_until {
            None => Some(Admission::Normal),
            Some(until) if now < until => None,
            Some(_) if self.probe_slot_free(&inner, now) => {
                inner.probe_since = Some(now);
                Some(Admission::Probe)
            }
            Some(_) => None,
        }
    }

    fn probe_slot_free(&self, inner: &Inner, now: Instant) -> bool {
        match inner.probe_since {
            None => true,
            Some(since) => now >= since + self.cooldown,
        }
    }

    /// A request succeeded: the circuit closes and the failure count resets.
    pub fn record_success(&self) {
        let mut inner = self.inner.lock();
        *inner = Inner::default();
    }

    /// A request failed (connect error, timeout, 5xx).
    pub fn record_failure(&self, now: Instant) {
        let mut inner = self.inner.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        match inner.open_until {
            // Still open: a late failure of a request admitted before the trip neither
            // shortens nor extends the cool-down.
            Some(until) if now < until => {}
            // Half-open: the probe (or a straggler) failed, so cool down again.
            Some(_) => {
                inner.open_until = Some(now + self.cooldown);
                inner.probe_since = None;
            }
            None if inner.consecutive_failures >= self.threshold => {
                inner.open_until = Some(now + self.cooldown);
                inner.probe_since = None;
            }
            None => {}
        }
    }

    /// Opens the circuit until `until` (e.g. an upstream's Retry-After). An existing later
    /// deadline is kept: a shorter hint never re-arms the circuit earlier.
    pub fn trip_until(&self, until: Instant) {
        let mut inner = self.inner.lock();
        let later = match inner.open_until {
            Some(current) if current >= until => current,
            _ => until,
        };
        inner.open_until = Some(later);
        inner.probe_since = None;
    }

    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let inner = self.inner.lock();
        let state = match inner.open_until {
            None => CircuitState::Closed,
            Some(until) if now < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        };
        BreakerSnapshot {
            state,
            open_until: inner.open_until.filter(|until| now < *until),
            consecutive_failures: inner.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn breaker() -> (CircuitBreaker, Instant) {
        (CircuitBreaker::new(3, COOLDOWN), Instant::now())
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (b, t0) = breaker();
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.snapshot(t0).state, CircuitState::Closed);
        assert_eq!(b.try_acquire(t0), Some(Admission::Normal));
        b.record_failure(t0);
        let snap = b.snapshot(t0);
        assert_eq!(snap.state, CircuitState::Open);
        assert_eq!(snap.open_until, Some(t0 + COOLDOWN));
        assert_eq!(snap.consecutive_failures, 3);
        assert!(!b.allows(t0 + COOLDOWN - Duration::from_millis(1)));
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn success_resets_the_count() {
        let (b, t0) = breaker();
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.snapshot(t0).state, CircuitState::Closed);
        assert_eq!(b.snapshot(t0).consecutive_failures, 2);
    }

    #[test]
    fn half_open_admits_exactly_one_probe() {
        let (b, t0) = breaker();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + COOLDOWN;
        assert_eq!(b.snapshot(t1).state, CircuitState::HalfOpen);
        assert!(b.allows(t1));
        assert_eq!(b.try_acquire(t1), Some(Admission::Probe));
        assert!(!b.allows(t1));
        assert_eq!(b.try_acquire(t1 + Duration::from_secs(1)), None);
    }

    #[test]
    fn probe_success_closes() {
        let (b, t0) = breaker();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + COOLDOWN;
        assert_eq!(b.try_acquire(t1), Some(Admission::Probe));
        b.record_success();
        assert_eq!(b.snapshot(t1).state, CircuitState::Closed);
        assert_eq!(b.snapshot(t1).consecutive_failures, 0);
        assert_eq!(b.try_acquire(t1), Some(Admission::Normal));
        assert_eq!(b.try_acquire(t1), Some(Admission::Normal));
    }

    #[test]
    fn probe_failure_reopens_for_a_full_cooldown() {
        let (b, t0) = breaker();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + COOLDOWN + Duration::from_secs(5);
        assert_eq!(b.try_acquire(t1), Some(Admission::Probe));
        b.record_failure(t1);
        let snap = b.snapshot(t1);
        assert_eq!(snap.state, CircuitState::Open);
        assert_eq!(snap.open_until, Some(t1 + COOLDOWN));
        assert_eq!(b.try_acquire(t1 + COOLDOWN), Some(Admission::Probe));
    }

    #[test]
    fn a_lost_probe_stops_blocking_after_one_cooldown() {
        let (b, t0) = breaker();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + COOLDOWN;
        assert_eq!(b.try_acquire(t1), Some(Admission::Probe));
        assert_eq!(b.try_acquire(t1 + COOLDOWN / 2), None);
        assert_eq!(b.try_acquire(t1 + COOLDOWN), Some(Admission::Probe));
    }

    #[test]
    fn late_failure_while_open_keeps_the_deadline() {
        let (b, t0) = breaker();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        b.record_failure(t0 + Duration::from_secs(10));
        assert_eq!(b.snapshot(t0).open_until, Some(t0 + COOLDOWN));
    }

    #[test]
    fn trip_until_keeps_the_later_deadline() {
        let (b, t0) = breaker();
        b.trip_until(t0 + Duration::from_secs(60));
        assert_eq!(b.snapshot(t0).state, CircuitState::Open);
        b.trip_until(t0 + Duration::from_secs(5));
        assert_eq!(
            b.snapshot(t0).open_until,
            Some(t0 + Duration::from_secs(60))
        );
        b.trip_until(t0 + Duration::from_secs(90));
        assert_eq!(
            b.snapshot(t0).open_until,
            Some(t0 + Duration::from_secs(90))
        );
        let t1 = t0 + Duration::from_secs(90);
        assert_eq!(b.try_acquire(t1), Some(Admission::Probe));
        b.record_success();
        assert_eq!(b.snapshot(t1).state, CircuitState::Closed);
    }

    #[test]
    fn trip_until_in_the_past_goes_half_open() {
        let (b, t0) = breaker();
        b.trip_until(t0);
        assert_eq!(
            b.snapshot(t0 + Duration::from_secs(1)).state,
            CircuitState::HalfOpen
        );
    }

    #[test]
    fn zero_threshold_means_one() {
        let b = CircuitBreaker::new(0, COOLDOWN);
        let t0 = Instant::now();
        assert!(b.allows(t0));
        b.record_failure(t0);
        assert!(!b.allows(t0));
    }
}
