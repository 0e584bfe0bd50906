//! The crate's one error type.

/// Why a cache operation failed. The gateway answers every one of them the same way: the
/// request goes on as a miss (or the answer is not stored), and the failure is counted.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The client's body is not a JSON object, so no key can be made from it.
    #[error("the request body is not a JSON object: {0}")]
    InvalidBody(String),
    /// Redis refused or failed a command (connection lost, server error).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the configured `cache.redis_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A stored entry could not be encoded or decoded (written by an incompatible version).
    #[error("cache entry encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// The config cannot build a cache (call [`crate::CacheConfig::validate`] first).
    #[error("cache config: {0}")]
    Config(String),
}
