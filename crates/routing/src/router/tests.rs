use std::time::Duration;

use http::HeaderValue;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use super::*;

const CONFIG: &str = r#"
providers:
  openai:    { kind: openai, endpoints: ["http://openai.test"], api_keys: [ko] }
  anthropic: { kind: openai, endpoints: ["http://anthropic.test"], api_keys: [ka] }
  local:     { kind: openai, endpoints: ["http://127.0.0.1:11434"] }
models:
  gpt-4o-mini:  { provider: openai, model: gpt-4o-mini-2024, context_window: 128000, price: { input: 0.15, output: 0.60 } }
  claude-haiku: { provider: anthropic, model: claude-3-5-haiku-latest, context_window: 200000, price: { input: 0.80, output: 4.00 } }
  llama:        { provider: local, model: llama3, context_window: 8000 }
  embed:        { provider: openai, model: text-embedding-3-small, mode: embeddings }
routes:
  - name: by-header
    match: { model: best, headers: { X-Tier: gold } }
    targets: [{ model: claude-haiku }]
  - name: by-metadata
    match: { model: best, metadata: { tier: "2" } }
    targets: [{ model: llama }]
  - name: by-key
    match: { model: best, key: ops-svc }
    targets: [{ model: llama }]
  - name: by-team
    match: { model: best, team: billing }
    targets: [{ model: claude-haiku }]
  - name: cheap
    match: { model: [best, cheap] }
    targets: [{ model: gpt-4o-mini, weight: 90 }, { model: claude-haiku, weight: 10 }]
    fallback: [claude-haiku, llama, claude-haiku]
    retry: { attempts: 3, on: [429, 5xx] }
    timeouts: { first_token: 10s }
  - name: fast
    match: { model: fast }
    strategy: latency
    targets: [{ model: gpt-4o-mini }, { model: claude-haiku }]
  - name: busy
    match: { model: busy }
    strategy: least_busy
    targets: [{ model: gpt-4o-mini }, { model: claude-haiku }]
  - name: thrifty
    match: { model: thrifty }
    strategy: cost
    targets: [{ model: claude-haiku }, { model: llama }, { model: gpt-4o-mini }]
  - name: small
    match: { model: small }
    targets: [{ model: llama }]
    fallback: [gpt-4o-mini]
  - name: internal
    match: { model: internal, team: platform }
    targets: [{ model: llama }]
"#;

fn setup() -> (Router, Upstreams) {
    let cfg: Config = serde_yaml_ng::from_str(CONFIG).unwrap();
    (
        Router::from_config(&cfg).unwrap(),
        Upstreams::from_config(&cfg).unwrap(),
    )
}

struct Req {
    model: &'static str,
    key: &'static str,
    team: Option<&'static str>,
    models: Vec<String>,
    routes: Vec<String>,
    headers: HeaderMap,
    metadata: Option<Map<String, Value>>,
    tokens: u64,
}

fn req(model: &'static str) -> Req {
    Req {
        model,
        key: "app",
        team: None,
        models: Vec::new(),
        routes: Vec::new(),
        headers: HeaderMap::new(),
        metadata: None,
        tokens: 100,
    }
}

impl Req {
    fn as_request(&self) -> RouteRequest<'_> {
        RouteRequest {
            model: self.model,
            key: KeyScope {
                name: self.key,
                team: self.team,
                models: &self.models,
                routes: &self.routes,
            },
            headers: &self.headers,
            metadata: self.metadata.as_ref(),
            estimated_prompt_tokens: self.tokens,
        }
    }
}

fn plan_with(
    router: &Router,
    ups: &Upstreams,
    r: &Req,
    rng: &mut StdRng,
) -> Result<Plan, RoutingError> {
    router.plan(&r.as_request(), ups, Instant::now(), rng)
}

fn plan(r: &Req) -> Result<Plan, RoutingError> {
    let (router, ups) = setup();
    plan_with(&router, &ups, r, &mut StdRng::seed_from_u64(3))
}

fn models_of(p: &Plan) -> Vec<&str> {
    p.candidates.iter().map(|c| &*c.model).collect()
}

/// Makes every endpoint of `provider` unusable by opening its circuits.
fn break_provider(ups: &Upstreams, provider: &str) {
    let pool = ups.provider(provider).unwrap();
    for i in 0..pool.endpoint_count() {
        pool.trip_endpoint(i, Instant::now() + Duration::from_secs(3600));
    }
}

// --- matching ---

#[test]
fn first_matching_route_wins_top_down() {
    let mut r = req("best");
    r.headers.insert("x-tier", HeaderValue::from_static("gold"));
    r.metadata = Some(json!({"tier": "2"}).as_object().unwrap().clone());
    r.key = "ops-svc";
    assert_eq!(&*plan(&r).unwrap().route, "by-header");
}

#[test]
fn matches_headers_case_insensitively_with_exact_values() {
    let mut r = req("best");
    r.headers.insert("X-TIER", HeaderValue::from_static("gold"));
    assert_eq!(&*plan(&r).unwrap().route, "by-header");
    r.headers.insert("x-tier", HeaderValue::from_static("Gold"));
    assert_eq!(&*plan(&r).unwrap().route, "cheap");
    r.headers.clear();
    r.headers
        .append("x-tier", HeaderValue::from_static("silver"));
    r.headers.append("x-tier", HeaderValue::from_static("gold"));
    assert_eq!(&*plan(&r).unwrap().route, "by-header");
}

#[test]
fn matches_metadata_entries() {
    let mut r = req("best");
    r.metadata = Some(
        json!({"tier": "2", "other": 1})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(&*plan(&r).unwrap().route, "by-metadata");
    r.metadata = Some(json!({"tier": 2}).as_object().unwrap().clone());
    assert_eq!(&*plan(&r).unwrap().route, "by-metadata");
    r.metadata = Some(json!({"tier": "3"}).as_object().unwrap().clone());
    assert_eq!(&*plan(&r).unwrap().route, "cheap");
    r.metadata = Some(json!({"tier": ["2"]}).as_object().unwrap().clone());
    assert_eq!(&*plan(&r).unwrap().route, "cheap");
    r.metadata = None;
    assert_eq!(&*plan(&r).unwrap().route, "cheap");
}

#[test]
fn matches_key_and_team() {
    let mut r = req("best");
    r.key = "ops-svc";
    assert_eq!(&*plan(&r).unwrap().route, "by-key");
    let mut r = req("best");
    r.team = Some("billing");
    assert_eq!(&*plan(&r).unwrap().route, "by-team");
    r.team = Some("other");
    assert_eq!(&*plan(&r).unwrap().route, "cheap");
}

#[test]
fn matches_one_of_several_models() {
    assert_eq!(&*plan(&req("cheap")).unwrap().route, "cheap");
}

#[test]
fn catalog_model_without_route_gets_an_implicit_one() {
    let p = plan(&req("llama")).unwrap();
    assert_eq!(&*p.route, "llama");
    assert_eq!(
        p.candidates,
        vec![Candidate {
            model: "llama".into(),
            provider: "local".into(),
            upstream_model: "llama3".into()
        }]
    );
    assert_eq!(p.retry, RetryPolicy::default());
    assert_eq!(
        p.timeouts.first_token,
        TimeoutsConfig::default().first_token
    );
}

#[test]
fn route_settings_are_carried_into_the_plan() {
    let p = plan(&req("cheap")).unwrap();
    assert_eq!(p.retry.attempts, 3);
    assert_eq!(p.timeouts.first_token, Duration::from_secs(10));
    assert_eq!(p.timeouts.connect, TimeoutsConfig::default().connect);
}

#[test]
fn unknown_model_is_not_found() {
    assert_eq!(
        plan(&req("gpt-5")).unwrap_err(),
        RoutingError::ModelNotFound {
            model: "gpt-5".into()
        }
    );
    // A route guarded by team does not make its model name exist for others.
    assert!(matches!(
        plan(&req("internal")).unwrap_err(),
        RoutingError::ModelNotFound { .. }
    ));
    let mut r = req("internal");
    r.team = Some("platform");
    assert_eq!(&*plan(&r).unwrap().route, "internal");
}

#[test]
fn key_model_scope_is_checked_against_the_requested_name() {
    let mut r = req("best");
    r.models = vec!["best".into()];
    assert!(plan(&r).is_ok());
    r.models = vec!["gpt-4o-mini".into()];
    assert!(matches!(
        plan(&r).unwrap_err(),
        RoutingError::ModelNotAllowed { .. }
    ));
    // Scoped out before existence is revealed.
    let mut r = req("gpt-5");
    r.models = vec!["best".into()];
    assert!(matches!(
        plan(&r).unwrap_err(),
        RoutingError::ModelNotAllowed { .. }
    ));
}

#[test]
fn key_route_scope_is_checked_against_the_matched_route() {
    let mut r = req("best");
    r.routes = vec!["cheap".into()];
    assert_eq!(&*plan(&r).unwrap().route, "cheap");
    r.team = Some("billing");
    assert_eq!(
        plan(&r).unwrap_err(),
        RoutingError::RouteNotAllowed {
            key: "app".into(),
            model: "best".into(),
            route: "by-team".into()
        }
    );
    // The implicit route is named after the model.
    let mut r = req("llama");
    r.routes = vec!["cheap".into()];
    assert!(matches!(
        plan(&r).unwrap_err(),
        RoutingError::RouteNotAllowed { .. }
    ));
    r.routes = vec!["llama".into()];
    assert!(plan(&r).is_ok());
}

// --- candidates ---

#[test]
fn candidates_are_the_selected_target_then_deduplicated_fallbacks() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(11);
    let mut seen_primary = [0usize; 2];
    for _ in 0..200 {
        let p = plan_with(&router, &ups, &req("cheap"), &mut rng).unwrap();
        match models_of(&p)[..] {
            ["gpt-4o-mini", "claude-haiku", "llama"] => seen_primary[0] += 1,
            ["claude-haiku", "llama"] => seen_primary[1] += 1,
            ref other => panic!("unexpected plan {other:?}"),
        }
    }
    assert!(
        seen_primary[0] > 0 && seen_primary[1] > 0,
        "{seen_primary:?}"
    );
}

#[test]
fn unavailable_targets_and_fallbacks_are_skipped() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(11);
    break_provider(&ups, "openai");
    for _ in 0..50 {
        let p = plan_with(&router, &ups, &req("cheap"), &mut rng).unwrap();
        assert_eq!(models_of(&p), ["claude-haiku", "llama"]);
    }
    break_provider(&ups, "anthropic");
    let p = plan_with(&router, &ups, &req("cheap"), &mut rng).unwrap();
    assert_eq!(models_of(&p), ["llama"]);
    break_provider(&ups, "local");
    assert_eq!(
        plan_with(&router, &ups, &req("cheap"), &mut rng).unwrap_err(),
        RoutingError::Unavailable {
            model: "cheap".into(),
            route: "cheap".into()
        }
    );
}

#[test]
fn providers_out_of_keys_are_unavailable() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(11);
    ups.provider("openai")
        .unwrap()
        .cool_key(0, Instant::now() + Duration::from_secs(60));
    let p = plan_with(&router, &ups, &req("gpt-4o-mini"), &mut rng);
    assert!(matches!(p.unwrap_err(), RoutingError::Unavailable { .. }));
}

// --- context window ---

#[test]
fn models_with_too_small_a_window_are_skipped() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(5);
    let mut r = req("small");
    r.tokens = 9000;
    let p = plan_with(&router, &ups, &r, &mut rng).unwrap();
    assert_eq!(models_of(&p), ["gpt-4o-mini"]);
    r.tokens = 8000;
    let p = plan_with(&router, &ups, &r, &mut rng).unwrap();
    assert_eq!(models_of(&p), ["llama", "gpt-4o-mini"]);

    let mut r = req("cheap");
    r.tokens = 150_000;
    for _ in 0..50 {
        let p = plan_with(&router, &ups, &r, &mut rng).unwrap();
        assert_eq!(models_of(&p), ["claude-haiku"]);
    }
}

#[test]
fn too_long_for_every_model_is_context_too_long() {
    let mut r = req("cheap");
    r.tokens = 300_000;
    assert_eq!(
        plan(&r).unwrap_err(),
        RoutingError::ContextTooLong {
            model: "cheap".into(),
            tokens: 300_000,
            window: 200_000
        }
    );
    // A model without a window always fits.
    let mut r = req("embed");
    r.tokens = u64::MAX;
    assert!(plan(&r).is_ok());
}

#[test]
fn fitting_but_unavailable_is_unavailable_not_too_long() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(5);
    break_provider(&ups, "openai");
    let mut r = req("small");
    r.tokens = 9000;
    assert!(matches!(
        plan_with(&router, &ups, &r, &mut rng).unwrap_err(),
        RoutingError::Unavailable { .. }
    ));
}

// --- strategies ---

#[test]
fn weighted_split_follows_the_weights() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(2024);
    let n = 10_000;
    let gpt = (0..n)
        .filter(|_| {
            let p = plan_with(&router, &ups, &req("cheap"), &mut rng).unwrap();
            &*p.candidates[0].model == "gpt-4o-mini"
        })
        .count();
    let share = gpt as f64 / n as f64;
    assert!((0.88..=0.92).contains(&share), "share {share}");
}

#[test]
fn weight_zero_targets_are_never_selected() {
    let cfg: Config = serde_yaml_ng::from_str(
        r#"
providers: { p: { kind: openai, endpoints: ["http://p.test"] } }
models: { a: { provider: p, model: a }, b: { provider: p, model: b } }
routes:
  - { name: r, match: { model: x }, targets: [{ model: a, weight: 0 }, { model: b, weight: 3 }] }
  - { name: drained, match: { model: y }, targets: [{ model: a, weight: 0 }], fallback: [b] }
"#,
    )
    .unwrap();
    let (router, ups) = (
        Router::from_config(&cfg).unwrap(),
        Upstreams::from_config(&cfg).unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..100 {
        let p = plan_with(&router, &ups, &req("x"), &mut rng).unwrap();
        assert_eq!(models_of(&p), ["b"]);
    }
    let p = plan_with(&router, &ups, &req("y"), &mut rng).unwrap();
    assert_eq!(models_of(&p), ["b"]);
}

#[test]
fn latency_prefers_the_lower_ewma() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(9);
    // Unmeasured counts as best: both get traffic at first.
    let firsts: Vec<String> = (0..40)
        .map(|_| {
            plan_with(&router, &ups, &req("fast"), &mut rng)
                .unwrap()
                .candidates[0]
                .model
                .to_string()
        })
        .collect();
    assert!(firsts.iter().any(|m| m == "gpt-4o-mini"));
    assert!(firsts.iter().any(|m| m == "claude-haiku"));

    ups.provider("openai")
        .unwrap()
        .record_success(0, Duration::from_millis(400));
    // Anthropic is still unmeasured, so it wins.
    for _ in 0..20 {
        let p = plan_with(&router, &ups, &req("fast"), &mut rng).unwrap();
        assert_eq!(&*p.candidates[0].model, "claude-haiku");
    }
    ups.provider("anthropic")
        .unwrap()
        .record_success(0, Duration::from_millis(900));
    for _ in 0..20 {
        let p = plan_with(&router, &ups, &req("fast"), &mut rng).unwrap();
        assert_eq!(&*p.candidates[0].model, "gpt-4o-mini");
    }
}

#[test]
fn latency_two_choices_spread_over_many_targets() {
    let cfg: Config = serde_yaml_ng::from_str(
        r#"
providers:
  p0: { kind: openai, endpoints: ["http://p0.test"] }
  p1: { kind: openai, endpoints: ["http://p1.test"] }
  p2: { kind: openai, endpoints: ["http://p2.test"] }
models:
  m0: { provider: p0, model: m }
  m1: { provider: p1, model: m }
  m2: { provider: p2, model: m }
routes:
  - { name: r, match: { model: x }, strategy: latency, targets: [{ model: m0 }, { model: m1 }, { model: m2 }] }
"#,
    )
    .unwrap();
    let (router, ups) = (
        Router::from_config(&cfg).unwrap(),
        Upstreams::from_config(&cfg).unwrap(),
    );
    for (i, ms) in [(0, 100), (1, 200), (2, 300)] {
        ups.provider(&format!("p{i}"))
            .unwrap()
            .record_success(0, Duration::from_millis(ms));
    }
    let mut rng = StdRng::seed_from_u64(4);
    let mut counts = [0; 3];
    for _ in 0..3000 {
        let p = plan_with(&router, &ups, &req("x"), &mut rng).unwrap();
        counts[p.candidates[0].model[1..].parse::<usize>().unwrap()] += 1;
    }
    // With two random distinct choices of three, the best wins 2/3, the middle 1/3 and the
    // worst never.
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[0] > 1800 && counts[1] > 800, "{counts:?}");
}

#[test]
fn least_busy_prefers_fewest_in_flight() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(9);
    let firsts: Vec<String> = (0..40)
        .map(|_| {
            plan_with(&router, &ups, &req("busy"), &mut rng)
                .unwrap()
                .candidates[0]
                .model
                .to_string()
        })
        .collect();
    assert!(firsts.iter().any(|m| m == "gpt-4o-mini"), "ties are shared");
    assert!(
        firsts.iter().any(|m| m == "claude-haiku"),
        "ties are shared"
    );

    let openai = ups.provider("openai").unwrap();
    let _a = openai.start(0);
    let _b = openai.start(0);
    let anthropic_guard = ups.provider("anthropic").unwrap().start(0);
    for _ in 0..20 {
        let p = plan_with(&router, &ups, &req("busy"), &mut rng).unwrap();
        assert_eq!(&*p.candidates[0].model, "claude-haiku");
    }
    let _c = ups.provider("anthropic").unwrap().start(0);
    let _d = ups.provider("anthropic").unwrap().start(0);
    drop(anthropic_guard);
    let _e = ups.provider("anthropic").unwrap().start(0);
    for _ in 0..20 {
        let p = plan_with(&router, &ups, &req("busy"), &mut rng).unwrap();
        assert_eq!(&*p.candidates[0].model, "gpt-4o-mini");
    }
}

#[test]
fn cost_prefers_the_cheapest_priced_target() {
    let (router, ups) = setup();
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..20 {
        let p = plan_with(&router, &ups, &req("thrifty"), &mut rng).unwrap();
        assert_eq!(&*p.candidates[0].model, "gpt-4o-mini");
    }
    // Unpriced models rank after priced ones.
    break_provider(&ups, "openai");
    let p = plan_with(&router, &ups, &req("thrifty"), &mut rng).unwrap();
    assert_eq!(&*p.candidates[0].model, "claude-haiku");
    break_provider(&ups, "anthropic");
    let p = plan_with(&router, &ups, &req("thrifty"), &mut rng).unwrap();
    assert_eq!(&*p.candidates[0].model, "llama");
}

// --- catalog and listing ---

#[test]
fn model_lookup_exposes_the_catalog() {
    let (router, _) = setup();
    let m = router.model("gpt-4o-mini").unwrap();
    assert_eq!(&*m.provider, "openai");
    assert_eq!(&*m.upstream_model, "gpt-4o-mini-2024");
    assert_eq!(m.context_window, Some(128_000));
    assert_eq!(m.price.as_ref().unwrap().output, 0.60);
    assert_eq!(router.model("embed").unwrap().mode, ModelMode::Embeddings);
    assert!(router.model("best").is_none());
}

fn ids(list: Vec<ModelListing>) -> Vec<String> {
    list.into_iter().map(|m| m.id).collect()
}

#[test]
fn models_for_key_lists_reachable_names() {
    let (router, _) = setup();
    let key = |models: &'static [String], routes: &'static [String]| KeyScope {
        name: "app",
        team: None,
        models,
        routes,
    };
    let all = ids(router.models_for_key(&key(&[], &[]), None));
    assert_eq!(
        all,
        [
            "best",
            "busy",
            "cheap",
            "claude-haiku",
            "embed",
            "fast",
            "gpt-4o-mini",
            "llama",
            "small",
            "thrifty"
        ]
    );
    let chat = router.models_for_key(&key(&[], &[]), Some(ModelMode::Chat));
    assert!(chat.iter().all(|m| m.mode == ModelMode::Chat));
    assert_eq!(
        ids(router.models_for_key(&key(&[], &[]), Some(ModelMode::Embeddings))),
        ["embed"]
    );

    let models = Box::leak(Box::new(vec!["best".to_owned(), "llama".to_owned()]));
    assert_eq!(
        ids(router.models_for_key(&key(models, &[]), None)),
        ["best", "llama"]
    );

    let routes = Box::leak(Box::new(vec!["cheap".to_owned()]));
    assert_eq!(
        ids(router.models_for_key(&key(&[], routes), None)),
        ["best", "cheap"]
    );

    let platform = KeyScope {
        name: "ops",
        team: Some("platform"),
        models: &[],
        routes: &[],
    };
    assert!(ids(router.models_for_key(&platform, None)).contains(&"internal".to_owned()));
}

#[test]
fn bad_references_are_errors_not_panics() {
    for (yaml, path) in [
        (
            "models: { a: { provider: nope, model: a } }",
            "models.a.provider",
        ),
        (
            "providers: { p: { kind: openai, endpoints: [\"http://p\"] } }\nroutes: [{ name: r, targets: [{ model: nope }] }]",
            "routes[0].targets[0].model",
        ),
        (
            "providers: { p: { kind: openai, endpoints: [\"http://p\"] } }\nmodels: { a: { provider: p, model: a } }\nroutes: [{ name: r, targets: [{ model: a }], fallback: [nope] }]",
            "routes[0].fallback[0]",
        ),
        (
            "routes: [{ name: r, targets: [] }]",
            "routes[0].targets",
        ),
        (
            "providers: { p: { kind: openai, endpoints: [\"http://p\"] } }\nmodels: { a: { provider: p, model: a } }\nroutes: [{ name: r, match: { headers: { \"bad header\": x } }, targets: [{ model: a }] }]",
            "routes[0].match.headers",
        ),
    ] {
        let cfg: Config = serde_yaml_ng::from_str(yaml).unwrap();
        match Router::from_config(&cfg) {
            Err(RoutingError::InvalidConfig { path: p, .. }) => assert_eq!(p, path),
            Err(other) => panic!("{yaml}: unexpected {other}"),
            Ok(_) => panic!("{yaml}: accepted"),
        }
    }
}
