//! Where entries live: one trait, a memory store bounded in bytes and a Redis store shared
//! by every node. Both expire each entry after its own TTL and purge by key, route or tag.

mod memory;
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{CacheEntry, CacheError, CacheKey};

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// Most tags one entry carries. Each tag costs the Redis store an index write per put;
/// operators label answers with a few (`faq`, `pricing-v3`), never dozens.
pub const MAX_TAGS_PER_ENTRY: usize = 8;

/// What an entry is filed under, for purges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// The route that produced the answer.
    pub route: String,
    /// Operator labels; only the first [`MAX_TAGS_PER_ENTRY`] are kept.
    pub tags: Vec<String>,
}

impl Labels {
    /// Labels with a route and no tags.
    pub fn route(route: impl Into<String>) -> Self {
        Self {
            route: route.into(),
            tags: Vec::new(),
        }
    }

    pub(crate) fn tags(&self) -> &[String] {
        &self.tags[..self.tags.len().min(MAX_TAGS_PER_ENTRY)]
    }

    pub(crate) fn matches(&self, purge: &Purge) -> bool {
        match purge {
            Purge::Key(_) => false,
            Purge::Route(route) => self.route == *route,
            Purge::Tag(tag) => self.tags().contains(tag),
        }
    }
}

/// Which entries an admin purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// The entry of one exact key.
    Key(CacheKey),
    /// Every entry a route stored.
    Route(String),
    /// Every entry stored with a tag.
    Tag(String),
}

impl fmt::Display for Purge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Purge::Key(key) => write!(f, "key {key}"),
            Purge::Route(route) => write!(f, "route {route}"),
            Purge::Tag(tag) => write!(f, "tag {tag}"),
        }
    }
}

/// A place to keep entries, each for its own time to live.
#[async_trait]
pub trait CacheStore: Send + Sync + fmt::Debug {
    /// The live entry of `key`, if any.
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, CacheError>;

    /// Stores `entry` under `key` for `ttl`, replacing any entry there.
    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<CacheEntry>,
        labels: &Labels,
        ttl: Duration,
    ) -> Result<(), CacheError>;

    /// Removes the entries `purge` names; returns how many live entries went.
    async fn purge(&self, purge: &Purge) -> Result<u64, CacheError>;
}
