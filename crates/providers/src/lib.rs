//! Provider wire formats: parsing client requests in the gateway's ingress dialects,
//! building upstream requests for each provider family, and reading their responses,
//! stream events, usage and errors. Pure: no IO.

pub mod openai;

mod error;
mod upstream;

pub use error::{ProviderError, UpstreamErrorClass};
pub use upstream::{classify_upstream_error, Operation, UpstreamRequest};
