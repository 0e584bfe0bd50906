//! Provider error answers: what kind of error each provider's status and body mean, what
//! the gateway does about it (its [`UpstreamErrorClass`]), and how the client sees it in
//! its own dialect.

use std::fmt;

use serde_json::{json, Value};
use tollgate_core::{ErrorKind, GatewayError};

use crate::{Dialect, ProviderKind, UpstreamErrorClass};

/// Longest provider error message kept, in characters. Messages are a sentence or two; a
/// provider that echoes the prompt back into its message must not make the gateway hold
/// or relay all of it.
const MAX_ERROR_MESSAGE_CHARS: usize = 2048;

/// What went wrong upstream, at the granularity both client dialects distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    InvalidRequest,
    /// The provider refused the gateway's key.
    Authentication,
    /// The gateway's key may not use this model or feature.
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimited,
    /// The prompt does not fit the model's context window.
    ContextTooLong,
    /// A safety filter refused the prompt or the answer.
    ContentPolicy,
    /// The provider is temporarily over capacity.
    Overloaded,
    /// Any other failure on the provider's side.
    Server,
}

impl ErrorType {
    /// What the gateway does about it: fail over, cool down, or relay to the client.
    pub fn class(self) -> UpstreamErrorClass {
        match self {
            ErrorType::InvalidRequest
            | ErrorType::NotFound
            | ErrorType::RequestTooLarge
            | ErrorType::ContentPolicy => UpstreamErrorClass::Client,
            ErrorType::Authentication | ErrorType::PermissionDenied => UpstreamErrorClass::Auth,
            ErrorType::RateLimited => UpstreamErrorClass::RateLimited,
            ErrorType::ContextTooLong => UpstreamErrorClass::ContextTooLong,
            ErrorType::Overloaded | ErrorType::Server => UpstreamErrorClass::Server,
        }
    }

    /// The status the client is answered with. A provider refusing the gateway's own
    /// credentials is the gateway's fault, not the client's: 502.
    pub fn status(self, dialect: Dialect) -> u16 {
        match self {
            ErrorType::InvalidRequest | ErrorType::ContextTooLong | ErrorType::ContentPolicy => 400,
            ErrorType::Authentication | ErrorType::PermissionDenied | ErrorType::Server => 502,
            ErrorType::NotFound => 404,
            ErrorType::RequestTooLarge => 413,
            ErrorType::RateLimited => 429,
            ErrorType::Overloaded => match dialect {
                Dialect::OpenAi => 503,
                Dialect::Anthropic => 529,
            },
        }
    }

    /// OpenAI's `error.type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest
            | ErrorType::NotFound
            | ErrorType::RequestTooLarge
            | ErrorType::ContextTooLong
            | ErrorType::ContentPolicy => "invalid_request_error",
            ErrorType::RateLimited => "rate_limit_error",
            ErrorType::Overloaded => "service_unavailable_error",
            ErrorType::Authentication | ErrorType::PermissionDenied | ErrorType::Server => {
                "api_error"
            }
        }
    }

    /// OpenAI's `error.code`, where OpenAI has one for the case.
    pub fn openai_code(self) -> Option<&'static str> {
        match self {
            ErrorType::ContextTooLong => Some("context_length_exceeded"),
            ErrorType::ContentPolicy => Some("content_policy_violation"),
            ErrorType::RateLimited => Some("rate_limit_exceeded"),
            ErrorType::Overloaded => Some("overloaded"),
            ErrorType::Authentication | ErrorType::PermissionDenied => Some("upstream_auth_error"),
            _ => None,
        }
    }

    /// Anthropic's `error.type`.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest | ErrorType::ContextTooLong | ErrorType::ContentPolicy => {
                "invalid_request_error"
            }
            ErrorType::NotFound => "not_found_error",
            ErrorType::RequestTooLarge => "request_too_large",
            ErrorType::RateLimited => "rate_limit_error",
            ErrorType::Overloaded => "overloaded_error",
            ErrorType::Authentication | ErrorType::PermissionDenied | ErrorType::Server => {
                "api_error"
            }
        }
    }

    fn gateway_kind(self) -> ErrorKind {
        match self {
            ErrorType::InvalidRequest | ErrorType::ContextTooLong | ErrorType::ContentPolicy => {
                ErrorKind::InvalidRequest
            }
            ErrorType::NotFound => ErrorKind::NotFound,
            ErrorType::RequestTooLarge => ErrorKind::PayloadTooLarge,
            ErrorType::RateLimited => ErrorKind::RateLimited,
            ErrorType::Overloaded => ErrorKind::Unavailable,
            ErrorType::Authentication | ErrorType::PermissionDenied | ErrorType::Server => {
                ErrorKind::BadGateway
            }
        }
    }

    /// The type Anthropic's `error.type` names.
    fn from_anthropic(kind: &str) -> Option<Self> {
        Some(match kind {
            "invalid_request_error" => ErrorType::InvalidRequest,
            "authentication_error" => ErrorType::Authentication,
            "permission_error" | "billing_error" => ErrorType::PermissionDenied,
            "not_found_error" => ErrorType::NotFound,
            "request_too_large" => ErrorType::RequestTooLarge,
            "rate_limit_error" => ErrorType::RateLimited,
            "overloaded_error" => ErrorType::Overloaded,
            "api_error" | "timeout_error" => ErrorType::Server,
            _ => return None,
        })
    }
}

/// One error answer of a provider, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub error_type: ErrorType,
    /// The provider's status (200 for errors inside a stream or a 200 body).
    pub upstream_status: u16,
    /// The provider's message, capped.
    pub message: String,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpstreamError {}

impl UpstreamError {
    pub fn new(error_type: ErrorType, upstream_status: u16, message: &str) -> Self {
        Self {
            error_type,
            upstream_status,
            message: cap_message(message),
        }
    }

    /// What the gateway does about it.
    pub fn class(&self) -> UpstreamErrorClass {
        self.error_type.class()
    }

    /// The status to answer a client of `dialect` with.
    pub fn client_status(&self, dialect: Dialect) -> u16 {
        self.error_type.status(dialect)
    }

    fn client_message(&self) -> String {
        match self.error_type {
            ErrorType::Authentication | ErrorType::PermissionDenied => {
                format!(
                    "the provider refused the gateway's credentials: {}",
                    self.message
                )
            }
            _ => self.message.clone(),
        }
    }

    /// The body to answer a client of `dialect` with, in that dialect's error schema.
    pub fn client_body(&self, dialect: Dialect) -> Vec<u8> {
        match dialect {
            Dialect::OpenAi => serde_json::to_vec(&self.openai_value()).unwrap_or_default(),
            Dialect::Anthropic => {
                anthropic_error_body(self.error_type.anthropic_type(), &self.client_message())
            }
        }
    }

    /// The error object of OpenAI's schema.
    pub(crate) fn openai_value(&self) -> Value {
        json!({"error": {
            "message": self.client_message(),
            "type": self.error_type.openai_type(),
            "code": self.error_type.openai_code(),
            "param": null,
        }})
    }

    /// The same error as the gateway's own, for paths that answer with a `GatewayError`.
    pub fn to_gateway_error(&self) -> GatewayError {
        let err = GatewayError::new(self.error_type.gateway_kind(), self.client_message());
        match self.error_type.openai_code() {
            Some(code) => err.with_code(code),
            None => err,
        }
    }
}

fn cap_message(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// Anthropic's `error.type` for a status, as Anthropic's API uses them.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An error body in Anthropic's schema: `{"type":"error","error":{"type","message"}}`.
pub fn anthropic_error_body(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "error", "error": {"type": error_type, "message": message}}))
        .unwrap_or_default()
}

// === classification ===

/// Classifies an error answer of a `kind` provider by its status and body.
pub fn classify_error(kind: ProviderKind, status: u16, body: &[u8]) -> UpstreamError {
    let value = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let mut error = classify_value(kind, status, &value);
    if error.message.is_empty() {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        error.message = if text.is_empty() {
            format!("the provider answered with status {status}")
        } else {
            cap_message(text)
        };
    }
    if error.error_type == ErrorType::InvalidRequest && mentions_context_length(body) {
        error.error_type = ErrorType::ContextTooLong;
    }
    error
}

/// Classifies a parsed error object: a whole error body, or an error event inside a stream
/// (then `status` is 200 and only the body tells).
pub(crate) fn classify_value(kind: ProviderKind, status: u16, value: &Value) -> UpstreamError {
    // Gemini's streaming endpoint wraps its error body in an array.
    let value = match value {
        Value::Array(items) => items.first().unwrap_or(&Value::Null),
        other => other,
    };
    let error = value.get("error").unwrap_or(value);
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let message = str_at(error, "message")
        .or_else(|| str_at(value, "message"))
        .or_else(|| str_at(value, "Message"))
        .unwrap_or_default();
    let by_body = match kind {
        ProviderKind::Anthropic => {
            str_at(error, "type").and_then(|t| ErrorType::from_anthropic(&t))
        }
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => {
            let code = str_at(error, "code").unwrap_or_default();
            let kind = str_at(error, "type").unwrap_or_default();
            openai_type(&code, &kind)
        }
        ProviderKind::Gemini => gemini_type(error),
        ProviderKind::Bedrock => str_at(value, "__type")
            .or_else(|| str_at(value, "exception_type"))
            .and_then(|t| bedrock_type(&t)),
    };
    let error_type = by_body.unwrap_or_else(|| by_status(status));
    UpstreamError::new(error_type, status, &message)
}

fn by_status(status: u16) -> ErrorType {
    match status {
        401 => ErrorType::Authentication,
        403 => ErrorType::PermissionDenied,
        404 => ErrorType::NotFound,
        413 => ErrorType::RequestTooLarge,
        429 => ErrorType::RateLimited,
        503 | 529 => ErrorType::Overloaded,
        400..=499 if status != 408 && status != 424 => ErrorType::InvalidRequest,
        // 408 and 424 are Bedrock's model timeout and model failure; 200 is an error
        // event inside a stream without a type the gateway knows.
        _ => ErrorType::Server,
    }
}

fn openai_type(code: &str, kind: &str) -> Option<ErrorType> {
    Some(match (code, kind) {
        ("context_length_exceeded", _) | ("string_above_max_length", _) => {
            ErrorType::ContextTooLong
        }
        ("content_filter", _) | ("content_policy_violation", _) | ("invalid_prompt", _) => {
            ErrorType::ContentPolicy
        }
        ("rate_limit_exceeded", _) | ("insufficient_quota", _) | (_, "rate_limit_error") => {
            ErrorType::RateLimited
        }
        ("invalid_api_key", _) | (_, "authentication_error") => ErrorType::Authentication,
        (_, "server_error") => ErrorType::Server,
        _ => return None,
    })
}

fn gemini_type(error: &Value) -> Option<ErrorType> {
    let key_invalid = error
        .get("details")
        .and_then(Value::as_array)
        .is_some_and(|details| {
            details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
        });
    if key_invalid {
        return Some(ErrorType::Authentication);
    }
    Some(match error.get("status").and_then(Value::as_str)? {
        "UNAUTHENTICATED" => ErrorType::Authentication,
        "PERMISSION_DENIED" => ErrorType::PermissionDenied,
        "NOT_FOUND" => ErrorType::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorType::RateLimited,
        "UNAVAILABLE" => ErrorType::Overloaded,
        "INTERNAL" | "DEADLINE_EXCEEDED" | "UNKNOWN" => ErrorType::Server,
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" => ErrorType::InvalidRequest,
        _ => return None,
    })
}

/// Bedrock names the exception in `__type` (`com.amazon…#ThrottlingException` or bare)
/// and in the `:exception-type` header of stream frames (lower camel case).
fn bedrock_type(name: &str) -> Option<ErrorType> {
    let name = name.rsplit('#').next().unwrap_or(name);
    let name = name.split(':').next().unwrap_or(name).to_ascii_lowercase();
    Some(match name.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => ErrorType::RateLimited,
        "accessdeniedexception" => ErrorType::PermissionDenied,
        "unrecognizedclientexception" | "expiredtokenexception" => ErrorType::Authentication,
        "resourcenotfoundexception" => ErrorType::NotFound,
        "validationexception" => ErrorType::InvalidRequest,
        "serviceunavailableexception" | "modelnotreadyexception" => ErrorType::Overloaded,
        "internalserverexception"
        | "modeltimeoutexception"
        | "modelerrorexception"
        | "modelstreamerrorexception" => ErrorType::Server,
        _ => return None,
    })
}

/// Providers signal an oversized prompt with a 400 whose code or message says so.
pub(crate) fn mentions_context_length(body: &[u8]) -> bool {
    const MARKERS: [&[u8]; 7] = [
        b"context_length_exceeded",
        b"maximum context length",
        b"prompt is too long",
        b"input is too long",
        b"exceeds the maximum number of tokens",
        b"context window",
        b"too many input tokens",
    ];
    MARKERS
        .iter()
        .any(|m| body.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(kind: ProviderKind, status: u16, body: &str) -> ErrorType {
        classify_error(kind, status, body.as_bytes()).error_type
    }

    #[test]
    fn each_provider_maps_auth_rate_limit_context_policy_and_overload() {
        use ErrorType::*;
        use ProviderKind as K;
        let cases: &[(K, u16, &str, ErrorType)] = &[
            (
                K::OpenAi,
                401,
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                Authentication,
            ),
            (
                K::OpenAi,
                429,
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                RateLimited,
            ),
            (
                K::OpenAi,
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#,
                ContextTooLong,
            ),
            (
                K::OpenAi,
                503,
                r#"{"error":{"message":"The engine is currently overloaded"}}"#,
                Overloaded,
            ),
            (
                K::AzureOpenAi,
                400,
                r#"{"error":{"message":"The response was filtered","code":"content_filter","status":400}}"#,
                ContentPolicy,
            ),
            (
                K::Anthropic,
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
                Authentication,
            ),
            (
                K::Anthropic,
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#,
                RateLimited,
            ),
            (
                K::Anthropic,
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                ContextTooLong,
            ),
            (
                K::Anthropic,
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                Overloaded,
            ),
            (
                K::Anthropic,
                413,
                r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes"}}"#,
                RequestTooLarge,
            ),
            (
                K::Gemini,
                400,
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
                Authentication,
            ),
            (
                K::Gemini,
                429,
                r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
                RateLimited,
            ),
            (
                K::Gemini,
                400,
                r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
                ContextTooLong,
            ),
            (
                K::Gemini,
                503,
                r#"[{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}]"#,
                Overloaded,
            ),
            (
                K::Bedrock,
                429,
                r#"{"message":"Too many requests, please wait before trying again."}"#,
                RateLimited,
            ),
            (
                K::Bedrock,
                403,
                r#"{"message":"The security token included in the request is invalid.","__type":"UnrecognizedClientException"}"#,
                Authentication,
            ),
            (
                K::Bedrock,
                400,
                r#"{"message":"Input is too long for requested model."}"#,
                ContextTooLong,
            ),
            (
                K::Bedrock,
                503,
                r#"{"message":"Bedrock is unable to process your request."}"#,
                Overloaded,
            ),
            (K::Bedrock, 424, r#"{"message":"Model failed"}"#, Server),
        ];
        for (kind, status, body, want) in cases {
            assert_eq!(
                classify(*kind, *status, body),
                *want,
                "{kind:?} {status} {body}"
            );
        }
    }

    #[test]
    fn failover_decisions_follow_the_type() {
        assert_eq!(ErrorType::Overloaded.class(), UpstreamErrorClass::Server);
        assert_eq!(ErrorType::ContentPolicy.class(), UpstreamErrorClass::Client);
        assert_eq!(ErrorType::Authentication.class(), UpstreamErrorClass::Auth);
        assert_eq!(
            ErrorType::ContextTooLong.class(),
            UpstreamErrorClass::ContextTooLong
        );
    }

    #[test]
    fn client_bodies_follow_each_dialect() {
        let err = classify_error(
            ProviderKind::Gemini,
            429,
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        let openai: Value = serde_json::from_slice(&err.client_body(Dialect::OpenAi)).unwrap();
        assert_eq!(openai["error"]["type"], "rate_limit_error");
        assert_eq!(openai["error"]["message"], "quota");
        let anthropic: Value =
            serde_json::from_slice(&err.client_body(Dialect::Anthropic)).unwrap();
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "rate_limit_error");
        assert_eq!(err.client_status(Dialect::Anthropic), 429);

        let overloaded = UpstreamError::new(ErrorType::Overloaded, 503, "busy");
        assert_eq!(overloaded.client_status(Dialect::Anthropic), 529);
        assert_eq!(overloaded.client_status(Dialect::OpenAi), 503);
        let auth = UpstreamError::new(ErrorType::Authentication, 401, "bad key");
        assert_eq!(auth.client_status(Dialect::OpenAi), 502);
    }

    #[test]
    fn anthropic_status_types_match_the_documented_table() {
        let table = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (529, "overloaded_error"),
        ];
        for (status, kind) in table {
            assert_eq!(anthropic_error_type(status), kind);
        }
    }

    #[test]
    fn empty_and_huge_messages_are_bounded() {
        let err = classify_error(ProviderKind::OpenAi, 500, b"");
        assert_eq!(err.message, "the provider answered with status 500");
        let long = "x".repeat(10_000);
        let err = classify_error(ProviderKind::OpenAi, 500, long.as_bytes());
        assert!(err.message.chars().count() <= MAX_ERROR_MESSAGE_CHARS + 1);
    }
}
