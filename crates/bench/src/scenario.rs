//! Scenario files (`bench/scenarios/*.yaml`): which systems, which mock, which loads.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::BenchError;
use crate::load::LoadSpec;

/// Longest measured part of a load in quick mode.
const QUICK_MAX_DURATION: Duration = Duration::from_secs(3);
/// Longest warm-up in quick mode.
const QUICK_MAX_WARMUP: Duration = Duration::from_millis(500);
/// Most requests of a counted load (held-open streams) in quick mode.
const QUICK_MAX_COUNT: u64 = 1500;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Repetitions of every load on every system; tables report medians.
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// Start every system anew for each load (memory figures then start from idle).
    #[serde(default)]
    pub restart_per_load: bool,
    #[serde(default)]
    pub mock: MockSpec,
    pub systems: Vec<SystemSpec>,
    pub loads: Vec<LoadSpec>,
    /// Shown under the scenario's tables.
    #[serde(default)]
    pub notes: Option<String>,
    /// The system the others' "added" figures and ratios are taken against (e.g. the
    /// gateway with a feature off); `direct` is always compared as well.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Start a `redis-server` on loopback for the scenario; Tollgate systems find its URL
    /// in `BENCH_REDIS_URL` (their config writes `url: "${BENCH_REDIS_URL}"`).
    #[serde(default)]
    pub redis: bool,
}

fn default_runs() -> usize {
    3
}

/// Knobs of the mock provider every system forwards to.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockSpec {
    /// Reply tokens (`tok0 tok1 …`).
    #[serde(default = "default_tokens")]
    pub tokens: u64,
    /// A fixed reply instead (`tollgate-mock --reply`), one token per whitespace-separated
    /// word; words other than `tok<N>` should sit at position N's place (see `tokens.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Pause between streamed tokens.
    #[serde(default, with = "humantime_serde")]
    pub token_delay: Duration,
    /// Pause before the first streamed token.
    #[serde(default, with = "humantime_serde")]
    pub first_token_delay: Duration,
    /// Filler bytes after each generated token (`tok<N>~ppp…`), so that streams carry
    /// many bytes at few events per second (0: none; ignored with `reply`).
    #[serde(default)]
    pub pad: usize,
}

fn default_tokens() -> u64 {
    16
}

impl MockSpec {
    /// The `--reply` the mock is started with: the fixed reply, or the padded one.
    pub fn reply_text(&self) -> Option<String> {
        match &self.reply {
            Some(reply) => Some(reply.clone()),
            None if self.pad > 0 => Some(crate::tokens::padded_reply(self.tokens, self.pad)),
            None => None,
        }
    }

    /// Tokens the mock sends per answer: the reply's words, or `tokens`.
    pub fn reply_tokens(&self) -> u64 {
        self.reply
            .as_ref()
            .map_or(self.tokens, |r| r.split_whitespace().count() as u64)
    }
}

impl Default for MockSpec {
    fn default() -> Self {
        Self {
            tokens: default_tokens(),
            reply: None,
            token_delay: Duration::ZERO,
            first_token_delay: Duration::ZERO,
            pad: 0,
        }
    }
}

/// What a system is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// The mock provider itself: the physical limit.
    Direct,
    Nginx,
    /// The bare Pingora pass-through.
    Pingora,
    Litellm,
    Tollgate,
}

/// A system under test: a bare kind (`nginx`) or a map with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SystemSpec {
    Kind(SystemKind),
    Full(SystemOptions),
}

/// A system with options, e.g. a Tollgate variant with more plugins configured.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemOptions {
    /// Unique within the scenario; defaults to the kind.
    #[serde(default)]
    pub name: Option<String>,
    pub kind: SystemKind,
    /// Tollgate: YAML merged over the generated configuration (maps merge key by key,
    /// anything else replaces), so a variant can switch on what the gateway offers.
    #[serde(default)]
    pub config: Option<serde_yaml_ng::Value>,
    /// Tollgate: the `TOLLGATE_LOG` filter (`info` logs one access line per request).
    #[serde(default)]
    pub log: Option<String>,
    /// Pingora and Tollgate: reach the mock over cleartext HTTP/2, many streams per
    /// connection (Tollgate: `http2: true` on the provider), instead of one HTTP/1.1
    /// connection per request.
    #[serde(default)]
    pub upstream_h2: bool,
}

impl SystemSpec {
    pub fn options(&self) -> SystemOptions {
        match self {
            Self::Kind(kind) => SystemOptions {
                name: None,
                kind: *kind,
                config: None,
                log: None,
                upstream_h2: false,
            },
            Self::Full(o) => o.clone(),
        }
    }
}

impl SystemOptions {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            serde_json::to_value(self.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let err = |message: String| BenchError::Scenario {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let scenario: Scenario = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
        scenario.check().map_err(err)?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), String> {
        if self.runs == 0 {
            return Err("runs must be at least 1".to_owned());
        }
        let names: Vec<String> = self.systems.iter().map(|s| s.options().name()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("system name '{n}' appears twice"));
            }
        }
        if let Some(b) = &self.baseline {
            if !names.contains(b) {
                return Err(format!("baseline: unknown system '{b}'"));
            }
        }
        for o in self.systems.iter().map(SystemSpec::options) {
            if o.upstream_h2 && !matches!(o.kind, SystemKind::Pingora | SystemKind::Tollgate) {
                return Err(format!(
                    "system {}: upstream_h2 applies to pingora and tollgate only",
                    o.name()
                ));
            }
        }
        for load in &self.loads {
            if !(0.0..=1.0).contains(&load.stalled) {
                return Err(format!("load {}: stalled must be 0 to 1", load.name));
            }
            if load.http != 1 && load.http != 2 {
                return Err(format!("load {}: http must be 1 or 2", load.name));
            }
            if load.mode == crate::load::Mode::Open && load.rate.is_none() {
                return Err(format!(
                    "load {}: an open-loop load needs a rate",
                    load.name
                ));
            }
            for only in load.only.iter().flatten() {
                if !names.contains(only) {
                    return Err(format!("load {}: unknown system '{only}'", load.name));
                }
            }
        }
        Ok(())
    }

    /// Shortens every load for a quick run: one run, short durations, fewer held
    /// streams.
    pub fn quicken(&mut self) {
        self.runs = 1;
        for load in &mut self.loads {
            load.duration = load.duration.min(QUICK_MAX_DURATION);
            load.warmup = load.warmup.min(QUICK_MAX_WARMUP);
            load.count = load.count.map(|c| c.min(QUICK_MAX_COUNT));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
name: a
description: test
mock: { tokens: 64, token_delay: 20ms }
systems:
  - direct
  - tollgate
  - { name: tollgate-quiet, kind: tollgate, log: warn, config: { server: { threads: 1 } } }
loads:
  - { name: c64, mode: closed, concurrency: 64, duration: 10s }
  - { name: r1k, mode: open, rate: 1000, duration: 5s, only: [tollgate], count: 9000 }
"#;

    fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    #[test]
    fn parses_systems_and_loads() {
        let s = parse(FILE).unwrap();
        assert_eq!(s.runs, 3);
        assert_eq!(s.mock.tokens, 64);
        assert_eq!(s.mock.token_delay, Duration::from_millis(20));
        let names: Vec<String> = s.systems.iter().map(|s| s.options().name()).collect();
        assert_eq!(names, ["direct", "tollgate", "tollgate-quiet"]);
        assert_eq!(s.systems[2].options().log.as_deref(), Some("warn"));
        assert_eq!(s.loads[0].http, 1);
        assert_eq!(s.loads[1].rate, Some(1000.0));
        assert_eq!(s.loads[1].warmup, Duration::from_secs(1));
        assert_eq!(s.mock.reply_tokens(), 64);
        assert!(!s.redis && s.baseline.is_none());
        assert_eq!(s.mock.reply_text(), None);
    }

    #[test]
    fn a_padded_mock_and_an_h2_upstream() {
        let text = FILE
            .replace("token_delay: 20ms }", "token_delay: 20ms, pad: 4 }")
            .replace(
                "kind: tollgate, log: warn,",
                "kind: tollgate, upstream_h2: true, log: warn,",
            )
            .replace(
                "duration: 10s }",
                "duration: 10s, stalled: 0.01, ramp: 5s }",
            );
        let s = parse(&text).unwrap();
        let reply = s.mock.reply_text().unwrap();
        assert!(reply.starts_with("tok0~pppp tok1~pppp"), "{reply}");
        assert_eq!(s.mock.reply_tokens(), 64);
        assert!(s.systems[2].options().upstream_h2);
        assert_eq!(s.loads[0].stalled, 0.01);
        assert_eq!(s.loads[0].ramp, Duration::from_secs(5));
    }

    #[test]
    fn a_fixed_reply_and_a_baseline() {
        let text = FILE.replace(
            "mock: { tokens: 64, token_delay: 20ms }",
            "mock: { reply: \"tok0 Mail a@b.example tok3\" }\nbaseline: tollgate\nredis: true",
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.mock.reply_tokens(), 4);
        assert_eq!(s.baseline.as_deref(), Some("tollgate"));
        assert!(s.redis);
    }

    #[test]
    fn rejects_mistakes() {
        assert!(parse(&FILE.replace("concurrency: 64", "concurency: 64")).is_err());
        assert!(parse(&FILE.replace("only: [tollgate]", "only: [envoy]")).is_err());
        assert!(parse(&FILE.replace("rate: 1000, ", "")).is_err());
        assert!(parse(&FILE.replace("name: tollgate-quiet", "name: tollgate")).is_err());
        assert!(parse(&format!("{FILE}baseline: envoy\n")).is_err());
        assert!(parse(&FILE.replace("duration: 10s }", "duration: 10s, stalled: 1.5 }")).is_err());
        assert!(
            parse(&FILE.replace("- direct\n", "- { kind: nginx, upstream_h2: true }\n")).is_err()
        );
    }

    #[test]
    fn every_scenario_file_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/scenarios");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                names.push(scenario.name);
            }
        }
        assert!(names.iter().any(|n| n == "j-metering"), "{names:?}");
    }

    #[test]
    fn quick_mode_shortens() {
        let mut s = parse(FILE).unwrap();
        s.quicken();
        assert_eq!(s.runs, 1);
        assert_eq!(s.loads[0].duration, QUICK_MAX_DURATION);
        assert_eq!(s.loads[1].warmup, QUICK_MAX_WARMUP);
        assert_eq!(s.loads[1].count, Some(QUICK_MAX_COUNT));
    }
}
