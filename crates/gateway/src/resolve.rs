//! Upstream host names to socket addresses, cached briefly so a request does not pay a
//! DNS lookup while record changes still take effect within a minute.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a resolved address is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Entries kept at most; the cache is cleared when full, which only costs lookups.
const MAX_ENTRIES: usize = 4096;

type Cache = Mutex<HashMap<(String, u16), (Instant, SocketAddr)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let key = (host.to_owned(), port);
    if let Ok(cache) = cache().lock() {
        if let Some((at, addr)) = cache.get(&key) {
            if at.elapsed() < DNS_TTL {
                return Some(*addr);
            }
        }
    }
    let addr = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    if let Ok(mut cache) = cache().lock() {
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), addr));
    }
    Some(addr)
}
