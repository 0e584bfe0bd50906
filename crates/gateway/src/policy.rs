//! Governance in the request path: managed keys, rate limits and budgets.
//!
//! After authentication, parsing and routing, a request is admitted by the rate limits
//! (on its estimated tokens; rejected with OpenAI's 429 and `x-ratelimit-*` headers,
//! queued, or downgraded to a cheaper model), then reserves its worst-case cost on every
//! budget that applies (refused with 429 `insufficient_quota`, or downgraded). When it
//! ends, the token estimate is corrected with the metered count and the reservation
//! settled with the metered cost; alerts go to the log, metrics and webhooks.
//!
//! Counters live in the configured state (memory, or Redis shared by every node) and
//! survive config reloads; spend of key and team budgets is rebuilt from the usage ledger
//! when the counters are first used.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tollgate_config::{Config, LedgerSink, ManagedKeysConfig};
use tollgate_core::{ErrorKind, GatewayError};
use tollgate_ledger::{AggregateQuery, GroupBy, Ledger};
use tollgate_policy::{
    Admission, BudgetDecision, BudgetScope, Budgets, Decimal, Keys, Limiter, Permit, PolicyError,
    PostgresKeyStore, Reservation, Scope, SqliteKeyStore, State, Subject, WebhookNotifier,
    WebhookOptions,
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
    governance: Option<Arc<Governance>>,
}

/// Identifies a version of the config's `limits`, `budgets` and `state`: a reload that
/// leaves them as they were keeps the running counters.
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
            governance: Governance::new(config, ledger.clone()).map(Arc::new),
        };
        Self {
            governance: Arc::new(ArcSwap::from_pointee(slot)),
            ledger,
            keys,
        }
    }

    /// The governance of the snapshot's config. When a reload changed `limits`, `budgets`
    /// or `state`, the first request on the new config starts new counters (budget spend
    /// is rebuilt from the ledger); otherwise the running ones carry on.
    pub fn governance(&self, snap: &Snapshot) -> Option<Arc<Governance>> {
        let slot = self.governance.load();
        if slot.fingerprint == snap.policy_fingerprint {
            return slot.governance.clone();
        }
        tracing::info!("limits, budgets or state changed: their counters start afresh");
        let fresh = Arc::new(GovernanceSlot {
            fingerprint: snap.policy_fingerprint,
            governance: Governance::new(&snap.config, self.ledger.clone()).map(Arc::new),
        });
        self.governance.store(fresh.clone());
        fresh.governance.clone()
    }

    /// The governance the latest config set up, for the admin API.
    pub fn current(&self) -> Option<Arc<Governance>> {
        self.governance.load().governance.clone()
    }

    /// The active managed key with this secret.
    pub fn managed_key(&self, secret: &[u8]) -> Option<Arc<GatewayKey>> {
        let key = self.keys.as_ref()?.authenticate(secret)?;
        key.is_active(Utc::now())
            .then(|| Arc::new(GatewayKey::managed(&key)))
    }
}

/// The limits and budgets of the running config, over counters that outlive reloads.
pub struct Governance {
    config: Config,
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
    /// `None` when the config has no limits and no budgets.
    pub fn new(config: &Config, ledger: Arc<Ledger>) -> Option<Self> {
        if config.limits.is_empty() && config.budgets.is_empty() {
            return None;
        }
        Some(Self {
            config: config.clone(),
            engines: tokio::sync::OnceCell::new(),
            ledger,
        })
    }

    async fn engines(&self) -> Result<&Engines, GatewayError> {
        self.engines
            .get_or_try_init(|| async {
                let state = State::connect(&self.config.state).await?;
                let limiter = Limiter::new(&self.config.limits, state.clone())?;
                let budgets = Budgets::new(&self.config.budgets, state)?
                    .with_notifier(WebhookNotifier::new(WebhookOptions::default()));
                // The ledger's reads block: off the async workers.
                let (ledger, config) = (self.ledger.clone(), self.config.budgets.clone());
                let spent = tokio::task::spawn_blocking(move || spend_so_far(&ledger, &config))
                    .await
                    .unwrap_or_default();
                let rebuilt = budgets.rebuild(spent).await?;
                tracing::info!(counters = rebuilt, "budget spend rebuilt from the ledger");
                Ok::<_, PolicyError>(Engines { limiter, budgets })
            })
            .await
            .map_err(|err| unavailable(&err))
    }
}

/// How long rebuilding budget spend waits for spooled records (a spool replayed after a
/// crash included) to reach the sink before it reads the totals.
const REBUILD_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Spend per key and team budget since its period began, from the usage ledger.
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
        let (by, scope): (GroupBy, fn(String) -> Scope) = match budget.scope {
            BudgetScope::Key => (GroupBy::Key, Scope::Key),
            BudgetScope::Team => (GroupBy::Team, Scope::Team),
            // The ledger aggregates by key and team only: user and tag budgets start
            // from the state's own counters (kept by Redis across restarts).
            BudgetScope::User | BudgetScope::Tag => continue,
        };
        let start = budget.period.start(now);
        let query = AggregateQuery {
            by,
            since_ms: Some(start.timestamp_millis()),
            until_ms: None,
        };
        match ledger.aggregate(&query) {
            Ok(rows) => totals.extend(
                rows.into_iter()
                    .filter_map(|row| Some((scope(row.group?), start, row.cost))),
            ),
            Err(err) => tracing::warn!(error = %err, "spend not rebuilt from the ledger"),
        }
    }
    totals
}

impl Governance {
    /// Admits the request: rate limits on `estimated_tokens`, then its worst-case cost on
    /// the budgets. `worst_case` prices a model's worst case. A downgrade changes
    /// `subject.model` and is reported in the answer.
    pub async fn admit(
        &self,
        subject: &mut Subject,
        estimated_tokens: u64,
        worst_case: impl Fn(&str) -> Decimal,
        metrics: &Metrics,
    ) -> Result<Admitted, GatewayError> {
        let engines = self.engines().await?;
        let mut admitted = Admitted::default();
        match engines
            .limiter
            .admit(subject, estimated_tokens)
            .await
            .map_err(|e| unavailable(&e))?
        {
            Admission::Granted(permit) => {
                if let Some(model) = permit.model() {
                    subject.model = model.to_owned();
                    admitted.downgraded_to = Some(model.to_owned());
                }
                admitted.permit = Some(permit);
            }
            Admission::Rejected(rejection) => {
                metrics.limit_rejected(&rejection.limit, rejection.kind.as_str());
                return Err(
                    GatewayError::new(ErrorKind::RateLimited, rejection.to_string())
                        .with_code("rate_limit_exceeded")
                        .with_headers(rejection.headers()),
                );
            }
        }
        // A downgraded request reserves for the model it is downgraded to; a chain of
        // downgrades is bounded by the policy crate's own cap.
        for _ in 0..=tollgate_policy::MAX_DOWNGRADES {
            let decision = engines
                .budgets
                .reserve(subject, worst_case(&subject.model))
                .await
                .map_err(|e| unavailable(&e))?;
            match decision {
                BudgetDecision::Reserved(reservation) => {
                    admitted.reservation = Some(reservation);
                    return Ok(admitted);
                }
                BudgetDecision::Downgrade { model, budget } => {
                    tracing::info!(budget = %budget, to = %model, "budget downgrade");
                    subject.model.clone_from(&model);
                    admitted.downgraded_to = Some(model);
                }
                BudgetDecision::Blocked(blocked) => {
                    metrics.budget_blocked();
                    return Err(
                        GatewayError::new(ErrorKind::RateLimited, blocked.to_string())
                            .with_code("insufficient_quota"),
                    );
                }
            }
        }
        Err(GatewayError::new(
            ErrorKind::RateLimited,
            "budgets downgraded the request too many times",
        )
        .with_code("insufficient_quota"))
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
/// (or [`DEFAULT_MAX_OUTPUT_TOKENS`]) at the model's prices.
pub fn worst_case_cost(
    price: Option<&tollgate_config::PriceConfig>,
    prompt_tokens: u64,
    max_output: Option<u64>,
) -> Decimal {
    let Some(price) = price else {
        return Decimal::ZERO;
    };
    let per_token = |usd_per_million: f64| {
        Decimal::from_f64_retain(usd_per_million).unwrap_or_default() / Decimal::from(1_000_000)
    };
    per_token(price.input) * Decimal::from(prompt_tokens)
        + per_token(price.output) * Decimal::from(max_output.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS))
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
        let price = tollgate_config::PriceConfig {
            input: 1.0,
            output: 2.0,
            cached_input: None,
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
    }
}
