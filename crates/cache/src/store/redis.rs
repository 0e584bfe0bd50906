//! The Redis store: entries shared by every gateway node.
//!
//! Keys, under the configured prefix:
//!
//! - `<prefix>e:<key hex>`: the entry as JSON, written with `SET … PX <ttl>`;
//! - `<prefix>r:<route>` and `<prefix>t:<tag>`: index sorted sets whose members are entry
//!   keys scored by their expiry time (ms).
//!
//! A put writes the entry and its index members in one Lua script (atomic), drops index
//! members that already expired, and keeps each index alive as long as its longest-lived
//! member, so indexes hold live entries only (plus those expired since the last put) and
//! vanish with them. Purge by route or tag pops an index in batches of
//! [`PURGE_BATCH`] and deletes what it names: round trips are bounded by the index size,
//! never a scan of the keyspace. Redis's own `maxmemory` bounds the store's size.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use super::{CacheStore, Labels, Purge};
use crate::{CacheEntry, CacheError, CacheKey};

/// Index members removed per round trip of a purge: large enough that purging ten
/// thousand entries takes a few dozen round trips, small enough that one `DEL` does not
/// block the Redis server for long.
const PURGE_BATCH: usize = 256;

/// Writes an entry and files it in its indexes. KEYS[1] is the entry, KEYS[2..] the
/// indexes; ARGV[1] the encoded entry, ARGV[2] the TTL in milliseconds.
const PUT_SCRIPT: &str = r"
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// Entries in a Redis server, shared by every node that uses the same prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    put: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    // The URL may hold a password: it is not kept, and the prefix is all that is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://[user:password@]host:port[/db]`),
    /// writing keys under `key_prefix`, each command bounded by `timeout`.
    ///
    /// Connects lazily: a gateway starts while Redis is down, and every operation fails
    /// (a miss, for the gateway) until the server answers; the connection is re-made after
    /// it breaks.
    pub async fn open(url: &str, key_prefix: &str, timeout: Duration) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: key_prefix.to_owned(),
            timeout,
            put: Arc::new(Script::new(PUT_SCRIPT)),
        })
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        format!("{}e:{}", self.prefix, key.to_hex())
    }

    fn route_index(&self, route: &str) -> String {
        format!("{}r:{route}", self.prefix)
    }

    fn tag_index(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.prefix)
    }

    /// Runs one command under the store's timeout.
    async fn run<T>(&self, command: impl Future<Output = RedisResult<T>>) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(result) => result.map_err(CacheError::from),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, CacheError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.entry_key(key));
        let bytes: Option<Vec<u8>> = self.run(cmd.query_async(&mut conn)).await?;
        match bytes {
            Some(bytes) => Ok(Some(Arc::new(serde_json::from_slice(&bytes)?))),
            None => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<CacheEntry>,
        labels: &Labels,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let encoded = serde_json::to_vec(&*entry)?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.put.prepare_invoke();
        invocation.key(self.entry_key(key));
        invocation.key(self.route_index(&labels.route));
        for tag in labels.tags() {
            invocation.key(self.tag_index(tag));
        }
        invocation.arg(encoded).arg(ttl_ms);
        let mut conn = self.conn.clone();
        let _: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn purge(&self, purge: &Purge) -> Result<u64, CacheError> {
        let index = match purge {
            Purge::Key(key) => {
                let mut conn = self.conn.clone();
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.entry_key(key));
                return self.run(cmd.query_async(&mut conn)).await;
            }
            Purge::Route(route) => self.route_index(route),
            Purge::Tag(tag) => self.tag_index(tag),
        };
        let mut conn = self.conn.clone();
        let mut card = redis::cmd("ZCARD");
        card.arg(&index);
        let members: u64 = self.run(card.query_async(&mut conn)).await?;
        // Entries filed while the purge runs may be taken too; the bound keeps a purge
        // racing a busy route from running forever.
        let rounds = members.div_ceil(PURGE_BATCH as u64) + 1;
        let mut removed = 0;
        for _ in 0..rounds {
            let mut pop = redis::cmd("ZPOPMIN");
            pop.arg(&index).arg(PURGE_BATCH);
            // Member, score, member, score…
            let popped: Vec<Vec<u8>> = self.run(pop.query_async(&mut conn)).await?;
            let keys: Vec<&Vec<u8>> = popped.iter().step_by(2).collect();
            if keys.is_empty() {
                break;
            }
            let mut del = redis::cmd("DEL");
            del.arg(keys);
            let deleted: u64 = self.run(del.query_async(&mut conn)).await?;
            removed += deleted;
        }
        Ok(removed)
    }
}
