//! [`Cache`]: a store and, when configured, the semantic index, behind the few calls the
//! gateway makes.

use std::sync::Arc;
use std::time::Duration;

use crate::semantic::{SemanticHit, SemanticIndex};
use crate::store::{CacheStore, Labels, MemoryStore, Purge, RedisStore};
use crate::{CacheConfig, CacheEntry, CacheError, CacheKey, SemanticScope, StoreKind};

/// The response cache of one gateway: cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Cache {
    store: Arc<dyn CacheStore>,
    semantic: Option<SemanticIndex>,
}

impl Cache {
    /// The cache a validated `cache:` section describes. A Redis store connects lazily, so
    /// this succeeds while Redis is down (its operations fail until it is back).
    pub async fn from_config(config: &CacheConfig) -> Result<Self, CacheError> {
        let store: Arc<dyn CacheStore> = match config.store {
            StoreKind::Memory => Arc::new(MemoryStore::new(config.max_bytes)),
            StoreKind::Redis => {
                let url = config
                    .redis_url
                    .as_deref()
                    .ok_or_else(|| CacheError::Config("store: redis needs redis_url".to_owned()))?;
                Arc::new(RedisStore::open(url, &config.key_prefix, config.redis_timeout).await?)
            }
        };
        let semantic = config
            .semantic
            .as_ref()
            .map(|s| SemanticIndex::new(s.max_entries));
        Ok(Self::new(store, semantic))
    }

    /// A cache over any store, with an optional semantic index.
    pub fn new(store: Arc<dyn CacheStore>, semantic: Option<SemanticIndex>) -> Self {
        Self { store, semantic }
    }

    /// Whether semantic lookups can hit (the config has `cache.semantic`).
    pub fn has_semantic(&self) -> bool {
        self.semantic.is_some()
    }

    /// The entry stored under an exact key.
    pub async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, CacheError> {
        self.store.get(key).await
    }

    /// The entry of the most similar earlier question in `scope`, when one is at least
    /// `threshold` similar and its entry is still stored. `embedding` is the embedding of
    /// the request's [`crate::last_user_text`].
    pub async fn get_similar(
        &self,
        scope: &SemanticScope,
        embedding: &[f32],
        threshold: f32,
    ) -> Result<Option<(SemanticHit, Arc<CacheEntry>)>, CacheError> {
        let Some(index) = &self.semantic else {
            return Ok(None);
        };
        let Some(hit) = index.lookup(scope, embedding, threshold) else {
            return Ok(None);
        };
        match self.store.get(&hit.key).await? {
            Some(entry) => Ok(Some((hit, entry))),
            None => {
                index.forget(scope, &hit.key);
                Ok(None)
            }
        }
    }

    /// Stores an answer under its exact key for `ttl`.
    pub async fn put(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
        labels: &Labels,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.store.put(key, Arc::new(entry), labels, ttl).await
    }

    /// Files the embedding of a stored answer's last user turn, so similar questions in
    /// `scope` find `key`. Call it after [`Cache::put`] with the same key, labels and TTL.
    /// Returns false when there is no semantic index or the embedding is unusable.
    pub fn put_similar(
        &self,
        scope: &SemanticScope,
        embedding: &[f32],
        key: &CacheKey,
        labels: &Labels,
        ttl: Duration,
    ) -> bool {
        self.semantic
            .as_ref()
            .is_some_and(|index| index.insert(scope, embedding, *key, labels, ttl))
    }

    /// Removes what `purge` names from the store and this node's semantic index; returns
    /// how many stored entries went.
    pub async fn purge(&self, purge: &Purge) -> Result<u64, CacheError> {
        if let Some(index) = &self.semantic {
            index.purge(purge);
        }
        self.store.purge(purge).await
    }
}
