//! The crate's one error type.

use std::path::PathBuf;

/// Why a load or a suite could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A scenario file could not be read or parsed.
    #[error("{path}: {message}")]
    Scenario { path: PathBuf, message: String },
    /// A target URL is not `http://IP:port/path`.
    #[error("bad target URL '{0}': expected http://IP:port/path")]
    Url(String),
    /// A system under test could not be started or did not become ready.
    #[error("{system}: {message}")]
    System { system: String, message: String },
    /// Reading or writing a file, spawning a process.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A histogram could not be created.
    #[error("histogram: {0}")]
    Histogram(String),
    /// A JSON or YAML document could not be written.
    #[error("could not encode {what}: {message}")]
    Encode { what: &'static str, message: String },
}

impl BenchError {
    /// Wraps an IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
