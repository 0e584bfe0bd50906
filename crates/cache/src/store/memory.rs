//! The memory store: a `moka` cache weighed in bytes (TinyLFU admission, LRU eviction),
//! each entry expiring after its own TTL.
//!
//! Eviction runs in moka's housekeeping, which every read and write drives: the bound may
//! be passed for a moment between a write and the housekeeping after it, never for long.
//! Purge by route or tag walks every entry (an admin operation, linear in the entries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;

use super::{CacheStore, Labels, Purge};
use crate::{CacheEntry, CacheError, CacheKey};

/// Bytes charged per entry beyond the answer itself: the key, the labels' headers, the
/// `Arc`s and moka's own node (its access-order and timer-wheel links).
const STORED_OVERHEAD_BYTES: usize = 256;

#[derive(Debug)]
struct Stored {
    entry: Arc<CacheEntry>,
    labels: Labels,
    ttl: Duration,
    weight: u32,
}

/// Every entry lives for the TTL it was put with, counted from its last put.
struct PerEntryTtl;

impl Expiry<CacheKey, Arc<Stored>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Stored>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Stored>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Entries in this process, bounded by their approximate size in bytes.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Arc<Stored>>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of entries (as [`CacheEntry::approx_bytes`]
    /// counts them, plus a fixed overhead each).
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, stored: &Arc<Stored>| stored.weight)
            .expire_after(PerEntryTtl)
            .build();
        Self { cache, max_bytes }
    }

    /// The bytes held now, after pending evictions ran.
    pub fn used_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// The number of entries held now, after pending evictions ran.
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, CacheError> {
        Ok(self.cache.get(key).map(|stored| Arc::clone(&stored.entry)))
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<CacheEntry>,
        labels: &Labels,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let labels = Labels {
            route: labels.route.clone(),
            tags: labels.tags().to_vec(),
        };
        let bytes = STORED_OVERHEAD_BYTES
            + entry.approx_bytes()
            + labels.route.len()
            + labels.tags.iter().map(String::len).sum::<usize>();
        let stored = Stored {
            entry,
            labels,
            ttl,
            weight: u32::try_from(bytes).unwrap_or(u32::MAX),
        };
        self.cache.insert(*key, Arc::new(stored));
        Ok(())
    }

    async fn purge(&self, purge: &Purge) -> Result<u64, CacheError> {
        if let Purge::Key(key) = purge {
            return Ok(u64::from(self.cache.remove(key).is_some()));
        }
        let mut removed = 0;
        for (key, stored) in self.cache.iter() {
            if stored.labels.matches(purge) {
                self.cache.invalidate(&*key);
                removed += 1;
            }
        }
        self.cache.run_pending_tasks();
        Ok(removed)
    }
}
