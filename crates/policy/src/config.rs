//! The operator-facing file format of `limits:`, `budgets:` and `state:` as serde structs,
//! and [`PolicyConfig::validate`], which reports every problem with its key path.
//!
//! Every struct rejects unknown keys; durations are humantime (`500ms`, `5s`); money is an
//! exact decimal (`usd: 500`, `usd: "0.25"`). Checks that need the rest of the gateway's
//! config (does `downgrade_to` name a catalog model?) belong to the caller.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The longest `queue.max_wait` accepted: a queued request holds a client connection and a
/// slot in memory for that long.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(600);

/// The deepest queue accepted per counter; each waiter is a parked task and its request.
pub const MAX_QUEUE_DEPTH: usize = 100_000;

/// The largest alert fraction accepted (10 = 1000 % of the budget).
const MAX_ALERT_FRACTION: Decimal = Decimal::from_parts(10, 0, 0, false, 0);

/// `limits:`, `budgets:` and `state:` of a `tollgate.yaml`, as one document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    #[serde(default)]
    pub state: StateConfig,
}

// === limits ===

/// One rate limit: `{ name: billing-rpm, scope: team, match: { team: billing }, rpm: 60 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Unique among limits; names the limit in rejections, logs and counter keys.
    pub name: String,
    /// What one counter is shared by: each key, user, team, model or route gets its own
    /// counter, or `global` shares one by every matching request.
    pub scope: LimitScope,
    /// Which requests the limit applies to; empty applies to all.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute; admitted on an estimate, corrected with the
    /// metered count.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests (and streams) in flight at once.
    #[serde(default)]
    pub concurrency: Option<u64>,
    /// What happens to a request over the limit. Default `reject`.
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// `on_exceed: queue`: how long and how many may wait. Defaults apply when absent.
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    /// `on_exceed: downgrade`: the model a request over the limit is served by instead.
    #[serde(default)]
    pub downgrade_to: Option<String>,
}

/// What a limit's counter is shared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    Key,
    User,
    Team,
    Model,
    Route,
    Global,
}

/// The action for a request over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Answer 429 with `Retry-After` (the default).
    #[default]
    Reject,
    /// Wait for capacity up to `queue.max_wait`, taking turns fairly across keys; reject
    /// when the wait would be longer or the queue is full.
    Queue,
    /// Serve the request with `downgrade_to` instead.
    Downgrade,
}

/// Bounds of a limit's wait queue.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Longest wait before the request is rejected. Default 5s.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most requests waiting per counter on one node; more are rejected at once.
    /// Default 100.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_wait: default_max_wait(),
            max_depth: default_max_depth(),
        }
    }
}

fn default_max_wait() -> Duration {
    Duration::from_secs(5)
}

fn default_max_depth() -> usize {
    100
}

/// Conditions on a request; every given condition must hold, a list matches any of its
/// values. Empty matches every request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Gateway key name(s).
    #[serde(default, deserialize_with = "one_or_many")]
    pub key: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub user: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub team: Vec<String>,
    /// Requested model name(s).
    #[serde(default, deserialize_with = "one_or_many")]
    pub model: Vec<String>,
    /// Route name(s).
    #[serde(default, deserialize_with = "one_or_many")]
    pub route: Vec<String>,
    /// Request tags (the request's `metadata`) that must be present with these values.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

// === budgets ===

/// One budget: `{ name: billing-monthly, scope: team, match: { team: billing }, usd: 500,
/// period: monthly }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Unique among budgets; names the budget in alerts, logs and counter keys.
    pub name: String,
    /// What one budget counter is shared by: each key, user, team, or each value of the
    /// request tag named by `tag`.
    pub scope: BudgetScope,
    /// `scope: tag`: the tag whose values get a budget each (e.g. `project`).
    #[serde(default)]
    pub tag: Option<String>,
    /// Which requests the budget applies to; empty applies to all.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// The budget per period in USD.
    pub usd: Decimal,
    pub period: Period,
    /// Fractions of `usd` whose crossing is reported once per period, e.g. `[0.8, 1.0]`.
    #[serde(default)]
    pub alerts: Vec<Decimal>,
    /// What happens to requests once the budget is spent. Default `block`.
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    /// `on_exhausted: downgrade`: the (cheaper) model requests are served by instead.
    #[serde(default)]
    pub downgrade_to: Option<String>,
    /// Alerts are POSTed here as JSON, retried with exponential backoff.
    #[serde(default)]
    pub webhook: Option<String>,
}

/// What a budget counter is shared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    Key,
    User,
    Team,
    Tag,
}

/// A budget's calendar period, in UTC: days start at 00:00, weeks on Monday, months on
/// the 1st.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

/// The action for a request once its budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Refuse (the caller answers 429 `insufficient_quota`). The default.
    #[default]
    Block,
    /// Serve requests with `downgrade_to` instead; their cost still counts.
    Downgrade,
}

// === state ===

/// Where counters live: `{ backend: memory }` or `{ backend: redis, url: "redis://…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Default `memory`.
    #[serde(default)]
    pub backend: StateBackendKind,
    /// `redis`: e.g. `redis://127.0.0.1:6379` or `redis://:${REDIS_PASSWORD}@redis:6379/0`.
    #[serde(default)]
    pub url: Option<String>,
    /// `redis`: what happens while Redis cannot be reached. Default `open`.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// `redis`: prefix of every key Tollgate writes. Default `tollgate:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// `redis`: the longest wait for one answer (and for a connection) before Redis counts
    /// as unreachable. Default 250ms.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackendKind::default(),
            url: None,
            on_failure: OnFailure::default(),
            key_prefix: default_key_prefix(),
            timeout: default_redis_timeout(),
        }
    }
}

fn default_key_prefix() -> String {
    "tollgate:".to_owned()
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(250)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackendKind {
    /// Counters in this process: one node.
    #[default]
    Memory,
    /// Counters in Redis, shared by every node.
    Redis,
}

/// Behaviour while Redis is unreachable; the node returns to Redis by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Enforce every limit and budget on this node alone (the default): traffic goes on,
    /// each node admits up to the full limit.
    #[default]
    Open,
    /// Refuse requests (the caller answers 503) until Redis answers again.
    Closed,
}

// === validation ===

/// One step of a [`ConfigProblem`]'s path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

/// One thing wrong with a policy config, at a path from the document root such as
/// `limits[0].queue.max_wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: Vec<PathPart>,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.path.iter().enumerate() {
            match part {
                PathPart::Index(index) => write!(f, "[{index}]")?,
                PathPart::Key(key) if i == 0 => f.write_str(key)?,
                PathPart::Key(key) => write!(f, ".{key}")?,
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl PolicyConfig {
    /// Every problem serde could not catch, in document order; empty when the config is
    /// usable.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Problems::default();
        let mut names = HashSet::new();
        for (i, limit) in self.limits.iter().enumerate() {
            let at = Path::root().key("limits").index(i);
            problems.name(&at, &limit.name, &mut names, "limit");
            problems.limit(&at, limit);
        }
        let mut names = HashSet::new();
        for (i, budget) in self.budgets.iter().enumerate() {
            let at = Path::root().key("budgets").index(i);
            problems.name(&at, &budget.name, &mut names, "budget");
            problems.budget(&at, budget);
        }
        problems.state(&self.state);
        problems.0
    }

    /// `Ok` when [`Self::validate`] finds nothing; constructors call this.
    pub(crate) fn check(&self) -> Result<(), crate::PolicyError> {
        let problems = self.validate();
        if problems.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        Err(crate::PolicyError::InvalidConfig(lines.join("\n")))
    }
}

#[derive(Clone)]
struct Path(Vec<PathPart>);

impl Path {
    fn root() -> Self {
        Self(Vec::new())
    }

    fn key(&self, key: &str) -> Self {
        let mut parts = self.0.clone();
        parts.push(PathPart::Key(key.to_owned()));
        Self(parts)
    }

    fn index(&self, index: usize) -> Self {
        let mut parts = self.0.clone();
        parts.push(PathPart::Index(index));
        Self(parts)
    }
}

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn report(&mut self, path: Path, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.0,
            message: message.into(),
        });
    }

    fn name(&mut self, at: &Path, name: &str, seen: &mut HashSet<String>, what: &str) {
        let path = at.key("name");
        if name.trim().is_empty() {
            self.report(path, "must not be empty");
        } else if name.contains(':') || name.chars().any(char::is_control) {
            // Names are part of counter keys (`<prefix>rl:<name>:<value>`); a colon would let
            // two limits share a key.
            self.report(path, "must not contain ':' or control characters");
        } else if !seen.insert(name.to_owned()) {
            self.report(path, format!("another {what} is already named '{name}'"));
        }
    }

    fn limit(&mut self, at: &Path, limit: &LimitConfig) {
        if limit.rpm.is_none() && limit.tpm.is_none() && limit.concurrency.is_none() {
            self.report(
                at.clone(),
                "a limit needs at least one of rpm, tpm, concurrency",
            );
        }
        for (field, value) in [
            ("rpm", limit.rpm),
            ("tpm", limit.tpm),
            ("concurrency", limit.concurrency),
        ] {
            if value == Some(0) {
                self.report(at.key(field), "must be at least 1");
            }
        }
        match (limit.on_exceed, &limit.queue) {
            (OnExceed::Queue, Some(queue)) => {
                if queue.max_wait.is_zero() || queue.max_wait > MAX_QUEUE_WAIT {
                    self.report(
                        at.key("queue").key("max_wait"),
                        format!(
                            "must be between 1ms and {}",
                            humantime::format_duration(MAX_QUEUE_WAIT)
                        ),
                    );
                }
                if queue.max_depth == 0 || queue.max_depth > MAX_QUEUE_DEPTH {
                    self.report(
                        at.key("queue").key("max_depth"),
                        format!("must be between 1 and {MAX_QUEUE_DEPTH}"),
                    );
                }
            }
            (OnExceed::Reject | OnExceed::Downgrade, Some(_)) => {
                self.report(at.key("queue"), "only used with on_exceed: queue");
            }
            (_, None) => {}
        }
        self.downgrade(
            at,
            limit.on_exceed == OnExceed::Downgrade,
            limit.downgrade_to.as_deref(),
            "on_exceed",
        );
        if limit.scope == LimitScope::Model && limit.downgrade_to.is_some() {
            let same = limit
                .downgrade_to
                .as_ref()
                .is_some_and(|to| limit.matcher.model.contains(to));
            if same {
                self.report(
                    at.key("downgrade_to"),
                    "the downgrade target is one of the models the limit matches",
                );
            }
        }
        self.matcher(at, &limit.matcher);
    }

    fn budget(&mut self, at: &Path, budget: &BudgetConfig) {
        if budget.usd <= Decimal::ZERO {
            self.report(at.key("usd"), "must be more than 0");
        }
        match (budget.scope, &budget.tag) {
            (BudgetScope::Tag, None) => {
                self.report(
                    at.key("tag"),
                    "scope tag needs the tag's name, e.g. tag: project",
                );
            }
            (BudgetScope::Tag, Some(tag)) if tag.trim().is_empty() => {
                self.report(at.key("tag"), "must not be empty");
            }
            (BudgetScope::Key | BudgetScope::User | BudgetScope::Team, Some(_)) => {
                self.report(at.key("tag"), "only used with scope: tag");
            }
            _ => {}
        }
        let mut seen = HashSet::new();
        for (i, fraction) in budget.alerts.iter().enumerate() {
            let path = at.key("alerts").index(i);
            if *fraction <= Decimal::ZERO || *fraction > MAX_ALERT_FRACTION {
                self.report(
                    path,
                    format!(
                        "{fraction} is not a fraction above 0 and at most {MAX_ALERT_FRACTION}"
                    ),
                );
            } else if !seen.insert(fraction.normalize()) {
                self.report(path, format!("{fraction} is listed twice"));
            }
        }
        self.downgrade(
            at,
            budget.on_exhausted == OnExhausted::Downgrade,
            budget.downgrade_to.as_deref(),
            "on_exhausted",
        );
        if let Some(url) = &budget.webhook {
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                Ok(_) => self.report(at.key("webhook"), "must be an http:// or https:// URL"),
                Err(why) => self.report(at.key("webhook"), format!("invalid URL: {why}")),
            }
        }
        self.matcher(at, &budget.matcher);
    }

    fn downgrade(&mut self, at: &Path, wanted: bool, to: Option<&str>, action: &str) {
        match (wanted, to) {
            (true, None) => self.report(
                at.key("downgrade_to"),
                format!("{action}: downgrade needs downgrade_to: <model>"),
            ),
            (true, Some(to)) if to.trim().is_empty() => {
                self.report(at.key("downgrade_to"), "must not be empty");
            }
            (false, Some(_)) => self.report(
                at.key("downgrade_to"),
                format!("only used with {action}: downgrade"),
            ),
            _ => {}
        }
    }

    fn matcher(&mut self, at: &Path, matcher: &Match) {
        let lists = [
            ("key", &matcher.key),
            ("user", &matcher.user),
            ("team", &matcher.team),
            ("model", &matcher.model),
            ("route", &matcher.route),
        ];
        for (field, values) in lists {
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() {
                    self.report(at.key("match").key(field).index(i), "must not be empty");
                }
            }
        }
    }

    fn state(&mut self, state: &StateConfig) {
        let at = Path::root().key("state");
        match state.backend {
            StateBackendKind::Memory => {
                if state.url.is_some() {
                    self.report(at.key("url"), "only used with backend: redis");
                }
            }
            StateBackendKind::Redis => match state.url.as_deref() {
                None => self.report(
                    at.key("url"),
                    "backend redis needs a url, e.g. redis://127.0.0.1:6379",
                ),
                Some(url) => {
                    if let Err(why) = redis::Client::open(url) {
                        self.report(at.key("url"), format!("invalid Redis URL: {why}"));
                    }
                }
            },
        }
        if state.timeout.is_zero() {
            self.report(at.key("timeout"), "must be more than 0");
        }
    }
}

/// A string or a list of strings. A visitor rather than an untagged enum, so errors say
/// what was expected.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(vec![text.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> PolicyConfig {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn reads_the_documented_shape() {
        let config = parse(
            r#"
limits:
  - { name: billing-rpm, scope: team, match: { team: billing }, rpm: 60, tpm: 100000, concurrency: 10, on_exceed: reject }
  - { name: q, scope: key, rpm: 5, on_exceed: queue, queue: { max_wait: 2s, max_depth: 7 } }
  - { name: d, scope: model, match: { model: [gpt-4o] }, tpm: 1000, on_exceed: downgrade, downgrade_to: gpt-4o-mini }
budgets:
  - { name: billing-monthly, scope: team, match: { team: billing }, usd: 500.10, period: monthly, alerts: [0.8, 0.9, 1.0], on_exhausted: block, webhook: "http://127.0.0.1:9/hook" }
  - { name: p, scope: tag, tag: project, usd: "0.25", period: daily, on_exhausted: downgrade, downgrade_to: cheap }
state: { backend: redis, url: "redis://127.0.0.1:6379", on_failure: closed, key_prefix: "tg:", timeout: 100ms }
"#,
        );
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert_eq!(config.limits[0].matcher.team, ["billing"]);
        assert_eq!(
            config.limits[1].queue.unwrap().max_wait,
            Duration::from_secs(2)
        );
        assert_eq!(config.budgets[0].usd, Decimal::new(50010, 2));
        assert_eq!(config.budgets[0].alerts[0], Decimal::new(8, 1));
        assert_eq!(config.budgets[1].usd, Decimal::new(25, 2));
        assert_eq!(config.state.on_failure, OnFailure::Closed);
        assert_eq!(config.state.timeout, Duration::from_millis(100));
    }

    #[test]
    fn defaults_are_documented_ones() {
        let config = parse("limits: [{ name: a, scope: global, rpm: 1, on_exceed: queue }]");
        assert!(config.limits[0].queue.is_none());
        let queue = config.limits[0].queue.unwrap_or_default();
        assert_eq!(queue.max_wait, Duration::from_secs(5));
        assert_eq!(queue.max_depth, 100);
        assert_eq!(config.state.backend, StateBackendKind::Memory);
        assert_eq!(config.state.on_failure, OnFailure::Open);
        assert_eq!(config.state.key_prefix, "tollgate:");
        assert!(config.validate().is_empty());
    }

    #[test]
    fn rejects_unknown_fields() {
        let err = serde_yaml_ng::from_str::<PolicyConfig>(
            "limits: [{ name: a, scope: global, rpm: 1, rps: 3 }]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `rps`"), "{err}");
        let err = serde_yaml_ng::from_str::<PolicyConfig>("state: { backend: etcd }").unwrap_err();
        assert!(err.to_string().contains("unknown variant `etcd`"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = parse(
            r#"
limits:
  - { name: a, scope: key }
  - { name: a, scope: key, rpm: 0, queue: { max_wait: 1s } }
  - { name: "b:c", scope: team, tpm: 5, on_exceed: queue, queue: { max_wait: 0s, max_depth: 0 } }
  - { name: d, scope: model, match: { model: [x] }, rpm: 1, on_exceed: downgrade, downgrade_to: x }
  - { name: e, scope: team, match: { team: "" }, rpm: 1, downgrade_to: y }
budgets:
  - { name: m, scope: tag, usd: 0, period: weekly, alerts: [0.5, 0.5, 0, 11], webhook: "ftp://x" }
  - { name: n, scope: team, tag: t, usd: 1, period: daily, on_exhausted: downgrade }
state: { backend: redis, timeout: 0s }
"#,
        );
        let rendered: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "limits[0]: a limit needs at least one of rpm, tpm, concurrency",
                "limits[1].name: another limit is already named 'a'",
                "limits[1].rpm: must be at least 1",
                "limits[1].queue: only used with on_exceed: queue",
                "limits[2].name: must not contain ':' or control characters",
                "limits[2].queue.max_wait: must be between 1ms and 10m",
                "limits[2].queue.max_depth: must be between 1 and 100000",
                "limits[3].downgrade_to: the downgrade target is one of the models the limit matches",
                "limits[4].downgrade_to: only used with on_exceed: downgrade",
                "limits[4].match.team[0]: must not be empty",
                "budgets[0].usd: must be more than 0",
                "budgets[0].tag: scope tag needs the tag's name, e.g. tag: project",
                "budgets[0].alerts[1]: 0.5 is listed twice",
                "budgets[0].alerts[2]: 0 is not a fraction above 0 and at most 10",
                "budgets[0].alerts[3]: 11 is not a fraction above 0 and at most 10",
                "budgets[0].webhook: must be an http:// or https:// URL",
                "budgets[1].tag: only used with scope: tag",
                "budgets[1].downgrade_to: on_exhausted: downgrade needs downgrade_to: <model>",
                "state.url: backend redis needs a url, e.g. redis://127.0.0.1:6379",
                "state.timeout: must be more than 0",
            ]
        );
    }
}
