//! Governance in the request path: managed keys, rate limits, budgets and the kill switch.
//!
//! After authentication, parsing and routing, a managed key's request is counted against
//! its lifetime `max_requests` (in the key store, whatever else is configured); then the
//! request is admitted by the rate limits (on its estimated tokens; rejected with OpenAI's
//! 429 and `x-ratelimit-*` headers, queued, or downgraded to a cheaper model) and reserves
//! its worst-case cost on every budget that applies (refused with 429
//! `insufficient_quota`, or downgraded), in one atomic step. When it ends, the token
//! estimate is corrected with the metered count and the reservation settled with the
//! metered cost; alerts go to the log, metrics and webhooks.
//!
//! Counters live in the configured state (memory, or Redis shared by every node). A reload
//! that leaves `state:` as it was keeps that state: limits whose definition did not change
//! keep their counts, budgets keep their spend, the kill switch stays set. Budget spend of
//! every scope (key, user, team, tag) is rebuilt from the usage ledger whenever limits or
//! budgets are set up (at start and after a reload that changed them).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tollgate_config::{Config, LedgerSink, ManagedKeysConfig};
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_ledger::{AggregateQuery, GroupBy, Ledger};
use tollgate_metering::ModelPrice;
use tollgate_policy::{
    BudgetScope, Budgets, Charge, Decimal, Keys, Limiter, Permit, PolicyError, PostgresKeyStore,
    Rejection, Reservation, Scope, SqliteKeyStore, State, StateConfig, Subject, Verdict,
    WebhookNotifier, WebhookOptions,
};

use arc_swap::ArcSwap;

use crate::auth::GatewayKey;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Output tokens assumed for a request that sets no limit, for its worst-case cost: a
/// long answer of most models. A request that asks for more reserves what it asks for.
const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Managed keys and governance, shared by the proxy and the admin API.
#[derive(Clone)]
pub struct PolicyHandles {
    governance: Arc<ArcSwap<GovernanceSlot>>,
    ledger: Arc<Ledger>,
    pub keys: Option<Arc<Keys>>,
}

/// The governance of one version of `limits`, `budgets` and `state`.
struct GovernanceSlot {
    fingerprint: u64,
    governance: Arc<Governance>,
}

/// Identifies a version of the config's `limits`, `budgets` and `state`: a reload that
/// leaves them as they were keeps the running limiter, budgets and their queues.
pub fn policy_fingerprint(config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}{:?}{:?}", config.limits, config.budgets, config.state).hash(&mut hasher);
    hasher.finish()
}

impl PolicyHandles {
    /// Opens the managed-key store when the config has one. A store that cannot be opened
    /// is logged and left out: config keys keep working.
    pub fn from_config(config: &Config, ledger: Arc<Ledger>) -> Self {
        let keys = config
            .managed_keys
            .as_ref()
            .and_then(|c| match open_keys(c) {
                Ok(keys) => Some(Arc::new(keys)),
                Err(err) => {
                    tracing::error!(error = %err, "managed keys are unavailable");
                    None
                }
            });
        let slot = GovernanceSlot {
            fingerprint: policy_fingerprint(config),
            governance: Arc::new(Governance::new(
                config,
                Arc::new(SharedState::new(&config.state)),
                ledger.clone(),
            )),
        };
        Self {
            governance: Arc::new(ArcSwap::from_pointee(slot)),
            ledger,
            keys,
        }
    }

    /// The governance of the snapshot's config. When a reload changed `limits`, `budgets`
    /// or `state`, the first request on the new config sets up new limits and budgets
    /// (rebuilding budget spend from the ledger) over the same state, unless `state:`
    /// itself changed; otherwise the running ones carry on.
    pub fn governance(&self, snap: &Snapshot) -> Arc<Governance> {
        let slot = self.governance.load();
        if slot.fingerprint == snap.policy_fingerprint {
            return slot.governance.clone();
        }
        let shared = if slot.governance.shared.same_config(&snap.config.state) {
            tracing::info!("limits or budgets changed: unchanged ones keep their counters");
            slot.governance.shared.clone()
        } else {
            tracing::info!("the state backend changed: limits and budgets start afresh");
            Arc::new(SharedState::new(&snap.config.state))
        };
        let fresh = Arc::new(GovernanceSlot {
            fingerprint: snap.policy_fingerprint,
            governance: Arc::new(Governance::new(&snap.config, shared, self.ledger.clone())),
        });
        // Two first requests may race here; either governance works on the same state.
        self.governance.store(fresh.clone());
        fresh.governance.clone()
    }

    /// The governance the latest config set up, for the admin API.
    pub fn current(&self) -> Arc<Governance> {
        self.governance.load().governance.clone()
    }

    /// The active managed key with this secret.
    pub fn managed_key(&self, secret: &[u8]) -> Option<Arc<GatewayKey>> {
        let key = self.keys.as_ref()?.authenticate(secret)?;
        key.is_active(Utc::now())
            .then(|| Arc::new(GatewayKey::managed(&key)))
    }

    /// Counts the request against the key's lifetime `max_requests`; a 429 once it has
    /// used them all. `None` for keys without a cap. Dropping the charge gives it back.
    pub fn charge(
        &self,
        key: &GatewayKey,
        metrics: &Metrics,
    ) -> Result<Option<Charge>, GatewayError> {
        let (Some(id), Some(max), Some(keys)) = (&key.managed_id, key.max_requests, &self.keys)
        else {
            return Ok(None);
        };
        match keys.charge(id, max) {
            Some(charge) => Ok(Some(charge)),
            None => {
                let rejection = Rejection::key_requests_used();
                metrics.limit_rejected(&rejection.limit, rejection.kind.as_str());
                Err(
                    GatewayError::new(ErrorKind::RateLimited, rejection.to_string())
                        .with_code("rate_limit_exceeded")
                        .with_headers(rejection.headers()),
                )
            }
        }
    }
}

/// The counters of one `state:` config: connected on first use, kept across reloads that
/// leave `state:` as it was.
struct SharedState {
    config: StateConfig,
    state: tokio::sync::OnceCell<State>,
}

impl SharedState {
    fn new(config: &StateConfig) -> Self {
        Self {
            config: config.clone(),
            state: tokio::sync::OnceCell::new(),
        }
    }

    fn same_config(&self, config: &StateConfig) -> bool {
        format!("{:?}", self.config) == format!("{config:?}")
    }

    async fn get(&self) -> Result<State, PolicyError> {
        self.state
            .get_or_try_init(|| State::connect(&self.config))
            .await
            .cloned()
    }
}

/// The limits and budgets of one config version, over counters that outlive reloads.
pub struct Governance {
    config: Config,
    shared: Arc<SharedState>,
    engines: tokio::sync::OnceCell<Engines>,
    ledger: Arc<Ledger>,
}

struct Engines {
    limiter: Limiter,
    budgets: Budgets,
}

/// What a request holds while it runs: released (and settled) when it ends.
#[derive(Default)]
pub struct Admitted {
    pub permit: Option<Permit>,
    pub reservation: Option<Reservation>,
    /// The model a limit or budget downgraded the request to.
    pub downgraded_to: Option<String>,
}

impl Governance {
    fn new(config: &Config, shared: Arc<SharedState>, ledger: Arc<Ledger>) -> Self {
        Self {
            config: config.clone(),
            shared,
            engines: tokio::sync::OnceCell::new(),
            ledger,
        }
    }

    async fn engines(&self) -> Result<&Engines, GatewayError> {
        self.engines
            .get_or_try_init(|| async {
                let state = self.shared.get().await?;
                let limiter = Limiter::new(&self.config.limits, state.clone())?;
                let budgets = Budgets::new(&self.config.budgets, state)?
                    .with_notifier(WebhookNotifier::new(WebhookOptions::default()));
                if !self.config.budgets.is_empty() {
                    // The ledger's reads block: off the async workers.
                    let ledger = self.ledger.clone();
                    let budgets_config = self.config.budgets.clone();
                    let spent =
                        tokio::task::spawn_blocking(move || spend_so_far(&ledger, &budgets_config))
                            .await
                            .unwrap_or_default();
                    let rebuilt = budgets.rebuild(spent).await?;
                    tracing::info!(counters = rebuilt, "budget spend rebuilt from the ledger");
                }
                Ok::<_, PolicyError>(Engines { limiter, budgets })
            })
            .await
            .map_err(|err| unavailable(&err))
    }
}

/// How long rebuilding budget spend waits for spooled records (a spool replayed after a
/// crash included) to reach the sink before it reads the totals.
const REBUILD_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Spend per budget scope since its period began, from the usage ledger's totals.
fn spend_so_far(
    ledger: &Ledger,
    budgets: &[tollgate_policy::BudgetConfig],
) -> Vec<(Scope, DateTime<Utc>, Decimal)> {
    if let Err(err) = ledger.sync(REBUILD_SYNC_WAIT) {
        tracing::warn!(error = %err, "spooled records not yet shipped; spend may be short");
    }
    let now = Utc::now();
    let mut totals = Vec::new();
    for budget in budgets {
        let start = budget.period.start(now);
        let by = match budget.scope {
            BudgetScope::Key => GroupBy::Key,
            BudgetScope::Team => GroupBy::Team,
            BudgetScope::User => GroupBy::User,
            BudgetScope::Tag => match &budget.tag {
                Some(name) => GroupBy::Tag(name.clone()),
                None => continue,
            },
        };
        let query = AggregateQuery {
            by,
            since_ms: Some(start.timestamp_millis()),
            until_ms: None,
        };
        match ledger.aggregate(&query) {
            Ok(rows) => totals.extend(rows.into_iter().filter_map(|row| {
                let group = row.group?;
                let scope = match (&budget.scope, &budget.tag) {
                    (BudgetScope::Key, _) => Scope::Key(group),
                    (BudgetScope::Team, _) => Scope::Team(group),
                    (BudgetScope::User, _) => Scope::User(group),
                    (BudgetScope::Tag, tag) => Scope::Tag {
                        name: tag.clone()?,
                        value: group,
                    },
                };
                Some((scope, start, row.cost))
            })),
            Err(err) => tracing::warn!(budget = %budget.name, error = %err,
                "spend not rebuilt from the ledger"),
        }
    }
    totals
}

impl Governance {
    /// Admits the request: rate limits on `estimated_tokens` and its worst-case cost on
    /// the budgets, in one step. `worst_case` prices a model's worst case. A downgrade is
    /// reported in [`Admitted::downgraded_to`].
    pub async fn admit(
        &self,
        subject: &Subject,
        estimated_tokens: u64,
        worst_case: &(dyn Fn(&str) -> Decimal + Sync),
        metrics: &Metrics,
    ) -> Result<Admitted, GatewayError> {
        let engines = self.engines().await?;
        let verdict = engines
            .limiter
            .admit_reserving(subject, estimated_tokens, &engines.budgets, worst_case)
            .await
            .map_err(|e| unavailable(&e))?;
        match verdict {
            Verdict::Granted(permit, reservation) => Ok(Admitted {
                downgraded_to: permit.model().map(str::to_owned),
                permit: Some(permit),
                reservation: Some(reservation),
            }),
            Verdict::Rejected(rejection) => {
                metrics.limit_rejected(&rejection.limit, rejection.kind.as_str());
                Err(
                    GatewayError::new(ErrorKind::RateLimited, rejection.to_string())
                        .with_code("rate_limit_exceeded")
                        .with_headers(rejection.headers()),
                )
            }
            Verdict::Blocked(blocked) => {
                metrics.budget_blocked();
                Err(
                    GatewayError::new(ErrorKind::RateLimited, blocked.to_string())
                        .with_code("insufficient_quota"),
                )
            }
        }
    }

    /// Blocks or unblocks a key (`key:<name>`), user, team or tag at once.
    pub async fn set_killed(&self, scope: &Scope, killed: bool) -> Result<(), GatewayError> {
        let engines = self.engines().await?;
        engines
            .budgets
            .set_killed(scope, killed)
            .await
            .map_err(|e| unavailable(&e))
    }

    /// The scopes the kill switch blocks.
    pub async fn killed(&self) -> Result<Vec<Scope>, GatewayError> {
        let engines = self.engines().await?;
        engines.budgets.killed().await.map_err(|e| unavailable(&e))
    }
}

impl Admitted {
    /// Corrects the token estimate and settles the reservation with what the request
    /// really used and cost; alerts that crossed a threshold are logged and counted.
    pub async fn finish(&mut self, tokens: u64, cost: Decimal, metrics: &Metrics) {
        if let Some(permit) = &mut self.permit {
            permit.correct(tokens);
        }
        if let Some(reservation) = self.reservation.take() {
            for alert in reservation.settle(cost).await {
                metrics.budget_alert(&alert.budget);
                tracing::warn!(budget = %alert.budget, scope = %alert.scope,
                    threshold = %alert.threshold, spent_usd = %alert.spent_usd,
                    limit_usd = %alert.limit_usd, "budget alert");
            }
        }
        self.permit = None;
    }
}

/// The worst-case cost of a request: every estimated prompt token and its output cap
/// (or [`DEFAULT_MAX_OUTPUT_TOKENS`]) at the model's exact prices (the ones metering
/// charges with).
pub fn worst_case_cost(
    price: Option<&ModelPrice>,
    prompt_tokens: u64,
    max_output: Option<u64>,
) -> Decimal {
    let Some(price) = price else {
        return Decimal::ZERO;
    };
    let per_million = Decimal::from(1_000_000);
    (price.input * Decimal::from(prompt_tokens)
        + price.output * Decimal::from(max_output.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)))
        / per_million
}

/// Opens the managed-key store named by the config.
pub fn open_keys(config: &ManagedKeysConfig) -> Result<Keys, String> {
    let store: Arc<dyn tollgate_policy::KeyStore> = match config.store {
        LedgerSink::Sqlite => Arc::new(
            SqliteKeyStore::open(&config.path)
                .map_err(|e| format!("{}: {e}", config.path.display()))?,
        ),
        LedgerSink::Postgres => Arc::new(
            PostgresKeyStore::connect(config.url.as_deref().unwrap_or_default())
                .map_err(|e| format!("managed keys: {e}"))?,
        ),
    };
    Keys::open(store).map_err(|e| format!("managed keys: {e}"))
}

fn unavailable(err: &PolicyError) -> GatewayError {
    match err {
        PolicyError::StateUnavailable => GatewayError::new(
            ErrorKind::Unavailable,
            "rate limits and budgets cannot be checked right now; try again shortly",
        )
        .with_code("policy_unavailable"),
        other => {
            tracing::error!(error = %other, "policy error");
            GatewayError::new(ErrorKind::Internal, "rate limits and budgets failed")
                .with_code("policy_error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_prices_the_prompt_and_the_output_cap() {
        let price = ModelPrice {
            input: Decimal::ONE,
            output: Decimal::TWO,
            cached_input: Decimal::ONE,
        };
        assert_eq!(
            worst_case_cost(Some(&price), 1_000, Some(500)),
            Decimal::new(2, 3)
        );
        assert_eq!(
            worst_case_cost(Some(&price), 0, None),
            Decimal::new(8192, 6)
        );
        assert_eq!(worst_case_cost(None, 1_000, None), Decimal::ZERO);
        // Prices that binary floats cannot hold stay exact: 0.1 × 3 tokens, 0.2 × 7.
        let tenth = ModelPrice {
            input: Decimal::new(1, 1),
            output: Decimal::new(2, 1),
            cached_input: Decimal::new(1, 1),
        };
        assert_eq!(
            worst_case_cost(Some(&tenth), 3, Some(7)),
            Decimal::new(17, 7)
        );
    }
}
