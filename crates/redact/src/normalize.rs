//! The text detection runs on: each character mapped on its own to what it looks like, so
//! that disguised entities (full-width or Arabic-Indic digits, zero-width and bidi controls
//! between characters, combining marks, exotic dashes and spaces) read as plain ASCII.
//!
//! The mapping is NFKC's compatibility decomposition applied per character with combining
//! marks stripped, plus three folds NFKC lacks: decimal digits of every script to ASCII,
//! dash punctuation to `-`, and invisible characters (Unicode's default-ignorables) dropped.
//! It is applied character by character, never across characters, so normalizing a text cut
//! into pieces gives the concatenation of the pieces' results: the streaming redactor relies
//! on that. Every normalized byte remembers the original character it came from, so entities
//! found in the normalized text are masked in the original.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Longest run of invisible characters dropped as if absent; the next one in the run reads
/// as a space, which ends any entity. Without it, an entity padded with millions of
/// zero-width characters would stay "in progress" and the stream would hold all of them
/// back; with it, the original bytes behind one held-back normalized byte are bounded.
pub(crate) const MAX_IGNORABLE_RUN: u32 = 16;

/// First code point of each block of ten decimal digits (0–9) that NFKC leaves alone.
const DIGIT_ZEROS: &[u32] = &[
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0x104A0, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0,
    0x11730, 0x118E0, 0x16A60, 0x16B50, 0x1E950,
];

fn script_digit(c: char) -> Option<char> {
    let cp = u32::from(c);
    DIGIT_ZEROS.iter().find_map(|&zero| {
        let d = cp.checked_sub(zero).filter(|d| *d < 10)?;
        char::from_digit(d, 10)
    })
}

fn is_dash(c: char) -> bool {
    matches!(
        c,
        '\u{2010}'
            ..='\u{2015}'
                | '\u{2043}'
                | '\u{2212}'
                | '\u{2E3A}'
                | '\u{2E3B}'
                | '\u{FE58}'
                | '\u{FE63}'
                | '\u{FF0D}'
    )
}

/// Unicode's default-ignorable code points (zero-width spaces and joiners, bidi controls,
/// invisible operators, variation selectors, tag characters, fillers) and combining marks
/// standing on their own.
pub(crate) fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    ) || is_combining_mark(c)
}

/// Normalized text with its map back to the original. Bytes before `ctx` are context (the
/// last normalized character before the text, for look-behind assertions) and map nowhere.
#[derive(Debug, Default, Clone)]
pub(crate) struct NormBuf {
    pub(crate) text: String,
    /// For each byte of `text`, the original byte offset of the character it came from;
    /// unused (empty) while `text[ctx..]` is a byte-for-byte copy of the original.
    src: Vec<usize>,
    mapped: bool,
    pub(crate) ctx: usize,
    /// Invisible characters seen in a row at the end so far.
    run: u32,
}

/// A borrowed normalized text and its map, as the scanner sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) text: &'a str,
    /// See [`NormBuf`]; `None` for a byte-for-byte copy.
    src: Option<&'a [usize]>,
    pub(crate) ctx: usize,
    pub(crate) orig: &'a str,
}

impl NormBuf {
    pub(crate) fn new() -> Self {
        NormBuf::default()
    }

    /// Whether `text` needs no normalization at all (then it is its own normalized form).
    pub(crate) fn is_plain(text: &str) -> bool {
        text.is_ascii()
    }

    /// Appends the normalization of `orig`, whose first byte sits at original offset `base`.
    pub(crate) fn push(&mut self, orig: &str, base: usize) {
        if orig.is_empty() {
            return;
        }
        if !self.mapped && orig.is_ascii() {
            self.text.push_str(orig);
            self.run = 0;
            return;
        }
        if !self.mapped {
            let ctx = self.ctx;
            self.src.clear();
            self.src
                .extend((0..self.text.len()).map(|i| i.saturating_sub(ctx)));
            self.mapped = true;
        }
        for (i, c) in orig.char_indices() {
            let at = base + i;
            if c.is_ascii() {
                self.run = 0;
                self.emit(c, at);
            } else if is_ignorable(c) {
                self.run = self.run.saturating_add(1);
                if self.run == MAX_IGNORABLE_RUN + 1 {
                    self.emit(' ', at);
                }
            } else {
                self.run = 0;
                if let Some(d) = script_digit(c) {
                    self.emit(d, at);
                } else if is_dash(c) {
                    self.emit('-', at);
                } else {
                    let mut buf = [0u8; 4];
                    decompose_compatible(c, |d| {
                        if !is_ignorable(d) {
                            let s = d.encode_utf8(&mut buf);
                            self.text.push_str(s);
                            self.src.extend(std::iter::repeat_n(at, s.len()));
                        }
                    });
                }
            }
        }
    }

    fn emit(&mut self, c: char, at: usize) {
        let before = self.text.len();
        self.text.push(c);
        self.src
            .extend(std::iter::repeat_n(at, self.text.len() - before));
    }

    pub(crate) fn view<'a>(&'a self, orig: &'a str) -> View<'a> {
        View {
            text: &self.text,
            src: self.mapped.then_some(self.src.as_slice()),
            ctx: self.ctx,
            orig,
        }
    }

    /// Forgets everything before normalized offset `keep_from` and original offset
    /// `orig_cut`, keeping the character before `keep_from` as look-behind context.
    pub(crate) fn drain(&mut self, keep_from: usize, orig_cut: usize) {
        let ctx_start = self.text[..keep_from]
            .char_indices()
            .next_back()
            .map_or(keep_from, |(i, _)| i);
        self.text.drain(..ctx_start);
        if self.mapped {
            self.src.drain(..ctx_start);
            for s in &mut self.src {
                *s = s.saturating_sub(orig_cut);
            }
        }
        self.ctx = keep_from - ctx_start;
    }

    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.src.clear();
        self.mapped = false;
        self.ctx = 0;
        self.run = 0;
    }
}

impl View<'_> {
    /// A view of a text that is its own normalized form.
    pub(crate) fn plain(text: &str) -> View<'_> {
        View {
            text,
            src: None,
            ctx: 0,
            orig: text,
        }
    }

    /// Original offset where the character behind normalized byte `n` starts; the end of
    /// the original for `n == text.len()`.
    pub(crate) fn orig_start(&self, n: usize) -> usize {
        match self.src {
            _ if n >= self.text.len() => self.orig.len(),
            None => n - self.ctx,
            Some(src) => src[n],
        }
    }

    /// Original offset where the character behind normalized byte `e - 1` ends (`e > ctx`).
    pub(crate) fn orig_end(&self, e: usize) -> usize {
        let Some(src) = self.src else {
            return e - self.ctx;
        };
        match src.get(e.wrapping_sub(1)) {
            Some(&at) => at + self.orig[at..].chars().next().map_or(0, char::len_utf8),
            None => 0,
        }
    }

    /// The smallest normalized offset at or after `e` that is not inside the expansion of
    /// the character behind byte `e - 1`: entities never end inside one original character.
    pub(crate) fn snap_end(&self, e: usize) -> usize {
        let Some(src) = self.src.filter(|_| e > self.ctx) else {
            return e;
        };
        let Some(&at) = src.get(e - 1) else {
            return e;
        };
        let mut i = e;
        while src.get(i) == Some(&at) {
            i += 1;
        }
        i
    }

    /// The first normalized offset of the character that byte `n` belongs to.
    pub(crate) fn char_start(&self, n: usize) -> usize {
        let Some(src) = self.src.filter(|_| n < self.text.len()) else {
            return n;
        };
        let at = src[n];
        let mut i = n;
        while i > self.ctx && src[i - 1] == at {
            i -= 1;
        }
        i
    }

    /// Whether normalized offset `n` is inside one original character's expansion.
    pub(crate) fn splits_char(&self, n: usize) -> bool {
        self.src
            .is_some_and(|src| n > self.ctx && n < self.text.len() && src[n] == src[n - 1])
    }
}

/// Normalizes a whole text: borrowed when it is already normal, else a buffer.
pub(crate) fn normalize(text: &str) -> Option<NormBuf> {
    if NormBuf::is_plain(text) {
        return None;
    }
    let mut buf = NormBuf::new();
    buf.push(text, 0);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let mut b = NormBuf::new();
        b.push(s, 0);
        b.text
    }

    #[test]
    fn folds_disguises() {
        assert_eq!(norm("４１１１"), "4111");
        assert_eq!(norm("٤١١١"), "4111");
        assert_eq!(norm("a\u{200B}b\u{202E}c\u{FEFF}"), "abc");
        assert_eq!(norm("jos\u{e9}"), "jose");
        assert_eq!(norm("555\u{2013}1234"), "555-1234");
        assert_eq!(norm("a\u{00A0}b"), "a b");
        assert_eq!(norm("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ"), "john@example.com");
        assert_eq!(norm("\u{E0041}x"), "x");
    }

    #[test]
    fn long_invisible_runs_break() {
        let s = format!("a{}b", "\u{200B}".repeat(40));
        assert_eq!(norm(&s), "a b");
    }

    #[test]
    fn split_invariant() {
        let s = "x\u{200B}４٤\u{301}ﬁé-\u{2212}";
        let whole = norm(s);
        for (i, _) in s.char_indices() {
            let mut b = NormBuf::new();
            b.push(&s[..i], 0);
            b.push(&s[i..], i);
            assert_eq!(b.text, whole);
        }
    }

    #[test]
    fn maps_back() {
        let orig = "ａb\u{200B}c";
        let mut b = NormBuf::new();
        b.push(orig, 0);
        let v = b.view(orig);
        assert_eq!(v.text, "abc");
        assert_eq!(v.orig_start(0), 0);
        assert_eq!(v.orig_end(1), 3);
        assert_eq!(v.orig_start(2), 7);
        assert_eq!(v.orig_end(3), orig.len());
        assert_eq!(v.orig_start(3), orig.len());
    }
}
