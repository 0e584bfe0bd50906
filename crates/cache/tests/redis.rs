//! The Redis store against a real `redis-server` on a loopback port (no persistence):
//! sharing between stores as between gateway nodes, TTLs, purges and their indexes, key
//! prefixes, and a server that is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{answer, ask, eventually, openai_question, text_of};
use tollgate_cache::{
    Cache, CacheConfig, CacheError, CacheKey, CacheStore, Labels, Purge, RedisStore, Scope,
    StoreKind,
};
use tollgate_providers::Dialect;

const HOUR: Duration = Duration::from_secs(3600);
const TIMEOUT: Duration = Duration::from_secs(2);
const PREFIX: &str = "tollgate:cache:";

const BILLING: Scope<'static> = Scope {
    tenant: "team:billing",
    route: "faq",
    model: "best-cheap-chat",
};

/// A `redis-server` of this test alone, stopped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(server) = Self::start_on(port) {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// A server on `port`, once it answers PING; `None` if it exits first (port taken).
    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed at /usr/bin/redis-server");
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(port) {
                return Some(server);
            }
            if server.child.try_wait().unwrap().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn store(&self, prefix: &str) -> RedisStore {
        RedisStore::open(&self.url(), prefix, TIMEOUT)
            .await
            .unwrap()
    }

    /// Runs a raw command, to look at what the store wrote.
    async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn key(question: &str) -> CacheKey {
    ask(&BILLING, Dialect::OpenAi, &openai_question(question))
        .key
        .exact
}

#[tokio::test]
async fn two_stores_share_entries_through_one_server() {
    let server = RedisServer::start();
    let node_a = server.store(PREFIX).await;
    let node_b = server.store(PREFIX).await;
    let k = key("What is Rust?");
    assert!(node_b.get(&k).await.unwrap().is_none());
    let entry = answer("A language.").with_cost(Some("0.0003".parse().unwrap()));
    node_a
        .put(&k, Arc::new(entry.clone()), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    let hit = node_b
        .get(&k)
        .await
        .unwrap()
        .expect("the other node sees it");
    assert_eq!(
        *hit, entry,
        "usage, cost and content survive the round trip"
    );

    assert_eq!(node_b.purge(&Purge::Key(k)).await.unwrap(), 1);
    assert!(node_a.get(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn the_same_prompt_from_two_teams_makes_two_redis_entries() {
    let server = RedisServer::start();
    let store = server.store(PREFIX).await;
    let body = openai_question("Summarise our refund policy.");
    let search = Scope {
        tenant: "team:search",
        ..BILLING
    };
    let billing_key = ask(&BILLING, Dialect::OpenAi, &body).key.exact;
    let search_key = ask(&search, Dialect::OpenAi, &body).key.exact;
    let labels = Labels::route("faq");
    store
        .put(&billing_key, Arc::new(answer("billing's")), &labels, HOUR)
        .await
        .unwrap();
    assert!(store.get(&search_key).await.unwrap().is_none());
    store
        .put(&search_key, Arc::new(answer("search's")), &labels, HOUR)
        .await
        .unwrap();
    let entries: Vec<String> = server.query(&["KEYS", "tollgate:cache:e:*"]).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(
        text_of(&store.get(&billing_key).await.unwrap().unwrap()),
        "billing's"
    );
}

#[tokio::test]
async fn entries_expire_with_their_ttl_and_indexes_forget_them() {
    let server = RedisServer::start();
    let store = server.store(PREFIX).await;
    let labels = Labels {
        route: "faq".into(),
        tags: vec!["pricing".into()],
    };
    let short = key("short-lived");
    store
        .put(
            &short,
            Arc::new(answer("soon gone")),
            &labels,
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    let pttl: i64 = server
        .query(&["PTTL", &format!("{PREFIX}e:{}", short.to_hex())])
        .await;
    assert!((1..=100).contains(&pttl), "SET with PX: {pttl}");
    eventually(Duration::from_secs(5), "the entry to expire", || async {
        store.get(&short).await.unwrap().is_none()
    })
    .await;

    // The next put drops the expired member from the indexes.
    let long = key("long-lived");
    store
        .put(&long, Arc::new(answer("stays")), &labels, HOUR)
        .await
        .unwrap();
    for index in ["tollgate:cache:r:faq", "tollgate:cache:t:pricing"] {
        let members: Vec<String> = server.query(&["ZRANGE", index, "0", "-1"]).await;
        assert_eq!(members, [format!("{PREFIX}e:{}", long.to_hex())], "{index}");
        let ttl: i64 = server.query(&["PTTL", index]).await;
        assert!(
            ttl > 3_000_000,
            "{index} lives as long as its longest entry: {ttl}"
        );
    }
}

#[tokio::test]
async fn purge_by_route_and_tag_across_nodes() {
    let server = RedisServer::start();
    let node_a = server.store(PREFIX).await;
    let node_b = server.store(PREFIX).await;
    let faq_pricing = Labels {
        route: "faq".into(),
        tags: vec!["pricing".into()],
    };
    let docs_pricing = Labels {
        route: "docs".into(),
        tags: vec!["pricing".into()],
    };
    // More than one purge batch of faq entries.
    let faq: Vec<CacheKey> = (0..600).map(|i| key(&format!("faq {i}"))).collect();
    for (i, k) in faq.iter().enumerate() {
        let labels = if i == 0 {
            faq_pricing.clone()
        } else {
            Labels::route("faq")
        };
        node_a
            .put(k, Arc::new(answer("a")), &labels, HOUR)
            .await
            .unwrap();
    }
    let docs = [key("docs 1"), key("docs 2")];
    node_a
        .put(&docs[0], Arc::new(answer("d")), &docs_pricing, HOUR)
        .await
        .unwrap();
    node_a
        .put(
            &docs[1],
            Arc::new(answer("d")),
            &Labels::route("docs"),
            HOUR,
        )
        .await
        .unwrap();

    assert_eq!(
        node_b.purge(&Purge::Tag("pricing".into())).await.unwrap(),
        2
    );
    assert!(node_a.get(&faq[0]).await.unwrap().is_none());
    assert!(node_a.get(&docs[0]).await.unwrap().is_none());
    assert!(node_a.get(&docs[1]).await.unwrap().is_some());

    assert_eq!(
        node_b.purge(&Purge::Route("faq".into())).await.unwrap(),
        599
    );
    for k in &faq {
        assert!(node_a.get(k).await.unwrap().is_none());
    }
    let left: Vec<String> = server.query(&["KEYS", "tollgate:cache:*"]).await;
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        [
            format!("{PREFIX}e:{}", docs[1].to_hex()),
            format!("{PREFIX}r:docs"),
        ]
    );
    assert_eq!(node_b.purge(&Purge::Route("faq".into())).await.unwrap(), 0);
}

#[tokio::test]
async fn prefixes_keep_stores_apart() {
    let server = RedisServer::start();
    let prod = server.store("prod:cache:").await;
    let staging = server.store("staging:cache:").await;
    let k = key("q");
    prod.put(&k, Arc::new(answer("prod")), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    assert!(staging.get(&k).await.unwrap().is_none());
    assert_eq!(staging.purge(&Purge::Route("faq".into())).await.unwrap(), 0);
    assert!(prod.get(&k).await.unwrap().is_some());
}

#[tokio::test]
async fn the_cache_from_config_uses_redis() {
    let server = RedisServer::start();
    let config = CacheConfig {
        store: StoreKind::Redis,
        redis_url: Some(server.url()),
        ..CacheConfig::default()
    };
    assert!(config.validate().is_empty());
    let node_a = Cache::from_config(&config).await.unwrap();
    let node_b = Cache::from_config(&config).await.unwrap();
    let k = key("shared?");
    node_a
        .put(&k, answer("yes"), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    assert_eq!(text_of(&node_b.get(&k).await.unwrap().unwrap()), "yes");
}

#[tokio::test]
async fn a_store_whose_server_is_down_fails_fast_and_recovers() {
    let server = RedisServer::start();
    let url = server.url();
    let port = server.port;
    drop(server);
    let store = RedisStore::open(&url, PREFIX, Duration::from_millis(200))
        .await
        .expect("opening does not need the server");
    let started = Instant::now();
    let err = store.get(&key("q")).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Redis(_) | CacheError::Timeout(_)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The server comes back on the same port; the store reconnects by itself.
    let _revived = RedisServer::start_on(port).expect("the port is still free");
    eventually(
        Duration::from_secs(10),
        "the store to reconnect",
        || async { store.get(&key("q")).await.is_ok() },
    )
    .await;
}
