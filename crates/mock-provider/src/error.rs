//! The crate's error enum and the one mapping from errors to HTTP answers: OpenAI's error
//! schema by default, each dialect's own through [`MockError::into_dialect_response`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::dialect::Dialect;
use crate::MAX_BODY_BYTES;

/// Everything that makes the mock refuse a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MockError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("{message}")]
    InvalidParam {
        message: String,
        param: &'static str,
    },
    #[error("Request body exceeds {MAX_BODY_BYTES} bytes.")]
    BodyTooLarge,
    #[error("Unknown request URL: {method} {path}.")]
    UnknownUrl { method: String, path: String },
    #[error("The mock could not encode its response: {0}")]
    Encode(#[source] serde_json::Error),
    /// Missing or malformed credentials; each dialect picks its status and error type.
    #[error("{message}")]
    Auth {
        status: StatusCode,
        kind: Option<&'static str>,
        message: String,
    },
}

impl MockError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidParam {
            message: message.into(),
            param,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::InvalidParam { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownUrl { .. } => StatusCode::NOT_FOUND,
            Self::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Auth { status, .. } => *status,
        }
    }

    /// The answer in `dialect`'s error schema.
    pub(crate) fn into_dialect_response(self, dialect: Dialect) -> Response {
        let status = self.status();
        match (dialect, &self) {
            (Dialect::OpenAi, _) => self.into_response(),
            // Azure's own front door answers these; request validation is OpenAI's.
            (Dialect::Azure, Self::UnknownUrl { .. }) => {
                dialect.error_response(status, None, "Resource not found")
            }
            (_, Self::Auth { kind, message, .. }) => dialect.error_response(status, *kind, message),
            (Dialect::Azure, _) => self.into_response(),
            (Dialect::Bedrock, Self::UnknownUrl { .. }) => {
                dialect.error_response(status, Some("UnknownOperationException"), &self.to_string())
            }
            _ => dialect.error_response(status, None, &self.to_string()),
        }
    }
}

impl IntoResponse for MockError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (param, code) = match &self {
            Self::InvalidParam { param, .. } => (Some(*param), None),
            Self::UnknownUrl { .. } => (None, Some("unknown_url")),
            _ => (None, None),
        };
        error_response(status, &self.to_string(), error_type(status), code, param)
    }
}

/// OpenAI's error `type` for a status: what clients and the gateway branch on.
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// Serialises `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_json(
    message: &str,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Vec<u8> {
    let envelope = ErrorEnvelope {
        error: ErrorObject {
            message,
            kind,
            param,
            code,
        },
    };
    // Serialising borrowed strings into a Vec cannot fail; an empty body is the
    // harmless fallback.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// An error answer in OpenAI's schema.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let body = error_json(message, kind, code, param);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
