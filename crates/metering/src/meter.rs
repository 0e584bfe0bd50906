//! The per-stream usage accumulator: provider-reported counts first, the gateway's own
//! token counts where the provider said nothing or the stream was cut.

use tollgate_core::Usage;

use crate::tokens::TokenCounter;

/// How the counts of one observation relate to the counts seen before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSemantics {
    /// Running totals so far (Anthropic's `message_start` and `message_delta`, Gemini's
    /// `usageMetadata`): the largest value seen wins, nothing is added up.
    Cumulative,
    /// Increments since the previous observation: added up.
    Delta,
    /// The provider's complete totals for the request (OpenAI's usage chunk, a
    /// non-streaming body, Bedrock's `metadata` event): they replace everything seen and
    /// later cumulative or delta observations are ignored.
    Final,
}

/// Counts taken from one provider event. `None` means the event did not mention the
/// count, which is different from reporting zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageObservation {
    /// All prompt tokens, cached ones included.
    pub input: Option<u64>,
    /// All generated tokens, reasoning included.
    pub output: Option<u64>,
    /// Prompt tokens read from the provider's cache (a part of `input`).
    pub cached_input: Option<u64>,
    /// Hidden reasoning tokens (a part of `output`).
    pub reasoning: Option<u64>,
    pub semantics: UsageSemantics,
}

/// How a stream ended, as far as metering cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The provider's terminal event arrived (`[DONE]`, `message_stop`, a finish reason
    /// with usage, the end of a non-streaming body).
    Complete,
    /// The client went away or the upstream broke before the terminal event; counts that
    /// were still growing are incomplete.
    Cut,
}

/// Accumulates one response's usage; memory stays constant whatever the stream length.
#[derive(Debug, Default)]
pub struct StreamMeter {
    input: Option<u64>,
    output: Option<u64>,
    cached_input: Option<u64>,
    reasoning: Option<u64>,
    final_seen: bool,
    text: TokenCounter,
}

impl StreamMeter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe_usage(&mut self, observation: UsageObservation) {
        let fields = [
            (&mut self.input, observation.input),
            (&mut self.output, observation.output),
            (&mut self.cached_input, observation.cached_input),
            (&mut self.reasoning, observation.reasoning),
        ];
        match observation.semantics {
            UsageSemantics::Final => {
                self.final_seen = true;
                for (slot, seen) in fields {
                    if seen.is_some() {
                        *slot = seen;
                    }
                }
            }
            _ if self.final_seen => {}
            UsageSemantics::Cumulative => {
                for (slot, seen) in fields {
                    if let Some(seen) = seen {
                        *slot = Some(slot.map_or(seen, |old| old.max(seen)));
                    }
                }
            }
            UsageSemantics::Delta => {
                for (slot, seen) in fields {
                    if let Some(seen) = seen {
                        *slot = Some(slot.map_or(seen, |old| old.saturating_add(seen)));
                    }
                }
            }
        }
    }

    /// Generated text as it is sent to the client (content, refusal and tool-call argument
    /// deltas); counted incrementally in case the provider reports no usage.
    pub fn observe_output_text(&mut self, text: &str) {
        self.text.push(text);
    }

    /// Whether the provider has sent its complete totals.
    pub fn has_final_usage(&self) -> bool {
        self.final_seen
    }

    /// The usage to bill. Provider counts are used as they are when they are complete
    /// (a final report, or a stream that ended normally). Otherwise the missing or
    /// possibly short counts are estimated and the result is marked `estimated`: the
    /// prompt with `prompt_estimate` (called only when the provider gave no input count),
    /// the output as the larger of the provider's partial count and the tokens of the
    /// text seen.
    pub fn finish(self, end: StreamEnd, prompt_estimate: impl FnOnce() -> u64) -> Usage {
        let complete = self.final_seen || end == StreamEnd::Complete;
        let mut estimated = false;
        let input_tokens = match self.input {
            Some(n) => n,
            None => {
                estimated = true;
                prompt_estimate()
            }
        };
        let output_tokens = match self.output {
            Some(n) if complete => n,
            partial => {
                estimated = true;
                partial.unwrap_or(0).max(self.text.total())
            }
        };
        Usage {
            input_tokens,
            output_tokens,
            cached_input_tokens: self.cached_input.unwrap_or(0).min(input_tokens),
            reasoning_tokens: self.reasoning.unwrap_or(0).min(output_tokens),
            estimated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::estimate_tokens;

    fn obs(input: Option<u64>, output: Option<u64>, semantics: UsageSemantics) -> UsageObservation {
        UsageObservation {
            input,
            output,
            cached_input: None,
            reasoning: None,
            semantics,
        }
    }

    fn no_prompt() -> u64 {
        unreachable!("the provider reported the prompt")
    }

    #[test]
    fn cumulative_output_is_not_added_up() {
        // Anthropic: input in message_start, cumulative output in each message_delta.
        let mut meter = StreamMeter::new();
        meter.observe_usage(obs(Some(25), Some(1), UsageSemantics::Cumulative));
        meter.observe_usage(obs(None, Some(15), UsageSemantics::Cumulative));
        meter.observe_usage(obs(None, Some(42), UsageSemantics::Cumulative));
        let usage = meter.finish(StreamEnd::Complete, no_prompt);
        assert_eq!((usage.input_tokens, usage.output_tokens), (25, 42));
        assert!(!usage.estimated);
    }

    #[test]
    fn cumulative_keeps_the_largest_value() {
        let mut meter = StreamMeter::new();
        meter.observe_usage(obs(Some(10), Some(30), UsageSemantics::Cumulative));
        meter.observe_usage(obs(Some(10), Some(20), UsageSemantics::Cumulative));
        let usage = meter.finish(StreamEnd::Complete, no_prompt);
        assert_eq!(usage.output_tokens, 30);
    }

    #[test]
    fn deltas_are_added_up() {
        let mut meter = StreamMeter::new();
        meter.observe_usage(obs(Some(7), None, UsageSemantics::Delta));
        for _ in 0..5 {
            meter.observe_usage(obs(None, Some(3), UsageSemantics::Delta));
        }
        let usage = meter.finish(StreamEnd::Complete, no_prompt);
        assert_eq!((usage.input_tokens, usage.output_tokens), (7, 15));
    }

    #[test]
    fn final_report_replaces_and_wins_over_later_partials() {
        let mut meter = StreamMeter::new();
        meter.observe_usage(obs(Some(1), Some(1), UsageSemantics::Delta));
        meter.observe_usage(UsageObservation {
            input: Some(100),
            output: Some(50),
            cached_input: Some(40),
            reasoning: Some(20),
            semantics: UsageSemantics::Final,
        });
        meter.observe_usage(obs(None, Some(5), UsageSemantics::Delta));
        assert!(meter.has_final_usage());
        // A final report is complete even if the client leaves before [DONE].
        let usage = meter.finish(StreamEnd::Cut, no_prompt);
        assert_eq!(
            usage,
            Usage {
                input_tokens: 100,
                output_tokens: 50,
                cached_input_tokens: 40,
                reasoning_tokens: 20,
                estimated: false,
            }
        );
    }

    #[test]
    fn no_provider_usage_is_estimated_from_text_and_prompt() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(50);
        let mut meter = StreamMeter::new();
        for piece in text.as_bytes().chunks(9) {
            meter.observe_output_text(std::str::from_utf8(piece).unwrap());
        }
        let usage = meter.finish(StreamEnd::Complete, || 123);
        assert!(usage.estimated);
        assert_eq!(usage.input_tokens, 123);
        assert_eq!(usage.output_tokens, estimate_tokens(&text));
    }

    #[test]
    fn cut_stream_takes_the_larger_of_partial_count_and_text() {
        let text = "word ".repeat(200);
        let mut meter = StreamMeter::new();
        meter.observe_usage(obs(Some(30), Some(1), UsageSemantics::Cumulative));
        meter.observe_output_text(&text);
        let usage = meter.finish(StreamEnd::Cut, no_prompt);
        assert!(usage.estimated);
        assert_eq!(usage.input_tokens, 30);
        assert_eq!(usage.output_tokens, estimate_tokens(&text));

        let mut meter = StreamMeter::new();
        meter.observe_usage(obs(Some(30), Some(500), UsageSemantics::Cumulative));
        meter.observe_output_text("short");
        let usage = meter.finish(StreamEnd::Cut, no_prompt);
        assert_eq!(usage.output_tokens, 500);
        assert!(usage.estimated);
    }

    #[test]
    fn cut_before_any_byte_still_bills_the_prompt() {
        let usage = StreamMeter::new().finish(StreamEnd::Cut, || 77);
        assert_eq!((usage.input_tokens, usage.output_tokens), (77, 0));
        assert!(usage.estimated);
    }

    #[test]
    fn subsets_never_exceed_their_totals() {
        let mut meter = StreamMeter::new();
        meter.observe_usage(UsageObservation {
            input: Some(10),
            output: Some(5),
            cached_input: Some(50),
            reasoning: Some(9),
            semantics: UsageSemantics::Final,
        });
        let usage = meter.finish(StreamEnd::Complete, no_prompt);
        assert_eq!((usage.cached_input_tokens, usage.reasoning_tokens), (10, 5));
    }
}
