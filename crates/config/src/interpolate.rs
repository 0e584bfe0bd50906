//! `${VAR}` interpolation from the environment, applied to the parsed document's string
//! values (never to keys or comments), so a value with quotes or newlines cannot change
//! the document's structure. Also the scrubber that keeps those values, and the provider
//! keys written in the file, out of error messages.

use std::env::VarError;

use serde_yaml_ng::{Mapping, Value};

use crate::error::Problem;
use crate::locate::SourceIndex;
use crate::path::{KeyPath, PathSegment};

/// Looks up one environment variable; `std::env::var` in production.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// Shorter values are left in messages: scrubbing them would garble unrelated text
/// (`routes[1]`), and nothing that short is a credential.
const MIN_SCRUBBED_LEN: usize = 4;

/// Replaces secret values in messages with a label (`${OPENAI_API_KEY}`, `<api key>`).
#[derive(Debug, Default)]
pub(crate) struct Scrubber {
    pairs: Vec<(String, String)>,
}

impl Scrubber {
    fn add(&mut self, secret: &str, label: String) {
        if secret.len() < MIN_SCRUBBED_LEN {
            return;
        }
        // serde quotes strings with Debug escaping in its messages.
        let quoted = format!("{secret:?}");
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != secret {
            self.pairs.push((escaped.to_owned(), label.clone()));
        }
        self.pairs.push((secret.to_owned(), label));
    }

    pub(crate) fn apply(&self, message: &str) -> String {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        // Longest first, so a secret containing another is replaced whole.
        pairs.sort_by_key(|(secret, _)| std::cmp::Reverse(secret.len()));
        pairs
            .into_iter()
            .fold(message.to_owned(), |msg, (secret, label)| {
                msg.replace(secret.as_str(), label)
            })
    }

    /// Registers the provider keys and header values written in the file itself, which
    /// a type error would otherwise quote.
    pub(crate) fn add_literal_secrets(&mut self, root: &Value) {
        let Some(providers) = root.get("providers").and_then(Value::as_mapping) else {
            return;
        };
        for provider in providers.values() {
            match provider.get("api_keys") {
                Some(Value::Sequence(keys)) => {
                    for key in keys.iter().filter_map(Value::as_str) {
                        self.add(key, "<api key>".to_owned());
                    }
                }
                Some(Value::String(key)) => self.add(key, "<api key>".to_owned()),
                _ => {}
            }
            if let Some(headers) = provider.get("headers").and_then(Value::as_mapping) {
                for value in headers.values().filter_map(Value::as_str) {
                    self.add(value, "<header value>".to_owned());
                }
            }
        }
    }
}

/// Interpolates every string value under `root`, returning one problem per bad reference.
pub(crate) fn interpolate_document(
    root: &mut Value,
    index: &SourceIndex,
    lookup: Lookup<'_>,
    scrubber: &mut Scrubber,
) -> Vec<Problem> {
    let mut walk = Walk {
        index,
        lookup,
        scrubber,
        problems: Vec::new(),
        path: KeyPath::root(),
    };
    walk.value(root);
    walk.problems
}

struct Walk<'a> {
    index: &'a SourceIndex,
    lookup: Lookup<'a>,
    scrubber: &'a mut Scrubber,
    problems: Vec<Problem>,
    path: KeyPath,
}

impl Walk<'_> {
    fn value(&mut self, value: &mut Value) {
        match value {
            Value::String(text) => {
                if let Some(new) = self.string(text) {
                    *value = new;
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.path.push(PathSegment::Index(i));
                    self.value(item);
                    self.path.pop();
                }
            }
            Value::Mapping(map) => self.mapping(map),
            Value::Tagged(tagged) => self.value(&mut tagged.value),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn mapping(&mut self, map: &mut Mapping) {
        for (key, item) in map.iter_mut() {
            self.path.push(PathSegment::Key(key_text(key)));
            self.value(item);
            self.path.pop();
        }
    }

    /// The interpolated value, or `None` when `text` has no reference.
    fn string(&mut self, text: &str) -> Option<Value> {
        if !text.contains("${") {
            return None;
        }
        let line = self.index.line_of(&self.path);
        let expanded = match expand(text, self.lookup) {
            Ok(expanded) => expanded,
            Err(messages) => {
                for message in messages {
                    self.problems.push(Problem {
                        line,
                        ..Problem::new(self.path.clone(), message)
                    });
                }
                return None;
            }
        };
        for (name, value) in &expanded.from_env {
            self.scrubber.add(value, format!("${{{name}}}"));
        }
        if self.index.is_plain_scalar(&self.path) {
            Some(resolve_plain(expanded.text))
        } else {
            Some(Value::String(expanded.text))
        }
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_owned(),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => "<complex key>".to_owned(),
    }
}

/// Types an interpolated unquoted scalar the way the YAML parser would have typed the
/// same text written in place, but only as a number, boolean or null: anything else
/// (`a: b`, `- x`, `#c`) stays the string it is.
fn resolve_plain(text: String) -> Value {
    if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    let simple = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'));
    if simple {
        if let Ok(value @ (Value::Number(_) | Value::Bool(_))) =
            serde_yaml_ng::from_str::<Value>(&text)
        {
            return value;
        }
    }
    Value::String(text)
}

#[derive(Debug, PartialEq)]
struct Expanded {
    text: String,
    /// (variable, value) for each value taken from the environment.
    from_env: Vec<(String, String)>,
}

/// Expands `${VAR}` and `${VAR:-default}` (the default when VAR is unset or empty) in
/// one value; `$${` stands for a literal `${`. Errors name the variable, never a value.
fn expand(text: &str, lookup: Lookup<'_>) -> Result<Expanded, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut from_env = Vec::new();
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let at = &rest[dollar..];
        if let Some(after) = at.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body_and_rest) = at.strip_prefix("${") {
            let Some(close) = body_and_rest.find('}') else {
                errors.push("unterminated '${' (write '$${' for a literal '${')".to_owned());
                rest = "";
                break;
            };
            let body = &body_and_rest[..close];
            rest = &body_and_rest[close + 1..];
            let (name, default) = match body.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !is_var_name(name) {
                errors.push(format!(
                    "'${{{body}}}' is not a variable reference: a name is letters, digits \
                     and '_', not starting with a digit (write '$${{' for a literal '${{')"
                ));
                continue;
            }
            match (lookup(name), default) {
                (Ok(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Ok(value), _) => {
                    out.push_str(&value);
                    from_env.push((name.to_owned(), value));
                }
                (Err(VarError::NotPresent), Some(default)) => out.push_str(default),
                (Err(VarError::NotPresent), None) => errors.push(format!(
                    "environment variable {name} is not set (write '${{{name}:-default}}' \
                     for a fallback)"
                )),
                (Err(VarError::NotUnicode(_)), _) => {
                    errors.push(format!("environment variable {name} is not valid UTF-8"));
                }
            }
        } else {
            out.push('$');
            rest = &at[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(Expanded {
            text: out,
            from_env,
        })
    } else {
        Err(errors)
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "KEY" => Ok("sk-\"quoted\"\nsecret".to_owned()),
            "EMPTY" => Ok(String::new()),
            "PORT" => Ok("8080".to_owned()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn run(text: &str) -> Result<String, Vec<String>> {
        expand(text, &env).map(|e| e.text)
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        assert_eq!(
            run("Bearer ${KEY}").unwrap(),
            "Bearer sk-\"quoted\"\nsecret"
        );
        assert_eq!(run("0.0.0.0:${PORT}").unwrap(), "0.0.0.0:8080");
        assert_eq!(run("${UNSET:-http://x:1}").unwrap(), "http://x:1");
        assert_eq!(run("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(run("${EMPTY}").unwrap(), "");
        assert_eq!(run("${PORT:-1}").unwrap(), "8080");
        assert_eq!(run("${UNSET:-}").unwrap(), "");
        assert_eq!(run("$${KEY} costs $5").unwrap(), "${KEY} costs $5");
    }

    #[test]
    fn reports_every_bad_reference() {
        let errors = run("${A_MISSING}/${B_MISSING}").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("A_MISSING is not set"), "{errors:?}");
        assert!(errors[1].contains("B_MISSING is not set"), "{errors:?}");
        assert!(run("${1X}").unwrap_err()[0].contains("not a variable reference"));
        assert!(run("abc ${KEY").unwrap_err()[0].contains("unterminated"));
    }

    #[test]
    fn records_values_taken_from_the_environment_only() {
        let expanded = expand("${PORT}${UNSET:-default}", &env).unwrap();
        assert_eq!(
            expanded.from_env,
            vec![("PORT".to_owned(), "8080".to_owned())]
        );
    }

    #[test]
    fn types_plain_scalars_like_the_parser() {
        assert_eq!(resolve_plain("8".into()), Value::from(8));
        assert_eq!(resolve_plain("1.5".into()), Value::from(1.5));
        assert_eq!(resolve_plain("true".into()), Value::Bool(true));
        assert_eq!(resolve_plain(String::new()), Value::Null);
        for text in ["a: b", "- x", "#c", "---", "0.0.0.0:8080", "sk-123"] {
            assert_eq!(resolve_plain(text.into()), Value::String(text.into()));
        }
    }

    #[test]
    fn scrubs_raw_and_escaped_secrets() {
        let mut scrubber = Scrubber::default();
        scrubber.add("sk-\"q\"", "${KEY}".to_owned());
        scrubber.add("ab", "${SHORT}".to_owned());
        assert_eq!(
            scrubber.apply(r#"invalid type: string "sk-\"q\"", raw sk-"q", ab"#),
            r#"invalid type: string "${KEY}", raw ${KEY}, ab"#
        );
    }
}
