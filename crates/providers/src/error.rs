//! Errors of parsing client bodies and of reading provider responses.

use tollgate_core::{ErrorKind, GatewayError};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("'{field}' {problem}")]
    InvalidField {
        field: &'static str,
        problem: &'static str,
    },
    #[error("request JSON nests deeper than {limit} levels")]
    TooDeep { limit: usize },
}

impl From<ProviderError> for GatewayError {
    fn from(err: ProviderError) -> Self {
        let param = match &err {
            ProviderError::InvalidField { field, .. } => Some(*field),
            _ => None,
        };
        let gw = GatewayError::new(ErrorKind::InvalidRequest, err.to_string());
        match param {
            Some(p) => gw.with_param(p),
            None => gw,
        }
    }
}

/// How the gateway should treat an error answer from a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorClass {
    /// The prompt does not fit the model: do not retry the same model.
    ContextTooLong,
    /// Rate limited (429): retry after a cool-down, possibly on another key.
    RateLimited,
    /// A server-side failure (5xx): retry elsewhere.
    Server,
    /// The provider rejected our credentials: a configuration problem, retrying elsewhere
    /// may help (another key or provider), the client's request is not at fault.
    Auth,
    /// The client's request is at fault (other 4xx): pass the answer through, no retry.
    Client,
}
