//! Builders and servers shared by the crate's tests.

pub(crate) mod pg;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tollgate_core::Usage;

use crate::record::{Attempt, CacheStatus, GuardrailAction, UsageRecord};

/// A plausible record; `n` varies its numbers.
pub(crate) fn record(id: &str, n: i64) -> UsageRecord {
    let n64 = n.unsigned_abs();
    UsageRecord {
        record_id: id.to_owned(),
        request_id: id.to_owned(),
        time_ms: 1_714_521_600_000 + n,
        key: Some("billing-svc".to_owned()),
        team: Some("billing".to_owned()),
        user: None,
        tags: BTreeMap::from([("feature".to_owned(), "invoices".to_owned())]),
        route: Some("cheap-default".to_owned()),
        requested_model: "best-cheap-chat".to_owned(),
        served_model: Some("gpt-4o-mini".to_owned()),
        provider: Some("openai".to_owned()),
        endpoint: Some("https://api.openai.com".to_owned()),
        attempts: vec![Attempt {
            model: "gpt-4o-mini".to_owned(),
            provider: "openai".to_owned(),
            endpoint: "https://api.openai.com".to_owned(),
            outcome: "ok".to_owned(),
            status: Some(200),
            duration_ms: Some(790),
        }],
        status: 200,
        error: None,
        stream: true,
        usage: Usage {
            input_tokens: 100 + n64,
            output_tokens: 20 + n64,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            estimated: false,
        },
        cost: Decimal::new(1_234 + n, 8),
        latency_ms: 800,
        ttft_ms: Some(120),
        cache: CacheStatus::Miss,
        saved_cost: Decimal::ZERO,
        guardrails: vec![GuardrailAction {
            guardrail: "pii".to_owned(),
            action: "mask".to_owned(),
            reason: "pii_email".to_owned(),
            direction: "request".to_owned(),
            count: 1,
        }],
    }
}
