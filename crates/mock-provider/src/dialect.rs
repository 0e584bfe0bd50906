//! The provider dialects the mock speaks, told apart by URL, and how each one writes an
//! error: OpenAI's, Azure OpenAI's, Anthropic's, Google's and AWS's error schemas.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::error::{error_json, error_type, MockError};

/// `Content-Type` of every SSE answer.
pub(crate) const SSE_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// The prefix of a SigV4 `Authorization` header.
const SIGV4_PREFIX: &str = "AWS4-HMAC-SHA256 Credential=";

/// Which provider's wire format a request is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.
    OpenAi,
    /// `/openai/deployments/{deployment}/…`.
    Azure,
    /// `/v1/messages`.
    Anthropic,
    /// `/v1beta/models/{model}:{method}` (and the same under `/v1/models/`).
    Gemini,
    /// `/model/{modelId}/converse[-stream]`.
    Bedrock,
}

impl Dialect {
    /// The dialect of a request path; everything unclaimed is OpenAI's.
    pub(crate) fn for_path(path: &str) -> Self {
        if path == "/v1/messages" {
            Self::Anthropic
        } else if path.starts_with("/v1beta/")
            || path
                .strip_prefix("/v1/models/")
                .is_some_and(|rest| rest.contains(':'))
        {
            Self::Gemini
        } else if path.starts_with("/openai/") {
            Self::Azure
        } else if path.starts_with("/model/") {
            Self::Bedrock
        } else {
            Self::OpenAi
        }
    }

    /// The provider's front-door checks, before any fault or parsing: credentials, and
    /// the headers and parameters a request cannot do without. Signatures are not verified;
    /// the request record keeps the headers for tests to check.
    pub(crate) fn admit(self, headers: &HeaderMap, uri: &Uri) -> Result<(), MockError> {
        let has = |name: &str| headers.get(name).is_some_and(|v| !v.is_empty());
        let auth = |status: u16, kind: Option<&'static str>, message: &str| MockError::Auth {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
            kind,
            message: message.to_owned(),
        };
        match self {
            Self::OpenAi => Ok(()),
            Self::Azure => {
                if !has("api-key") {
                    return Err(auth(
                        401,
                        None,
                        "Access denied due to missing subscription key. Make sure to include \
                         subscription key when making requests to an API.",
                    ));
                }
                if !query_has(uri, "api-version") {
                    return Err(MockError::UnknownUrl {
                        method: "POST".to_owned(),
                        path: uri.path().to_owned(),
                    });
                }
                Ok(())
            }
            Self::Anthropic => {
                if !has("x-api-key") {
                    return Err(auth(401, None, "x-api-key header is required"));
                }
                if !has("anthropic-version") {
                    return Err(MockError::invalid(
                        "anthropic-version",
                        "anthropic-version: header is required",
                    ));
                }
                Ok(())
            }
            Self::Gemini => {
                if has("x-goog-api-key") || query_has(uri, "key") {
                    return Ok(());
                }
                Err(auth(
                    403,
                    None,
                    "Method doesn't allow unregistered callers (callers without established \
                     identity). Please use API Key or other form of API consumer identity to \
                     call this API.",
                ))
            }
            Self::Bedrock => {
                let Some(authorization) = headers.get(header::AUTHORIZATION) else {
                    return Err(auth(
                        403,
                        Some("MissingAuthenticationTokenException"),
                        "Missing Authentication Token",
                    ));
                };
                if !authorization
                    .as_bytes()
                    .starts_with(SIGV4_PREFIX.as_bytes())
                {
                    return Err(auth(
                        403,
                        Some("IncompleteSignatureException"),
                        "Authorization header requires 'Credential' parameter.",
                    ));
                }
                if !has("x-amz-date") {
                    return Err(auth(
                        403,
                        Some("IncompleteSignatureException"),
                        "Authorization header requires existence of either a 'X-Amz-Date' or \
                         a 'Date' header.",
                    ));
                }
                Ok(())
            }
        }
    }

    /// A successful answer: `body` with its content type, the dialect's request-id header,
    /// and `Cache-Control: no-cache` on event streams.
    pub(crate) fn ok_response(self, id: u64, content_type: &'static str, body: Body) -> Response {
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if content_type != "application/json" {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        if let Some((name, value)) = self.request_id_header(id) {
            headers.insert(name, value);
        }
        response
    }

    /// The header real providers use to name a response, so logs can be matched to answers;
    /// Gemini sends none the gateway could use.
    fn request_id_header(self, id: u64) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            Self::OpenAi | Self::Azure => ("x-request-id", format!("req_mock_{id}")),
            Self::Anthropic => ("request-id", format!("req_mock_{id}")),
            // AWS request ids are UUIDs.
            Self::Bedrock => (
                "x-amzn-requestid",
                format!("00000000-0000-4000-8000-{id:012x}"),
            ),
            Self::Gemini => return None,
        };
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).ok()?,
        ))
    }

    /// An error answer in this dialect's schema. `kind` overrides the error type the
    /// status implies (Anthropic's `type`, Google's `status`, AWS's exception name).
    pub(crate) fn error_response(
        self,
        status: StatusCode,
        kind: Option<&str>,
        message: &str,
    ) -> Response {
        let mut extra = None;
        let body = match self {
            Self::OpenAi => {
                let code =
                    (status == StatusCode::TOO_MANY_REQUESTS).then_some("rate_limit_exceeded");
                error_json(message, kind.unwrap_or(error_type(status)), code, None)
            }
            Self::Azure => to_json(&json!({
                "error": {"code": kind.unwrap_or(status.as_str()), "message": message}
            })),
            Self::Anthropic => {
                let envelope = AnthropicError {
                    kind: "error",
                    error: AnthropicErrorObject {
                        kind: kind.unwrap_or(anthropic_error_type(status)),
                        message,
                    },
                };
                serde_json::to_vec(&envelope).unwrap_or_default()
            }
            Self::Gemini => to_json(&json!({
                "error": {
                    "code": status.as_u16(),
                    "message": message,
                    "status": kind.unwrap_or(google_status(status)),
                }
            })),
            Self::Bedrock => {
                let kind = kind.unwrap_or(aws_exception(status));
                extra = HeaderValue::from_str(&format!("{kind}:{AWS_ERROR_NAMESPACE}")).ok();
                to_json(&json!({ "message": message }))
            }
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(kind) = extra {
            headers.insert(HeaderName::from_static("x-amzn-errortype"), kind);
        }
        response
    }

    /// The answer a plain request gets from a `stream_error_after_tokens` fault: the error
    /// the stream would have reported, as an HTTP error.
    pub(crate) fn mid_stream_error_response(self) -> Response {
        let (status, kind, message) = self.mid_stream_error();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            // Azure relays OpenAI's own errors in OpenAI's schema.
            Self::Azure => Self::OpenAi.error_response(status, Some(kind), message),
            _ => self.error_response(status, Some(kind), message),
        }
    }

    /// Status, error type and message of the error a stream reports midway: the provider's
    /// usual transient failure.
    pub(crate) fn mid_stream_error(self) -> (u16, &'static str, &'static str) {
        match self {
            Self::OpenAi | Self::Azure => {
                (500, "server_error", "mock fault: error while generating")
            }
            Self::Anthropic => (529, "overloaded_error", "Overloaded"),
            Self::Gemini => (
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            ),
            Self::Bedrock => (
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
        }
    }
}

/// Whether the query string has a non-empty parameter `name`.
fn query_has(uri: &Uri, name: &str) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|pair| {
            pair.split_once('=')
                .is_some_and(|(k, v)| k == name && !v.is_empty())
        })
    })
}

/// The namespace AWS appends to the exception name in `x-amzn-errortype`.
const AWS_ERROR_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";

/// Serialising a `Value` cannot fail; an empty body is the harmless fallback.
fn to_json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `{"type":"error","error":{"type","message"}}`, in Anthropic's field order.
#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorObject<'a>,
}

#[derive(Serialize)]
struct AnthropicErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Anthropic's error `type` for a status.
fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Google's canonical `status` for an HTTP status.
fn google_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// Bedrock's exception name for a status.
fn aws_exception(status: StatusCode) -> &'static str {
    match status.as_u16() {
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        500..=599 => "InternalServerException",
        _ => "ValidationException",
    }
}

/// `%XX` escapes decoded (model ids such as `anthropic.claude-v2:1` arrive as
/// `anthropic.claude-v2%3A1`); invalid escapes stay as they are.
pub(crate) fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_by_path() {
        assert_eq!(Dialect::for_path("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::for_path("/v1/models"), Dialect::OpenAi);
        assert_eq!(Dialect::for_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::for_path("/v1beta/models/gemini-2.0-flash:generateContent"),
            Dialect::Gemini
        );
        assert_eq!(
            Dialect::for_path("/v1/models/gemini-2.0-flash:generateContent"),
            Dialect::Gemini
        );
        assert_eq!(
            Dialect::for_path("/openai/deployments/d/chat/completions"),
            Dialect::Azure
        );
        assert_eq!(Dialect::for_path("/model/m/converse"), Dialect::Bedrock);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(
            percent_decode("anthropic.claude-v2%3A1"),
            "anthropic.claude-v2:1"
        );
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
