//! Usage records: what a request did, priced from the config's table, written to the
//! ledger. An answer's record is in the spool (as durable as `ledger.durability` says)
//! before the client sees the answer's last byte, so a crash of the gateway can never
//! lose the record of a request the client saw complete. The access log line carries
//! the same fields.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};
use tollgate_core::Usage;
use tollgate_ledger::{Attempt, CacheStatus, Decimal, GuardrailAction, UsageRecord};
use tollgate_providers::IngressRequest;

use crate::proxy::{Gateway, RequestCtx};
use crate::snapshot::Snapshot;

/// Metadata entries kept as record tags; more are dropped so a client cannot grow records.
const MAX_TAGS: usize = 16;

/// Longest tag key or value kept, in bytes.
const MAX_TAG_BYTES: usize = 128;

/// Longest prompt text an access log line carries (`access_log.prompt`), in bytes; the
/// rest is cut. Bounds the line (prompts can be many MiB) while keeping enough to see what
/// was asked.
pub const MAX_LOGGED_PROMPT_BYTES: usize = 4096;

/// What the ledger needs from the request beyond the access-log fields.
#[derive(Default)]
pub struct Accounting {
    /// The model name the client asked for; `None` for requests without one (no record).
    pub requested_model: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub attempts: Vec<Attempt>,
    /// When the latest of `attempts` was sent, to time it.
    pub attempt_started: Option<std::time::Instant>,
    pub cost: Decimal,
    /// The record was written to the spool already.
    pub recorded: bool,
    /// What guardrails did to the request and its answer.
    pub guardrails: Vec<GuardrailAction>,
    /// Usage of an earlier answer to this request that was thrown away (a JSON answer
    /// retried): still spent, so still billed.
    pub discarded_usage: Option<Usage>,
    pub cache: CacheStatus,
    /// What a cache hit saved (the answer's cost when it was stored).
    pub saved_cost: Decimal,
    /// The model of an answer served from the cache.
    pub served_model: Option<String>,
    pub time_ms: i64,
}

/// String-valued `metadata` entries, bounded.
pub fn tags_of(metadata: Option<&Map<String, Value>>) -> BTreeMap<String, String> {
    metadata
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
        .filter(|(k, v)| k.len() <= MAX_TAG_BYTES && v.len() <= MAX_TAG_BYTES)
        .take(MAX_TAGS)
        .map(|(k, v)| (k.clone(), v.to_owned()))
        .collect()
}

/// The request's prompt text for the access log, cut to [`MAX_LOGGED_PROMPT_BYTES`]
/// (marked with `…`). Call it after the guardrails ran: it reads the request as they left
/// it.
pub fn prompt_for_log(request: &IngressRequest) -> String {
    let mut text = String::new();
    request.prompt_text(&mut text);
    let text = text.trim_end();
    if text.len() <= MAX_LOGGED_PROMPT_BYTES {
        return text.to_owned();
    }
    let mut cut = MAX_LOGGED_PROMPT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Catalog models without a price are served at cost 0 (`tollgate check` refuses them,
/// `tollgate run` only warns): one warning per model, at start-up and on every reload.
pub fn warn_unpriced(config: &tollgate_config::Config) {
    for model in tollgate_metering::missing_prices(config) {
        tracing::warn!(
            model = %model,
            "models.{model}.price is missing: its requests are recorded at cost 0 and \
             budgets do not see them"
        );
    }
}

/// One JSON line per request on stderr (target `access`) with the ledger's fields: never a
/// key's secret, and prompt text only when `access_log.prompt` put it in
/// [`RequestCtx::logged_prompt`].
pub fn access_log(ctx: &RequestCtx) {
    // The joined fields below allocate: skip them when the access log is filtered out.
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    let usage = ctx.usage.unwrap_or_default();
    let acc = &ctx.accounting;
    let guardrails = (!acc.guardrails.is_empty()).then(|| {
        acc.guardrails
            .iter()
            .map(|a| {
                format!(
                    "{}:{}:{}:{}x{}",
                    a.guardrail, a.direction, a.action, a.reason, a.count
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let tags = (!acc.tags.is_empty())
        .then(|| serde_json::to_string(&acc.tags).ok())
        .flatten();
    let attempt_history = (!acc.attempts.is_empty()).then(|| attempt_history(&acc.attempts));
    let saved_cost = (acc.saved_cost != Decimal::ZERO).then_some(acc.saved_cost);
    tracing::info!(
        target: "access",
        record_id = %ctx.record_id,
        request_id = %ctx.id,
        status = ctx.status,
        key = ctx.key.as_deref(),
        team = acc.team.as_deref(),
        user = acc.user.as_deref(),
        tags,
        requested_model = acc.requested_model.as_deref(),
        route = ctx.route.as_deref(),
        model = ctx.model.as_deref(),
        provider = acc.provider.as_deref(),
        endpoint = acc.endpoint.as_deref(),
        attempts = ctx.attempts,
        attempt_history,
        fallback = ctx.fallback,
        stream = ctx.stream,
        error = ctx.error,
        guardrails,
        cache = acc.cache.as_str(),
        input_tokens = usage.input_tokens,
        output_tokens = usage.output_tokens,
        cached_input_tokens = usage.cached_input_tokens,
        reasoning_tokens = usage.reasoning_tokens,
        estimated = usage.estimated,
        cost_usd = %acc.cost,
        saved_cost_usd = saved_cost.map(tracing::field::display),
        ttft_ms = ctx
            .first_byte
            .map(|t| t.saturating_duration_since(ctx.started).as_millis() as u64),
        duration_ms = ctx.started.elapsed().as_millis() as u64,
        prompt = ctx.logged_prompt.as_deref(),
    );
}

/// The attempts as `provider/model:status:outcome:duration`, comma-separated, in order
/// (`-` for a status or duration not known), e.g.
/// `openai/gpt-4o-mini:503:5xx:41ms,anthropic/claude-haiku:200:ok:1270ms`.
fn attempt_history(attempts: &[Attempt]) -> String {
    let mut out = String::new();
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let status = a.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let duration = a
            .duration_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let _ = write!(
            out,
            "{}/{}:{status}:{}:{duration}",
            a.provider, a.model, a.outcome
        );
    }
    out
}

impl Gateway {
    /// Prices the request's usage and writes its record; waits until the spool has it. Later
    /// calls for the same request do nothing.
    pub async fn settle(&self, snap: &Snapshot, ctx: &mut RequestCtx) {
        if ctx.accounting.recorded || ctx.accounting.requested_model.is_none() {
            return;
        }
        ctx.accounting.recorded = true;
        if let Some(guard) = &ctx.answer_guard {
            guard.drain_audit(&mut ctx.accounting.guardrails);
        }
        if let Some(discarded) = ctx.accounting.discarded_usage.take() {
            ctx.usage = Some(ctx.usage.unwrap_or_default() + discarded);
        }
        let usage = ctx.usage.unwrap_or_default();
        if let Some(model) = ctx.model.as_deref() {
            ctx.accounting.cost = snap.prices.cost(model, &usage).unwrap_or(Decimal::ZERO);
        }
        let record = self.record_of(ctx, usage);
        let written = match self.ledger.record(record).await {
            Ok(durable) => durable.await,
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            self.metrics.ledger_error();
            tracing::error!(request_id = %ctx.id, error = %err, "usage record not written");
        }
    }

    fn record_of(&self, ctx: &RequestCtx, usage: Usage) -> UsageRecord {
        let acc = &ctx.accounting;
        UsageRecord {
            record_id: ctx.record_id.to_string(),
            request_id: ctx.id.to_string(),
            time_ms: acc.time_ms,
            key: ctx.key.as_deref().map(str::to_owned),
            team: acc.team.clone(),
            user: acc.user.clone(),
            tags: acc.tags.clone(),
            route: ctx.route.as_deref().map(str::to_owned),
            requested_model: acc.requested_model.clone().unwrap_or_default(),
            served_model: acc
                .served_model
                .clone()
                .or_else(|| ctx.model.as_deref().map(str::to_owned)),
            provider: acc.provider.clone(),
            endpoint: acc.endpoint.clone(),
            attempts: acc.attempts.clone(),
            status: ctx.status,
            error: ctx.error.map(str::to_owned),
            stream: ctx.stream,
            usage,
            cost: acc.cost,
            latency_ms: ctx.started.elapsed().as_millis() as u64,
            ttft_ms: ctx
                .first_byte
                .map(|t| t.saturating_duration_since(ctx.started).as_millis() as u64),
            cache: acc.cache,
            saved_cost: acc.saved_cost,
            guardrails: acc.guardrails.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_history_is_one_compact_entry_per_attempt() {
        let attempt = |provider: &str, outcome: &str, status, duration_ms| Attempt {
            model: "m".to_owned(),
            provider: provider.to_owned(),
            endpoint: "http://127.0.0.1:1".to_owned(),
            outcome: outcome.to_owned(),
            status,
            duration_ms,
        };
        assert_eq!(
            attempt_history(&[
                attempt("a", "5xx", Some(503), Some(41)),
                attempt("b", "timeout", None, Some(2000)),
                attempt("c", "pending", None, None),
            ]),
            "a/m:503:5xx:41ms,b/m:-:timeout:2000ms,c/m:-:pending:-"
        );
    }

    #[test]
    fn a_logged_prompt_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_LOGGED_PROMPT_BYTES);
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": long}]});
        let request = IngressRequest::parse(
            tollgate_providers::Dialect::OpenAi,
            tollgate_providers::Operation::ChatCompletions,
            body.to_string().as_bytes(),
        )
        .unwrap();
        let logged = prompt_for_log(&request);
        assert!(logged.ends_with('…'));
        assert!(logged.len() <= MAX_LOGGED_PROMPT_BYTES + '…'.len_utf8());
        assert!(logged.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn tags_keep_short_string_entries_only() {
        let meta = serde_json::json!({"feature": "search", "n": 3, "long": "x".repeat(500)});
        let tags = tags_of(meta.as_object());
        assert_eq!(tags.len(), 1);
        assert_eq!(tags["feature"], "search");
    }
}

/// `tollgate usage`: totals from the configured sink (records still in a running
/// gateway's spool arrive within seconds).
pub fn print_usage(
    path: &std::path::Path,
    by: &str,
    since: Option<&str>,
    until: Option<&str>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match tollgate_config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let query = match usage_query(by, since, until) {
        Ok(q) => q,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let ledger = &config.ledger;
    let rows = match ledger.sink {
        tollgate_config::LedgerSink::Sqlite => tollgate_ledger::SqliteSink::open(&ledger.path)
            .and_then(|sink| tollgate_ledger::Sink::aggregate(&sink, &query)),
        tollgate_config::LedgerSink::Postgres => {
            tollgate_ledger::PostgresSink::connect(ledger.url.as_deref().unwrap_or_default())
                .and_then(|sink| tollgate_ledger::Sink::aggregate(&sink, &query))
        }
    };
    match rows {
        Ok(rows) => {
            println!(
                "{:<24} {:>9} {:>12} {:>12} {:>14}",
                by, "requests", "input", "output", "cost_usd"
            );
            for row in rows {
                println!(
                    "{:<24} {:>9} {:>12} {:>12} {:>14}",
                    row.group.as_deref().unwrap_or("-"),
                    row.requests,
                    row.input_tokens,
                    row.output_tokens,
                    row.cost
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("could not read the usage ledger: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A usage query from text: `by` is team, key, user, model, route, day, month or `tag:<name>`
/// (totals by that tag's value); `since` and
/// `until` are RFC 3339 times or dates (`2026-11-01`), UTC.
pub fn usage_query(
    by: &str,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<tollgate_ledger::AggregateQuery, String> {
    let by = by.parse()?;
    Ok(tollgate_ledger::AggregateQuery {
        by,
        since_ms: since.map(parse_time).transpose()?,
        until_ms: until.map(parse_time).transpose()?,
    })
}

fn parse_time(text: &str) -> Result<i64, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    let time = humantime::parse_rfc3339_weak(&full)
        .map_err(|_| format!("'{text}' is not a date (2026-11-01) or an RFC 3339 time"))?;
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("'{text}' is before 1970"))
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn parses_groupings_and_dates() {
        let q = usage_query("team", Some("2026-11-01"), Some("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(q.since_ms, Some(1_793_491_200_000));
        assert_eq!(q.until_ms, Some(1_796_083_200_000));
        assert!(usage_query("colour", None, None).is_err());
        assert_eq!(
            usage_query("tag:feature", None, None).unwrap().by,
            tollgate_ledger::GroupBy::Tag("feature".to_owned())
        );
        assert!(usage_query("day", Some("yesterday"), None).is_err());
    }
}
