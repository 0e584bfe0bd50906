//! Typed access to fields of client JSON with errors that name the field's path, lenient
//! access for provider answers, and client bodies re-serialized with the model replaced.

use serde_json::{Map, Value};

use crate::ProviderError;

pub(crate) type Object = Map<String, Value>;

/// The object at `value`, or an error naming `path`.
pub(crate) fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Object, ProviderError> {
    value
        .as_object()
        .ok_or_else(|| ProviderError::invalid(path, "must be an object"))
}

/// An optional string field; present but not a string is an error.
pub(crate) fn opt_str<'a>(
    obj: &'a Object,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProviderError::invalid(
            field_path(path, key),
            "must be a string",
        )),
    }
}

/// A required string field.
pub(crate) fn req_str<'a>(
    obj: &'a Object,
    key: &str,
    path: &str,
) -> Result<&'a str, ProviderError> {
    opt_str(obj, key, path)?
        .ok_or_else(|| ProviderError::invalid(field_path(path, key), "is required"))
}

pub(crate) fn opt_u64(obj: &Object, key: &str, path: &str) -> Result<Option<u64>, ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ProviderError::invalid(field_path(path, key), "must be a non-negative integer")
        }),
    }
}

pub(crate) fn opt_i64(obj: &Object, key: &str, path: &str) -> Result<Option<i64>, ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ProviderError::invalid(field_path(path, key), "must be an integer")),
    }
}

pub(crate) fn opt_f64(obj: &Object, key: &str, path: &str) -> Result<Option<f64>, ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ProviderError::invalid(field_path(path, key), "must be a number")),
    }
}

pub(crate) fn opt_bool(obj: &Object, key: &str, path: &str) -> Result<Option<bool>, ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ProviderError::invalid(
            field_path(path, key),
            "must be a boolean",
        )),
    }
}

/// An optional array field.
pub(crate) fn opt_array<'a>(
    obj: &'a Object,
    key: &str,
    path: &str,
) -> Result<&'a [Value], ProviderError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ProviderError::invalid(
            field_path(path, key),
            "must be an array",
        )),
    }
}

/// A string, or an array of strings (OpenAI's `stop`).
pub(crate) fn strings(value: Option<&Value>, path: &str) -> Result<Vec<String>, ProviderError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    ProviderError::invalid(path, "must be a string or an array of strings")
                })
            })
            .collect(),
        Some(_) => Err(ProviderError::invalid(
            path,
            "must be a string or an array of strings",
        )),
    }
}

pub(crate) fn field_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Parses tool-call arguments (JSON text) into the object providers with structured
/// arguments expect; empty text is an empty object.
pub(crate) fn arguments_object(arguments: &str, path: &str) -> Result<Value, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ProviderError::invalid(
            path,
            "must be the JSON text of an object",
        )),
    }
}

/// The JSON text of arguments given as an object (Anthropic's `input`, Gemini's `args`).
pub(crate) fn arguments_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned()),
    }
}

/// Lenient access for provider answers: a string field or empty.
pub(crate) fn str_or_empty<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Lenient access for provider answers: a count or zero.
pub(crate) fn count(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Lenient access for provider answers: a count, when present.
pub(crate) fn opt_count(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

/// Percent-encodes a path segment (a deployment name, a model id) so that nothing in it
/// can change the path it is placed in. Keeps RFC 3986's unreserved characters.
pub(crate) fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
pub(crate) fn encode_query_value(value: &str) -> String {
    encode_path_segment(value)
}

/// `body` as JSON with `model` set to `model` and, when `include_usage`, the stream option
/// that asks for a closing usage chunk; serialized straight from the client's parsed body,
/// which may hold a prompt of many MiB, instead of editing a copy of it.
pub(crate) fn body_with_model(body: &Object, model: &str, include_usage: bool) -> Vec<u8> {
    serde_json::to_vec(&Overridden {
        body,
        model,
        include_usage,
    })
    .unwrap_or_default()
}

struct Overridden<'a> {
    body: &'a Object,
    model: &'a str,
    include_usage: bool,
}

impl serde::Serialize for Overridden<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let add_model = !self.body.contains_key("model");
        let add_options = self.include_usage && !self.body.contains_key("stream_options");
        let len = self.body.len() + usize::from(add_model) + usize::from(add_options);
        let mut map = serializer.serialize_map(Some(len))?;
        for (key, value) in self.body {
            match key.as_str() {
                "model" => map.serialize_entry(key, self.model)?,
                "stream_options" if self.include_usage => {
                    let mut options = value.as_object().cloned().unwrap_or_default();
                    options.insert("include_usage".into(), Value::Bool(true));
                    map.serialize_entry(key, &options)?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        if add_model {
            map.serialize_entry("model", self.model)?;
        }
        if add_options {
            map.serialize_entry(
                "stream_options",
                &serde_json::json!({"include_usage": true}),
            )?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn body_with_model_replaces_the_model_and_keeps_the_rest() {
        let body = object(serde_json::json!({"model": "cheap", "n": 2, "tools": [{"a": 1}]}));
        let out: Value = serde_json::from_slice(&body_with_model(&body, "gpt-4o", false)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"model": "gpt-4o", "n": 2, "tools": [{"a": 1}]})
        );
    }

    #[test]
    fn body_with_model_asks_for_usage_keeping_other_stream_options() {
        let cases = [
            (
                serde_json::json!({"model": "m"}),
                serde_json::json!({"include_usage": true}),
            ),
            (
                serde_json::json!({"model": "m", "stream_options": {"x": 1, "include_usage": false}}),
                serde_json::json!({"x": 1, "include_usage": true}),
            ),
            (
                serde_json::json!({"model": "m", "stream_options": null}),
                serde_json::json!({"include_usage": true}),
            ),
        ];
        for (body, options) in cases {
            let out: Value =
                serde_json::from_slice(&body_with_model(&object(body), "up", true)).unwrap();
            assert_eq!(out["model"], "up");
            assert_eq!(out["stream_options"], options);
        }
    }
}
