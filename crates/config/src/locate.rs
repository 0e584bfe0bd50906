//! A map from key path to source line, built once from yaml-rust2's marked events, so
//! that problems found on the deserialized config can name the line they come from.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use crate::path::{KeyPath, PathSegment};

/// Stands for a mapping key that is itself a mapping or sequence; the config format has
/// none, so nothing below such a key is ever looked up.
const COMPLEX_KEY: &str = "<complex key>";

#[derive(Debug, Clone, Copy)]
struct Spot {
    line: usize,
    /// The value is an unquoted scalar, so an interpolated value is typed like one
    /// (`threads: ${THREADS}` becomes a number).
    plain: bool,
}

enum Frame {
    /// `key` is the key whose value comes next; `None` while a key is awaited.
    Mapping {
        key: Option<String>,
    },
    Sequence {
        next: usize,
    },
}

/// A mapping key written twice: its path, its line, and the line of the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    pub(crate) path: KeyPath,
    pub(crate) line: usize,
    pub(crate) first_line: usize,
}

/// Lines of the keys, sequence items and values of one YAML document.
#[derive(Debug, Default)]
pub(crate) struct SourceIndex {
    spots: HashMap<KeyPath, Spot>,
    duplicates: Vec<DuplicateKey>,
}

impl SourceIndex {
    /// Indexes `text`. A document yaml-rust2 cannot parse yields the part indexed before
    /// the error; lookups elsewhere then find no line.
    pub(crate) fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, mark)) = parser.next_token() {
            if event == Event::StreamEnd {
                break;
            }
            builder.on_event(event, mark.line());
        }
        SourceIndex {
            spots: builder.spots,
            duplicates: builder.duplicates,
        }
    }

    /// Keys written twice in one mapping, which the YAML loader refuses without saying
    /// which line holds the second.
    pub(crate) fn duplicate_keys(&self) -> &[DuplicateKey] {
        &self.duplicates
    }

    /// The line of `path`, or of its nearest ancestor that has one (a value filled in by a
    /// default is reported at the mapping that lacks it).
    pub(crate) fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let segments = path.segments();
        (0..=segments.len()).rev().find_map(|len| {
            let prefix = KeyPath::from(segments[..len].to_vec());
            self.spots.get(&prefix).map(|spot| spot.line)
        })
    }

    /// Whether the value at `path` was written as an unquoted scalar.
    pub(crate) fn is_plain_scalar(&self, path: &KeyPath) -> bool {
        self.spots.get(path).is_some_and(|spot| spot.plain)
    }
}

#[derive(Default)]
struct Builder {
    spots: HashMap<KeyPath, Spot>,
    duplicates: Vec<DuplicateKey>,
    frames: Vec<Frame>,
    /// Path of the collection on top of `frames`.
    path: KeyPath,
    /// Nesting depth inside a complex mapping key, whose contents are not indexed.
    in_complex_key: usize,
}

impl Builder {
    fn on_event(&mut self, event: Event, line: usize) {
        if self.in_complex_key > 0 {
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.in_complex_key += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    self.in_complex_key -= 1;
                    if self.in_complex_key == 0 {
                        self.set_key(COMPLEX_KEY.to_owned());
                    }
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Scalar(text, style, ..) => self.scalar(text, style == TScalarStyle::Plain, line),
            Event::Alias(_) => self.scalar(String::from("*"), false, line),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let frame = if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { key: None }
                } else {
                    Frame::Sequence { next: 0 }
                };
                match self.next_segment() {
                    Some(Some(segment)) => {
                        self.path.push(segment);
                        self.record(line, false);
                    }
                    Some(None) => {
                        self.in_complex_key = 1;
                        return;
                    }
                    None => self.record(line, false),
                }
                self.frames.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                if !self.frames.is_empty() {
                    self.path.pop();
                    self.value_done();
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }

    /// The segment naming the next node: `None` at the root, `Some(None)` when the node
    /// is a mapping key.
    fn next_segment(&self) -> Option<Option<PathSegment>> {
        match self.frames.last()? {
            Frame::Mapping { key: None } => Some(None),
            Frame::Mapping { key: Some(key) } => Some(Some(PathSegment::Key(key.clone()))),
            Frame::Sequence { next } => Some(Some(PathSegment::Index(*next))),
        }
    }

    fn scalar(&mut self, text: String, plain: bool, line: usize) {
        match self.next_segment() {
            None => self.record(line, plain),
            Some(None) => {
                self.path.push(PathSegment::Key(text.clone()));
                if let Some(first) = self.spots.get(&self.path) {
                    self.duplicates.push(DuplicateKey {
                        path: self.path.clone(),
                        line,
                        first_line: first.line,
                    });
                }
                self.record(line, false);
                self.path.pop();
                self.set_key(text);
            }
            Some(Some(segment)) => {
                self.path.push(segment);
                self.record(line, plain);
                self.path.pop();
                self.value_done();
            }
        }
    }

    /// Keeps the first line seen for a path (a key's line, not its value's) and the
    /// style of the value.
    fn record(&mut self, line: usize, plain: bool) {
        self.spots
            .entry(self.path.clone())
            .and_modify(|spot| spot.plain = plain)
            .or_insert(Spot { line, plain });
    }

    fn set_key(&mut self, key: String) {
        if let Some(Frame::Mapping { key: slot }) = self.frames.last_mut() {
            *slot = Some(key);
        }
    }

    fn value_done(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Mapping { key }) => *key = None,
            Some(Frame::Sequence { next }) => *next += 1,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
server:
  listen: [\"0.0.0.0:8080\"]
routes:
  - name: a
    targets:
      - model: x
      - { model: y, weight: 2 }
  -
    name: b
    retry:
      attempts: ${N}
models:
  \"gpt-4.1\": { provider: p }
";

    fn path(segments: &[&str]) -> KeyPath {
        segments
            .iter()
            .fold(KeyPath::root(), |p, s| match s.parse() {
                Ok(i) => p.index(i),
                Err(_) => p.key(*s),
            })
    }

    #[test]
    fn finds_lines_of_keys_items_and_values() {
        let index = SourceIndex::build(DOC);
        let line = |segments: &[&str]| index.line_of(&path(segments));
        assert_eq!(line(&["server"]), Some(1));
        assert_eq!(line(&["server", "listen", "0"]), Some(2));
        assert_eq!(line(&["routes", "0", "name"]), Some(4));
        assert_eq!(line(&["routes", "0", "targets", "1", "weight"]), Some(7));
        assert_eq!(line(&["routes", "1"]), Some(9));
        assert_eq!(line(&["routes", "1", "name"]), Some(9));
        assert_eq!(line(&["routes", "1", "retry", "attempts"]), Some(11));
        assert_eq!(line(&["models", "gpt-4.1", "provider"]), Some(13));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let index = SourceIndex::build(DOC);
        let missing = path(&["routes", "1", "timeouts", "connect"]);
        assert_eq!(index.line_of(&missing), Some(9));
    }

    #[test]
    fn records_scalar_style() {
        let index = SourceIndex::build(DOC);
        assert!(index.is_plain_scalar(&path(&["routes", "1", "retry", "attempts"])));
        assert!(!index.is_plain_scalar(&path(&["server", "listen", "0"])));
        assert!(!index.is_plain_scalar(&path(&["routes", "1", "retry"])));
    }

    #[test]
    fn finds_duplicate_keys() {
        let index = SourceIndex::build("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n");
        let found: Vec<(String, usize, usize)> = index
            .duplicate_keys()
            .iter()
            .map(|d| (d.path.to_string(), d.line, d.first_line))
            .collect();
        assert_eq!(found, [("b.c".to_owned(), 4, 3), ("a".to_owned(), 5, 1)]);
    }

    #[test]
    fn a_broken_document_keeps_what_came_before() {
        let index = SourceIndex::build("a: 1\nb: [\n");
        assert_eq!(index.line_of(&path(&["a"])), Some(1));
    }
}
