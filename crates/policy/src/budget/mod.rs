//! Budgets in USD per key, user, team or tag value, for UTC daily, weekly or monthly
//! periods, with pre-authorisation.
//!
//! Before forwarding, the caller reserves the request's worst-case cost
//! ([`Budgets::reserve`]): estimated prompt tokens plus `max_tokens` at the model's price.
//! A budget counter refuses new reservations once `spent + reserved` has reached its limit,
//! and the check and the reservation are one atomic step, so however many requests race,
//! the reservations granted exceed the budget by less than one reservation. After the
//! answer the caller settles with the metered cost ([`Reservation::settle`]), which moves
//! the reservation into spend; a reservation dropped unsettled is released (nothing
//! spent). Spend can pass the budget only through reservations granted before it was
//! reached (less than one reservation in all) and through settles above their reservation.
//!
//! Alerts: each fraction in `alerts` fires once per period and counter, when a settle takes
//! spend to or past it; [`Reservation::settle`] returns the events, which are also logged
//! and POSTed to the budget's `webhook`.
//!
//! Money is exact: [`rust_decimal::Decimal`] in memory; in Redis, integer nano-dollars,
//! each amount rounded up to a whole nano-dollar. Redis compares `spent + reserved` with
//! the limit in Lua's doubles, which are exact up to 2^53 nano-dollars (about $9 million
//! per counter and period).

mod webhook;

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

pub use webhook::{WebhookNotifier, WebhookOptions, MAX_QUEUED_ALERTS};

use crate::config::{BudgetConfig, OnExhausted, Period, PolicyConfig};
use crate::error::PolicyError;
use crate::state::{BudgetLine, Deferred, Reserve, Reserved, State};
use crate::subject::{Scope, Subject};

/// How long after its period a budget counter is kept, so that requests that started in
/// the period and settle after it still find their counter.
const SETTLE_GRACE: chrono::Duration = chrono::Duration::days(1);

/// The answer of [`Budgets::reserve`].
#[derive(Debug)]
pub enum BudgetDecision {
    /// Forward the request; settle (or drop) the reservation afterwards.
    Reserved(Reservation),
    /// The budget is spent and says `downgrade`: reserve again for `model` (with that
    /// model's worst-case cost and `subject.model` set to it), then serve it.
    Downgrade { model: String, budget: String },
    /// Refuse the request: 429 `insufficient_quota`.
    Blocked(Blocked),
}

/// Why a request may not spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The budget for this scope is spent for the period.
    Exhausted {
        budget: String,
        scope: Scope,
        period_start: DateTime<Utc>,
    },
    /// An operator set the kill switch on this scope.
    Killed { scope: Scope },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::Exhausted { budget, scope, .. } => write!(
                f,
                "You exceeded your current quota: budget '{budget}' for {scope} is spent for this period"
            ),
            Blocked::Killed { scope } => {
                write!(f, "Spending is blocked for {scope} by an operator")
            }
        }
    }
}

/// A budget threshold crossed for the first time in its period. Serializes as the
/// webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertEvent {
    pub budget: String,
    /// `team:billing`, `key:svc`, `tag:project=apollo`.
    pub scope: String,
    pub period: Period,
    pub period_start: DateTime<Utc>,
    /// The fraction from `alerts` (0.8 for 80 %).
    pub threshold: Decimal,
    pub limit_usd: Decimal,
    pub spent_usd: Decimal,
}

/// One budget counter as it stands, from [`Budgets::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    pub budget: String,
    pub scope: String,
    pub period_start: DateTime<Utc>,
    pub limit_usd: Decimal,
    pub spent_usd: Decimal,
    pub reserved_usd: Decimal,
}

/// A reservation to ask the state for: the budget counters of one subject, the scopes
/// the kill switch is tested on, and the amount.
#[derive(Debug)]
pub(crate) struct Ask {
    scopes: Vec<Scope>,
    kill: Vec<String>,
    lines: Vec<BudgetLine>,
    info: Vec<LineInfo>,
    amount: Decimal,
}

impl Ask {
    pub(crate) fn reserve(&self) -> Reserve<'_> {
        Reserve {
            lines: &self.lines,
            kill: &self.kill,
            amount: self.amount,
        }
    }
}

/// What one line of a reservation stands for.
#[derive(Debug, Clone)]
struct LineInfo {
    budget: usize,
    scope: Scope,
    period_start: DateTime<Utc>,
}

/// Money held for one request on every budget it counts against.
pub struct Reservation {
    state: State,
    budgets: Vec<BudgetConfig>,
    notifier: WebhookNotifier,
    lines: Vec<BudgetLine>,
    info: Vec<LineInfo>,
    amount: Decimal,
    local: bool,
    settled: bool,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("amount", &self.amount)
            .field("counters", &self.lines.len())
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// The amount reserved (USD).
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// Replaces the reservation with the request's `actual` cost (USD) and returns the
    /// alerts this spend crossed (also logged and sent to webhooks). Never fails: while
    /// Redis is unreachable the spend is kept and written when it answers again.
    pub async fn settle(mut self, actual: Decimal) -> Vec<AlertEvent> {
        self.settled = true;
        let actual = actual.max(Decimal::ZERO);
        let crossed = self
            .state
            .0
            .settle(&self.lines, self.amount, actual, self.local)
            .await;
        let mut events = Vec::with_capacity(crossed.len());
        for c in crossed {
            let (Some(line), Some(info)) = (self.lines.get(c.line), self.info.get(c.line)) else {
                continue;
            };
            let Some(budget) = self.budgets.get(info.budget) else {
                continue;
            };
            let threshold = if budget.usd.is_zero() {
                Decimal::ZERO
            } else {
                (c.threshold / budget.usd).normalize()
            };
            let event = AlertEvent {
                budget: budget.name.clone(),
                scope: info.scope.to_string(),
                period: budget.period,
                period_start: info.period_start,
                threshold,
                limit_usd: line.limit,
                spent_usd: c.spent,
            };
            tracing::warn!(
                budget = %event.budget,
                scope = %event.scope,
                threshold = %event.threshold,
                spent_usd = %event.spent_usd,
                limit_usd = %event.limit_usd,
                "budget alert"
            );
            if let Some(url) = &budget.webhook {
                self.notifier.notify(url, &event);
            }
            events.push(event);
        }
        events
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for line in &self.lines {
            self.state.0.defer(
                Deferred::Unreserve {
                    key: line.key.clone(),
                    amount: self.amount,
                },
                self.local,
            );
        }
    }
}

/// Enforces the configured budgets; one per process.
pub struct Budgets {
    budgets: Vec<BudgetConfig>,
    state: State,
    notifier: WebhookNotifier,
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets")
            .field("budgets", &self.budgets.len())
            .finish_non_exhaustive()
    }
}

impl Budgets {
    /// Budgets for `budgets` (checked like [`PolicyConfig::validate`] does) counting in
    /// `state`, alerting through a [`WebhookNotifier`] with default options.
    pub fn new(budgets: &[BudgetConfig], state: State) -> Result<Self, PolicyError> {
        PolicyConfig {
            budgets: budgets.to_vec(),
            ..PolicyConfig::default()
        }
        .check()?;
        Ok(Self {
            budgets: budgets.to_vec(),
            state,
            notifier: WebhookNotifier::new(WebhookOptions::default()),
        })
    }

    /// Uses `notifier` for webhooks (other retry options, or one notifier shared).
    #[must_use]
    pub fn with_notifier(mut self, notifier: WebhookNotifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Reserves `worst_case` USD on every budget that applies to `subject`, unless the
    /// kill switch covers one of its scopes or one of its budgets is spent. Errors only
    /// with [`PolicyError::StateUnavailable`] (answer 503).
    pub async fn reserve(
        &self,
        subject: &Subject,
        worst_case: Decimal,
    ) -> Result<BudgetDecision, PolicyError> {
        self.reserve_at(subject, worst_case, Utc::now()).await
    }

    async fn reserve_at(
        &self,
        subject: &Subject,
        worst_case: Decimal,
        now: DateTime<Utc>,
    ) -> Result<BudgetDecision, PolicyError> {
        let ask = self.ask(subject, worst_case, now);
        let admitted = self.state.0.admit(&[], Some(ask.reserve())).await?;
        let reserved = admitted.reserved.ok_or(PolicyError::StateUnavailable)?;
        self.decide(ask, reserved, admitted.local, true)
    }

    /// What reserving `worst_case` for `subject` asks of the state.
    pub(crate) fn ask(&self, subject: &Subject, worst_case: Decimal, now: DateTime<Utc>) -> Ask {
        let (lines, info) = self.lines(subject, now);
        let scopes = Scope::of(subject);
        Ask {
            kill: scopes.iter().map(ToString::to_string).collect(),
            scopes,
            lines,
            info,
            amount: worst_case.max(Decimal::ZERO),
        }
    }

    /// The decision for the state's answer to `ask`. With `may_downgrade` false (a chain
    /// of downgrades is already as long as allowed) a spent budget blocks.
    pub(crate) fn decide(
        &self,
        ask: Ask,
        reserved: Reserved,
        local: bool,
        may_downgrade: bool,
    ) -> Result<BudgetDecision, PolicyError> {
        Ok(match reserved {
            Reserved::Granted => BudgetDecision::Reserved(Reservation {
                state: self.state.clone(),
                budgets: self.budgets.clone(),
                notifier: self.notifier.clone(),
                lines: ask.lines,
                info: ask.info,
                amount: ask.amount,
                local,
                settled: false,
            }),
            Reserved::Killed { index } => BudgetDecision::Blocked(Blocked::Killed {
                scope: ask
                    .scopes
                    .get(index)
                    .cloned()
                    .ok_or(PolicyError::StateUnavailable)?,
            }),
            Reserved::Exhausted { index } => {
                let Some(info) = ask.info.get(index) else {
                    return Err(PolicyError::StateUnavailable);
                };
                let Some(budget) = self.budgets.get(info.budget) else {
                    return Err(PolicyError::StateUnavailable);
                };
                match (&budget.on_exhausted, &budget.downgrade_to) {
                    (OnExhausted::Downgrade, Some(model)) if may_downgrade => {
                        tracing::info!(budget = %budget.name, to = %model, "budget downgrade");
                        BudgetDecision::Downgrade {
                            model: model.clone(),
                            budget: budget.name.clone(),
                        }
                    }
                    _ => BudgetDecision::Blocked(Blocked::Exhausted {
                        budget: budget.name.clone(),
                        scope: info.scope.clone(),
                        period_start: info.period_start,
                    }),
                }
            }
        })
    }

    /// Blocks (or unblocks) every request of `scope` at once on every node sharing the
    /// state. With Redis unreachable this fails with [`PolicyError::StateUnavailable`]
    /// rather than blocking on this node only.
    pub async fn set_killed(&self, scope: &Scope, killed: bool) -> Result<(), PolicyError> {
        self.state.0.set_killed(&scope.to_string(), killed).await?;
        tracing::warn!(scope = %scope, killed, "kill switch changed");
        Ok(())
    }

    /// Every scope the kill switch blocks.
    pub async fn killed(&self) -> Result<Vec<Scope>, PolicyError> {
        let entries = self.state.0.killed().await?;
        Ok(entries.iter().filter_map(|e| e.parse().ok()).collect())
    }

    /// Rebuilds spend at start-up from the ledger: each item is `(scope, period_start,
    /// usd)`, the spend of `scope` from `period_start` until now (the ledger's totals by
    /// team, key, user or tag since the start of a period). It applies to every budget
    /// of that scope kind whose current period starts at `period_start`; a counter that
    /// already holds more (another node is running) keeps its value, and thresholds the
    /// spend already passed do not alert again. Returns how many counters were set.
    pub async fn rebuild(
        &self,
        totals: impl IntoIterator<Item = (Scope, DateTime<Utc>, Decimal)>,
    ) -> Result<usize, PolicyError> {
        let now = Utc::now();
        let mut applied = 0;
        for (scope, period_start, usd) in totals {
            for (index, budget) in self.budgets.iter().enumerate() {
                if !scope.fits(budget) || budget.period.start(now) != period_start {
                    continue;
                }
                let line = self.line(index, &scope, now, true);
                self.state.0.rebuild(&line, usd).await?;
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// The current period's standing of every budget that applies to `subject`.
    pub async fn status(&self, subject: &Subject) -> Result<Vec<BudgetStatus>, PolicyError> {
        let (lines, info) = self.lines(subject, Utc::now());
        let mut statuses = Vec::with_capacity(lines.len());
        for (line, info) in lines.iter().zip(&info) {
            let (spent, reserved) = self.state.0.budget(&line.key).await?;
            statuses.push(BudgetStatus {
                budget: self.budgets[info.budget].name.clone(),
                scope: info.scope.to_string(),
                period_start: info.period_start,
                limit_usd: line.limit,
                spent_usd: spent,
                reserved_usd: reserved,
            });
        }
        Ok(statuses)
    }

    fn lines(&self, subject: &Subject, now: DateTime<Utc>) -> (Vec<BudgetLine>, Vec<LineInfo>) {
        let mut lines = Vec::new();
        let mut info = Vec::new();
        for (index, budget) in self.budgets.iter().enumerate() {
            if !budget.matcher.matches(subject) {
                continue;
            }
            let Some(scope) = Scope::for_budget(budget, subject) else {
                continue;
            };
            let on_target = budget.on_exhausted == OnExhausted::Downgrade
                && budget.downgrade_to.as_deref() == Some(subject.model.as_str());
            lines.push(self.line(index, &scope, now, !on_target));
            info.push(LineInfo {
                budget: index,
                period_start: budget.period.start(now),
                scope,
            });
        }
        (lines, info)
    }

    fn line(&self, index: usize, scope: &Scope, now: DateTime<Utc>, enforce: bool) -> BudgetLine {
        let budget = &self.budgets[index];
        let start = budget.period.start(now);
        let end = budget.period.end(start);
        let mut alerts: Vec<Decimal> = budget.alerts.iter().map(|f| *f * budget.usd).collect();
        alerts.sort();
        BudgetLine {
            key: format!(
                "{}b:{}:{}:{}",
                self.state.0.prefix(),
                budget.name,
                start.format("%Y%m%d"),
                scope
            ),
            limit: budget.usd,
            enforce,
            alerts,
            expires_at_ms: (end + SETTLE_GRACE).timestamp_millis(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn budgets(yaml: &str) -> Budgets {
        let config: PolicyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Budgets::new(&config.budgets, State::memory()).unwrap()
    }

    fn team(team: &str) -> Subject {
        Subject {
            key: "svc".into(),
            team: Some(team.into()),
            model: "big".into(),
            ..Subject::default()
        }
    }

    #[tokio::test]
    async fn a_new_period_starts_from_zero() {
        let b = budgets("budgets: [{ name: d, scope: team, usd: 1, period: daily }]");
        let day1: DateTime<Utc> = "2026-11-03T23:59:00Z".parse().unwrap();
        let day2: DateTime<Utc> = "2026-11-04T00:00:00Z".parse().unwrap();
        let BudgetDecision::Reserved(r) =
            b.reserve_at(&team("t"), Decimal::ONE, day1).await.unwrap()
        else {
            panic!("first reservation refused");
        };
        let events = r.settle(Decimal::ONE).await;
        assert!(events.is_empty());
        assert!(matches!(
            b.reserve_at(&team("t"), Decimal::ONE, day1).await.unwrap(),
            BudgetDecision::Blocked(Blocked::Exhausted { .. })
        ));
        assert!(matches!(
            b.reserve_at(&team("t"), Decimal::ONE, day2).await.unwrap(),
            BudgetDecision::Reserved(_)
        ));
    }
}
