//! The operator's view of the cache: the top-level `cache:` section and each route's
//! `cache:` block, with their defaults and the checks serde cannot make.
//!
//! ```yaml
//! cache:
//!   store: memory                 # or redis (needs redis_url)
//!   max_bytes: 268435456          # memory store bound, bytes
//!   redis_url: "redis://127.0.0.1:6379"
//!   key_prefix: "tollgate:cache:"
//!   redis_timeout: 100ms
//!   semantic: { embedding_model: text-embed, max_entries: 10000 }
//! routes:
//!   - name: faq
//!     cache: { enabled: true, ttl: 1h, semantic: { threshold: 0.95 } }
//!   - name: medical
//!     cache: { enabled: false }   # sensitive: never stored, never answered from the cache
//! ```
//!
//! A route caches only when the top-level section exists and the route has a `cache:`
//! block with `enabled: true` (the block's default); it uses the semantic cache only when
//! both the top-level `semantic` and the route's `semantic` are set.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default bound of the memory store: large enough for tens of thousands of typical chat
/// answers, small beside a gateway node's memory.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Smallest accepted `max_bytes`: below this the store holds a handful of answers and
/// mostly churns.
pub const MIN_MAX_BYTES: u64 = 1024 * 1024;

/// Default `key_prefix`: keeps the cache's keys apart from the rate-limit counters that
/// may share the Redis server.
pub const DEFAULT_KEY_PREFIX: &str = "tollgate:cache:";

/// Default Redis command timeout. A lookup sits on the request path; a slow Redis should
/// cost a miss, not the request's latency budget.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// Default `semantic.max_entries`. The index keeps one vector per entry: with 1536-dim
/// embeddings that is about 6 KiB each, 60 MiB for the default.
pub const DEFAULT_SEMANTIC_ENTRIES: usize = 10_000;

/// Most `semantic.max_entries` accepted: a million 1536-dim vectors already take 6 GiB.
pub const MAX_SEMANTIC_ENTRIES: usize = 1_000_000;

/// Default per-route `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Longest per-route `ttl` accepted: answers older than a month are stale for most uses,
/// and the bound keeps a typo (`ttl: 1000d`) from pinning entries forever.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default per-route semantic `threshold` (cosine similarity of the last user turns).
pub const DEFAULT_THRESHOLD: f32 = 0.95;

// === top level ===

/// Where entries live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process, bounded by `max_bytes`; each node has its own.
    #[default]
    Memory,
    /// In a Redis server shared by every node (bounded by Redis's own `maxmemory`).
    Redis,
}

/// The top-level `cache:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub store: StoreKind,
    /// Bound of the memory store in bytes (entries' approximate size); default
    /// [`DEFAULT_MAX_BYTES`]. Ignored by the Redis store.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// `redis://[user:password@]host:port[/db]`; required by `store: redis`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the cache writes; default [`DEFAULT_KEY_PREFIX`].
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Timeout of one Redis command; default [`DEFAULT_REDIS_TIMEOUT`].
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// The semantic cache; off when absent.
    #[serde(default)]
    pub semantic: Option<SemanticConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            max_bytes: DEFAULT_MAX_BYTES,
            redis_url: None,
            key_prefix: default_key_prefix(),
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            semantic: None,
        }
    }
}

/// `cache.semantic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticConfig {
    /// The logical model (from `models:`) that embeds the last user turn.
    pub embedding_model: String,
    /// Bound of the vector index; the oldest entries go first. Default
    /// [`DEFAULT_SEMANTIC_ENTRIES`].
    #[serde(default = "default_semantic_entries")]
    pub max_entries: usize,
}

// === per route ===

/// A route's `cache:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// `false` for sensitive routes: nothing is looked up or stored. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long an answer stays servable; default [`DEFAULT_TTL`].
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Semantic lookups for this route; off when absent.
    #[serde(default)]
    pub semantic: Option<RouteSemanticConfig>,
}

impl Default for RouteCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: DEFAULT_TTL,
            semantic: None,
        }
    }
}

/// A route's `cache.semantic`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSemanticConfig {
    /// Least cosine similarity of the last user turns that counts as a hit, in (0, 1];
    /// default [`DEFAULT_THRESHOLD`].
    #[serde(default = "default_threshold")]
    pub threshold: f32,
}

impl Default for RouteSemanticConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

// === validation ===

/// One thing wrong with a cache config. `path` is relative to the block validated
/// (`semantic.max_entries`); the config loader prefixes it (`cache.` or `routes[3].cache.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Keys from the validated block down to the offending value.
    pub path: Vec<&'static str>,
    /// What is wrong, never quoting a secret (the Redis URL may hold a password).
    pub message: String,
}

impl ConfigProblem {
    fn new(path: &[&'static str], message: impl Into<String>) -> Self {
        Self {
            path: path.to_vec(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.join("."), self.message)
    }
}

impl CacheConfig {
    /// Every problem of this section, all at once.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.store == StoreKind::Memory && self.max_bytes < MIN_MAX_BYTES {
            problems.push(ConfigProblem::new(
                &["max_bytes"],
                format!("must be at least {MIN_MAX_BYTES} bytes (1 MiB)"),
            ));
        }
        match (self.store, self.redis_url.as_deref().map(str::trim)) {
            (StoreKind::Redis, None | Some("")) => problems.push(ConfigProblem::new(
                &["redis_url"],
                "store: redis needs a url, e.g. redis://127.0.0.1:6379",
            )),
            (StoreKind::Redis, Some(url)) => {
                if let Err(why) = check_redis_url(url) {
                    problems.push(ConfigProblem::new(&["redis_url"], why));
                }
            }
            (StoreKind::Memory, Some(_)) => problems.push(ConfigProblem::new(
                &["redis_url"],
                "only used by store: redis (the store is memory)",
            )),
            (StoreKind::Memory, None) => {}
        }
        if self.key_prefix.is_empty() {
            problems.push(ConfigProblem::new(
                &["key_prefix"],
                "must not be empty: it keeps the cache's keys apart in a shared Redis",
            ));
        }
        if self.redis_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                &["redis_timeout"],
                "must be greater than zero",
            ));
        }
        if let Some(semantic) = &self.semantic {
            if semantic.embedding_model.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    &["semantic", "embedding_model"],
                    "must name a model",
                ));
            }
            if !(1..=MAX_SEMANTIC_ENTRIES).contains(&semantic.max_entries) {
                problems.push(ConfigProblem::new(
                    &["semantic", "max_entries"],
                    format!("must be 1 to {MAX_SEMANTIC_ENTRIES}"),
                ));
            }
        }
        problems
    }
}

impl RouteCacheConfig {
    /// Every problem of a route's block; `cache` is the top-level section, if any.
    pub fn validate(&self, cache: Option<&CacheConfig>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.ttl.is_zero() || self.ttl > MAX_TTL {
            problems.push(ConfigProblem::new(
                &["ttl"],
                "must be more than 0s and at most 30d",
            ));
        }
        if cache.is_none() && self.enabled {
            problems.push(ConfigProblem::new(
                &["enabled"],
                "the route caches but there is no top-level cache section",
            ));
        }
        if let Some(semantic) = &self.semantic {
            if !(semantic.threshold > 0.0 && semantic.threshold <= 1.0) {
                problems.push(ConfigProblem::new(
                    &["semantic", "threshold"],
                    "must be more than 0 and at most 1",
                ));
            }
            if self.enabled && cache.is_some_and(|c| c.semantic.is_none()) {
                problems.push(ConfigProblem::new(
                    &["semantic"],
                    "needs cache.semantic (the embedding model) at the top level",
                ));
            }
        }
        problems
    }
}

/// Checks a Redis URL's scheme and host without echoing it (it may hold a password).
fn check_redis_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must look like redis://host:port".to_owned());
    };
    match scheme {
        "redis" => {}
        "rediss" => {
            return Err("TLS (rediss://) is not supported by this build; use redis://".to_owned())
        }
        other => return Err(format!("unknown scheme '{other}' (expected redis)")),
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    Ok(())
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}

fn default_redis_timeout() -> Duration {
    DEFAULT_REDIS_TIMEOUT
}

fn default_semantic_entries() -> usize {
    DEFAULT_SEMANTIC_ENTRIES
}

fn default_true() -> bool {
    true
}

fn default_ttl() -> Duration {
    DEFAULT_TTL
}

fn default_threshold() -> f32 {
    DEFAULT_THRESHOLD
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_an_empty_section() {
        let cache: CacheConfig = parse("{}").unwrap();
        assert_eq!(cache, CacheConfig::default());
        assert_eq!(cache.max_bytes, 256 * 1024 * 1024);
        assert!(cache.validate().is_empty());
        let route: RouteCacheConfig = parse("{}").unwrap();
        assert_eq!(route, RouteCacheConfig::default());
        assert!(route.enabled);
        assert_eq!(route.ttl, Duration::from_secs(3600));
    }

    #[test]
    fn the_documented_shape_parses() {
        let cache: CacheConfig = parse(
            "store: redis\nredis_url: redis://127.0.0.1:6379\nkey_prefix: 't:'\nredis_timeout: 50ms\n\
             semantic: { embedding_model: embed }",
        )
        .unwrap();
        assert_eq!(cache.store, StoreKind::Redis);
        assert_eq!(cache.redis_timeout, Duration::from_millis(50));
        assert_eq!(cache.semantic.as_ref().unwrap().max_entries, 10_000);
        assert!(cache.validate().is_empty(), "{:?}", cache.validate());
        let route: RouteCacheConfig =
            parse("{ enabled: true, ttl: 10m, semantic: { threshold: 0.9 } }").unwrap();
        assert_eq!(route.ttl, Duration::from_secs(600));
        assert_eq!(route.semantic.unwrap().threshold, 0.9);
        assert!(route.validate(Some(&cache)).is_empty());
        let off: RouteCacheConfig = parse("{ enabled: false }").unwrap();
        assert!(!off.enabled);
        let default_threshold: RouteCacheConfig = parse("{ semantic: {} }").unwrap();
        assert_eq!(default_threshold.semantic.unwrap().threshold, 0.95);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse::<CacheConfig>("stor: memory").unwrap_err();
        assert!(err.contains("unknown field `stor`"), "{err}");
        let err = parse::<RouteCacheConfig>("{ ttl: 1h, threshold: 0.9 }").unwrap_err();
        assert!(err.contains("unknown field `threshold`"), "{err}");
        let err = parse::<RouteCacheConfig>("{ ttl: soon }").unwrap_err();
        assert!(err.contains("ttl"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let cache: CacheConfig = parse(
            "{ store: redis, redis_url: 'http://user:secret@h', key_prefix: '', redis_timeout: 0s, \
               semantic: { embedding_model: ' ', max_entries: 0 } }",
        )
        .unwrap();
        let problems: Vec<String> = cache.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "redis_url: unknown scheme 'http' (expected redis)",
                "key_prefix: must not be empty: it keeps the cache's keys apart in a shared Redis",
                "redis_timeout: must be greater than zero",
                "semantic.embedding_model: must name a model",
                "semantic.max_entries: must be 1 to 1000000",
            ]
        );
        assert!(problems.iter().all(|p| !p.contains("secret")));

        let memory: CacheConfig = parse("{ max_bytes: 10, redis_url: 'redis://h' }").unwrap();
        let paths: Vec<String> = memory.validate().iter().map(|p| p.path.join(".")).collect();
        assert_eq!(paths, ["max_bytes", "redis_url"]);
        let no_url: CacheConfig = parse("{ store: redis }").unwrap();
        assert_eq!(no_url.validate()[0].path, ["redis_url"]);

        let route: RouteCacheConfig = parse("{ ttl: 0s, semantic: { threshold: 1.5 } }").unwrap();
        let problems: Vec<String> = route
            .validate(Some(&CacheConfig::default()))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "ttl: must be more than 0s and at most 30d",
                "semantic.threshold: must be more than 0 and at most 1",
                "semantic: needs cache.semantic (the embedding model) at the top level",
            ]
        );
        let orphan = RouteCacheConfig::default();
        assert_eq!(orphan.validate(None)[0].path, ["enabled"]);
        let off = RouteCacheConfig {
            enabled: false,
            ..RouteCacheConfig::default()
        };
        assert!(off.validate(None).is_empty());
    }
}
