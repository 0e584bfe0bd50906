//! Token estimates with the o200k BPE (embedded in tiktoken-rs, no download): a one-shot
//! count for whole texts and an incremental counter for streamed text with bounded memory.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// Text a [`TokenCounter`] holds back, in bytes, while it waits for a boundary where the
/// tokenizer would split anyway. A larger cap means fewer forced splits in text without
/// spaces (each may shift the count by a token or two) at the price of memory per stream.
pub const PENDING_TEXT_CAP: usize = 4096;

/// Pending text at which the counter looks for a boundary and counts what precedes it.
/// Smaller values tokenize more often (more calls, same total work).
const COUNT_AT: usize = 1024;

fn encoder() -> Option<&'static CoreBPE> {
    static ENCODER: OnceLock<Option<CoreBPE>> = OnceLock::new();
    ENCODER
        .get_or_init(|| tiktoken_rs::o200k_base().ok())
        .as_ref()
}

/// Builds the tokenizer now rather than on the first request that needs it (it takes a
/// noticeable fraction of a second). Returns false if the embedded encoding failed to load,
/// in which case estimates fall back to bytes / 4.
pub fn warm_up() -> bool {
    encoder().is_some()
}

/// Tokens of `text` under o200k, counted as plain text (special-token markers are text).
pub fn estimate_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match encoder() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// Counts tokens of text that arrives in pieces (stream deltas) without keeping it.
///
/// Text is held until 1 KiB is pending, then everything before the last space that
/// follows a non-space and precedes a letter is counted and dropped. The tokenizer's
/// pre-splitting always starts a new piece at such a space, so counting the halves apart
/// gives exactly the whole-text count. Only when [`PENDING_TEXT_CAP`] bytes hold no such
/// boundary (long runs without spaces: CJK, base64) is the text cut at a character
/// boundary; each such cut can move the count by at most a couple of tokens, i.e. well
/// under 1% of the ~1000 tokens such a run holds.
#[derive(Debug, Default)]
pub struct TokenCounter {
    pending: String,
    /// Pending bytes already searched for a boundary in vain, so that a long run
    /// without one is not rescanned on every small push.
    searched: usize,
    counted: u64,
}

impl TokenCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, mut text: &str) {
        while !text.is_empty() {
            let room = PENDING_TEXT_CAP - self.pending.len();
            let take = floor_char_boundary(text, room.min(text.len()));
            if take == 0 {
                // Room for less than one character: make room by counting everything.
                self.count_pending_up_to(self.pending.len());
                continue;
            }
            self.pending.push_str(&text[..take]);
            text = &text[take..];
            if self.pending.len() >= COUNT_AT {
                self.count_to_boundary();
            }
        }
    }

    /// Tokens of all text pushed so far.
    pub fn total(&self) -> u64 {
        self.counted + estimate_tokens(&self.pending)
    }

    fn count_to_boundary(&mut self) {
        // Step back over the last few searched bytes: a boundary needs the characters on
        // both sides of its space.
        let from = floor_char_boundary(&self.pending, self.searched.saturating_sub(8));
        match last_boundary(&self.pending[from..]) {
            Some(at) => {
                self.count_pending_up_to(from + at);
                // The last boundary was taken; what is left holds none.
                self.searched = self.pending.len();
            }
            None if self.pending.len() >= PENDING_TEXT_CAP => {
                self.count_pending_up_to(self.pending.len())
            }
            None => self.searched = self.pending.len(),
        }
    }

    fn count_pending_up_to(&mut self, at: usize) {
        self.counted += estimate_tokens(&self.pending[..at]);
        self.pending.drain(..at);
        self.searched = 0;
    }
}

/// The position of the last space that follows a non-whitespace character and precedes a
/// letter: a place where o200k's pre-tokenizer always begins a new piece.
fn last_boundary(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().rev().peekable();
    let mut next: Option<char> = None;
    while let Some((at, ch)) = chars.next() {
        if ch == ' ' && next.is_some_and(char::is_alphabetic) {
            if let Some(&(_, before)) = chars.peek() {
                if !before.is_whitespace() {
                    return Some(at);
                }
            }
        }
        next = Some(ch);
    }
    None
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> String {
        let mut text = String::new();
        let paragraphs = [
            "The gateway meters every token, also on streams, and records what it saw. ",
            "Rust's ownership model makes data races a compile-time error; isn't that neat? ",
            "fn main() {\n    let x: Vec<u64> = (0..10).map(|i| i * 2).collect();\n}\n\n",
            "Numbers like 1234567 and 3.14159, dates like 2024-05-01, and URLs like https://example.com/a?b=c. ",
            "Données en français, ñandú en español, und Grüße auf Deutsch. ",
            "日本語のテキストも数えます。中文文本也是如此。 ",
            "    indented   text\twith\ttabs   and  double  spaces  \n",
            "ALL CAPS SHOUTING and MixedCase identifiers like HttpServerConfig. ",
        ];
        for i in 0..400 {
            text.push_str(paragraphs[i % paragraphs.len()]);
            if i % 7 == 0 {
                text.push_str("\n\n");
            }
        }
        text
    }

    fn pieces<'a>(text: &'a str, sizes: &[usize]) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut rest = text;
        let mut i = 0;
        while !rest.is_empty() {
            let at = floor_char_boundary(rest, sizes[i % sizes.len()].min(rest.len()));
            let at = if at == 0 {
                rest.char_indices().nth(1).map_or(rest.len(), |(n, _)| n)
            } else {
                at
            };
            out.push(&rest[..at]);
            rest = &rest[at..];
            i += 1;
        }
        out
    }

    #[test]
    fn incremental_count_matches_whole_text_within_two_percent() {
        let text = corpus();
        let whole = estimate_tokens(&text);
        for sizes in [&[1usize][..], &[3, 7, 2, 11], &[16, 5], &[200], &[5000]] {
            let mut counter = TokenCounter::new();
            for piece in pieces(&text, sizes) {
                counter.push(piece);
                assert!(counter.pending.len() <= PENDING_TEXT_CAP);
            }
            let counted = counter.total();
            let diff = counted.abs_diff(whole) as f64 / whole as f64;
            assert!(diff < 0.02, "sizes {sizes:?}: {counted} vs {whole}");
        }
    }

    #[test]
    fn boundary_splits_are_exact_on_spaced_text() {
        let text = corpus();
        let mut counter = TokenCounter::new();
        for piece in pieces(&text, &[13, 4, 29]) {
            counter.push(piece);
        }
        assert_eq!(counter.total(), estimate_tokens(&text));
    }

    #[test]
    fn text_without_spaces_stays_bounded_and_close() {
        let text = "数据".repeat(20_000) + &"QUJDREVGR0g=".repeat(2_000);
        let whole = estimate_tokens(&text);
        let mut counter = TokenCounter::new();
        for piece in pieces(&text, &[37]) {
            counter.push(piece);
            assert!(counter.pending.len() <= PENDING_TEXT_CAP);
        }
        let counted = counter.total();
        let diff = counted.abs_diff(whole) as f64 / whole as f64;
        assert!(diff < 0.02, "{counted} vs {whole}");
    }

    #[test]
    fn estimates_are_real_token_counts() {
        assert!(warm_up());
        assert_eq!(estimate_tokens(""), 0);
        let n = estimate_tokens("hello world, how are you today?");
        assert!((6..=9).contains(&n), "{n}");
    }
}
