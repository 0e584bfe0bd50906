//! Output checks: whether an answer keeps the promise its request made. A request with
//! OpenAI's `response_format` of `json_object` promises a JSON object; `json_schema`
//! promises a value of that schema (checked with the `jsonschema` crate, every keyword of
//! drafts 4 to 2020-12, no remote references).

use serde_json::Value;

/// Largest answer checked, in bytes; a longer one is not parsed (and passes), so a huge
/// answer cannot make the gateway hold or parse unbounded text.
pub const MAX_CHECKED_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// Why an answer broke its JSON promise; the message never quotes the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputProblem {
    #[error("the answer is not valid JSON ({0})")]
    NotJson(String),
    #[error("the answer is JSON but not an object")]
    NotObject,
    #[error("the answer does not match the requested JSON schema: {0}")]
    SchemaMismatch(String),
    #[error("the requested JSON schema is invalid: {0}")]
    BadSchema(String),
}

/// Checks `answer` against a `json_object` promise (`schema` is `None`) or a `json_schema`
/// one. Answers above [`MAX_CHECKED_OUTPUT_BYTES`] pass unchecked.
pub fn check_json(answer: &str, schema: Option<&Value>) -> Result<(), OutputProblem> {
    if answer.len() > MAX_CHECKED_OUTPUT_BYTES {
        return Ok(());
    }
    let value: Value = serde_json::from_str(answer.trim())
        .map_err(|e| OutputProblem::NotJson(format!("line {} column {}", e.line(), e.column())))?;
    let Some(schema) = schema else {
        return if value.is_object() {
            Ok(())
        } else {
            Err(OutputProblem::NotObject)
        };
    };
    let validator =
        jsonschema::validator_for(schema).map_err(|e| OutputProblem::BadSchema(e.to_string()))?;
    // The path and keyword, not the offending value (it may be sensitive).
    let first = validator
        .iter_errors(&value)
        .next()
        .map(|error| format!("at '{}': {}", error.instance_path(), error.kind().keyword()));
    match first {
        None => Ok(()),
        Some(why) => Err(OutputProblem::SchemaMismatch(why)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_object_promises() {
        assert_eq!(check_json(" {\"a\": 1}\n", None), Ok(()));
        assert_eq!(check_json("[1]", None), Err(OutputProblem::NotObject));
        assert!(matches!(
            check_json("Sure! {\"a\": 1}", None),
            Err(OutputProblem::NotJson(_))
        ));
    }

    #[test]
    fn json_schema_promises() {
        let schema = json!({"type": "object", "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}});
        assert_eq!(
            check_json(r#"{"name": "x", "age": 3}"#, Some(&schema)),
            Ok(())
        );
        let missing = check_json(r#"{"name": "x"}"#, Some(&schema));
        assert!(matches!(missing, Err(OutputProblem::SchemaMismatch(_))));
        let wrong = check_json(r#"{"name": "secret-value", "age": -1}"#, Some(&schema));
        let Err(OutputProblem::SchemaMismatch(why)) = wrong else {
            unreachable!("{wrong:?}")
        };
        assert!(
            why.contains("/age") && !why.contains("secret-value"),
            "{why}"
        );
        assert!(matches!(
            check_json("{}", Some(&json!({"type": 7}))),
            Err(OutputProblem::BadSchema(_))
        ));
    }

    #[test]
    fn oversized_answers_are_not_parsed() {
        let huge = "x".repeat(MAX_CHECKED_OUTPUT_BYTES + 1);
        assert_eq!(check_json(&huge, None), Ok(()));
    }
}
