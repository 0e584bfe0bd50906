//! The one error type the gateway answers clients with, and the one place that maps it to
//! a status code, an OpenAI- or Anthropic-schema body and a low-cardinality metric label.

use serde::Serialize;

/// What went wrong, at the granularity a client (and a dashboard) cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed JSON, a missing or invalid field.
    InvalidRequest,
    /// No gateway key, or an unknown one.
    Authentication,
    /// The key exists but may not use this model or route.
    PermissionDenied,
    /// The requested model or path is not known to the gateway.
    NotFound,
    /// The path exists but not for this HTTP method.
    MethodNotAllowed,
    /// The request body is over the configured cap.
    PayloadTooLarge,
    /// A limit of the gateway or of every upstream refused the request.
    RateLimited,
    /// Upstreams answered with errors on every attempt.
    BadGateway,
    /// No upstream could be reached or every candidate is unhealthy.
    Unavailable,
    /// Upstreams did not answer in time on every attempt.
    Timeout,
    /// A bug or an unexpected state inside the gateway.
    Internal,
}

impl ErrorKind {
    /// The HTTP status this kind is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The `error.type` OpenAI clients switch on.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::BadGateway | ErrorKind::Internal => "api_error",
            ErrorKind::Unavailable => "service_unavailable_error",
            ErrorKind::Timeout => "timeout_error",
        }
    }

    /// The `error.type` Anthropic clients switch on.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::MethodNotAllowed => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::BadGateway | ErrorKind::Timeout | ErrorKind::Internal => "api_error",
        }
    }

    /// A label with a fixed, small set of values, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Authentication => "authentication",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error the gateway itself answers a client with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// Machine-readable `error.code`, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// Seconds the client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    /// More response headers, e.g. the `x-ratelimit-*` state of a refused request.
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'a str>,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.headers = headers;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The body in OpenAI's error schema: `{"error":{"message","type","code","param"}}`.
    pub fn openai_body(&self) -> Vec<u8> {
        let body = OpenAiErrorBody {
            error: OpenAiError {
                message: &self.message,
                kind: self.kind.openai_type(),
                code: self.code,
                param: self.param.as_deref(),
            },
        };
        // Serializing a struct of strings cannot fail; fall back to a fixed body anyway so
        // the request path has no panic.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"api_error","code":null,"param":null}}"#
                .to_vec()
        })
    }

    /// The body in Anthropic's error schema: `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> Vec<u8> {
        let body = AnthropicErrorBody {
            kind: "error",
            error: AnthropicError {
                kind: self.kind.anthropic_type(),
                message: &self.message,
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_body_has_every_field() {
        let err = GatewayError::new(ErrorKind::NotFound, "model 'x' is not known")
            .with_code("model_not_found")
            .with_param("model");
        let body: serde_json::Value = serde_json::from_slice(&err.openai_body()).unwrap();
        assert_eq!(body["error"]["message"], "model 'x' is not known");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(err.status(), 404);
    }

    #[test]
    fn anthropic_body_uses_anthropic_types() {
        let err = GatewayError::new(ErrorKind::RateLimited, "slow down");
        let body: serde_json::Value = serde_json::from_slice(&err.anthropic_body()).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["message"], "slow down");
        let body: serde_json::Value =
            serde_json::from_slice(&GatewayError::new(ErrorKind::NotFound, "x").anthropic_body())
                .unwrap();
        assert_eq!(body["error"]["type"], "not_found_error");
    }

    #[test]
    fn null_code_and_param_are_present() {
        let body: serde_json::Value =
            serde_json::from_slice(&GatewayError::new(ErrorKind::Timeout, "slow").openai_body())
                .unwrap();
        assert!(body["error"]["code"].is_null());
        assert!(body["error"]["param"].is_null());
        assert_eq!(body["error"]["type"], "timeout_error");
    }
}
