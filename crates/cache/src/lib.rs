//! Tollgate's response cache: exact and semantic, stream-aware, tenant-scoped.
//!
//! - [`request_key`] makes a request's exact [`CacheKey`] (tenant, route, model and every
//!   field that changes the answer; its docs say what is in and out) and its
//!   [`SemanticScope`]; one conversation has one key through either ingress.
//! - [`CacheEntry`] is a stored answer, made from a complete response
//!   ([`CacheEntry::from_response`]) or a stream that ended well ([`StreamRecorder`]). It
//!   keeps the usage and cost it saved, and replays as the client's body
//!   ([`CacheEntry::replay_body`]) or as a whole SSE stream in the client's dialect
//!   ([`CacheEntry::replay_stream`]).
//! - [`Cache`] puts, gets and purges entries in a [`CacheStore`]: [`MemoryStore`] (bounded
//!   in bytes) or [`RedisStore`] (shared by nodes), each entry with its own TTL; with a
//!   [`SemanticIndex`] it also finds answers to similar questions by the embedding of the
//!   [`last_user_text`].
//! - [`CacheConfig`] and [`RouteCacheConfig`] are the operator's `cache:` sections.
//!
//! No IO here but the Redis store's; the gateway owns the hooks, the embedding call
//! through its providers, the headers and the admin API.
//!
//! ```
//! use std::time::Duration;
//! use tollgate_cache::{request_key, Cache, CacheConfig, CacheEntry, Labels, Replay, Scope};
//! use tollgate_providers::canonical::{Part, Response, StopReason};
//! use tollgate_providers::{Dialect, IngressRequest, Operation};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::from_config(&CacheConfig::default()).await?;
//! let body = br#"{"model":"chat","messages":[{"role":"user","content":"What is Rust?"}],"stream":true}"#;
//! let ingress = IngressRequest::parse(Dialect::OpenAi, Operation::ChatCompletions, body)?;
//! let scope = Scope { tenant: "team:billing", route: "faq", model: "chat" };
//! let key = request_key(&scope, ingress.dialect(), body, &ingress.to_canonical()?)?.exact;
//!
//! assert!(cache.get(&key).await?.is_none()); // a miss: ask the provider, then store
//! let answer = Response {
//!     model: "gpt-4o-mini".into(),
//!     content: vec![Part::Text("A systems language.".into())],
//!     stop_reason: Some(StopReason::EndTurn),
//!     ..Response::default()
//! };
//! if let Some(entry) = CacheEntry::from_response(&answer) {
//!     cache.put(&key, entry, &Labels::route("faq"), Duration::from_secs(3600)).await?;
//! }
//!
//! let hit = cache.get(&key).await?.expect("stored");
//! let replay = Replay { request_id: "req-2", created: 1_700_000_000, include_usage: ingress.include_usage() };
//! let sse = hit.replay_stream(ingress.dialect(), &replay);
//! assert!(sse.ends_with(b"data: [DONE]\n\n"));
//! # Ok(())
//! # }
//! ```

mod cache;
mod config;
mod entry;
mod error;
mod key;
mod replay;
mod semantic;
mod store;

pub use cache::Cache;
pub use config::{
    CacheConfig, ConfigProblem, RouteCacheConfig, RouteSemanticConfig, SemanticConfig, StoreKind,
    DEFAULT_KEY_PREFIX, DEFAULT_MAX_BYTES, DEFAULT_REDIS_TIMEOUT, DEFAULT_SEMANTIC_ENTRIES,
    DEFAULT_THRESHOLD, DEFAULT_TTL, MAX_SEMANTIC_ENTRIES, MAX_TTL, MIN_MAX_BYTES,
};
pub use entry::{CacheEntry, StreamRecorder, MAX_ENTRY_BYTES};
pub use error::CacheError;
pub use key::{last_user_text, request_key, CacheKey, RequestKey, Scope, SemanticScope};
pub use replay::{Replay, REPLAY_DELTA_BYTES};
pub use semantic::{SemanticHit, SemanticIndex, MAX_EMBEDDING_DIMS, MAX_ENTRIES_PER_SCOPE};
pub use store::{CacheStore, Labels, MemoryStore, Purge, RedisStore, MAX_TAGS_PER_ENTRY};
