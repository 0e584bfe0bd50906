//! The semantic index: embeddings of last user turns, kept per [`SemanticScope`], each
//! pointing at the exact key of the answer it led to.
//!
//! A lookup compares the query's embedding with every live vector of its scope by cosine
//! similarity (vectors are stored unit-length, so it is a dot product) and takes the best
//! one at or above the route's threshold. Vectors of other scopes are never read, so an
//! answer never crosses tenants, routes, system prompts or conversations.
//!
//! Cost: a lookup is linear in its scope, at most [`MAX_ENTRIES_PER_SCOPE`] vectors: with
//! 1536-dim embeddings that is 3 M multiply-adds, about a third of a millisecond on one
//! core at worst (the crate's bench: 0.17 ms for 1000 vectors), and microseconds for the
//! few entries a typical scope holds. Memory: the index holds at
//! most `max_entries` vectors of at most [`MAX_EMBEDDING_DIMS`] `f32`s (6 KiB each at 1536
//! dims, 60 MiB for the default ten thousand). When full, the oldest entry goes first;
//! lookups take a read lock only, so they run side by side.
//!
//! The index lives in each node's memory; the entries it points to may live in Redis. An
//! entry purged or expired in the store is dropped from the index at its next hit.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::store::{Labels, Purge};
use crate::{CacheKey, SemanticScope};

/// Most vectors one scope holds; past it the scope's oldest goes. Bounds the linear scan
/// of a lookup (see the module docs) whatever the total size of the index.
pub const MAX_ENTRIES_PER_SCOPE: usize = 2048;

/// Longest embedding accepted (OpenAI's largest model has 3072 dimensions). Bounds the
/// memory of one vector to 16 KiB.
pub const MAX_EMBEDDING_DIMS: usize = 4096;

/// A semantic match: the exact key of the stored answer and how similar the questions are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticHit {
    pub key: CacheKey,
    /// Cosine similarity of the two last user turns, in [-1, 1].
    pub similarity: f32,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    vector: Box<[f32]>,
    key: CacheKey,
    labels: Labels,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    /// Every slot by insertion order: the first is the oldest.
    order: BTreeMap<u64, SemanticScope>,
    scopes: HashMap<SemanticScope, Vec<Slot>>,
}

/// A bounded in-memory vector index.
#[derive(Debug)]
pub struct SemanticIndex {
    inner: RwLock<Inner>,
    max_entries: usize,
}

impl SemanticIndex {
    /// An index holding at most `max_entries` vectors (at least one).
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            max_entries: max_entries.max(1),
        }
    }

    /// Files `embedding` in `scope`, pointing at `key`, for `ttl`. Replaces an earlier
    /// vector of the same key in the scope. Returns false (and files nothing) for an
    /// embedding that is empty, longer than [`MAX_EMBEDDING_DIMS`], all zeros or not finite.
    pub fn insert(
        &self,
        scope: &SemanticScope,
        embedding: &[f32],
        key: CacheKey,
        labels: &Labels,
        ttl: Duration,
    ) -> bool {
        let Some(vector) = unit(embedding) else {
            return false;
        };
        let now = Instant::now();
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        if let Some(slots) = inner.scopes.get_mut(scope) {
            let order = &mut inner.order;
            slots.retain(|slot| {
                let keep = slot.key != key && slot.expires_at > now;
                if !keep {
                    order.remove(&slot.seq);
                }
                keep
            });
            if slots.len() >= MAX_ENTRIES_PER_SCOPE {
                if let Some(oldest) = slots.iter().map(|s| s.seq).min() {
                    order.remove(&oldest);
                    slots.retain(|s| s.seq != oldest);
                }
            }
        }
        while inner.order.len() >= self.max_entries {
            let Some((seq, oldest_scope)) = inner.order.pop_first() else {
                break;
            };
            if let Some(slots) = inner.scopes.get_mut(&oldest_scope) {
                slots.retain(|s| s.seq != seq);
                if slots.is_empty() {
                    inner.scopes.remove(&oldest_scope);
                }
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.insert(seq, *scope);
        inner.scopes.entry(*scope).or_default().push(Slot {
            seq,
            vector,
            key,
            labels: labels.clone(),
            expires_at: now + ttl,
        });
        true
    }

    /// The most similar live entry of `scope` whose similarity is at least `threshold`.
    pub fn lookup(
        &self,
        scope: &SemanticScope,
        embedding: &[f32],
        threshold: f32,
    ) -> Option<SemanticHit> {
        let query = unit(embedding)?;
        let now = Instant::now();
        let inner = self.inner.read();
        let mut best: Option<SemanticHit> = None;
        for slot in inner.scopes.get(scope)? {
            if slot.expires_at <= now || slot.vector.len() != query.len() {
                continue;
            }
            let similarity = dot(&slot.vector, &query);
            if similarity >= threshold && best.is_none_or(|b| similarity > b.similarity) {
                best = Some(SemanticHit {
                    key: slot.key,
                    similarity,
                });
            }
        }
        best
    }

    /// Drops the vectors of `scope` that point at `key` (its entry is gone from the store).
    pub fn forget(&self, scope: &SemanticScope, key: &CacheKey) {
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        if let Some(slots) = inner.scopes.get_mut(scope) {
            let order = &mut inner.order;
            slots.retain(|slot| {
                let keep = slot.key != *key;
                if !keep {
                    order.remove(&slot.seq);
                }
                keep
            });
            if slots.is_empty() {
                inner.scopes.remove(scope);
            }
        }
    }

    /// Drops every vector `purge` names; returns how many went. Linear in the index.
    pub fn purge(&self, purge: &Purge) -> u64 {
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        let mut removed = 0;
        let order = &mut inner.order;
        inner.scopes.retain(|_, slots| {
            slots.retain(|slot| {
                let gone = match purge {
                    Purge::Key(key) => slot.key == *key,
                    _ => slot.labels.matches(purge),
                };
                if gone {
                    order.remove(&slot.seq);
                    removed += 1;
                }
                !gone
            });
            !slots.is_empty()
        });
        removed
    }

    /// The number of vectors held (expired ones included until they are pruned).
    pub fn len(&self) -> usize {
        self.inner.read().order.len()
    }

    /// True when no vector is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `v` scaled to unit length; `None` when it cannot be (see [`SemanticIndex::insert`]).
fn unit(v: &[f32]) -> Option<Box<[f32]>> {
    if v.is_empty() || v.len() > MAX_EMBEDDING_DIMS || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let norm = dot(v, v).sqrt();
    if norm <= f32::MIN_POSITIVE || !norm.is_finite() {
        return None;
    }
    Some(v.iter().map(|x| x / norm).collect())
}

/// Lanes summed side by side: independent partial sums let the compiler use SIMD, where
/// one running sum must add in order (floating-point addition is not associative).
const DOT_LANES: usize = 8;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; DOT_LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..DOT_LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_providers::canonical::Request;
    use tollgate_providers::Dialect;

    use super::*;
    use crate::{request_key, Scope};

    fn scope(tenant: &str) -> SemanticScope {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
        let scope = Scope {
            tenant,
            route: "r",
            model: "m",
        };
        request_key(&scope, Dialect::OpenAi, body, &Request::default())
            .unwrap()
            .semantic
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::from_hex(&format!("{n:02x}").repeat(32)).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_most_similar_entry_above_the_threshold_wins() {
        let index = SemanticIndex::new(10);
        let s = scope("a");
        let labels = Labels::route("r");
        assert!(index.insert(&s, &[1.0, 0.0, 0.0], key(1), &labels, HOUR));
        assert!(index.insert(&s, &[0.8, 0.6, 0.0], key(2), &labels, HOUR));
        let hit = index.lookup(&s, &[2.0, 0.1, 0.0], 0.9).unwrap();
        assert_eq!(hit.key, key(1));
        assert!(hit.similarity > 0.99);
        assert_eq!(index.lookup(&s, &[0.0, 0.0, 1.0], 0.5), None);
        // Unscaled vectors compare by direction only.
        assert_eq!(
            index.lookup(&s, &[8.0, 6.0, 0.0], 0.999).unwrap().key,
            key(2)
        );
        // Another length never matches.
        assert_eq!(index.lookup(&s, &[1.0, 0.0], 0.1), None);
    }

    #[test]
    fn scopes_never_mix() {
        let index = SemanticIndex::new(10);
        index.insert(&scope("a"), &[1.0, 0.0], key(1), &Labels::route("r"), HOUR);
        assert_eq!(index.lookup(&scope("b"), &[1.0, 0.0], 0.1), None);
        assert!(index.lookup(&scope("a"), &[1.0, 0.0], 0.1).is_some());
    }

    #[test]
    fn the_oldest_entry_goes_when_full() {
        let index = SemanticIndex::new(3);
        let (a, b) = (scope("a"), scope("b"));
        let labels = Labels::route("r");
        index.insert(&a, &[1.0, 0.0], key(1), &labels, HOUR);
        index.insert(&b, &[1.0, 0.0], key(2), &labels, HOUR);
        index.insert(&a, &[0.0, 1.0], key(3), &labels, HOUR);
        index.insert(&b, &[0.0, 1.0], key(4), &labels, HOUR);
        assert_eq!(index.len(), 3);
        assert_eq!(index.lookup(&a, &[1.0, 0.0], 0.9), None, "key 1 was oldest");
        assert_eq!(index.lookup(&b, &[1.0, 0.0], 0.9).unwrap().key, key(2));
        // Re-filing a key replaces its vector instead of adding one.
        index.insert(&a, &[1.0, 1.0], key(3), &labels, HOUR);
        assert_eq!(index.len(), 3);
        assert_eq!(index.lookup(&a, &[0.0, 1.0], 0.99), None);
    }

    #[test]
    fn expired_and_forgotten_entries_miss() {
        let index = SemanticIndex::new(10);
        let s = scope("a");
        index.insert(&s, &[1.0], key(1), &Labels::route("r"), Duration::ZERO);
        assert_eq!(index.lookup(&s, &[1.0], 0.5), None);
        index.insert(&s, &[1.0], key(2), &Labels::route("r"), HOUR);
        assert_eq!(index.len(), 1, "the expired vector was pruned");
        index.forget(&s, &key(2));
        assert!(index.is_empty());
    }

    #[test]
    fn unusable_embeddings_are_refused() {
        let index = SemanticIndex::new(10);
        let s = scope("a");
        let labels = Labels::route("r");
        for bad in [
            vec![],
            vec![0.0, 0.0],
            vec![f32::NAN, 1.0],
            vec![1.0; MAX_EMBEDDING_DIMS + 1],
        ] {
            assert!(!index.insert(&s, &bad, key(1), &labels, HOUR));
            assert_eq!(index.lookup(&s, &bad, -1.0), None);
        }
        assert!(index.is_empty());
    }

    #[test]
    fn purge_by_route_tag_and_key() {
        let index = SemanticIndex::new(10);
        let s = scope("a");
        let tagged = Labels {
            route: "faq".into(),
            tags: vec!["pricing".into()],
        };
        index.insert(&s, &[1.0, 0.0], key(1), &tagged, HOUR);
        index.insert(&s, &[0.0, 1.0], key(2), &Labels::route("faq"), HOUR);
        index.insert(&s, &[1.0, 1.0], key(3), &Labels::route("other"), HOUR);
        assert_eq!(index.purge(&Purge::Tag("pricing".into())), 1);
        assert_eq!(index.purge(&Purge::Route("faq".into())), 1);
        assert_eq!(index.purge(&Purge::Key(key(3))), 1);
        assert!(index.is_empty());
    }

    #[test]
    fn the_lane_wise_dot_product_matches_the_plain_one() {
        for len in [1, 7, 8, 19, 1536] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-3, "length {len}");
        }
    }

    #[test]
    fn a_full_scope_drops_its_own_oldest() {
        let index = SemanticIndex::new(MAX_ENTRIES_PER_SCOPE * 2);
        let s = scope("a");
        let labels = Labels::route("r");
        for i in 0..=MAX_ENTRIES_PER_SCOPE {
            let angle = i as f32 * 1e-3;
            let key = CacheKey::from_hex(&format!("{i:064x}")).unwrap();
            index.insert(&s, &[angle.cos(), angle.sin()], key, &labels, HOUR);
        }
        assert_eq!(index.len(), MAX_ENTRIES_PER_SCOPE);
        let first = CacheKey::from_hex(&format!("{:064x}", 0)).unwrap();
        assert_ne!(index.lookup(&s, &[1.0, 0.0], 0.0).unwrap().key, first);
    }
}
