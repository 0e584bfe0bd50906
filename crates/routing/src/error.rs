//! The crate's one error type, and its mapping onto the gateway's client-facing error.

use tollgate_core::{ErrorKind, GatewayError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The config handed to `from_config` is inconsistent (validation should have caught it).
    #[error("{path}: {problem}")]
    InvalidConfig { path: String, problem: String },
    /// No route matches and the model is not in the catalog.
    #[error("the model '{model}' does not exist")]
    ModelNotFound { model: String },
    /// The key's `models` scope does not contain the requested model.
    #[error("the key '{key}' may not use the model '{model}'")]
    ModelNotAllowed { key: String, model: String },
    /// The key's `routes` scope does not contain the matched route.
    #[error("the key '{key}' may not use the model '{model}' (route '{route}')")]
    RouteNotAllowed {
        key: String,
        model: String,
        route: String,
    },
    /// Every candidate that fits the prompt is unhealthy, open-circuited or out of keys.
    #[error("no upstream for the model '{model}' is available right now (route '{route}')")]
    Unavailable { model: String, route: String },
    /// The prompt is larger than the context window of every candidate.
    #[error(
        "the prompt has about {tokens} tokens, more than the largest context window \
         ({window} tokens) of any model that serves '{model}'"
    )]
    ContextTooLong {
        model: String,
        tokens: u64,
        window: u64,
    },
}

impl RoutingError {
    pub(crate) fn config(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidConfig {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl From<RoutingError> for GatewayError {
    fn from(err: RoutingError) -> Self {
        let message = err.to_string();
        match err {
            RoutingError::InvalidConfig { .. } => GatewayError::new(ErrorKind::Internal, message),
            RoutingError::ModelNotFound { .. } => GatewayError::new(ErrorKind::NotFound, message)
                .with_code("model_not_found")
                .with_param("model"),
            RoutingError::ModelNotAllowed { .. } | RoutingError::RouteNotAllowed { .. } => {
                GatewayError::new(ErrorKind::PermissionDenied, message)
                    .with_code("model_not_allowed")
                    .with_param("model")
            }
            RoutingError::Unavailable { .. } => {
                GatewayError::new(ErrorKind::Unavailable, message).with_code("no_healthy_upstream")
            }
            RoutingError::ContextTooLong { .. } => {
                GatewayError::new(ErrorKind::InvalidRequest, message)
                    .with_code("context_length_exceeded")
                    .with_param("messages")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_client_errors() {
        let e: GatewayError = RoutingError::ModelNotFound { model: "x".into() }.into();
        assert_eq!((e.status(), e.code), (404, Some("model_not_found")));
        let e: GatewayError = RoutingError::ContextTooLong {
            model: "m".into(),
            tokens: 10,
            window: 5,
        }
        .into();
        assert_eq!((e.status(), e.code), (400, Some("context_length_exceeded")));
        let e: GatewayError = RoutingError::RouteNotAllowed {
            key: "k".into(),
            model: "m".into(),
            route: "r".into(),
        }
        .into();
        assert_eq!(e.status(), 403);
        let e: GatewayError = RoutingError::Unavailable {
            model: "m".into(),
            route: "r".into(),
        }
        .into();
        assert_eq!(e.status(), 503);
    }
}
