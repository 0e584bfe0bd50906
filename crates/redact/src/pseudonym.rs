//! The per-request map from placeholders (`[EMAIL_1]`) to the originals they replaced, and
//! the restorer that puts the originals back into the response, whole or streamed.
//!
//! The map lives in the gateway's request context only: it is neither serialized nor
//! printed (its `Debug` shows sizes), so the originals never leave the gateway.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use regex_automata::meta::Regex;

use crate::patterns::regex_escape;

/// Most distinct values one request may pseudonymize; later ones are masked instead. The
/// map holds each original once, so this bounds its memory by the request size anyway; the
/// cap keeps a pathological request from building a huge map.
pub const MAX_PSEUDONYMS: usize = 4096;

/// Placeholders issued for one request and the originals behind them.
#[derive(Clone, Default)]
pub struct Pseudonyms {
    /// `label \0 canonical value` → placeholder, so a repeated value gets the same one.
    by_value: HashMap<String, Box<str>>,
    /// Placeholder → original text, as it appeared in the request.
    originals: HashMap<Box<str>, Box<str>>,
    /// Last number issued per label.
    counters: HashMap<Box<str>, u32>,
    /// Longest placeholder issued, in bytes: what a stream restorer holds back at most.
    longest: usize,
}

impl fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonyms")
            .field("len", &self.originals.len())
            .finish_non_exhaustive()
    }
}

fn is_placeholder_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

impl Pseudonyms {
    pub fn new() -> Self {
        Pseudonyms::default()
    }

    /// How many placeholders were issued.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// The original behind a placeholder (`"[EMAIL_1]"`).
    pub fn original(&self, placeholder: &str) -> Option<&str> {
        self.originals.get(placeholder).map(|o| &**o)
    }

    /// The placeholder for a value: the same one for the same `(label, canonical)`, else
    /// the next number for `label`. `None` once [`MAX_PSEUDONYMS`] are issued.
    pub(crate) fn placeholder(
        &mut self,
        label: &str,
        canonical: &str,
        original: &str,
    ) -> Option<&str> {
        let key = format!("{label}\0{canonical}");
        if !self.by_value.contains_key(&key) {
            if self.originals.len() >= MAX_PSEUDONYMS {
                return None;
            }
            let counter = self.counters.entry(label.into()).or_insert(0);
            *counter += 1;
            let placeholder: Box<str> = format!("[{label}_{counter}]").into();
            self.longest = self.longest.max(placeholder.len());
            self.originals.insert(placeholder.clone(), original.into());
            self.by_value.insert(key.clone(), placeholder);
        }
        self.by_value.get(&key).map(|p| &**p)
    }

    /// `text` with every issued placeholder replaced by its original.
    pub fn restore<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.is_empty() || !text.contains('[') {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        self.restore_into(text, true, &mut out);
        Cow::Owned(out)
    }

    /// Restores `text` into `out` and returns how much of it was consumed: all of it when
    /// `eof`, else up to a `[` that could still open a placeholder.
    fn restore_into(&self, text: &str, eof: bool, out: &mut String) -> usize {
        let bytes = text.as_bytes();
        let mut last = 0;
        let mut i = 0;
        while let Some(off) = bytes[i..].iter().position(|&b| b == b'[') {
            let at = i + off;
            let body = bytes[at + 1..]
                .iter()
                .position(|&b| !is_placeholder_byte(b));
            match body {
                Some(k) if bytes[at + 1 + k] == b']' => {
                    let end = at + k + 2;
                    if let Some(original) = self.originals.get(&text[at..end]) {
                        out.push_str(&text[last..at]);
                        out.push_str(original);
                        last = end;
                        i = end;
                        continue;
                    }
                }
                None if !eof && text.len() - at < self.longest => {
                    out.push_str(&text[last..at]);
                    return at;
                }
                _ => {}
            }
            i = at + 1;
        }
        out.push_str(&text[last..]);
        text.len()
    }

    /// The inverse of [`Pseudonyms::restore`]: a matcher that puts the placeholders back
    /// where the originals stand. The response cache stores answers concealed, so that
    /// an answer restored for one request never reaches another. `None` when nothing was
    /// pseudonymized, or the originals do not compile into one automaton.
    pub fn concealer(&self) -> Option<Concealer> {
        if self.is_empty() {
            return None;
        }
        let mut pairs: Vec<(&str, &str)> = self
            .originals
            .iter()
            .map(|(placeholder, original)| (&**original, &**placeholder))
            .filter(|(original, _)| !original.is_empty())
            .collect();
        // Leftmost-first: at one position the longest original wins, so one that contains
        // another is concealed whole.
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        let patterns: Vec<String> = pairs.iter().map(|(o, _)| regex_escape(o)).collect();
        let regex = Regex::new_many(&patterns).ok()?;
        Some(Concealer {
            regex,
            placeholders: pairs.iter().map(|(_, p)| Box::from(*p)).collect(),
        })
    }

    /// A restorer for the response stream; it owns the map.
    pub fn into_restorer(self) -> StreamRestorer {
        StreamRestorer {
            pseudonyms: self,
            pending: String::new(),
        }
    }
}

/// Replaces a request's pseudonymized originals with their placeholders, in one pass over
/// a text (see [`Pseudonyms::concealer`]).
pub struct Concealer {
    regex: Regex,
    /// The placeholder of each pattern, by pattern index.
    placeholders: Vec<Box<str>>,
}

impl fmt::Debug for Concealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Concealer")
            .field("len", &self.placeholders.len())
            .finish_non_exhaustive()
    }
}

impl Concealer {
    /// `text` with every original replaced by its placeholder.
    pub fn conceal<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = String::new();
        let mut last = 0;
        for found in self.regex.find_iter(text) {
            let Some(placeholder) = self.placeholders.get(found.pattern().as_usize()) else {
                continue;
            };
            out.push_str(&text[last..found.start()]);
            out.push_str(placeholder);
            last = found.end();
        }
        if last == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// Whether `text` still holds an original.
    pub fn reveals(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// Restores placeholders in a stream of text deltas, also when a placeholder is split
/// across deltas. Holds back at most one placeholder's length, and only from a `[` that
/// could still open one.
#[derive(Debug, Clone)]
pub struct StreamRestorer {
    pseudonyms: Pseudonyms,
    pending: String,
}

impl StreamRestorer {
    /// Appends to `out` the restored text that is decided after `delta`.
    pub fn push(&mut self, delta: &str, out: &mut String) {
        if self.pseudonyms.is_empty() {
            out.push_str(delta);
            return;
        }
        self.pending.push_str(delta);
        let used = self.pseudonyms.restore_into(&self.pending, false, out);
        self.pending.drain(..used);
    }

    /// Appends whatever is still held back.
    pub fn finish(&mut self, out: &mut String) {
        self.pseudonyms.restore_into(&self.pending, true, out);
        self.pending.clear();
    }

    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Pseudonyms {
        let mut p = Pseudonyms::new();
        assert_eq!(
            p.placeholder("EMAIL", "a@b.co", "A@b.co"),
            Some("[EMAIL_1]")
        );
        assert_eq!(
            p.placeholder("EMAIL", "c@d.co", "c@d.co"),
            Some("[EMAIL_2]")
        );
        assert_eq!(
            p.placeholder("EMAIL", "a@b.co", "a@B.co"),
            Some("[EMAIL_1]")
        );
        assert_eq!(p.placeholder("PHONE", "123", "1-2-3"), Some("[PHONE_1]"));
        p
    }

    #[test]
    fn restores_whole() {
        let p = map();
        assert_eq!(
            p.restore("to [EMAIL_1], [[EMAIL_2]] [EMAIL_3] [PHONE_1"),
            "to A@b.co, [c@d.co] [EMAIL_3] [PHONE_1"
        );
        assert_eq!(format!("{p:?}"), "Pseudonyms { len: 3, .. }");
    }

    #[test]
    fn conceal_undoes_restore() {
        let mut p = map();
        assert_eq!(
            p.placeholder("EMAIL", "xa@b.co", "xA@b.co"),
            Some("[EMAIL_3]")
        );
        let concealer = p.concealer().unwrap();
        let text = "to [EMAIL_1] and [EMAIL_3], [[EMAIL_2]] ([PHONE_1]) [EMAIL_9]";
        let restored = p.restore(text).into_owned();
        assert!(concealer.reveals(&restored));
        let concealed = concealer.conceal(&restored);
        assert_eq!(concealed, text);
        assert!(!concealer.reveals(&concealed));
        assert!(matches!(
            concealer.conceal("nothing here"),
            Cow::Borrowed(_)
        ));
        assert!(Pseudonyms::new().concealer().is_none());
    }

    #[test]
    fn restores_every_split() {
        let p = map();
        let text = "x[EMAIL_1]y[PHONE_1][EMAIL_2 [ [EMAIL_1]";
        let whole = p.restore(text).into_owned();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut r = p.clone().into_restorer();
                let mut out = String::new();
                r.push(&text[..a], &mut out);
                r.push(&text[a..b], &mut out);
                r.push(&text[b..], &mut out);
                r.finish(&mut out);
                assert_eq!(out, whole, "{a} {b}");
            }
        }
    }
}
