//! The cache over its memory store: hits and misses, TTLs, tenant isolation, one entry for
//! both ingress dialects, the byte bound, purges, and the semantic cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{answer, ask, eventually, openai_question, text_of};
use tollgate_cache::{
    last_user_text, Cache, CacheConfig, CacheStore, Labels, MemoryStore, Purge, Scope,
    SemanticConfig, SemanticIndex, StoreKind, MIN_MAX_BYTES,
};
use tollgate_providers::Dialect;

const HOUR: Duration = Duration::from_secs(3600);

const BILLING: Scope<'static> = Scope {
    tenant: "team:billing",
    route: "faq",
    model: "best-cheap-chat",
};

fn memory_cache() -> Cache {
    Cache::new(Arc::new(MemoryStore::new(MIN_MAX_BYTES)), None)
}

#[tokio::test]
async fn a_stored_answer_hits_and_others_miss() {
    let cache = memory_cache();
    let asked = ask(&BILLING, Dialect::OpenAi, &openai_question("What is Rust?"));
    assert!(cache.get(&asked.key.exact).await.unwrap().is_none());
    let entry = answer("A language.").with_cost(Some("0.00021".parse().unwrap()));
    cache
        .put(&asked.key.exact, entry, &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    let hit = cache.get(&asked.key.exact).await.unwrap().expect("a hit");
    assert_eq!(text_of(&hit), "A language.");
    assert_eq!(hit.usage().total_tokens(), 30, "tokens saved");
    assert_eq!(hit.cost(), Some("0.00021".parse().unwrap()), "cost saved");

    let other = ask(&BILLING, Dialect::OpenAi, &openai_question("What is Go?"));
    assert!(cache.get(&other.key.exact).await.unwrap().is_none());
}

#[tokio::test]
async fn the_same_prompt_from_two_teams_makes_two_entries() {
    let store = Arc::new(MemoryStore::new(MIN_MAX_BYTES));
    let cache = Cache::new(store.clone(), None);
    let body = openai_question("Summarise our refund policy.");
    let search = Scope {
        tenant: "team:search",
        ..BILLING
    };
    let billing_key = ask(&BILLING, Dialect::OpenAi, &body).key.exact;
    let search_key = ask(&search, Dialect::OpenAi, &body).key.exact;
    assert_ne!(billing_key, search_key);
    cache
        .put(
            &billing_key,
            answer("billing's answer"),
            &Labels::route("faq"),
            HOUR,
        )
        .await
        .unwrap();
    assert!(
        cache.get(&search_key).await.unwrap().is_none(),
        "one team never reads another's answer"
    );
    cache
        .put(
            &search_key,
            answer("search's answer"),
            &Labels::route("faq"),
            HOUR,
        )
        .await
        .unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(
        text_of(&cache.get(&billing_key).await.unwrap().unwrap()),
        "billing's answer"
    );
    assert_eq!(
        text_of(&cache.get(&search_key).await.unwrap().unwrap()),
        "search's answer"
    );
}

#[tokio::test]
async fn an_answer_stored_through_openai_hits_through_anthropic() {
    let cache = memory_cache();
    let openai = r#"{"model":"best-cheap-chat","max_tokens":256,"stream":true,
        "messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"What is Rust?"}]}"#;
    let anthropic = r#"{"model":"best-cheap-chat","max_tokens":256,"system":"Answer briefly.",
        "messages":[{"role":"user","content":[{"type":"text","text":"What is Rust?"}]}]}"#;
    let stored = ask(&BILLING, Dialect::OpenAi, openai).key.exact;
    cache
        .put(&stored, answer("A language."), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    let looked_up = ask(&BILLING, Dialect::Anthropic, anthropic).key.exact;
    assert_eq!(looked_up, stored);
    assert!(cache.get(&looked_up).await.unwrap().is_some());
}

#[tokio::test]
async fn entries_expire_after_their_own_ttl() {
    let cache = memory_cache();
    let short = ask(&BILLING, Dialect::OpenAi, &openai_question("short-lived"))
        .key
        .exact;
    let long = ask(&BILLING, Dialect::OpenAi, &openai_question("long-lived"))
        .key
        .exact;
    let labels = Labels::route("faq");
    cache
        .put(
            &short,
            answer("soon gone"),
            &labels,
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    cache
        .put(&long, answer("stays"), &labels, HOUR)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the short entry to expire",
        || async { cache.get(&short).await.unwrap().is_none() },
    )
    .await;
    assert!(cache.get(&long).await.unwrap().is_some());

    // A new put starts a new TTL.
    cache
        .put(&short, answer("back"), &labels, HOUR)
        .await
        .unwrap();
    assert!(cache.get(&short).await.unwrap().is_some());
}

#[tokio::test]
async fn the_memory_store_stays_within_its_byte_bound() {
    let store = MemoryStore::new(MIN_MAX_BYTES);
    let labels = Labels::route("faq");
    let text = "x".repeat(8 * 1024);
    for i in 0..1000 {
        let key = ask(
            &BILLING,
            Dialect::OpenAi,
            &openai_question(&format!("q{i}")),
        )
        .key
        .exact;
        store
            .put(&key, Arc::new(answer(&text)), &labels, HOUR)
            .await
            .unwrap();
        if i % 100 == 99 {
            assert!(store.used_bytes() <= MIN_MAX_BYTES, "bound passed at {i}");
        }
    }
    let used = store.used_bytes();
    assert!(used <= MIN_MAX_BYTES, "{used} bytes held");
    assert!(used > MIN_MAX_BYTES / 2, "the store is used, {used} bytes");
    // 8 MB were offered to a 1 MiB store: most entries were turned away or evicted.
    assert!(store.len() < 130, "{} entries", store.len());
}

#[tokio::test]
async fn purge_by_key_route_and_tag() {
    let store = Arc::new(MemoryStore::new(MIN_MAX_BYTES));
    let cache = Cache::new(store.clone(), None);
    let keys: Vec<_> = (0..5)
        .map(|i| {
            ask(
                &BILLING,
                Dialect::OpenAi,
                &openai_question(&format!("q{i}")),
            )
            .key
            .exact
        })
        .collect();
    let faq_pricing = Labels {
        route: "faq".into(),
        tags: vec!["pricing".into(), "v3".into()],
    };
    cache
        .put(&keys[0], answer("a"), &faq_pricing, HOUR)
        .await
        .unwrap();
    cache
        .put(&keys[1], answer("b"), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    cache
        .put(&keys[2], answer("c"), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    let docs_pricing = Labels {
        route: "docs".into(),
        tags: vec!["pricing".into()],
    };
    cache
        .put(&keys[3], answer("d"), &docs_pricing, HOUR)
        .await
        .unwrap();
    cache
        .put(&keys[4], answer("e"), &Labels::route("docs"), HOUR)
        .await
        .unwrap();

    assert_eq!(cache.purge(&Purge::Tag("pricing".into())).await.unwrap(), 2);
    assert!(cache.get(&keys[0]).await.unwrap().is_none());
    assert!(cache.get(&keys[3]).await.unwrap().is_none());
    assert_eq!(cache.purge(&Purge::Key(keys[4])).await.unwrap(), 1);
    assert_eq!(cache.purge(&Purge::Key(keys[4])).await.unwrap(), 0);
    assert_eq!(cache.purge(&Purge::Route("faq".into())).await.unwrap(), 2);
    assert!(store.is_empty());
}

#[tokio::test]
async fn from_config_builds_the_configured_store() {
    let config = CacheConfig {
        semantic: Some(SemanticConfig {
            embedding_model: "embed".into(),
            max_entries: 10,
        }),
        ..CacheConfig::default()
    };
    let cache = Cache::from_config(&config).await.unwrap();
    assert!(cache.has_semantic());
    assert!(!Cache::from_config(&CacheConfig::default())
        .await
        .unwrap()
        .has_semantic());
    let redis_without_url = CacheConfig {
        store: StoreKind::Redis,
        ..CacheConfig::default()
    };
    assert!(Cache::from_config(&redis_without_url).await.is_err());
}

// === semantic ===

/// A deterministic test embedding: a signed, hashed bag of lowercase words and their
/// character trigrams, so texts sharing words and stems point the same way.
fn embed(text: &str) -> Vec<f32> {
    const DIMS: usize = 256;
    fn add(v: &mut [f32], feature: &str, weight: f32) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in feature.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h ^= h >> 31;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[(h % DIMS as u64) as usize] += sign * weight;
    }
    let mut v = vec![0.0; DIMS];
    for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        add(&mut v, word, 1.0);
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for tri in padded.windows(3) {
            add(&mut v, &tri.iter().collect::<String>(), 0.5);
        }
    }
    v
}

fn semantic_cache() -> Cache {
    Cache::new(
        Arc::new(MemoryStore::new(MIN_MAX_BYTES)),
        Some(SemanticIndex::new(100)),
    )
}

/// Stores an answer for `question` under its exact key and files its embedding.
async fn store_semantic(cache: &Cache, scope: &Scope<'_>, question: &str, text: &str) {
    let asked = ask(scope, Dialect::OpenAi, &openai_question(question));
    let labels = Labels::route(scope.route);
    cache
        .put(&asked.key.exact, answer(text), &labels, HOUR)
        .await
        .unwrap();
    let turn = last_user_text(&asked.canonical).unwrap();
    assert!(cache.put_similar(
        &asked.key.semantic,
        &embed(&turn),
        &asked.key.exact,
        &labels,
        HOUR
    ));
}

async fn similar(
    cache: &Cache,
    scope: &Scope<'_>,
    question: &str,
    threshold: f32,
) -> Option<String> {
    let asked = ask(scope, Dialect::OpenAi, &openai_question(question));
    let turn = last_user_text(&asked.canonical).unwrap();
    cache
        .get_similar(&asked.key.semantic, &embed(&turn), threshold)
        .await
        .unwrap()
        .map(|(_, entry)| text_of(&entry))
}

#[tokio::test]
async fn paraphrases_hit_and_unrelated_questions_miss() {
    let cache = semantic_cache();
    store_semantic(&cache, &BILLING, "What is the capital of France?", "Paris.").await;
    store_semantic(
        &cache,
        &BILLING,
        "How do I reset my password?",
        "Use the link.",
    )
    .await;

    // Case and punctuation only: above the default threshold.
    assert_eq!(
        similar(&cache, &BILLING, "what is the capital of france", 0.95)
            .await
            .as_deref(),
        Some("Paris.")
    );
    // Real paraphrases share most words: they hit at a route threshold tuned for this
    // embedding, and pick the right answer.
    assert_eq!(
        similar(&cache, &BILLING, "what's the capital city of France?", 0.6)
            .await
            .as_deref(),
        Some("Paris.")
    );
    assert_eq!(
        similar(
            &cache,
            &BILLING,
            "How can I reset my account password?",
            0.6
        )
        .await
        .as_deref(),
        Some("Use the link.")
    );
    for unrelated in [
        "Summarise this quarterly earnings report for investors",
        "The weather in Lisbon is sunny today",
    ] {
        assert_eq!(
            similar(&cache, &BILLING, unrelated, 0.6).await,
            None,
            "{unrelated}"
        );
    }
}

#[tokio::test]
async fn semantic_hits_never_cross_tenants_or_system_prompts() {
    let cache = semantic_cache();
    store_semantic(&cache, &BILLING, "What is the capital of France?", "Paris.").await;
    let search = Scope {
        tenant: "team:search",
        ..BILLING
    };
    assert_eq!(
        similar(&cache, &search, "What is the capital of France?", 0.5).await,
        None
    );
    let other_route = Scope {
        route: "docs",
        ..BILLING
    };
    assert_eq!(
        similar(&cache, &other_route, "What is the capital of France?", 0.5).await,
        None
    );
    let other_system = serde_json::json!({
        "model": "best-cheap-chat",
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    })
    .to_string();
    let asked = ask(&BILLING, Dialect::OpenAi, &other_system);
    let hit = cache
        .get_similar(
            &asked.key.semantic,
            &embed("What is the capital of France?"),
            0.5,
        )
        .await
        .unwrap();
    assert!(hit.is_none());
}

#[tokio::test]
async fn a_semantic_hit_on_an_entry_gone_from_the_store_is_a_miss() {
    let store = Arc::new(MemoryStore::new(MIN_MAX_BYTES));
    let cache = Cache::new(store.clone(), Some(SemanticIndex::new(100)));
    store_semantic(&cache, &BILLING, "What is the capital of France?", "Paris.").await;
    assert!(
        similar(&cache, &BILLING, "what is the capital of france", 0.9)
            .await
            .is_some()
    );
    // Gone from the store behind the index's back, as another node's purge or the
    // store's own eviction does.
    let asked = ask(
        &BILLING,
        Dialect::OpenAi,
        &openai_question("What is the capital of France?"),
    );
    assert_eq!(store.purge(&Purge::Key(asked.key.exact)).await.unwrap(), 1);
    assert_eq!(
        similar(&cache, &BILLING, "what is the capital of france", 0.9).await,
        None
    );

    // A purge through the cache clears both.
    store_semantic(&cache, &BILLING, "What is the capital of France?", "Paris.").await;
    assert_eq!(cache.purge(&Purge::Route("faq".into())).await.unwrap(), 1);
    assert_eq!(
        similar(&cache, &BILLING, "what is the capital of france", 0.9).await,
        None
    );
}

#[tokio::test]
async fn stores_share_one_trait() {
    // The gateway holds any store as a trait object.
    let store: Arc<dyn CacheStore> = Arc::new(MemoryStore::new(MIN_MAX_BYTES));
    let key = ask(&BILLING, Dialect::OpenAi, &openai_question("q"))
        .key
        .exact;
    store
        .put(&key, Arc::new(answer("a")), &Labels::route("faq"), HOUR)
        .await
        .unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
}
