//! Rate limits: requests per minute, tokens per minute and requests in flight, per key,
//! user, team, model, route or globally, with the actions reject, queue and downgrade.
//!
//! [`Limiter::admit`] runs before a request is forwarded. Every limit that matches the
//! request contributes its counters; they are checked and charged in one atomic step, all
//! or nothing, so a request refused by one limit consumes nothing of the others. Tokens are
//! admitted on the caller's estimate; [`Permit::correct`] replaces it with the metered
//! count. Dropping the [`Permit`] ends the request for the concurrency limits.
//!
//! [`Limiter::admit_reserving`] also reserves the request's worst-case cost on its
//! budgets in the same atomic step (one Redis round trip): when a budget refuses, the
//! admission is undone, and a budget that says `downgrade` sends the request through the
//! limits again as a request for its cheaper model.
//!
//! Counters are named after their limit and what defines their meaning (scope, and the
//! `rpm` or `tpm` figure): a config reload that keeps a limit keeps its counts, one that
//! changes it starts it afresh.
//!
//! When limits refuse a request, the action is chosen as follows: if any refusing limit
//! says `reject` (or the request can never fit: more tokens than a whole minute's
//! limit), the request is rejected. Otherwise, if any says
//! `downgrade`, the request is re-admitted as a request for that limit's `downgrade_to`
//! model (a limit never applies to requests for its own downgrade target). Otherwise all
//! refusing limits say `queue`: the request waits its turn in the first one's queue and
//! is retried when the counter has room, until `queue.max_wait` is up.

mod headers;
mod queue;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

pub use headers::{Quota, RateHeaders};
use queue::{FairQueue, Ticket};

use rust_decimal::Decimal;

use crate::budget::{Blocked, BudgetDecision, Budgets, Reservation};
use crate::config::{LimitConfig, OnExceed, PolicyConfig};
use crate::error::PolicyError;
use crate::state::{Check, Deferred, Outcome, Reserved, State};
use crate::subject::Subject;

/// Most model changes one admission follows (`a` downgrades to `b`, `b` to `c`…); a longer
/// chain, or a cycle, is rejected.
pub const MAX_DOWNGRADES: usize = 4;

/// `Retry-After` for a request refused by a concurrency limit: when a slot frees is not
/// known, so clients are told to try again after this.
pub const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often a queued request waiting for a concurrency slot looks again when no local
/// release woke it (slots freed on other nodes are not signalled).
const CONCURRENCY_POLL: Duration = Duration::from_millis(50);

/// Queues kept before idle ones are dropped from the map.
const QUEUE_MAP_SWEEP: usize = 1024;

/// Which counter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Requests in flight.
    Concurrency,
    /// A managed key's lifetime `max_requests` (see [`crate::Keys::charge`]).
    KeyRequests,
}

impl LimitKind {
    /// A low-cardinality label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Concurrency => "concurrency",
            LimitKind::KeyRequests => "key_requests",
        }
    }
}

/// The answer of [`Limiter::admit`].
#[derive(Debug)]
pub enum Admission {
    /// Forward the request; keep the permit until it has finished (streams: until the last
    /// byte), then drop it.
    Granted(Permit),
    /// Answer 429 with [`Rejection::headers`].
    Rejected(Rejection),
}

/// The answer of [`Limiter::admit_reserving`].
// Returned once per request and taken apart at once: boxing the common, large variant
// would cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Verdict {
    /// Forward the request (to [`Permit::model`] when a limit or budget downgraded it);
    /// keep the permit until it has finished and settle the reservation.
    Granted(Permit, Reservation),
    /// A limit refused: answer 429 with [`Rejection::headers`].
    Rejected(Rejection),
    /// A budget or the kill switch refused: answer 429 `insufficient_quota`.
    Blocked(Blocked),
}

/// Prices a model's worst case for a request (USD).
pub type WorstCase<'a> = &'a (dyn Fn(&str) -> Decimal + Sync);

/// What one admission run decided; the reservation is there iff budgets were asked.
#[allow(clippy::large_enum_variant)] // as for `Verdict`
enum Ran {
    Granted(Permit, Option<Reservation>),
    Rejected(Rejection),
    Blocked(Blocked),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The refusing limit's name (`max_requests` for a key's lifetime cap).
    pub limit: String,
    pub kind: LimitKind,
    /// When trying again can succeed; `None` when it cannot (a request larger than a
    /// minute's tokens, a key past its `max_requests`).
    pub retry_after: Option<Duration>,
    /// Whether a `queue` limit turned the request away: its queue was full, or the
    /// request could not be admitted within `queue.max_wait`.
    pub queued: bool,
    pub rate: RateHeaders,
}

impl Rejection {
    /// The refusal of a managed key that has used its lifetime `max_requests`: final, no
    /// `Retry-After`.
    pub fn key_requests_used() -> Self {
        Self {
            limit: "max_requests".to_owned(),
            kind: LimitKind::KeyRequests,
            retry_after: None,
            queued: false,
            rate: RateHeaders::default(),
        }
    }

    /// The rate headers plus `retry-after` (whole seconds, rounded up) and
    /// `retry-after-ms`, for the 429 answer.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.rate.to_pairs();
        if let Some(wait) = self.retry_after {
            let ms = wait.as_millis();
            pairs.push(("retry-after", ms.div_ceil(1000).max(1).to_string()));
            pairs.push(("retry-after-ms", ms.to_string()));
        }
        pairs
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            LimitKind::Requests => "requests per minute",
            LimitKind::Tokens => "tokens per minute",
            LimitKind::Concurrency => "concurrent requests",
            LimitKind::KeyRequests => "requests allowed for this key",
        };
        write!(f, "Rate limit reached for {what} (limit '{}')", self.limit)?;
        match (self.kind, self.retry_after) {
            (LimitKind::Tokens, None) => f.write_str(": the request is larger than the limit"),
            (_, Some(wait)) => write!(f, ": try again in {}", headers::format_reset(wait)),
            (_, None) => Ok(()),
        }
    }
}

/// An admitted request's hold on its limits.
pub struct Permit {
    backend: State,
    /// `(counter, limit)` of every tokens-per-minute counter charged.
    token_counters: Vec<(String, u64)>,
    tokens: u64,
    concurrency: Vec<String>,
    local: bool,
    model: Option<String>,
    rate: RateHeaders,
    waited: Duration,
    released: Arc<Notify>,
}

impl Permit {
    /// The model to serve the request with instead of the requested one, after a
    /// `downgrade`.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The rate headers for the response.
    pub fn rate(&self) -> &RateHeaders {
        &self.rate
    }

    /// How long the request waited in a queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Replaces the tokens counted so far (the estimate at admission) with `tokens`, the
    /// metered input + output; may be called again as a stream goes on. Never blocks.
    pub fn correct(&mut self, tokens: u64) {
        let delta = i128::from(tokens) - i128::from(self.tokens);
        let Ok(delta) = i64::try_from(delta) else {
            return;
        };
        if delta == 0 {
            return;
        }
        self.tokens = tokens;
        for (key, limit) in &self.token_counters {
            self.backend.0.defer(
                Deferred::RateAdjust {
                    key: key.clone(),
                    limit: *limit,
                    delta,
                },
                self.local,
            );
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        for key in self.concurrency.drain(..) {
            self.backend.0.defer(Deferred::Release { key }, self.local);
        }
        self.released.notify_waiters();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("model", &self.model)
            .field("rate", &self.rate)
            .field("tokens", &self.tokens)
            .field("waited", &self.waited)
            .finish_non_exhaustive()
    }
}

/// One counter of one limit, for one request.
struct Planned {
    /// Index into the limits.
    limit: usize,
    kind: LimitKind,
    check: Check,
}

/// Enforces the configured limits; share one per process (it holds the wait queues).
pub struct Limiter {
    limits: Vec<LimitConfig>,
    state: State,
    queues: Mutex<HashMap<String, Arc<FairQueue>>>,
    released: Arc<Notify>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits.len())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for `limits` (checked like [`PolicyConfig::validate`] does) counting in
    /// `state`.
    pub fn new(limits: &[LimitConfig], state: State) -> Result<Self, PolicyError> {
        PolicyConfig {
            limits: limits.to_vec(),
            ..PolicyConfig::default()
        }
        .check()?;
        Ok(Self {
            limits: limits.to_vec(),
            state,
            queues: Mutex::new(HashMap::new()),
            released: Arc::new(Notify::new()),
        })
    }

    /// Admits a request estimated at `tokens` (input + output), waiting in a queue when a
    /// `queue` limit says so. Errors only with [`PolicyError::StateUnavailable`] (Redis
    /// down and `on_failure: closed`; answer 503).
    pub async fn admit(&self, subject: &Subject, tokens: u64) -> Result<Admission, PolicyError> {
        Ok(match self.run(subject, tokens, None).await? {
            Ran::Granted(permit, _) => Admission::Granted(permit),
            Ran::Rejected(rejection) => Admission::Rejected(rejection),
            // Only budgets block, and none were asked.
            Ran::Blocked(_) => return Err(PolicyError::StateUnavailable),
        })
    }

    /// [`Limiter::admit`] and [`Budgets::reserve`] in one atomic step: the request is
    /// admitted by the limits and reserves `worst_case(model)` on its budgets, or neither.
    /// A budget that says `downgrade` re-admits the request for its cheaper model (with
    /// that model's worst case), within [`MAX_DOWNGRADES`] model changes in all.
    pub async fn admit_reserving(
        &self,
        subject: &Subject,
        tokens: u64,
        budgets: &Budgets,
        worst_case: WorstCase<'_>,
    ) -> Result<Verdict, PolicyError> {
        Ok(
            match self
                .run(subject, tokens, Some((budgets, worst_case)))
                .await?
            {
                Ran::Granted(permit, Some(reservation)) => Verdict::Granted(permit, reservation),
                // A run with budgets always reserves before it grants.
                Ran::Granted(_, None) => return Err(PolicyError::StateUnavailable),
                Ran::Rejected(rejection) => Verdict::Rejected(rejection),
                Ran::Blocked(blocked) => Verdict::Blocked(blocked),
            },
        )
    }

    async fn run(
        &self,
        subject: &Subject,
        tokens: u64,
        budgets: Option<(&Budgets, WorstCase<'_>)>,
    ) -> Result<Ran, PolicyError> {
        let started = Instant::now();
        // Cloned only when a downgrade changes its model.
        let mut subject = std::borrow::Cow::Borrowed(subject);
        let mut model = None;
        let mut downgrades = 0;
        let mut ticket: Option<(String, Ticket, Instant)> = None;
        loop {
            let plan = self.plan(&subject, tokens);
            if ticket.is_none() {
                // Newcomers queue behind waiters instead of overtaking them.
                if let Some((key, limit)) = self.busy_queue(&plan) {
                    match self.wait_turn(&subject, &key, limit).await {
                        Some(entered) => ticket = Some(entered),
                        None => return Ok(Ran::Rejected(self.queue_full(&plan, limit))),
                    }
                }
            }
            let checks: Vec<Check> = plan.iter().map(|p| p.check.clone()).collect();
            let ask = budgets.map(|(budgets, worst_case)| {
                budgets.ask(&subject, worst_case(&subject.model), chrono::Utc::now())
            });
            let admitted = self
                .state
                .0
                .admit(&checks, ask.as_ref().map(|ask| ask.reserve()))
                .await?;
            let rate = rate_headers(&plan, &admitted.outcomes);
            let refused: Vec<(&Planned, &Outcome)> = plan
                .iter()
                .zip(&admitted.outcomes)
                .filter(|(_, outcome)| !outcome.allowed)
                .collect();
            if refused.is_empty() {
                let reservation = match (budgets, ask) {
                    (Some((budgets, _)), Some(ask)) => {
                        let reserved = admitted.reserved.unwrap_or(Reserved::Granted);
                        let may_downgrade = downgrades < MAX_DOWNGRADES;
                        match budgets.decide(ask, reserved, admitted.local, may_downgrade)? {
                            BudgetDecision::Reserved(reservation) => Some(reservation),
                            BudgetDecision::Blocked(blocked) => return Ok(Ran::Blocked(blocked)),
                            BudgetDecision::Downgrade { model: to, .. } => {
                                downgrades += 1;
                                subject.to_mut().model.clone_from(&to);
                                model = Some(to);
                                ticket = None;
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                let permit = self.permit(
                    &plan,
                    admitted.local,
                    tokens,
                    model,
                    rate,
                    started.elapsed(),
                );
                return Ok(Ran::Granted(permit, reservation));
            }
            let action = |p: &Planned| self.limits[p.limit].on_exceed;
            let hopeless = |p: &Planned, o: &Outcome| {
                o.retry_after.is_none() && p.kind != LimitKind::Concurrency
            };
            let reject = |p: &Planned, o: &Outcome, queued: bool| {
                Ok(Ran::Rejected(self.rejection(p, o, rate, queued)))
            };
            if let Some((p, o)) = refused
                .iter()
                .find(|(p, o)| action(p) == OnExceed::Reject || hopeless(p, o))
            {
                return reject(p, o, false);
            }
            if let Some((p, o)) = refused
                .iter()
                .find(|(p, _)| action(p) == OnExceed::Downgrade)
            {
                let to = self.limits[p.limit]
                    .downgrade_to
                    .clone()
                    .unwrap_or_default();
                downgrades += 1;
                if downgrades > MAX_DOWNGRADES || to.is_empty() {
                    return reject(p, o, false);
                }
                subject.to_mut().model.clone_from(&to);
                model = Some(to);
                ticket = None;
                continue;
            }
            // Every refusing limit queues: wait in the first one's queue, unless the
            // counter cannot have room before the queue's deadline.
            let Some((p, o)) = refused.first() else {
                continue;
            };
            let index = p.limit;
            let wait = match (p.kind, o.retry_after) {
                (LimitKind::Concurrency, _) | (_, None) => CONCURRENCY_POLL,
                (_, Some(wait)) => wait,
            };
            let max_wait = self.limits[index].queue.unwrap_or_default().max_wait;
            let deadline = match &ticket {
                Some((_, _, deadline)) => *deadline,
                None => Instant::now() + max_wait,
            };
            if Instant::now() + wait > deadline {
                return reject(p, o, true);
            }
            if ticket.is_none() {
                let key = p.check.key().to_owned();
                match self.wait_turn(&subject, &key, index).await {
                    Some(entered) => ticket = Some(entered),
                    None => return reject(p, o, true),
                }
                // The turn may have taken a while: look at the counter again first.
                continue;
            }
            if p.kind == LimitKind::Concurrency {
                let released = self.released.notified();
                let _ = tokio::time::timeout(wait, released).await;
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The counters that apply to `subject`, in config order.
    fn plan(&self, subject: &Subject, tokens: u64) -> Vec<Planned> {
        let prefix = self.state.0.prefix();
        let mut plan = Vec::new();
        for (index, limit) in self.limits.iter().enumerate() {
            if limit.on_exceed == OnExceed::Downgrade
                && limit.downgrade_to.as_deref() == Some(subject.model.as_str())
            {
                continue;
            }
            if !limit.matcher.matches(subject) {
                continue;
            }
            let Some(value) = limit.scope.value(subject) else {
                continue;
            };
            // Named after what gives the count its meaning: a reload that changes the scope
            // or the rate starts the counter afresh, one that keeps them keeps it.
            let key = |kind: &str| {
                format!(
                    "{prefix}rl:{}:{}:{kind}:{value}",
                    limit.name,
                    limit.scope.as_str()
                )
            };
            if let Some(rpm) = limit.rpm {
                plan.push(Planned {
                    limit: index,
                    kind: LimitKind::Requests,
                    check: Check::Rate {
                        key: key(&format!("r{rpm}")),
                        limit: rpm,
                        cost: 1,
                    },
                });
            }
            if let Some(tpm) = limit.tpm {
                plan.push(Planned {
                    limit: index,
                    kind: LimitKind::Tokens,
                    check: Check::Rate {
                        key: key(&format!("t{tpm}")),
                        limit: tpm,
                        cost: tokens,
                    },
                });
            }
            if let Some(max) = limit.concurrency {
                plan.push(Planned {
                    limit: index,
                    kind: LimitKind::Concurrency,
                    check: Check::Concurrency { key: key("c"), max },
                });
            }
        }
        plan
    }

    /// The first queue of a `queue` limit in the plan that has waiters.
    fn busy_queue(&self, plan: &[Planned]) -> Option<(String, usize)> {
        let queues = self.queues.lock();
        plan.iter().find_map(|p| {
            let index = p.limit;
            if self.limits[index].on_exceed != OnExceed::Queue {
                return None;
            }
            let key = p.check.key();
            queues
                .get(key)
                .filter(|q| q.is_busy())
                .map(|_| (key.to_owned(), index))
        })
    }

    /// Joins the queue of counter `key` and waits for this request's turn; `None` when the
    /// queue is full or the turn did not come before the limit's `max_wait`.
    async fn wait_turn(
        &self,
        subject: &Subject,
        key: &str,
        limit: usize,
    ) -> Option<(String, Ticket, Instant)> {
        let config = self.limits[limit].queue.unwrap_or_default();
        let deadline = Instant::now() + config.max_wait;
        let queue = {
            let mut queues = self.queues.lock();
            if queues.len() >= QUEUE_MAP_SWEEP {
                queues.retain(|_, q| q.is_busy());
            }
            Arc::clone(
                queues
                    .entry(key.to_owned())
                    .or_insert_with(|| FairQueue::new(config.max_depth)),
            )
        };
        let mut ticket = queue.enter(&subject.key)?;
        tokio::time::timeout_at(deadline.into(), ticket.turn())
            .await
            .ok()?;
        Some((key.to_owned(), ticket, deadline))
    }

    fn queue_full(&self, plan: &[Planned], limit: usize) -> Rejection {
        let kind = plan
            .iter()
            .find(|p| p.limit == limit)
            .map_or(LimitKind::Requests, |p| p.kind);
        Rejection {
            limit: self.limits[limit].name.clone(),
            kind,
            retry_after: Some(CONCURRENCY_RETRY_AFTER),
            queued: true,
            rate: RateHeaders::default(),
        }
    }

    fn rejection(&self, p: &Planned, o: &Outcome, rate: RateHeaders, queued: bool) -> Rejection {
        let retry_after = match p.kind {
            LimitKind::Concurrency => Some(CONCURRENCY_RETRY_AFTER),
            _ => o.retry_after,
        };
        Rejection {
            limit: self.limits[p.limit].name.clone(),
            kind: p.kind,
            retry_after,
            queued,
            rate,
        }
    }

    fn permit(
        &self,
        plan: &[Planned],
        local: bool,
        tokens: u64,
        model: Option<String>,
        rate: RateHeaders,
        waited: Duration,
    ) -> Permit {
        let mut token_counters = Vec::new();
        let mut concurrency = Vec::new();
        for p in plan {
            match (&p.kind, &p.check) {
                (LimitKind::Tokens, Check::Rate { key, limit, .. }) => {
                    token_counters.push((key.clone(), *limit));
                }
                (LimitKind::Concurrency, Check::Concurrency { key, .. }) => {
                    concurrency.push(key.clone());
                }
                _ => {}
            }
        }
        Permit {
            backend: self.state.clone(),
            token_counters,
            tokens,
            concurrency,
            local,
            model,
            rate,
            waited,
            released: Arc::clone(&self.released),
        }
    }
}

/// The tightest request and token quotas among the plan's rate counters.
fn rate_headers(plan: &[Planned], outcomes: &[Outcome]) -> RateHeaders {
    let mut headers = RateHeaders::default();
    for (p, o) in plan.iter().zip(outcomes) {
        let Check::Rate { limit, .. } = p.check else {
            continue;
        };
        let quota = Quota {
            limit,
            remaining: o.remaining,
            reset: o.reset,
        };
        match p.kind {
            LimitKind::Requests => RateHeaders::merge(&mut headers.requests, quota),
            LimitKind::Tokens => RateHeaders::merge(&mut headers.tokens, quota),
            LimitKind::Concurrency | LimitKind::KeyRequests => {}
        }
    }
    headers
}
