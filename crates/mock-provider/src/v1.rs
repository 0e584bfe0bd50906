//! Entry point of every `/v1/*` request: records it, applies a queued fault, and hands
//! it to the endpoint; also `/v1/models` and the 404 for unknown URLs.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use crate::error::MockError;
use crate::faults::Fault;
use crate::state::{App, Recorded};
use crate::{chat, embeddings};

/// `created` of every listed model: a fixed instant keeps answers reproducible.
const MODEL_CREATED: u64 = 1_700_000_000;

/// The model `/v1/models` lists even before any request named one.
const DEFAULT_MODEL: &str = "mock-model";

pub(crate) async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let mut rec = Recorded::new(method, &uri, &headers, &[]);
            rec.note = Some("body not received whole (too large or connection lost)");
            app.record(rec);
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                return MockError::BodyTooLarge.into_response();
            }
            return rejection.into_response();
        }
    };
    match (&method, uri.path()) {
        (&Method::POST, "/v1/chat/completions") => {
            chat::completions(app, &uri, &headers, body).await
        }
        (&Method::POST, "/v1/embeddings") => {
            embeddings::embeddings(app, &uri, &headers, body).await
        }
        (&Method::GET, "/v1/models") => {
            app.record(Recorded::new(method, &uri, &headers, &body));
            if let Err(forced) = take_fault(&app, uri.path(), None).await {
                return forced;
            }
            models(&app)
        }
        _ => {
            let path = uri.path().to_owned();
            app.record(Recorded::new(method.clone(), &uri, &headers, &body));
            if let Err(forced) = take_fault(&app, &path, None).await {
                return forced;
            }
            MockError::UnknownUrl {
                method: method.to_string(),
                path,
            }
            .into_response()
        }
    }
}

/// Consumes the first matching fault rule and waits its delay. `Err` carries the answer
/// that replaces the response; `Ok` carries what is left for the endpoint to apply.
pub(crate) async fn take_fault(
    app: &App,
    path: &str,
    model: Option<&str>,
) -> Result<Option<Fault>, Response> {
    let Some(fault) = app.take_fault(path, model) else {
        return Ok(None);
    };
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    match fault.status_response() {
        Some(forced) => Err(forced),
        None => Ok(Some(fault)),
    }
}

/// `x-request-id`, as real providers send it, so logs can be matched to answers.
pub(crate) fn request_id_header(id: u64) -> (&'static str, HeaderValue) {
    let value = HeaderValue::from_str(&format!("req_mock_{id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("req_mock"));
    ("x-request-id", value)
}

#[derive(Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<ModelEntry>,
}

#[derive(Serialize)]
struct ModelEntry {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn models(app: &App) -> Response {
    let mut names = app.models_seen();
    if !names.iter().any(|n| n == DEFAULT_MODEL) {
        names.insert(0, DEFAULT_MODEL.to_owned());
    }
    let data = names
        .into_iter()
        .map(|name| ModelEntry {
            id: format!("{}{name}", app.cfg.model_prefix),
            object: "model",
            created: MODEL_CREATED,
            owned_by: "tollgate-mock",
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
    .into_response()
}
