//! Errors of parsing client bodies, translating them for a provider, and reading provider
//! responses.

use tollgate_core::{ErrorKind, GatewayError};

use crate::UpstreamError;

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
    /// A field deeper in the body (`messages[2].content[0].type`) is wrong.
    #[error("'{field}' {problem}")]
    Invalid { field: String, problem: String },
    #[error("request JSON nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// The request uses something the route's provider cannot express.
    #[error("{what} cannot be sent to a {provider} upstream")]
    Unsupported {
        what: String,
        provider: &'static str,
    },
    /// The request uses something only a provider of the client's own dialect takes.
    #[error("{what} is only supported when the route's provider speaks the client's API")]
    Untranslatable { what: String },
    /// The provider answered with a body the gateway cannot read.
    #[error("the {provider} response could not be read: {problem}")]
    UpstreamBody {
        provider: &'static str,
        problem: String,
    },
    /// The provider answered 200 but with a refusal the client must see as an error (a
    /// prompt blocked by a safety filter).
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The provider's configuration lacks what the request needs (a key, AWS credentials).
    #[error("the {provider} upstream is missing {what}")]
    MissingCredentials {
        provider: &'static str,
        what: &'static str,
    },
}

impl ProviderError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ProviderError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn untranslatable(what: impl Into<String>) -> Self {
        ProviderError::Untranslatable { what: what.into() }
    }

    pub(crate) fn unsupported(what: impl Into<String>, provider: &'static str) -> Self {
        ProviderError::Unsupported {
            what: what.into(),
            provider,
        }
    }
}

impl From<ProviderError> for GatewayError {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::InvalidField { field, .. } => {
                GatewayError::new(ErrorKind::InvalidRequest, err.to_string()).with_param(field)
            }
            ProviderError::Invalid { ref field, .. } => {
                let field = field.clone();
                GatewayError::new(ErrorKind::InvalidRequest, err.to_string()).with_param(field)
            }
            ProviderError::Unsupported { .. } | ProviderError::Untranslatable { .. } => {
                GatewayError::new(ErrorKind::InvalidRequest, err.to_string())
                    .with_code("unsupported_by_provider")
            }
            ProviderError::UpstreamBody { .. } => {
                GatewayError::new(ErrorKind::BadGateway, err.to_string())
                    .with_code("upstream_invalid_response")
            }
            ProviderError::Upstream(upstream) => upstream.to_gateway_error(),
            ProviderError::MissingCredentials { .. } => {
                GatewayError::new(ErrorKind::Internal, err.to_string())
                    .with_code("provider_misconfigured")
            }
            ProviderError::InvalidJson(_)
            | ProviderError::NotAnObject
            | ProviderError::TooDeep { .. } => {
                GatewayError::new(ErrorKind::InvalidRequest, err.to_string())
            }
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
    /// A server-side failure (5xx) or an overloaded provider: retry elsewhere.
    Server,
    /// The provider rejected our credentials: a configuration problem, retrying elsewhere
    /// may help (another key or provider), the client's request is not at fault.
    Auth,
    /// The client's request is at fault (other 4xx): pass the answer through, no retry.
    Client,
}
