//! What the `metering_tokens` target checks, shared with the seed replay in
//! `crates/metering`: streamed text pushed into a `TokenCounter` in pieces of any size
//! never panics, and below `PENDING_TEXT_CAP` (where the counter only cuts at boundaries
//! the tokenizer splits at anyway) counts exactly what the whole text counts.

use tollgate_metering::{estimate_tokens, TokenCounter, PENDING_TEXT_CAP};

/// The first byte sets the piece size (1 to 256 bytes, moved back to a character
/// boundary); the rest, read as UTF-8 with replacements, is the text.
pub fn count(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut counter = TokenCounter::new();
    let mut left: &str = &text;
    while !left.is_empty() {
        let mut at = (usize::from(step) + 1).min(left.len());
        while !left.is_char_boundary(at) {
            at += 1;
        }
        counter.push(&left[..at]);
        left = &left[at..];
    }
    let whole = estimate_tokens(&text);
    if text.len() < PENDING_TEXT_CAP {
        assert_eq!(
            counter.total(),
            whole,
            "pieces of {} bytes",
            usize::from(step) + 1
        );
    } else {
        // Forced cuts in text without boundaries can move the count, never past the text.
        assert!(counter.total() <= text.len() as u64 + 1);
    }
}
