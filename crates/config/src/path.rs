//! Key paths into the config document (`routes[1].retry.on[0]`), shared by deserialization
//! errors, interpolation errors, validation problems and the line index.

use std::fmt;

/// One step of a [`KeyPath`]: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document, from the root.
///
/// Displays as `routes[1].retry.on[0]`; a key that holds `.`, brackets, quotes or
/// whitespace (model names such as `gpt-4.1`) displays quoted: `models["gpt-4.1"].price`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(Vec<PathSegment>);

impl KeyPath {
    /// The document root (displays as the empty string).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(PathSegment::Key(key.into()));
        self
    }

    /// This path extended by a sequence index.
    #[must_use]
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(PathSegment::Index(index));
        self
    }

    /// This path extended by a relative path written `a.b[2].c`, as other crates'
    /// validators report them.
    #[must_use]
    pub fn join_dotted(mut self, relative: &str) -> Self {
        for piece in relative.split('.').filter(|p| !p.is_empty()) {
            let (key, indexes) = piece
                .split_once('[')
                .map_or((piece, ""), |(k, rest)| (k, rest));
            if !key.is_empty() {
                self.0.push(PathSegment::Key(key.to_owned()));
            }
            for index in indexes.split('[') {
                if let Ok(i) = index.trim_end_matches(']').parse::<usize>() {
                    self.0.push(PathSegment::Index(i));
                }
            }
        }
        self
    }

    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, segment: PathSegment) {
        self.0.push(segment);
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }
}

impl From<Vec<PathSegment>> for KeyPath {
    fn from(segments: Vec<PathSegment>) -> Self {
        Self(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Index(index) => write!(f, "[{index}]")?,
                PathSegment::Key(key) if needs_quotes(key) => write!(f, "[{key:?}]")?,
                PathSegment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
            }
        }
        Ok(())
    }
}

fn needs_quotes(key: &str) -> bool {
    key.is_empty()
        || key.chars().any(|c| {
            matches!(c, '.' | '[' | ']' | '"' | '\'') || c.is_whitespace() || c.is_control()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_keys_and_indices() {
        let path = KeyPath::root()
            .key("routes")
            .index(1)
            .key("retry")
            .key("on")
            .index(0);
        assert_eq!(path.to_string(), "routes[1].retry.on[0]");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn quotes_keys_that_would_be_ambiguous() {
        let path = KeyPath::root().key("models").key("gpt-4.1").key("price");
        assert_eq!(path.to_string(), r#"models["gpt-4.1"].price"#);
        let path = KeyPath::root().key("models").key("meta/llama-3_8b");
        assert_eq!(path.to_string(), "models.meta/llama-3_8b");
    }
}
