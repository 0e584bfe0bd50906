//! Prompt token estimates for admission decisions (context-window checks).

/// Estimated prompt tokens of `text`, exact (o200k) when it matters: a token is never
/// shorter than one byte, so a text of at most `exact_above` bytes fits every window of
/// that many tokens, and the cheap bytes/4 figure is good enough for it.
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
