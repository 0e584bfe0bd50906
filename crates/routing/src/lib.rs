//! Where a request goes: the model catalog, route matching and key scopes, target selection
//! strategies, the per-request attempt plan with retry and backoff decisions, per-endpoint
//! passive circuit breakers and latency stats, per-provider API-key rotation with 429
//! cool-downs, TLS towards each provider, and active health checks run as a Pingora
//! background service that follows config reloads.
//!
//! Everything except the health-check service is synchronous and allocation-light: the
//! gateway calls it from Pingora's phases. Time (`Instant`) and randomness (`Rng`) are
//! parameters, so every decision is reproducible in tests.

mod attempts;
mod breaker;
mod error;
mod health;
mod pool;
mod router;
mod strategy;
mod tls;

pub use attempts::{AttemptRecord, Attempts, Failure, NextAttempt, RetryPolicy, TimeoutKind};
pub use breaker::CircuitState;
pub use error::RoutingError;
pub use health::{HealthCheckService, ProviderHealth};
pub use pool::{
    EndpointPick, EndpointStatus, InFlightGuard, KeyPick, KeyStatus, ProviderPool, ProviderStatus,
    Upstreams, UpstreamsStatus,
};
pub use router::{Candidate, CatalogModel, KeyScope, ModelListing, Plan, RouteRequest, Router};
pub use tls::UpstreamTls;
