//! Types shared by every Tollgate crate: the gateway's error with its mapping to HTTP
//! and to the clients' error schemas, request ids, and token usage. No IO lives here.

mod error;
mod id;
mod usage;

pub use error::{ErrorKind, GatewayError};
pub use id::RequestId;
pub use usage::Usage;
