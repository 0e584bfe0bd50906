//! Entry point of every provider request: picks the dialect by URL, takes the body whole,
//! and hands the request to its endpoint; also OpenAI's `/v1/models` and the 404 for
//! unknown URLs, in the dialect's error schema.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use crate::dialect::{percent_decode, Dialect};
use crate::error::MockError;
use crate::faults::take_fault;
use crate::state::{App, Recorded};
use crate::{anthropic, bedrock, chat, embeddings, gemini};

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
    let dialect = Dialect::for_path(uri.path());
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let mut rec = Recorded::new(method, &uri, &headers, &[]);
            rec.note = Some("body not received whole (too large or connection lost)");
            app.record(rec);
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                return MockError::BodyTooLarge.into_dialect_response(dialect);
            }
            return rejection.into_response();
        }
    };
    let path = uri.path();
    if method == Method::POST {
        match dialect {
            Dialect::OpenAi if path == "/v1/chat/completions" => {
                return chat::completions(app, &uri, &headers, body, None).await;
            }
            Dialect::OpenAi if path == "/v1/embeddings" => {
                return embeddings::embeddings(app, &uri, &headers, body, None).await;
            }
            Dialect::OpenAi => {}
            Dialect::Azure => match azure_target(path) {
                Some((deployment, AzureOperation::Chat)) => {
                    return chat::completions(app, &uri, &headers, body, Some(deployment)).await;
                }
                Some((deployment, AzureOperation::Embeddings)) => {
                    return embeddings::embeddings(app, &uri, &headers, body, Some(deployment))
                        .await;
                }
                None => {}
            },
            Dialect::Anthropic => return anthropic::messages(app, &uri, &headers, body).await,
            Dialect::Gemini => {
                if let Some(call) = gemini::Call::parse(path) {
                    return gemini::handle(app, call, &uri, &headers, body).await;
                }
            }
            Dialect::Bedrock => {
                if let Some(call) = bedrock::Call::parse(path) {
                    return bedrock::handle(app, call, &uri, &headers, body).await;
                }
            }
        }
    }
    if method == Method::GET && path == "/v1/models" {
        app.record(Recorded::new(method, &uri, &headers, &body));
        if let Err(forced) = take_fault(&app, dialect, path, None, false).await {
            return forced;
        }
        return models(&app);
    }
    let path = path.to_owned();
    app.record(Recorded::new(method.clone(), &uri, &headers, &body));
    if let Err(forced) = take_fault(&app, dialect, &path, None, false).await {
        return forced;
    }
    MockError::UnknownUrl {
        method: method.to_string(),
        path,
    }
    .into_dialect_response(dialect)
}

/// What an Azure OpenAI deployment URL asks for.
enum AzureOperation {
    Chat,
    Embeddings,
}

/// The deployment and operation of `/openai/deployments/{deployment}/…`.
fn azure_target(path: &str) -> Option<(String, AzureOperation)> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    let (deployment, operation) = rest.split_once('/')?;
    let operation = match operation {
        "chat/completions" => AzureOperation::Chat,
        "embeddings" => AzureOperation::Embeddings,
        _ => return None,
    };
    (!deployment.is_empty()).then(|| (percent_decode(deployment).into_owned(), operation))
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
