//! `Config::validate`: the checks serde cannot make (references between sections,
//! ranges, formats), each problem reported with its key path, all of them at once.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::endpoint::parse_endpoint;
use crate::error::Problem;
use crate::guardrails::{GuardrailConfig, InjectionAction};
use crate::keyhash::is_key_hash;
use crate::model::{
    Config, LedgerSink, ModelConfig, ModelMode, ProviderConfig, ProviderKind, ProviderTlsConfig,
    RouteConfig, ServerConfig, Strategy, TlsListenConfig, FSYNC_INTERVAL_RANGE, MAX_HTTP2_STREAMS,
};
use crate::path::KeyPath;
use crate::pem::{load_certs, load_key};

/// The most names a "known: …" hint lists before it abbreviates.
const MAX_NAMES_SHOWN: usize = 10;

/// Upper bound of `retry.attempts`: more attempts only add latency to a failing request.
const MAX_ATTEMPTS: u32 = 10;

/// Smallest `server.max_body_bytes`; less cannot hold a chat request.
const MIN_BODY_BYTES: usize = 1024;

/// Bounds of `server.client.read_buffer`: below 1 KiB a request head takes many reads;
/// above 16 MiB one connection could hold a large share of a pod's memory.
const MIN_READ_BUFFER: usize = 1024;
const MAX_READ_BUFFER: usize = 16 * 1024 * 1024;

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with the NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Headers that frame or route the upstream request; the gateway sets them itself, and a
/// configured value could desynchronise the connection.
const MANAGED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Config {
    /// Every problem of this config, in document order. Lines are unknown here (`None`);
    /// [`crate::parse`] and [`crate::load`] fill them in from the source.
    pub fn validate(&self) -> Vec<Problem> {
        let mut check = Checker {
            config: self,
            problems: Vec::new(),
        };
        check.server(&self.server);
        if self.ledger.sink == LedgerSink::Postgres
            && self
                .ledger
                .url
                .as_deref()
                .is_none_or(|u| u.trim().is_empty())
        {
            check.report(
                KeyPath::root().key("ledger").key("url"),
                "the postgres sink needs a url, e.g. postgres://user:${PGPASSWORD}@host/db",
            );
        }
        if !FSYNC_INTERVAL_RANGE.contains(&self.ledger.fsync_interval) {
            check.report(
                KeyPath::root().key("ledger").key("fsync_interval"),
                format!(
                    "must be between {} and {}",
                    show(*FSYNC_INTERVAL_RANGE.start()),
                    show(*FSYNC_INTERVAL_RANGE.end())
                ),
            );
        }
        if let Some(telemetry) = &self.telemetry {
            if let Err(why) = parse_endpoint(&telemetry.otlp_endpoint) {
                check.report(
                    KeyPath::root().key("telemetry").key("otlp_endpoint"),
                    format!("invalid URL: {why}"),
                );
            }
        }
        for (name, provider) in &self.providers {
            check.provider(name, provider);
        }
        for (name, model) in &self.models {
            check.model(name, model);
        }
        for (name, guardrail) in &self.guardrails {
            check.guardrail(name, guardrail);
        }
        check.cache();
        check.policy();
        check.routes();
        check.keys();
        check.problems
    }
}

struct Checker<'a> {
    config: &'a Config,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    // === server ===

    fn server(&mut self, server: &ServerConfig) {
        let base = KeyPath::root().key("server");
        let tls_listen = server.tls.as_ref().map_or(&[][..], |t| &t.listen[..]);
        if server.listen.is_empty() && tls_listen.is_empty() {
            self.report(
                base.clone().key("listen"),
                "at least one address is required (here or in server.tls.listen)",
            );
        }
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        let listeners = server
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| (base.clone().key("listen").index(i), a))
            .chain(
                tls_listen
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (base.clone().key("tls").key("listen").index(i), a)),
            );
        for (path, text) in listeners {
            let Some(addr) = self.socket_addr(path.clone(), text) else {
                continue;
            };
            // Port 0 asks for any free port, so repeating it is no conflict.
            if addr.port() == 0 {
                continue;
            }
            match seen.get(&addr) {
                Some(first) => {
                    let first = first.clone();
                    self.report(path, format!("duplicate of {first}"));
                }
                None => {
                    seen.insert(addr, path.to_string());
                }
            }
        }
        if let Some(admin) = &server.admin_listen {
            let path = base.clone().key("admin_listen");
            if let Some(addr) = self.socket_addr(path.clone(), admin) {
                if let Some(other) = seen.get(&addr) {
                    let other = other.clone();
                    self.report(path, format!("same address as {other}"));
                }
            }
        }
        if server.threads == Some(0) {
            self.report(base.clone().key("threads"), "must be at least 1");
        }
        if server.max_body_bytes < MIN_BODY_BYTES {
            self.report(
                base.clone().key("max_body_bytes"),
                format!(
                    "{} is below the minimum of {MIN_BODY_BYTES} bytes",
                    server.max_body_bytes
                ),
            );
        }
        if let Some(tls) = &server.tls {
            self.listener_tls(base.clone().key("tls"), tls);
        }
        self.connections(&base, server);
        let sock = server.upgrade_sock.as_os_str().len();
        if sock == 0 || sock > MAX_UNIX_SOCKET_PATH {
            self.report(
                base.key("upgrade_sock"),
                format!("a Unix socket path needs 1 to {MAX_UNIX_SOCKET_PATH} bytes"),
            );
        }
    }

    fn client_limits(&mut self, path: &KeyPath, limits: &crate::ClientLimitsConfig) {
        let checks = [
            ("max_headers", limits.max_headers == 0, "must be at least 1"),
            (
                "max_header_bytes",
                limits.max_header_bytes < 1024,
                "must be at least 1024",
            ),
            (
                "header_timeout",
                limits.header_timeout.is_zero(),
                "must be above 0",
            ),
            (
                "body_timeout",
                limits.body_timeout.is_zero(),
                "must be above 0",
            ),
            (
                "idle_timeout",
                limits.idle_timeout.as_secs() == 0,
                "must be at least 1s",
            ),
            (
                "write_timeout",
                limits.write_timeout.is_zero(),
                "must be above 0",
            ),
            (
                "min_send_rate",
                limits.min_send_rate == Some(0),
                "must be at least 1 (leave it out for none)",
            ),
            (
                "max_json_depth",
                limits.max_json_depth < 2,
                "must be at least 2",
            ),
            (
                "max_inflate_ratio",
                limits.max_inflate_ratio == 0,
                "must be at least 1",
            ),
            (
                "h2_max_pending_resets",
                limits.h2_max_pending_resets == 0,
                "must be at least 1",
            ),
            (
                "h2_max_error_resets",
                limits.h2_max_error_resets == 0,
                "must be at least 1",
            ),
        ];
        for (key, bad, problem) in checks {
            if bad {
                self.report(path.clone().key(key), problem);
            }
        }
    }

    fn connections(&mut self, base: &KeyPath, server: &ServerConfig) {
        let client = base.clone().key("client");
        if !(MIN_READ_BUFFER..=MAX_READ_BUFFER).contains(&server.client.read_buffer) {
            self.report(
                client.clone().key("read_buffer"),
                format!("must be {MIN_READ_BUFFER} to {MAX_READ_BUFFER} bytes"),
            );
        }
        if server.client.keepalive_requests == Some(0) {
            self.report(
                client.clone().key("keepalive_requests"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if server.client.h2_max_streams == 0 {
            self.report(client.clone().key("h2_max_streams"), "must be at least 1");
        }
        self.client_limits(&client.clone().key("limits"), &server.client.limits);
        if server.client.h2_idle_timeout.is_some_and(|d| d.is_zero()) {
            self.report(
                client.clone().key("h2_idle_timeout"),
                "must be above 0 (leave it out to never close idle connections)",
            );
        }
        if let Some(ka) = &server.client.tcp_keepalive {
            let path = client.key("tcp_keepalive");
            if ka.idle.is_zero() {
                self.report(path.clone().key("idle"), "must be above 0");
            }
            if ka.interval.is_zero() {
                self.report(path.clone().key("interval"), "must be above 0");
            }
            if ka.count == 0 {
                self.report(path.key("count"), "must be at least 1");
            }
        }
        if server.upstream.idle_timeout.is_zero() {
            self.report(
                base.clone().key("upstream").key("idle_timeout"),
                "must be above 0",
            );
        }
    }

    fn listener_tls(&mut self, base: KeyPath, tls: &TlsListenConfig) {
        if tls.listen.is_empty() {
            self.report(
                base.clone().key("listen"),
                "at least one address is required",
            );
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                self.cert_and_key(base.clone().key("cert"), cert, base.clone().key("key"), key)
            }
            (Some(_), None) => self.report(base.clone().key("cert"), "needs key as well"),
            (None, Some(_)) => self.report(base.clone().key("key"), "needs cert as well"),
            (None, None) if tls.sni.is_empty() => self.report(
                base.clone(),
                "needs a default certificate (cert and key) or sni entries",
            ),
            (None, None) => {}
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, entry) in tls.sni.iter().enumerate() {
            let path = base.clone().key("sni").index(i);
            if entry.names.is_empty() {
                self.report(path.clone().key("names"), "at least one name is required");
            }
            for (j, name) in entry.names.iter().enumerate() {
                let name_path = path.clone().key("names").index(j);
                let lower = name.to_ascii_lowercase();
                let bare = lower.strip_prefix("*.").unwrap_or(&lower);
                if !is_dns_name(bare) {
                    self.report(
                        name_path,
                        format!("'{name}' is not a DNS name (a '*.' prefix is allowed)"),
                    );
                } else if let Some(first) = names.insert(lower, i) {
                    self.report(name_path, format!("also named by sni[{first}]"));
                }
            }
            self.cert_and_key(
                path.clone().key("cert"),
                &entry.cert,
                path.key("key"),
                &entry.key,
            );
        }
        if let Some(ca) = &tls.client_ca {
            if let Err(why) = load_certs(ca) {
                self.report(base.key("client_ca"), why);
            }
        }
    }

    fn cert_and_key(&mut self, cert_path: KeyPath, cert: &Path, key_path: KeyPath, key: &Path) {
        if let Err(why) = load_certs(cert) {
            self.report(cert_path, why);
        }
        if let Err(why) = load_key(key) {
            self.report(key_path, why);
        }
    }

    fn socket_addr(&mut self, path: KeyPath, text: &str) -> Option<SocketAddr> {
        let parsed = text.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            self.report(
                path,
                format!(
                    "'{text}' is not a socket address (expected IP:port, e.g. 0.0.0.0:8080 \
                     or [::1]:8080)"
                ),
            );
        }
        parsed
    }

    // === providers ===

    fn provider(&mut self, name: &str, provider: &ProviderConfig) {
        let base = KeyPath::root().key("providers").key(name);
        if name.trim().is_empty() {
            self.report(base.clone(), "provider name is empty");
        }
        if provider.endpoints.is_empty() {
            self.report(
                base.clone().key("endpoints"),
                "at least one endpoint is required",
            );
        }
        for (i, url) in provider.endpoints.iter().enumerate() {
            if let Err(why) = parse_endpoint(url) {
                self.report(
                    base.clone().key("endpoints").index(i),
                    format!("invalid endpoint: {why}"),
                );
            }
        }
        for (i, key) in provider.api_keys.iter().enumerate() {
            let path = base.clone().key("api_keys").index(i);
            if key.is_empty() {
                self.report(
                    path,
                    "api key is empty (is its environment variable set but empty?)",
                );
            } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.report(
                    path,
                    "api key contains whitespace or control characters (a trailing \
                     newline from a secrets file?)",
                );
            }
        }
        for (header, value) in &provider.headers {
            let path = base.clone().key("headers").key(header);
            self.header_name(path.clone(), header);
            if value.chars().any(|c| c.is_control() && c != '\t') {
                self.report(path, "header value contains control characters");
            }
        }
        if let Some(health) = &provider.health_check {
            let path = base.clone().key("health_check");
            if !health.path.starts_with('/') {
                self.report(path.clone().key("path"), "must start with '/'");
            }
            if health.interval.is_zero() {
                self.report(path.clone().key("interval"), "must be above 0");
            }
            if !(100..=599).contains(&health.expected_status) {
                self.report(
                    path.key("expected_status"),
                    format!("{} is not an HTTP status", health.expected_status),
                );
            }
        }
        match provider.kind {
            ProviderKind::Bedrock => {
                if provider
                    .region
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty())
                {
                    self.report(
                        base.clone().key("region"),
                        "bedrock needs a region, e.g. us-east-1",
                    );
                }
                match &provider.aws {
                    None => self.report(
                        base.clone().key("aws"),
                        "bedrock needs aws: { access_key_id, secret_access_key }",
                    ),
                    Some(aws) => {
                        if aws.access_key_id.trim().is_empty() {
                            self.report(base.clone().key("aws").key("access_key_id"), "is empty");
                        }
                        if aws.secret_access_key.trim().is_empty() {
                            self.report(
                                base.clone().key("aws").key("secret_access_key"),
                                "is empty",
                            );
                        }
                    }
                }
            }
            _ => {
                if provider.aws.is_some() {
                    self.report(
                        base.clone().key("aws"),
                        "only bedrock providers take aws credentials",
                    );
                }
                if provider.region.is_some() {
                    self.report(
                        base.clone().key("region"),
                        "only bedrock providers take a region",
                    );
                }
            }
        }
        if provider.api_version.is_some()
            && !matches!(
                provider.kind,
                ProviderKind::AzureOpenai | ProviderKind::Anthropic
            )
        {
            self.report(
                base.clone().key("api_version"),
                "only azure_openai and anthropic providers take an api_version",
            );
        }
        let breaker = base.clone().key("circuit_breaker");
        if provider.circuit_breaker.failures == 0 {
            self.report(breaker.clone().key("failures"), "must be at least 1");
        }
        if provider.circuit_breaker.cooldown.is_zero() {
            self.report(breaker.key("cooldown"), "must be above 0");
        }
        if !(1..=MAX_HTTP2_STREAMS).contains(&provider.http2_streams) {
            self.report(
                base.clone().key("http2_streams"),
                format!("must be between 1 and {MAX_HTTP2_STREAMS}"),
            );
        }
        if let Some(tls) = &provider.tls {
            self.provider_tls(base.key("tls"), provider, tls);
        }
    }

    fn provider_tls(&mut self, base: KeyPath, provider: &ProviderConfig, tls: &ProviderTlsConfig) {
        let https = provider
            .endpoints
            .iter()
            .any(|url| parse_endpoint(url).is_ok_and(|e| e.tls));
        if !https {
            self.report(base.clone(), "no endpoint of this provider uses https");
        }
        if let Some(ca) = &tls.ca {
            if let Err(why) = load_certs(ca) {
                self.report(base.clone().key("ca"), why);
            }
        }
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => self.cert_and_key(
                base.clone().key("client_cert"),
                cert,
                base.clone().key("client_key"),
                key,
            ),
            (Some(_), None) => {
                self.report(base.clone().key("client_cert"), "needs client_key as well")
            }
            (None, Some(_)) => {
                self.report(base.clone().key("client_key"), "needs client_cert as well")
            }
            (None, None) => {}
        }
        if let Some(name) = &tls.server_name {
            if !is_dns_name(&name.to_ascii_lowercase()) && name.parse::<std::net::IpAddr>().is_err()
            {
                self.report(
                    base.key("server_name"),
                    format!("'{name}' is not a DNS name or IP address"),
                );
            }
        }
    }

    fn header_name(&mut self, path: KeyPath, name: &str) {
        if !is_header_name(name) {
            self.report(path, format!("'{name}' is not a valid header name"));
        } else if MANAGED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            self.report(
                path,
                format!("'{name}' is set by the gateway and cannot be configured"),
            );
        }
    }

    // === models ===

    fn model(&mut self, name: &str, model: &ModelConfig) {
        let base = KeyPath::root().key("models").key(name);
        if name.trim().is_empty() {
            self.report(base.clone(), "model name is empty");
        }
        if !self.config.providers.contains_key(&model.provider) {
            let known = known(self.config.providers.keys());
            self.report(
                base.clone().key("provider"),
                format!("unknown provider '{}' {known}", model.provider),
            );
        }
        if model.model.trim().is_empty() {
            self.report(
                base.clone().key("model"),
                "the provider's model id is empty",
            );
        }
        if model.context_window == Some(0) {
            self.report(base.clone().key("context_window"), "must be above 0");
        }
        if let Some(price) = &model.price {
            let path = base.key("price");
            let fields = [
                ("input", Some(price.input)),
                ("output", Some(price.output)),
                ("cached_input", price.cached_input),
            ];
            for (field, value) in fields {
                if let Some(value) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                    self.report(
                        path.clone().key(field),
                        format!("{value} is not a price; use a finite number >= 0"),
                    );
                }
            }
        }
    }

    // === routes ===

    fn routes(&mut self) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, route) in self.config.routes.iter().enumerate() {
            let base = KeyPath::root().key("routes").index(i);
            if route.name.trim().is_empty() {
                self.report(base.clone().key("name"), "route name is empty");
            } else if let Some(first) = names.insert(&route.name, i) {
                self.report(
                    base.clone().key("name"),
                    format!(
                        "duplicate route name '{}' (also routes[{first}])",
                        route.name
                    ),
                );
            }
            self.route_match(&base, route);
            self.route_targets(&base, route);
            self.route_retry_and_timeouts(&base, route);
            self.route_guardrails(&base, route);
            if let Some(cache) = &route.cache {
                for problem in cache.validate(self.config.cache.as_ref()) {
                    let path = problem
                        .path
                        .iter()
                        .fold(base.clone().key("cache"), |p, k| p.key(*k));
                    self.report(path, problem.message);
                }
            }
        }
    }

    // === limits, budgets, state ===

    fn policy(&mut self) {
        let policy = tollgate_policy::PolicyConfig {
            limits: self.config.limits.clone(),
            budgets: self.config.budgets.clone(),
            state: self.config.state.clone(),
        };
        for problem in policy.validate() {
            let path = problem
                .path
                .iter()
                .fold(KeyPath::root(), |p, part| match part {
                    tollgate_policy::PathPart::Key(k) => p.key(k.clone()),
                    tollgate_policy::PathPart::Index(i) => p.index(*i),
                });
            self.report(path, problem.message);
        }
        let downgrades = self
            .config
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| ("limits", i, l.downgrade_to.as_ref()))
            .chain(
                self.config
                    .budgets
                    .iter()
                    .enumerate()
                    .map(|(i, b)| ("budgets", i, b.downgrade_to.as_ref())),
            );
        let mut problems = Vec::new();
        for (section, i, model) in downgrades {
            if let Some(model) = model {
                if !self.config.models.contains_key(model) {
                    let known = known(self.config.models.keys());
                    problems.push((
                        KeyPath::root().key(section).index(i).key("downgrade_to"),
                        format!("unknown model '{model}' {known}"),
                    ));
                }
            }
        }
        for (path, message) in problems {
            self.report(path, message);
        }
        if let Some(keys) = &self.config.managed_keys {
            if keys.store == LedgerSink::Postgres
                && keys.url.as_deref().is_none_or(|u| u.trim().is_empty())
            {
                self.report(
                    KeyPath::root().key("managed_keys").key("url"),
                    "the postgres store needs a url, e.g. postgres://user:${PGPASSWORD}@host/db",
                );
            }
        }
    }

    // === cache ===

    fn cache(&mut self) {
        let Some(cache) = &self.config.cache else {
            return;
        };
        let base = KeyPath::root().key("cache");
        for problem in cache.validate() {
            let path = problem.path.iter().fold(base.clone(), |p, k| p.key(*k));
            self.report(path, problem.message);
        }
        if let Some(semantic) = &cache.semantic {
            let path = base.key("semantic").key("embedding_model");
            match self.config.models.get(&semantic.embedding_model) {
                None => {
                    let known = known(self.config.models.keys());
                    self.report(
                        path,
                        format!("unknown model '{}' {known}", semantic.embedding_model),
                    );
                }
                Some(model) if model.mode != ModelMode::Embeddings => self.report(
                    path,
                    format!(
                        "'{}' is {} model; semantic caching needs an embeddings model",
                        semantic.embedding_model,
                        mode_name(model.mode)
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn route_guardrails(&mut self, base: &KeyPath, route: &RouteConfig) {
        let mut seen = BTreeSet::new();
        for (j, name) in route.guardrails.iter().enumerate() {
            let path = base.clone().key("guardrails").index(j);
            if !self.config.guardrails.contains_key(name) {
                let known = known(self.config.guardrails.keys());
                self.report(path, format!("unknown guardrail '{name}' {known}"));
            } else if !seen.insert(name) {
                self.report(path, format!("guardrail '{name}' is listed twice"));
            }
        }
    }

    // === guardrails ===

    fn guardrail(&mut self, name: &str, guardrail: &GuardrailConfig) {
        let base = KeyPath::root().key("guardrails").key(name);
        match guardrail {
            GuardrailConfig::Pii(redact) => {
                for issue in redact.validate() {
                    self.report(base.clone().join_dotted(&issue.path), issue.message);
                }
            }
            GuardrailConfig::Injection(injection) => {
                if !(injection.threshold > 0.0 && injection.threshold <= 1.0) {
                    self.report(
                        base.clone().key("threshold"),
                        "must be above 0 and at most 1",
                    );
                }
                match (&injection.reroute_to, injection.action) {
                    (None, InjectionAction::Reroute) => self.report(
                        base.clone().key("reroute_to"),
                        "action reroute needs the catalog model to reroute to",
                    ),
                    (Some(model), _) if !self.config.models.contains_key(model) => {
                        let known = known(self.config.models.keys());
                        self.report(
                            base.clone().key("reroute_to"),
                            format!("unknown model '{model}' {known}"),
                        );
                    }
                    (Some(_), action) if action != InjectionAction::Reroute => self.report(
                        base.clone().key("reroute_to"),
                        "only used with action: reroute",
                    ),
                    _ => {}
                }
            }
            GuardrailConfig::JsonOutput(_) => {}
        }
    }

    fn route_match(&mut self, base: &KeyPath, route: &RouteConfig) {
        let path = base.clone().key("match");
        for (j, model) in route.matcher.model.iter().enumerate() {
            if model.trim().is_empty() {
                self.report(path.clone().key("model").index(j), "model name is empty");
            }
        }
        for (j, key) in route.matcher.key.iter().enumerate() {
            if !self.config.keys.iter().any(|k| &k.name == key) {
                let known = known(self.config.keys.iter().map(|k| &k.name));
                self.report(
                    path.clone().key("key").index(j),
                    format!("unknown key '{key}' {known}"),
                );
            }
        }
        for header in route.matcher.headers.keys() {
            if !is_header_name(header) {
                self.report(
                    path.clone().key("headers").key(header),
                    format!("'{header}' is not a valid header name"),
                );
            }
        }
    }

    fn route_targets(&mut self, base: &KeyPath, route: &RouteConfig) {
        let targets = base.clone().key("targets");
        if route.targets.is_empty() {
            self.report(targets.clone(), "at least one target is required");
        }
        if route.strategy == Strategy::Weighted
            && !route.targets.is_empty()
            && route.targets.iter().all(|t| t.weight == 0)
        {
            self.report(
                targets.clone(),
                "every target has weight 0; strategy 'weighted' needs at least one above 0",
            );
        }
        // The first known model sets the route's mode; every other entry must match it.
        let mut route_mode: Option<(&str, ModelMode)> = None;
        let entries = route
            .targets
            .iter()
            .enumerate()
            .map(|(j, t)| (targets.clone().index(j).key("model"), &t.model, true))
            .chain(
                route
                    .fallback
                    .iter()
                    .enumerate()
                    .map(|(j, m)| (base.clone().key("fallback").index(j), m, false)),
            );
        for (path, name, is_target) in entries {
            let Some(model) = self.config.models.get(name) else {
                let known = known(self.config.models.keys());
                self.report(path, format!("unknown model '{name}' {known}"));
                continue;
            };
            if is_target && route.strategy == Strategy::Cost && model.price.is_none() {
                self.report(
                    path.clone(),
                    format!("strategy 'cost' needs a price for model '{name}'"),
                );
            }
            match route_mode {
                None => route_mode = Some((name, model.mode)),
                Some((first, mode)) if mode != model.mode => self.report(
                    path,
                    format!(
                        "model '{name}' is {} model but '{first}' is {} model; a route's \
                         targets and fallbacks must share one mode",
                        mode_name(model.mode),
                        mode_name(mode)
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn route_retry_and_timeouts(&mut self, base: &KeyPath, route: &RouteConfig) {
        let retry = base.clone().key("retry");
        let attempts = route.retry.attempts;
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            self.report(
                retry.clone().key("attempts"),
                format!("{attempts} is out of range; use 1 to {MAX_ATTEMPTS}"),
            );
        }
        if route.retry.backoff > route.retry.backoff_max {
            self.report(
                retry.key("backoff"),
                format!(
                    "{} exceeds backoff_max ({})",
                    show(route.retry.backoff),
                    show(route.retry.backoff_max)
                ),
            );
        }
        let timeouts = base.clone().key("timeouts");
        let t = &route.timeouts;
        for (field, value) in [
            ("connect", t.connect),
            ("first_token", t.first_token),
            ("idle", t.idle),
            ("total", t.total),
        ] {
            if value.is_zero() {
                self.report(timeouts.clone().key(field), "must be above 0");
            }
        }
    }

    // === keys ===

    fn keys(&mut self) {
        let config = self.config;
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut hashes: HashMap<&str, usize> = HashMap::new();
        let requestable: BTreeSet<&String> = config
            .models
            .keys()
            .chain(config.routes.iter().flat_map(|r| &r.matcher.model))
            .collect();
        for (i, key) in config.keys.iter().enumerate() {
            let base = KeyPath::root().key("keys").index(i);
            if key.name.trim().is_empty() {
                self.report(base.clone().key("name"), "key name is empty");
            } else if let Some(first) = names.insert(&key.name, i) {
                self.report(
                    base.clone().key("name"),
                    format!("duplicate key name '{}' (also keys[{first}])", key.name),
                );
            }
            if !is_key_hash(&key.hash) {
                self.report(
                    base.clone().key("hash"),
                    "expected 'sha256:' and 64 lowercase hex digits (`tollgate keys hash` \
                     prints one)",
                );
            } else if let Some(first) = hashes.insert(&key.hash, i) {
                self.report(
                    base.clone().key("hash"),
                    format!("same hash as keys[{first}]; each key needs its own secret"),
                );
            }
            for (j, model) in key.models.iter().enumerate() {
                if !requestable.contains(model) {
                    self.report(
                        base.clone().key("models").index(j),
                        format!(
                            "unknown model '{model}': neither a catalog model nor a route's \
                             match.model {}",
                            known(requestable.iter().copied())
                        ),
                    );
                }
            }
            for (j, route) in key.routes.iter().enumerate() {
                if !config.routes.iter().any(|r| &r.name == route) {
                    let known = known(config.routes.iter().map(|r| &r.name));
                    self.report(
                        base.clone().key("routes").index(j),
                        format!("unknown route '{route}' {known}"),
                    );
                }
            }
        }
    }
}

/// An HTTP token (RFC 9110), the syntax of a header name.
/// A host name of letters, digits and hyphens in dot-separated labels of 1 to 63
/// characters, at most 253 in all (RFC 1123); lowercase expected.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn mode_name(mode: ModelMode) -> &'static str {
    match mode {
        ModelMode::Chat => "a chat",
        ModelMode::Embeddings => "an embeddings",
    }
}

fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// `(known: a, b)`, abbreviated after [`MAX_NAMES_SHOWN`] names.
fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        return "(none are defined)".to_owned();
    }
    let mut shown = names[..names.len().min(MAX_NAMES_SHOWN)].join(", ");
    if names.len() > MAX_NAMES_SHOWN {
        shown.push_str(&format!(" and {} more", names.len() - MAX_NAMES_SHOWN));
    }
    format!("(known: {shown})")
}
