//! `/health` and the control API under `/__mock/`: fault queue, health switch, request
//! record and counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::error::MockError;
use crate::faults::{FaultRule, FaultRuleWire};
use crate::state::{App, MAX_FAULT_RULES};

pub(crate) async fn health(State(app): State<Arc<App>>) -> Response {
    let status = StatusCode::from_u16(app.health()).unwrap_or(StatusCode::OK);
    let body = if status == StatusCode::OK {
        "ok"
    } else {
        "unhealthy"
    };
    (status, body).into_response()
}

/// `POST /__mock/faults` takes an array of rules, or a single rule object.
pub(crate) async fn add_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let single = body.trim_ascii_start().first() == Some(&b'{');
    let parsed = if single {
        serde_json::from_slice::<FaultRuleWire>(&body).map(|rule| vec![rule])
    } else {
        serde_json::from_slice::<Vec<FaultRuleWire>>(&body)
    };
    let wires = match parsed {
        Ok(wires) => wires,
        Err(e) => {
            return MockError::invalid("faults", format!("invalid fault rules: {e}"))
                .into_response()
        }
    };
    let mut rules = Vec::with_capacity(wires.len());
    for (i, wire) in wires.into_iter().enumerate() {
        match FaultRule::parse(wire) {
            Ok(rule) => rules.push(rule),
            Err(e) => {
                return MockError::invalid("faults", format!("rule {i}: {e}")).into_response()
            }
        }
    }
    match app.add_faults(rules) {
        Some(pending) => Json(json!({ "pending": pending })).into_response(),
        None => MockError::invalid(
            "faults",
            format!("the fault queue holds at most {MAX_FAULT_RULES} rules"),
        )
        .into_response(),
    }
}

pub(crate) async fn clear_faults(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "cleared": app.clear_faults() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthBody {
    status: u16,
}

pub(crate) async fn set_health(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let status = serde_json::from_slice::<HealthBody>(&body)
        .map_err(MockError::InvalidJson)
        .and_then(|b| {
            StatusCode::from_u16(b.status)
                .ok()
                .filter(|s| (100..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    MockError::invalid("status", format!("{} is not an HTTP status", b.status))
                })
        });
    match status {
        Ok(status) => {
            app.set_health(status.as_u16());
            Json(json!({ "status": status.as_u16() })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn requests(State(app): State<Arc<App>>) -> Response {
    let records = app.recorded();
    let refs: Vec<&crate::state::Recorded> = records.iter().map(|r| &**r).collect();
    match serde_json::to_vec(&refs) {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => MockError::Encode(e).into_response(),
    }
}

pub(crate) async fn clear_requests(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "cleared": app.clear_records() })).into_response()
}

pub(crate) async fn stats(State(app): State<Arc<App>>) -> Response {
    Json(json!({
        "requests": app.total_requests(),
        "active_streams": app.active_streams.load(Ordering::Relaxed),
        "connections": app.connections.load(Ordering::Relaxed),
        "pending_faults": app.pending_faults(),
    }))
    .into_response()
}
