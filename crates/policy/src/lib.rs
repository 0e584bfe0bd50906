//! Governance of gateway traffic: rate limits, budgets with pre-authorisation, managed
//! gateway keys, and the state they share between nodes.
//!
//! - [`Limiter`]: requests/min, tokens/min and concurrency per key, user, team, model, route
//!   or globally; reject, queue (fair across keys) or downgrade; OpenAI-style rate headers.
//!   [`Limiter::admit_reserving`] admits and reserves budget in one atomic step.
//! - [`Budgets`]: USD per key, user, team or tag for UTC days, weeks or months; reserve the
//!   worst case before forwarding, settle after; alerts to webhooks; a kill switch.
//! - [`State`]: where the counters live, in memory or in Redis (shared by every node).
//! - [`Keys`]: managed keys in SQLite or PostgreSQL, looked up from memory, revoked on
//!   every node within [`KEY_POLL_INTERVAL`]; their lifetime `max_requests`, counted
//!   durably in the store; the audit trail of admin changes.
//!
//! The config types ([`PolicyConfig`] and its parts) are the YAML operators write under
//! `limits:`, `budgets:` and `state:`.
//!
//! ```
//! # async fn demo() -> Result<(), tollgate_policy::PolicyError> {
//! use tollgate_policy::{
//!     Admission, BudgetDecision, Budgets, Decimal, Limiter, PolicyConfig, State, Subject,
//! };
//!
//! let config: PolicyConfig = serde_yaml_ng::from_str(r#"
//! limits:
//!   - { name: team-rpm, scope: team, rpm: 60, tpm: 100000, concurrency: 10 }
//! budgets:
//!   - { name: team-monthly, scope: team, usd: 500, period: monthly, alerts: [0.8, 1.0] }
//! "#).expect("valid YAML");
//! assert!(config.validate().is_empty());
//!
//! let state = State::connect(&config.state).await?; // memory unless `state:` says redis
//! let limiter = Limiter::new(&config.limits, state.clone())?;
//! let budgets = Budgets::new(&config.budgets, state)?;
//!
//! let subject = Subject {
//!     key: "billing-svc".into(),
//!     team: Some("billing".into()),
//!     model: "gpt-4o-mini".into(),
//!     ..Subject::default()
//! };
//! // request_filter: rate limits first, then the budget.
//! let mut permit = match limiter.admit(&subject, 1_200).await? {
//!     Admission::Granted(permit) => permit,
//!     Admission::Rejected(rejection) => {
//!         let _answer_429_with = rejection.headers();
//!         return Ok(());
//!     }
//! };
//! let reservation = match budgets.reserve(&subject, Decimal::new(25, 4)).await? {
//!     BudgetDecision::Reserved(reservation) => reservation,
//!     BudgetDecision::Downgrade { .. } | BudgetDecision::Blocked(_) => return Ok(()),
//! };
//! let _response_headers = permit.rate().to_pairs();
//! // logging: correct the token estimate, settle the cost, drop the permit.
//! permit.correct(1_350);
//! let alerts = reservation.settle(Decimal::new(11, 4)).await;
//! assert!(alerts.is_empty());
//! drop(permit);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod budget;
mod config;
mod error;
mod keys;
mod limits;
mod period;
mod state;
mod subject;

pub use budget::{
    AlertEvent, Blocked, BudgetDecision, BudgetStatus, Budgets, Reservation, WebhookNotifier,
    WebhookOptions, MAX_QUEUED_ALERTS,
};
pub use config::{
    BudgetConfig, BudgetScope, ConfigProblem, LimitConfig, LimitScope, Match, OnExceed,
    OnExhausted, OnFailure, PathPart, Period, PolicyConfig, QueueConfig, StateBackendKind,
    StateConfig, MAX_QUEUE_DEPTH, MAX_QUEUE_WAIT,
};
pub use error::PolicyError;
pub use keys::{
    hash_secret, AuditAction, AuditEntry, Charge, CreatedKey, KeyStore, Keys, ManagedKey, NewKey,
    PostgresKeyStore, Role, SqliteKeyStore, KEY_POLL_INTERVAL,
};
pub use limits::{
    Admission, LimitKind, Limiter, Permit, Quota, RateHeaders, Rejection, Verdict, WorstCase,
    CONCURRENCY_RETRY_AFTER, MAX_DOWNGRADES,
};
pub use rust_decimal::Decimal;
pub use state::{State, StateHealth};
pub use subject::{Scope, Subject};
