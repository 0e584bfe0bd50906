//! Prompt token estimates for admission decisions: context-window checks, tokens-per-minute
//! limits and budget reservations.
//!
//! The tokenizer (tiktoken's o200k) counts about 37 MiB/s on one core (`metering/
//! estimate_whole_text`), some 55 µs for a 2 KiB prompt; the gateway pays it only where
//! the count decides something: on every prompt when a `tpm` limit or a budget is
//! configured, otherwise on prompts too long to fit every context window for sure.

/// Estimated prompt tokens of `text`, exact (o200k) when it matters: a token is never
/// shorter than one byte, so a text of at most `exact_above` bytes fits every window of
/// that many tokens, and the cheap bytes/4 figure is good enough for it (`exact_above`
/// zero counts every text exactly).
pub fn estimate_prompt_tokens(text: &str, exact_above: u64) -> u64 {
    let bytes = text.len() as u64;
    if bytes <= exact_above {
        return bytes.div_ceil(4);
    }
    tollgate_metering::estimate_tokens(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_count_when_above_threshold() {
        let text = "hello world, how are you today?";
        let exact = estimate_prompt_tokens(text, 0);
        assert!((5..=12).contains(&exact), "{exact}");
        assert_eq!(
            estimate_prompt_tokens(text, 1_000),
            (text.len() as u64).div_ceil(4)
        );
    }
}
