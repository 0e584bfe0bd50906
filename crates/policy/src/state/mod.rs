//! Where counters live: [`State`] is a cheap handle to one backend, in memory (one node)
//! or in Redis (shared by every node). Both implement the crate-internal [`Backend`]
//! trait, so limits and budgets are written once.
//!
//! What a backend keeps:
//! - rate counters: one GCRA "theoretical arrival time" per limit and scope value
//!   (module [`gcra`]);
//! - concurrency counters: requests in flight per limit and scope value;
//! - budget counters: spent and reserved USD per budget, period and scope value, and
//!   which alert thresholds fired;
//! - the kill switch: blocked scopes.
//!
//! Admission and budget reservation ([`Backend::admit`]) are one atomic step (one Lua
//! script in Redis, so one round trip per request): the rate counters are checked, then
//! the kill switch and the budgets, and everything is charged only when all of them pass.
//! Giving capacity back (a finished request's concurrency slot, a token correction, an
//! unsettled reservation) is queued with [`Backend::defer`] and may be applied in batches.

pub(crate) mod gcra;
mod memory;
mod redis_backend;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;

use crate::config::{StateBackendKind, StateConfig};
use crate::error::PolicyError;

pub(crate) use memory::Memory;

/// One counter to check (and, when every check of the call passes, to charge).
#[derive(Debug, Clone)]
pub(crate) enum Check {
    /// A GCRA rate counter: `limit` units per minute; the request costs `cost` units.
    Rate { key: String, limit: u64, cost: u64 },
    /// In-flight requests, at most `max`.
    Concurrency { key: String, max: u64 },
}

impl Check {
    pub(crate) fn key(&self) -> &str {
        match self {
            Check::Rate { key, .. } | Check::Concurrency { key, .. } => key,
        }
    }
}

/// The answer for one [`Check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    /// Units left after this request when allowed, before it when not.
    pub(crate) remaining: u64,
    /// Until the counter is back to its full capacity (rate counters; zero for others).
    pub(crate) reset: Duration,
    /// Rate counters: when the request would fit. `None` when waiting cannot help (a
    /// request larger than the limit) or is unknown (concurrency).
    pub(crate) retry_after: Option<Duration>,
}

/// A budget reservation asked for together with an admission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserve<'a> {
    pub(crate) lines: &'a [BudgetLine],
    /// Kill-switch entries (scopes) to test first.
    pub(crate) kill: &'a [String],
    /// Reserved on every line.
    pub(crate) amount: Decimal,
}

/// The answer of [`Backend::admit`].
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    /// One per check, in order. Every check was charged iff every one is allowed and the
    /// reservation, when one was asked for, is [`Reserved::Granted`].
    pub(crate) outcomes: Vec<Outcome>,
    /// The reservation's answer, when one was asked for and every check passed.
    pub(crate) reserved: Option<Reserved>,
    /// Charged on this node's local counters because Redis was unreachable
    /// (`on_failure: open`); releases must go to the same place.
    pub(crate) local: bool,
}

/// A capacity give-back, applied later and possibly batched.
#[derive(Debug, Clone)]
pub(crate) enum Deferred {
    /// Add `delta` units (negative gives back) to a rate counter of `limit` per minute.
    RateAdjust { key: String, limit: u64, delta: i64 },
    /// One in-flight request finished.
    Release { key: String },
    /// A reservation ended without being settled.
    Unreserve { key: String, amount: Decimal },
}

/// One budget counter a reservation touches.
#[derive(Debug, Clone)]
pub(crate) struct BudgetLine {
    pub(crate) key: String,
    pub(crate) limit: Decimal,
    /// `false` for a request already on the budget's downgrade model: counted, never refused.
    pub(crate) enforce: bool,
    /// Alert thresholds as amounts (fraction × limit), ascending.
    pub(crate) alerts: Vec<Decimal>,
    /// When the counter may be forgotten (the period's end plus a grace for late settles),
    /// in Unix milliseconds.
    pub(crate) expires_at_ms: i64,
}

/// The answer of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Every line was charged `amount` as reserved.
    Granted,
    /// Line `index` was spent; nothing was charged.
    Exhausted { index: usize },
    /// Kill-switch entry `index` of the call is set; nothing was charged.
    Killed { index: usize },
}

/// An alert threshold a settle crossed first in its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Crossed {
    pub(crate) line: usize,
    pub(crate) threshold: Decimal,
    pub(crate) spent: Decimal,
}

/// Whether the shared state is being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateHealth {
    /// Memory, or Redis answering.
    Ok,
    /// Redis unreachable; `on_failure: open` enforces on this node alone.
    Degraded,
    /// Redis unreachable; `on_failure: closed` refuses requests.
    Unavailable,
}

/// What a backend does; see the module doc.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Checks every counter; when all pass and `reserve` is given, tests its kill-switch
    /// entries and then every enforced line's `spent + reserved < limit`. Charges the
    /// counters and reserves `amount` on every line iff everything passes.
    async fn admit(
        &self,
        checks: &[Check],
        reserve: Option<Reserve<'_>>,
    ) -> Result<Admitted, PolicyError>;

    /// Queues a give-back; never blocks. `local` says where the charge was made.
    fn defer(&self, op: Deferred, local: bool);

    /// Moves a reservation into spend and reports thresholds crossed for the first time.
    /// Never fails: spend that cannot be written now is kept and written later.
    async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Decimal,
        actual: Decimal,
        local: bool,
    ) -> Vec<Crossed>;

    /// Raises a counter's spend to at least `spent` (start-up rebuild) and marks the
    /// thresholds it already passed as fired.
    async fn rebuild(&self, line: &BudgetLine, spent: Decimal) -> Result<(), PolicyError>;

    /// Spent and reserved of one budget counter.
    async fn budget(&self, key: &str) -> Result<(Decimal, Decimal), PolicyError>;

    /// Sets or clears a kill-switch entry.
    async fn set_killed(&self, entry: &str, killed: bool) -> Result<(), PolicyError>;

    /// Every kill-switch entry.
    async fn killed(&self) -> Result<Vec<String>, PolicyError>;

    fn health(&self) -> StateHealth;

    /// The prefix of every key (`tollgate:`); counters are named below it.
    fn prefix(&self) -> &str;
}

/// A handle to the counters shared by [`crate::Limiter`] and [`crate::Budgets`]; clones
/// share one backend.
#[derive(Clone)]
pub struct State(pub(crate) Arc<dyn Backend>);

impl State {
    /// Counters in this process.
    pub fn memory() -> Self {
        Self(Arc::new(Memory::new("")))
    }

    /// The backend `config` names. For Redis this starts two background tasks (batch
    /// flushing and a liveness heartbeat), so it must run inside a Tokio runtime; an
    /// unreachable Redis is not an error here: `on_failure` applies until it answers.
    pub async fn connect(config: &StateConfig) -> Result<Self, PolicyError> {
        match config.backend {
            StateBackendKind::Memory => Ok(Self::memory()),
            StateBackendKind::Redis => {
                let url = config.url.as_deref().ok_or_else(|| {
                    PolicyError::InvalidConfig("state.url: backend redis needs a url".into())
                })?;
                let backend = redis_backend::RedisBackend::connect(
                    url,
                    config.key_prefix.clone(),
                    config.on_failure,
                    config.timeout,
                )
                .await?;
                Ok(Self(backend))
            }
        }
    }

    /// [`StateHealth::Ok`] unless Redis is unreachable; for `/healthz` and metrics.
    pub fn health(&self) -> StateHealth {
        self.0.health()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// Nano-dollars (10⁻⁹ USD) per dollar: Redis keeps money as integers of this unit.
pub(crate) const NANOS_PER_USD: i64 = 1_000_000_000;

/// `usd` in whole nano-dollars, rounded up (a reservation or a spend is never
/// under-counted); saturates far beyond any real budget.
pub(crate) fn to_nanos(usd: Decimal) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    usd.checked_mul(Decimal::from(NANOS_PER_USD))
        .map(|n| n.ceil())
        .and_then(|n| n.to_i64())
        .unwrap_or(if usd.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
}

pub(crate) fn from_nanos(nanos: i64) -> Decimal {
    Decimal::new(nanos, 9).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rounds_up_to_whole_nano_dollars() {
        assert_eq!(to_nanos(Decimal::new(15, 6)), 15_000);
        assert_eq!(
            to_nanos(Decimal::new(1, 12)),
            1,
            "a fraction of a nano-dollar counts"
        );
        assert_eq!(to_nanos(Decimal::ZERO), 0);
        assert_eq!(from_nanos(15_000), Decimal::new(15, 6));
        assert_eq!(to_nanos(Decimal::MAX), i64::MAX);
    }
}
