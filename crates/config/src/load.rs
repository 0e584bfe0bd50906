//! Reading a config: file, YAML document, `${ENV}` interpolation, typed [`Config`], then
//! validation; every problem is located by key path and line.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use crate::error::{ConfigErrors, Problem};
use crate::interpolate::{interpolate_document, Lookup, Scrubber};
use crate::locate::SourceIndex;
use crate::model::Config;
use crate::path::{KeyPath, PathSegment};

/// Largest config file read. Real configs are a few KiB; the cap only keeps a wrong path
/// (a log file, a device) from filling memory.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads, interpolates, deserializes and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let read_error = |source| ConfigErrors::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigErrors::TooLarge {
            path: path.to_owned(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    parse(&text, &path.display().to_string())
}

/// Like [`load`] for config text; `origin` names the source in messages.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    parse_with_env(text, origin, &|name| std::env::var(name))
}

fn parse_with_env(text: &str, origin: &str, lookup: Lookup<'_>) -> Result<Config, ConfigErrors> {
    let fail = |problems| ConfigErrors::invalid(origin, problems);
    let syntax = |error: serde_yaml_ng::Error| {
        // The loader names neither the path nor the line of the second key; the index
        // knows both. Built only for well-formed YAML, which is all it needs to handle.
        let index = SourceIndex::build(text);
        let duplicates = index.duplicate_keys();
        if error.to_string().contains("duplicate entry with key") && !duplicates.is_empty() {
            return fail(
                duplicates
                    .iter()
                    .map(|d| Problem {
                        line: Some(d.line),
                        ..Problem::new(
                            d.path.clone(),
                            format!("duplicate key (first on line {})", d.first_line),
                        )
                    })
                    .collect(),
            );
        }
        fail(vec![Problem {
            line: error.location().map(|l| l.line()),
            ..Problem::new(KeyPath::root(), error.to_string())
        }])
    };
    let mut document: Value = serde_yaml_ng::from_str(text).map_err(syntax)?;
    document.apply_merge().map_err(syntax)?;
    let index = SourceIndex::build(text);

    let mut scrubber = Scrubber::default();
    let problems = interpolate_document(&mut document, &index, lookup, &mut scrubber);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    scrubber.add_literal_secrets(&document);
    if document.is_null() {
        document = Value::Mapping(Mapping::new());
    }

    let config: Config = serde_path_to_error::deserialize(document).map_err(|error| {
        let path = key_path(error.path());
        fail(vec![Problem {
            line: index.line_of(&path),
            message: scrubber.apply(&error.inner().to_string()),
            path,
        }])
    })?;

    let problems: Vec<Problem> = config
        .validate()
        .into_iter()
        .map(|problem| Problem {
            line: index.line_of(&problem.path),
            message: scrubber.apply(&problem.message),
            path: problem.path,
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(fail(problems))
    }
}

fn key_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    let mut out = KeyPath::root();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push(PathSegment::Index(*index)),
            Segment::Map { key } => out.push(PathSegment::Key(key.clone())),
            Segment::Enum { variant } => out.push(PathSegment::Key(variant.clone())),
            Segment::Unknown => break,
        }
    }
    out
}
