//! The crate's one error type.

/// Why a policy operation failed. Decisions (a rejected request, an exhausted budget) are
/// not errors; they are answers in [`crate::Admission`] and [`crate::BudgetDecision`].
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The config given to a constructor has problems ([`crate::PolicyConfig::validate`]
    /// lists them all); one per line.
    #[error("invalid policy config:\n{0}")]
    InvalidConfig(String),
    /// The shared state (Redis) cannot be reached and `on_failure` is `closed`: the caller
    /// answers 503.
    #[error("shared policy state is unavailable")]
    StateUnavailable,
    /// The Redis URL could not be parsed, or Redis answered something unexpected.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// A stored row that does not decode (a hand-edited database).
    #[error("corrupt key store row: {0}")]
    CorruptRow(String),
    /// No managed key has this id.
    #[error("no key with id '{0}'")]
    KeyNotFound(String),
    /// The key was revoked before; revoked keys cannot be rotated or revoked again.
    #[error("key '{0}' is revoked")]
    KeyRevoked(String),
    /// A managed key's fields are not acceptable (empty name, unknown role…).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key store's polling thread could not be started.
    #[error("cannot start the key polling thread: {0}")]
    Spawn(#[source] std::io::Error),
}
