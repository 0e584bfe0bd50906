//! The crate's error type: a config that could not be read, or one with problems, each
//! with its key path and line.

use std::fmt;
use std::path::PathBuf;

use crate::path::KeyPath;

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is; the root for problems of the whole document (YAML syntax).
    pub path: KeyPath,
    /// 1-based line in the file; `None` when unknown (a config validated without its
    /// source text, or a value that only exists as a default).
    pub line: Option<usize>,
    /// What is wrong, never quoting a secret.
    pub message: String,
}

impl Problem {
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            path,
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {limit} bytes; is this the config file?", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// Every problem found, sorted by line; displays one per line as
    /// `conf/x.yaml:14: routes[0].targets[1].model: unknown model 'gpt-5' (known: a, b)`.
    #[error("{}", render(.origin, .problems))]
    Invalid {
        /// The file name shown in messages.
        origin: String,
        problems: Vec<Problem>,
    },
}

impl ConfigErrors {
    /// The problems of an invalid config; empty for read errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigErrors::Invalid { problems, .. } => problems,
            ConfigErrors::Read { .. } | ConfigErrors::TooLarge { .. } => &[],
        }
    }

    /// Sorts by line (unlocated problems last), keeping the order of problems on one line.
    pub(crate) fn invalid(origin: &str, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| (p.line.is_none(), p.line));
        ConfigErrors::Invalid {
            origin: origin.to_owned(),
            problems,
        }
    }
}

fn render(origin: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(origin);
        if let Some(line) = problem.line {
            out.push(':');
            out.push_str(&line.to_string());
        }
        out.push_str(": ");
        out.push_str(&problem.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_problem_per_line_sorted_by_line() {
        let at = |line, path: KeyPath, msg: &str| Problem {
            line,
            ..Problem::new(path, msg)
        };
        let err = ConfigErrors::invalid(
            "conf/x.yaml",
            vec![
                at(None, KeyPath::root().key("server"), "c"),
                at(Some(14), KeyPath::root().key("routes").index(0), "b"),
                at(Some(3), KeyPath::root(), "a"),
            ],
        );
        assert_eq!(
            err.to_string(),
            "conf/x.yaml:3: a\nconf/x.yaml:14: routes[0]: b\nconf/x.yaml: server: c"
        );
        assert_eq!(err.problems().len(), 3);
    }
}
