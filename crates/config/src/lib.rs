//! Tollgate's configuration: the YAML file format, `${ENV}` interpolation, and validation
//! that reports every problem with its file, line and key path.
//!
//! ```
//! let text = "server:\n  threads: 0\n  max_body_bytes: 10\n";
//! let err = tollgate_config::parse(text, "conf/x.yaml").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "conf/x.yaml:2: server.threads: must be at least 1\n\
//!      conf/x.yaml:3: server.max_body_bytes: 10 is below the minimum of 1024 bytes"
//! );
//! ```

mod endpoint;
mod error;
mod guardrails;
mod interpolate;
mod keyhash;
mod limits;
mod load;
mod locate;
mod model;
mod path;
mod pem;
mod validate;

pub use endpoint::{parse_endpoint, Endpoint};
pub use error::{ConfigErrors, Problem};
pub use guardrails::{
    GuardrailConfig, InjectionAction, InjectionConfig, JsonOutputConfig, OnInvalidJson,
    RedactConfig,
};
pub use keyhash::hash_key;
pub use limits::ClientLimitsConfig;
pub use load::{load, parse, MAX_CONFIG_BYTES};
pub use model::*;
pub use path::{KeyPath, PathSegment};
pub use pem::{load_certs, load_key, read_pem_file, MAX_PEM_BYTES};
