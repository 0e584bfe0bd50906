//! Loading whole documents through the public API: parsing, interpolation, and the
//! located messages of every validation rule.
//!
//! Expected problems are written into the YAML under test as `# <- path: message` markers
//! on the line the problem must be reported at; `check` asserts that exactly those
//! problems come back (message text as a prefix).

use std::path::PathBuf;
use std::time::Duration;

use tollgate_config::{
    hash_key, load, parse, ConfigErrors, GuardrailConfig, InjectionAction, LedgerDurability,
    ModelMode, OnInvalidJson, RetryOn, Strategy,
};

const ORIGIN: &str = "t.yaml";

/// Providers and models the rule tests build on (lines 1-13).
const CATALOG: &str = "\
providers:
  openai:
    kind: openai
    endpoints: [\"https://api.openai.com\"]
  local: { kind: openai, endpoints: [\"http://127.0.0.1:11434\"] }
models:
  mini: { provider: openai, model: gpt-4o-mini, price: { input: 0.15, output: 0.6 } }
  big: { provider: openai, model: gpt-4o, price: { input: 2.5, output: 10 } }
  llama: { provider: local, model: llama3.2 }
  embed:
    provider: openai
    model: text-embedding-3-small
    mode: embeddings
";

fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml, ORIGIN) {
        Ok(_) => Vec::new(),
        Err(err) => err.to_string().lines().map(str::to_owned).collect(),
    }
}

/// Asserts that `yaml` yields exactly the problems its `# <- ` markers announce.
fn check(yaml: &str) {
    let got = errors(yaml);
    let expected: Vec<String> = yaml
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let (_, want) = line.split_once("# <- ")?;
            Some(format!("{ORIGIN}:{}: {want}", i + 1))
        })
        .collect();
    assert!(!expected.is_empty(), "no markers in the test document");
    for want in &expected {
        assert!(
            got.iter().any(|line| line.starts_with(want.as_str())),
            "missing problem\n  {want}\ngot:\n  {}",
            got.join("\n  ")
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected problems:\n  {}",
        got.join("\n  ")
    );
}

fn with_catalog(rest: &str) -> String {
    format!("{CATALOG}{rest}")
}

fn conf_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conf/tollgate.yaml")
}

// === documents that load ===

#[test]
fn a_good_config_parses_with_defaults_filled_in() {
    let yaml = with_catalog(
        "\
routes:
  - name: r
    match: { model: chat, team: [a, b] }
    strategy: cost
    targets: [{ model: mini, weight: 3 }, { model: big }]
    fallback: [llama]
    retry: { attempts: 3, on: [429, \"5xx\", timeout], backoff: 50ms }
    timeouts: { connect: 2s, first_token: 10s }
  - name: embeddings
    match: { model: embed }
    targets: [{ model: embed }]
keys:
  - { name: k, hash: \"HASH\", team: a, models: [chat, mini], routes: [r] }
",
    )
    .replace("HASH", &hash_key("secret"));
    let config = parse(&yaml, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen, ["0.0.0.0:8080"]);
    assert_eq!(config.server.max_body_bytes, 32 * 1024 * 1024);
    assert_eq!(config.models["embed"].mode, ModelMode::Embeddings);
    let route = &config.routes[0];
    assert_eq!(route.strategy, Strategy::Cost);
    assert_eq!(route.matcher.model, ["chat"]);
    assert_eq!(route.matcher.team, ["a", "b"]);
    assert_eq!(route.targets[0].weight, 3);
    assert_eq!(route.targets[1].weight, 1);
    assert_eq!(
        route.retry.on,
        [RetryOn::RateLimited, RetryOn::ServerError, RetryOn::Timeout]
    );
    assert_eq!(route.retry.backoff.as_millis(), 50);
    assert_eq!(route.retry.backoff_max.as_secs(), 2);
    assert_eq!(route.timeouts.total.as_secs(), 600);
    assert_eq!(config.routes[1].retry.attempts, 2);
    assert_eq!(config.keys[0].team.as_deref(), Some("a"));
}

#[test]
fn an_empty_document_is_the_defaults() {
    let config = parse("", ORIGIN).unwrap();
    assert!(config.routes.is_empty());
    assert_eq!(
        config.server.admin_listen.as_deref(),
        Some("127.0.0.1:9090")
    );
    let config = parse("# nothing but a comment\n", ORIGIN).unwrap();
    assert!(config.providers.is_empty());
}

#[test]
fn the_shipped_config_loads() {
    std::env::set_var("OPENAI_API_KEY", "sk-test-openai-dummy");
    std::env::set_var("GROQ_API_KEY", "gsk-test-groq-dummy");
    let config = load(&conf_file()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.providers["openai"].api_keys,
        ["sk-test-openai-dummy"]
    );
    assert_eq!(config.providers["groq"].api_keys, ["gsk-test-groq-dummy"]);
    assert!(config
        .routes
        .iter()
        .any(|r| r.strategy == Strategy::Weighted && !r.fallback.is_empty()));
    assert!(config
        .routes
        .iter()
        .any(|r| r.strategy == Strategy::Latency));
    assert_eq!(config.keys.len(), 1);
}

#[test]
fn truncated_documents_fail_cleanly() {
    std::env::set_var("OPENAI_API_KEY", "sk-test-openai-dummy");
    std::env::set_var("GROQ_API_KEY", "gsk-test-groq-dummy");
    let text = std::fs::read_to_string(conf_file()).unwrap();
    for end in (0..text.len())
        .step_by(9)
        .filter(|&i| text.is_char_boundary(i))
    {
        // Any outcome but a panic is fine; most prefixes are valid YAML.
        let _ = parse(&text[..end], ORIGIN);
    }
}

#[test]
fn load_reports_unreadable_files() {
    let err = load(&conf_file().with_file_name("does-not-exist.yaml")).unwrap_err();
    assert!(matches!(err, ConfigErrors::Read { .. }), "{err}");
    assert!(err.to_string().contains("does-not-exist.yaml: cannot read"));
}

#[test]
fn load_names_the_file_in_messages() {
    let path = std::env::temp_dir().join(format!("tollgate-config-{}.yaml", std::process::id()));
    std::fs::write(&path, "server:\n  threads: 0\n").unwrap();
    let err = load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        err,
        format!("{}:2: server.threads: must be at least 1", path.display())
    );
}

// === environment interpolation ===

#[test]
fn interpolates_variables_and_defaults() {
    std::env::set_var("TOLLGATE_T1_KEY", "sk-t1");
    std::env::set_var("TOLLGATE_T1_THREADS", "3");
    let yaml = "\
server:
  threads: ${TOLLGATE_T1_THREADS}
  admin_listen: \"127.0.0.1:${TOLLGATE_T1_UNSET:-9999}\"
providers:
  p:
    kind: openai
    endpoints: [\"${TOLLGATE_T1_UNSET_URL:-http://127.0.0.1:11434}\"]
    api_keys: [\"${TOLLGATE_T1_KEY}\", 'literal-$${NOT_A_VAR}']
";
    let config = parse(yaml, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.threads, Some(3));
    assert_eq!(
        config.server.admin_listen.as_deref(),
        Some("127.0.0.1:9999")
    );
    let p = &config.providers["p"];
    assert_eq!(p.endpoints, ["http://127.0.0.1:11434"]);
    assert_eq!(p.api_keys, ["sk-t1", "literal-${NOT_A_VAR}"]);
}

#[test]
fn a_missing_variable_is_named_with_its_line() {
    let yaml = "\
providers:
  p:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    api_keys:
      - \"${TOLLGATE_T2_MISSING}\"   # <- providers.p.api_keys[0]: environment variable TOLLGATE_T2_MISSING is not set
";
    check(yaml);
}

#[test]
fn comments_are_not_interpolated() {
    let config = parse(
        "# ${TOLLGATE_T3_MISSING}\nserver: {} # ${ALSO_MISSING}\n",
        ORIGIN,
    );
    assert!(config.is_ok());
}

#[test]
fn a_secret_with_quotes_and_newlines_stays_data() {
    let secret = "sk-\"q\"': x\n- y #z";
    std::env::set_var("TOLLGATE_T4_HEADER", secret);
    let yaml = "\
providers:
  p:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    headers:
      X-A: ${TOLLGATE_T4_HEADER}
      X-B: \"${TOLLGATE_T4_HEADER}\"
";
    let err = parse(yaml, ORIGIN).unwrap_err().to_string();
    // The newline is refused by validation, but the value arrived whole and unparsed.
    assert_eq!(
        err,
        "t.yaml:6: providers.p.headers.X-A: header value contains control characters\n\
         t.yaml:7: providers.p.headers.X-B: header value contains control characters"
    );

    let quotes_only = r#"sk-"q"':x-y#z}]\"#;
    std::env::set_var("TOLLGATE_T4_KEY", quotes_only);
    let yaml = "\
providers:
  p:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    api_keys:
      - ${TOLLGATE_T4_KEY}
      - \"${TOLLGATE_T4_KEY}\"
";
    let config = parse(yaml, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.providers["p"].api_keys, [quotes_only, quotes_only]);
}

#[test]
fn secrets_never_appear_in_messages() {
    let secret = "sk-live-0123456789\"abc";
    std::env::set_var("TOLLGATE_T5_KEY", secret);
    let yaml = "\
providers:
  p:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    api_keys: ${TOLLGATE_T5_KEY}
";
    let err = parse(yaml, ORIGIN).unwrap_err().to_string();
    assert!(
        err.starts_with("t.yaml:5: providers.p.api_keys: invalid type"),
        "{err}"
    );
    assert!(err.contains("${TOLLGATE_T5_KEY}"), "{err}");
    assert!(!err.contains("0123456789"), "{err}");

    let literal = "\
providers:
  p:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    api_keys: sk-literal-9876543210
";
    let err = parse(literal, ORIGIN).unwrap_err().to_string();
    assert!(err.contains("<api key>"), "{err}");
    assert!(!err.contains("9876543210"), "{err}");
}

// === syntax and types ===

#[test]
fn a_syntax_error_has_its_line() {
    let err = parse("server:\n  listen: [\"a\"\nmodels: {}\n", ORIGIN).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("t.yaml:3: "), "{text}");
    assert_eq!(err.problems().len(), 1);
}

#[test]
fn a_duplicate_key_is_reported_where_it_repeats() {
    check(
        "\
server:
  threads: 2
  listen: [\"0.0.0.0:1\"]
  threads: 3   # <- server.threads: duplicate key (first on line 2)
",
    );
}

#[test]
fn an_unknown_key_is_rejected_with_path_and_line() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
  - name: b
    targets: [{ model: mini }]
    retry:
      attempts: 2
      atempts: 3   # <- routes[1].retry.atempts: unknown field `atempts`, expected one of
",
    ));
}

#[test]
fn a_bad_duration_is_rejected_with_its_path() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
    timeouts:
      connect: 10   # <- routes[0].timeouts.connect: invalid type: integer `10`
",
    ));
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
    timeouts:
      connect: ten seconds   # <- routes[0].timeouts.connect: invalid value: string \"ten seconds\", expected a duration
",
    ));
}

#[test]
fn a_bad_retry_condition_names_its_element() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
  - name: b
    targets: [{ model: mini }]
    retry: { on: [4xx] }   # <- routes[1].retry.on[0]: unknown retry condition '4xx'
",
    ));
}

#[test]
fn a_missing_field_points_at_its_parent() {
    check(&with_catalog(
        "\
routes:
  - name: a   # <- routes[0]: missing field `targets`
",
    ));
}

#[test]
fn a_wrongly_typed_match_says_what_it_expected() {
    check(&with_catalog(
        "\
routes:
  - name: a
    match: { model: { a: b } }   # <- routes[0].match.model: invalid type: map, expected a string or a list of strings
    targets: [{ model: mini }]
",
    ));
}

// === validation: all at once ===

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = with_catalog(
        "\
server:
  threads: 0              # <- server.threads: must be at least 1
routes:
  - name: a
    targets: [{ model: gpt-5 }]   # <- routes[0].targets[0].model: unknown model 'gpt-5' (known: big, embed, llama, mini)
    retry: { attempts: 0 }        # <- routes[0].retry.attempts: 0 is out of range; use 1 to 10
",
    );
    assert_eq!(errors(&yaml).len(), 3);
    check(&yaml);
}

// === validation: server ===

#[test]
fn server_listen_addresses_must_parse() {
    check(
        "\
server:
  listen: []   # <- server.listen: at least one address is required
",
    );
    check(
        "\
server:
  listen:
    - localhost:8080   # <- server.listen[0]: 'localhost:8080' is not a socket address
    - \"[::1]:8080\"
    - \"[::1]:8080\"   # <- server.listen[2]: duplicate of server.listen[1]
    - 127.0.0.1:0
    - 127.0.0.1:0
  admin_listen: \"[::1]:8080\"   # <- server.admin_listen: same address as server.listen[1]
",
    );
    check(
        "\
server:
  admin_listen: localhost:9090   # <- server.admin_listen: 'localhost:9090' is not a socket address
",
    );
}

#[test]
fn server_limits_are_checked() {
    check(
        "\
server:
  max_body_bytes: 1023   # <- server.max_body_bytes: 1023 is below the minimum of 1024 bytes
  threads: 0             # <- server.threads: must be at least 1
",
    );
    assert!(parse("server: { admin_listen: null }", ORIGIN).is_ok());
}

// === validation: providers ===

#[test]
fn provider_endpoints_must_be_http_urls() {
    check(
        "\
providers:
  a:
    kind: openai
    endpoints: []   # <- providers.a.endpoints: at least one endpoint is required
  b:
    kind: openai
    endpoints:
      - https://api.example.com/v1
      - ftp://files.example.com      # <- providers.b.endpoints[1]: invalid endpoint: the scheme must be http or https
      - https://a.example/x?key=1    # <- providers.b.endpoints[2]: invalid endpoint: a query string is not allowed
      - https://a.example/#top       # <- providers.b.endpoints[3]: invalid endpoint: a fragment is not allowed
      - https://                     # <- providers.b.endpoints[4]: invalid endpoint: the URL has no host
      - http://[::1]:8000
",
    );
}

#[test]
fn provider_keys_and_headers_are_checked_without_quoting_them() {
    let yaml = "\
providers:
  a:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    api_keys:
      - \"\"                        # <- providers.a.api_keys[0]: api key is empty
      - \"sk-secret-value\\n\"        # <- providers.a.api_keys[1]: api key contains whitespace or control characters
    headers:
      Content-Length: \"5\"         # <- providers.a.headers.Content-Length: 'Content-Length' is set by the gateway
      \"Bad Name\": x               # <- providers.a.headers[\"Bad Name\"]: 'Bad Name' is not a valid header name
      X-Token: \"tok-secret-value\\r\"   # <- providers.a.headers.X-Token: header value contains control characters
";
    check(yaml);
    let err = errors(yaml).join("\n");
    assert!(!err.contains("secret-value"), "{err}");
}

#[test]
fn provider_health_checks_and_breakers_are_checked() {
    check(
        "\
providers:
  a:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    health_check:
      path: v1/models        # <- providers.a.health_check.path: must start with '/'
      interval: 0s           # <- providers.a.health_check.interval: must be above 0
      expected_status: 42    # <- providers.a.health_check.expected_status: 42 is not an HTTP status
    circuit_breaker:
      failures: 0            # <- providers.a.circuit_breaker.failures: must be at least 1
      cooldown: 0s           # <- providers.a.circuit_breaker.cooldown: must be above 0
",
    );
}

// === validation: models ===

#[test]
fn models_reference_providers_and_have_sane_numbers() {
    check(
        "\
providers:
  openai: { kind: openai, endpoints: [\"https://api.openai.com\"] }
models:
  a: { provider: opeanai, model: x }   # <- models.a.provider: unknown provider 'opeanai' (known: openai)
  b:
    provider: openai
    model: \"\"                # <- models.b.model: the provider's model id is empty
    context_window: 0        # <- models.b.context_window: must be above 0
  \"gpt-4.1\":
    provider: openai
    model: gpt-4.1
    price:
      input: -1              # <- models[\"gpt-4.1\"].price.input: -1 is not a price; use a finite number >= 0
      output: .inf           # <- models[\"gpt-4.1\"].price.output: inf is not a price
      cached_input: .nan     # <- models[\"gpt-4.1\"].price.cached_input: NaN is not a price
",
    );
}

// === validation: routes ===

#[test]
fn route_names_are_unique_and_non_empty() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
  - name: \"\"   # <- routes[1].name: route name is empty
    targets: [{ model: mini }]
  - name: a     # <- routes[2].name: duplicate route name 'a' (also routes[0])
    targets: [{ model: mini }]
",
    ));
}

#[test]
fn route_targets_and_fallbacks_must_be_catalog_models() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: []   # <- routes[0].targets: at least one target is required
  - name: b
    targets:
      - { model: mini }
      - { model: gpt-5 }   # <- routes[1].targets[1].model: unknown model 'gpt-5' (known: big, embed, llama, mini)
    fallback: [big, nope]   # <- routes[1].fallback[1]: unknown model 'nope'
",
    ));
}

#[test]
fn route_match_model_may_shadow_a_catalog_model() {
    let yaml = with_catalog(
        "\
routes:
  - name: a
    match: { model: mini }
    targets: [{ model: big }]
",
    );
    assert!(parse(&yaml, ORIGIN).is_ok());
}

#[test]
fn route_match_keys_must_exist() {
    check(&with_catalog(
        "\
routes:
  - name: a
    match:
      key: [ghost]          # <- routes[0].match.key[0]: unknown key 'ghost' (none are defined)
      headers: { \"x y\": z }  # <- routes[0].match.headers[\"x y\"]: 'x y' is not a valid header name
    targets: [{ model: mini }]
",
    ));
}

#[test]
fn weighted_routes_need_a_positive_weight() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini, weight: 0 }, { model: big, weight: 0 }]   # <- routes[0].targets: every target has weight 0
  - name: b
    strategy: latency
    targets: [{ model: mini, weight: 0 }]
",
    ));
}

#[test]
fn cost_routes_need_prices() {
    check(&with_catalog(
        "\
routes:
  - name: a
    strategy: cost
    targets:
      - { model: mini }
      - { model: llama }   # <- routes[0].targets[1].model: strategy 'cost' needs a price for model 'llama'
    fallback: [llama]
",
    ));
}

#[test]
fn a_route_does_not_mix_chat_and_embeddings() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }, { model: embed }]   # <- routes[0].targets[1].model: model 'embed' is an embeddings model but 'mini' is a chat model
    fallback:
      - embed   # <- routes[0].fallback[0]: model 'embed' is an embeddings model but 'mini' is a chat model
",
    ));
}

#[test]
fn retry_and_timeouts_are_in_range() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
    retry:
      attempts: 11       # <- routes[0].retry.attempts: 11 is out of range; use 1 to 10
      backoff: 5s        # <- routes[0].retry.backoff: 5s exceeds backoff_max (2s)
    timeouts:
      connect: 0s        # <- routes[0].timeouts.connect: must be above 0
      total: 0ms         # <- routes[0].timeouts.total: must be above 0
  - name: b
    targets: [{ model: mini }]
    retry:
      backoff_max: 1s
      backoff: 3s        # <- routes[1].retry.backoff: 3s exceeds backoff_max (1s)
",
    ));
}

#[test]
fn a_defaulted_value_is_reported_at_its_parent() {
    check(&with_catalog(
        "\
routes:
  - name: a
    targets: [{ model: mini }]
    retry: { backoff_max: 10ms }   # <- routes[0].retry.backoff: 100ms exceeds backoff_max (10ms)
",
    ));
}

// === validation: keys ===

#[test]
fn keys_have_unique_names_and_well_formed_unique_hashes() {
    let yaml = with_catalog(
        "\
keys:
  - { name: a, hash: \"H1\" }
  - { name: a, hash: \"H2\" }   # <- keys[1].name: duplicate key name 'a' (also keys[0])
  - { name: b, hash: \"H1\" }   # <- keys[2].hash: same hash as keys[0]
  - { name: c, hash: \"sha256:ABC\" }   # <- keys[3].hash: expected 'sha256:' and 64 lowercase hex digits
  - { name: \"\", hash: \"H3\" }   # <- keys[4].name: key name is empty
",
    )
    .replace("H1", &hash_key("one"))
    .replace("H2", &hash_key("two"))
    .replace("H3", &hash_key("three"));
    check(&yaml);
}

#[test]
fn keys_reference_requestable_models_and_routes() {
    let yaml = with_catalog(
        "\
routes:
  - name: r
    match: { model: chat }
    targets: [{ model: mini }]
keys:
  - name: a
    hash: \"H1\"
    models: [chat, mini, gpt-5]   # <- keys[0].models[2]: unknown model 'gpt-5': neither a catalog model nor a route's match.model
    routes:
      - r
      - s   # <- keys[0].routes[1]: unknown route 's' (known: r)
",
    )
    .replace("H1", &hash_key("one"));
    check(&yaml);
}

#[test]
fn guardrails_load_with_their_kind_and_defaults() {
    let yaml = with_catalog(
        "\
guardrails:
  pii: { kind: pii, entities: [email], actions: { email: pseudonymize } }
  inj: { kind: injection, action: reroute, reroute_to: llama }
  json: { kind: json_output }
routes:
  - { name: r, match: { model: m }, targets: [{ model: mini }], guardrails: [pii, inj, json] }
",
    );
    let config = parse(&yaml, ORIGIN).unwrap();
    assert_eq!(config.routes[0].guardrails, ["pii", "inj", "json"]);
    match &config.guardrails["inj"] {
        GuardrailConfig::Injection(inj) => {
            assert_eq!(inj.action, InjectionAction::Reroute);
            assert!((inj.threshold - 0.5).abs() < f32::EPSILON);
        }
        other => panic!("{other:?}"),
    }
    match &config.guardrails["json"] {
        GuardrailConfig::JsonOutput(json) => assert_eq!(json.on_invalid, OnInvalidJson::Error),
        other => panic!("{other:?}"),
    }
    assert!(matches!(config.guardrails["pii"], GuardrailConfig::Pii(_)));
}

#[test]
fn guardrail_problems_are_located() {
    check(&with_catalog(
        "\
guardrails:
  pii: # <- guardrails.pii.hash_key: a rule uses `hash`
    kind: pii
    actions: { email: hash }
    custom:
      - name: Bad Name # <- guardrails.pii.custom[0].name: must be 1 to
        pattern: 'x'
  inj:
    kind: injection
    threshold: 2 # <- guardrails.inj.threshold: must be above 0 and at most 1
    action: reroute
    reroute_to: nowhere # <- guardrails.inj.reroute_to: unknown model 'nowhere'
routes:
  - name: r
    targets: [{ model: mini }]
    guardrails:
      - pii
      - missing # <- routes[0].guardrails[1]: unknown guardrail 'missing'
      - pii # <- routes[0].guardrails[2]: guardrail 'pii' is listed twice
",
    ));
}

#[test]
fn cache_blocks_load_and_their_problems_are_located() {
    let yaml = with_catalog(
        "\
cache: { store: memory, max_bytes: 1048576, semantic: { embedding_model: embed } }
routes:
  - { name: r, match: { model: m }, targets: [{ model: mini }], cache: { ttl: 10m, semantic: { threshold: 0.9 } } }
",
    );
    let config = parse(&yaml, ORIGIN).unwrap();
    let route_cache = config.routes[0].cache.as_ref().unwrap();
    assert!(route_cache.enabled);
    assert_eq!(route_cache.ttl, std::time::Duration::from_secs(600));
    check(&with_catalog(
        "\
cache:
  semantic:
    embedding_model: mini # <- cache.semantic.embedding_model: 'mini' is a chat model
routes:
  - name: r
    targets: [{ model: mini }]
    cache:
      semantic:
        threshold: 2 # <- routes[0].cache.semantic.threshold:
",
    ));
}

// === server: TLS, connections, shutdown and upgrade ===

/// A directory with a certificate and key made for the test, and a file that is not PEM.
struct PemDir(PathBuf);

#[allow(clippy::unwrap_used)]
impl PemDir {
    fn new(tag: &str) -> PemDir {
        let dir =
            std::env::temp_dir().join(format!("tollgate-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["api.example.com".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
        PemDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn server_edge_settings_have_documented_defaults() {
    let server = parse("", ORIGIN).unwrap().server;
    assert!(server.tls.is_none());
    assert!(!server.h2c);
    assert_eq!(server.shutdown_grace, std::time::Duration::from_secs(300));
    assert_eq!(server.shutdown_timeout, std::time::Duration::from_secs(5));
    assert_eq!(server.idle_drain, std::time::Duration::from_secs(2));
    assert_eq!(
        server.upgrade_sock,
        PathBuf::from("/tmp/tollgate-upgrade.sock")
    );
    assert_eq!(server.pid_file, None);
    assert_eq!(server.client.read_buffer, 65536);
    assert_eq!(server.client.keepalive_requests, None);
    assert_eq!(server.client.h2_max_streams, 100);
    assert_eq!(server.client.tcp_keepalive, None);
    assert_eq!(server.upstream.keepalive_pool, None);
    assert_eq!(
        server.upstream.idle_timeout,
        std::time::Duration::from_secs(60)
    );
}

#[test]
fn tls_listeners_and_provider_tls_load() {
    let pem = PemDir::new("ok");
    let yaml = format!(
        "\
server:
  listen: []
  tls:
    listen: [\"127.0.0.1:8443\"]
    cert: {cert}
    key: {key}
    sni: [{{ names: [api.example.com, \"*.internal.example.com\"], cert: {cert}, key: {key} }}]
    client_ca: {cert}
  client: {{ tcp_keepalive: {{ idle: 30s }} }}
providers:
  private:
    kind: openai
    endpoints: [\"https://10.0.0.7:8443\"]
    tls: {{ ca: {cert}, client_cert: {cert}, client_key: {key}, server_name: models.internal }}
",
        cert = pem.path("cert.pem"),
        key = pem.path("key.pem"),
    );
    let config = parse(&yaml, ORIGIN).unwrap();
    let tls = config.server.tls.unwrap();
    assert!(tls.http2, "HTTP/2 is offered by default");
    assert_eq!(tls.sni[0].names.len(), 2);
    let keepalive = config.server.client.tcp_keepalive.unwrap();
    assert_eq!(keepalive.interval, std::time::Duration::from_secs(10));
    let provider_tls = config.providers["private"].tls.clone().unwrap();
    assert_eq!(provider_tls.server_name.as_deref(), Some("models.internal"));
}

#[test]
fn tls_and_connection_problems_are_located() {
    let pem = PemDir::new("bad");
    let (cert, key, junk) = (
        pem.path("cert.pem"),
        pem.path("key.pem"),
        pem.path("junk.pem"),
    );
    let missing = pem.path("missing.pem");
    check(&format!(
        "\
server:
  listen: []
  tls:
    listen: [\"127.0.0.1:8443\", \"127.0.0.1:8443\"] # <- server.tls.listen[1]: duplicate of server.tls.listen[0]
    cert: {cert}
    key: {junk} # <- server.tls.key: {junk} holds no private key
    sni:
      - names: [\"bad name\"] # <- server.tls.sni[0].names[0]: 'bad name' is not a DNS name
        cert: {missing} # <- server.tls.sni[0].cert: cannot read {missing}
        key: {key}
    client_ca: {key} # <- server.tls.client_ca: {key} holds no certificate
  client:
    read_buffer: 10 # <- server.client.read_buffer: must be 1024 to 16777216 bytes
    h2_max_streams: 0 # <- server.client.h2_max_streams: must be at least 1
  upgrade_sock: \"\" # <- server.upgrade_sock: a Unix socket path needs 1 to 107 bytes
providers:
  plain:
    kind: openai
    endpoints: [\"http://127.0.0.1:1\"]
    tls: # <- providers.plain.tls: no endpoint of this provider uses https
      client_cert: {cert} # <- providers.plain.tls.client_cert: needs client_key as well
"
    ));
}

#[test]
fn a_tls_listener_needs_a_certificate() {
    check(
        "\
server:
  tls: # <- server.tls: needs a default certificate (cert and key) or sni entries
    listen: []  # <- server.tls.listen: at least one address is required
",
    );
}

#[test]
fn limits_budgets_state_and_managed_keys_load_and_are_checked() {
    let yaml = with_catalog(
        "\
limits:
  - { name: team-rpm, scope: team, rpm: 60, tpm: 100000, on_exceed: downgrade, downgrade_to: mini }
budgets:
  - { name: monthly, scope: team, usd: 500, period: monthly, alerts: [0.8, 1.0] }
state: { backend: memory }
managed_keys: { store: sqlite, path: data/keys.db }
",
    );
    let config = parse(&yaml, ORIGIN).unwrap();
    assert_eq!(config.limits[0].name, "team-rpm");
    assert_eq!(config.budgets.len(), 1);
    assert!(config.managed_keys.is_some());
    check(&with_catalog(
        "\
limits:
  - name: x
    scope: team
    rpm: 10
    on_exceed: downgrade
    downgrade_to: nowhere # <- limits[0].downgrade_to: unknown model 'nowhere'
managed_keys: { store: postgres } # <- managed_keys.url: the postgres store needs a url
",
    ));
}

#[test]
fn http2_providers_load_and_bad_stream_counts_are_located() {
    let config = parse(
        "providers:\n  v: { kind: openai, endpoints: [\"http://127.0.0.1:8000\"], http2: true, http2_streams: 250 }\nmodels: {}\n",
        ORIGIN,
    )
    .unwrap();
    assert!(config.providers["v"].http2);
    assert_eq!(config.providers["v"].http2_streams, 250);
    let plain = parse(CATALOG, ORIGIN).unwrap();
    assert!(!plain.providers["local"].http2);
    assert_eq!(plain.providers["local"].http2_streams, 100);
    check(
        "\
providers:
  v:
    kind: openai
    endpoints: [\"http://127.0.0.1:8000\"]
    http2: true
    http2_streams: 0 # <- providers.v.http2_streams: must be between 1 and 1000
models: {}
",
    );
}

#[test]
fn ledger_durability_defaults_to_process_and_bad_intervals_are_located() {
    let plain = parse(CATALOG, ORIGIN).unwrap();
    assert_eq!(plain.ledger.durability, LedgerDurability::Process);
    assert_eq!(plain.ledger.fsync_interval, Duration::from_secs(1));
    let config = parse(
        "providers: {}\nmodels: {}\nledger: { durability: machine, fsync_interval: 250ms }\n",
        ORIGIN,
    )
    .unwrap();
    assert_eq!(config.ledger.durability, LedgerDurability::Machine);
    assert_eq!(config.ledger.fsync_interval, Duration::from_millis(250));
    check(
        "\
providers: {}
models: {}
ledger:
  fsync_interval: 2m # <- ledger.fsync_interval: must be between 10ms and 1m
",
    );
}
