//! Checks one OpenAI-style chat stream against what the mock was asked to send.
//!
//! The mock's generated reply is `tok0 tok1 … tok<N-1> `, one word per content delta, so
//! every delta names its own index: a missing index is a lost chunk, two words in one
//! delta are a merged chunk, an index seen twice or going backwards is out of order.
//!
//! A fixed reply (`tollgate-mock --reply`) may mix other words in, numbered by position
//! (`tok0 tok1 Mail jane@example.com tok4`): each other word takes its position, so a
//! stream passed through unchanged loses nothing, and a redactor that replaces a
//! four-word card number with `[CREDIT_CARD]` shows as three lost words and one mask.
//!
//! A padded reply (scenario `mock.pad`) makes every token event larger, for loads that must
//! push many bytes per stream at a low event rate: `tok<N>~` followed by filler still
//! counts as token N.

use serde::Deserialize;

/// Separates a token's index from its filler in a padded reply.
const PAD_MARK: char = '~';

/// The reply `tok0~ppp… tok1~ppp… …`: `tokens` words of `pad` filler bytes each after
/// their index.
pub fn padded_reply(tokens: u64, pad: usize) -> String {
    let filler = "p".repeat(pad);
    (0..tokens)
        .map(|i| format!("tok{i}{PAD_MARK}{filler}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `chat.completion.chunk`, only the fields the check reads.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// What one SSE event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Carried this many reply tokens.
    Tokens(u32),
    /// No reply text (role chunk, finish chunk, usage chunk).
    Empty,
    /// `data: [DONE]`.
    Done,
    /// An error object or data that is not a chunk.
    Error,
}

/// Tallies of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCheck {
    /// Index of the next token expected.
    next: u64,
    /// Content-bearing events seen.
    pub events: u64,
    /// Tokens seen in them.
    pub tokens: u64,
    /// Token indexes skipped.
    pub lost: u64,
    /// Events that carried more than one token.
    pub merged: u64,
    /// Tokens whose index was not above the previous one.
    pub out_of_order: u64,
    /// Words that are not `tok<N>`.
    pub foreign: u64,
    /// Of those, redaction masks such as `[EMAIL]`.
    pub masks: u64,
    /// `[DONE]` arrived.
    pub done: bool,
    /// An error event arrived.
    pub errored: bool,
}

impl StreamCheck {
    /// Accounts one event's data and says what it was.
    pub fn on_event(&mut self, data: &str) -> EventKind {
        if data == "[DONE]" {
            self.done = true;
            return EventKind::Done;
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            self.errored = true;
            return EventKind::Error;
        };
        if data.starts_with("{\"error\"") {
            self.errored = true;
            return EventKind::Error;
        }
        let mut words = 0u32;
        for choice in &chunk.choices {
            let Some(text) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) else {
                continue;
            };
            for word in text.split_whitespace() {
                words += 1;
                self.token(word);
            }
        }
        if words == 0 {
            return EventKind::Empty;
        }
        self.events += 1;
        if words > 1 {
            self.merged += 1;
        }
        EventKind::Tokens(words)
    }

    fn token(&mut self, word: &str) {
        self.tokens += 1;
        let index = word
            .strip_prefix("tok")
            .map(|rest| rest.split_once(PAD_MARK).map_or(rest, |(n, _)| n))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(index) = index else {
            self.foreign += 1;
            self.masks += u64::from(is_mask(word));
            self.next += 1;
            return;
        };
        if index < self.next {
            self.out_of_order += 1;
            return;
        }
        self.lost += index - self.next;
        self.next = index + 1;
    }

    /// Closes the tally for a stream that should have carried `expected` tokens: tokens
    /// missing at the end count as lost.
    pub fn finish(&mut self, expected: u64) {
        if self.next < expected {
            self.lost += expected - self.next;
            self.next = expected;
        }
    }

    /// The stream carried exactly the expected tokens, one per event, in order, and
    /// ended with `[DONE]`.
    pub fn is_clean(&self) -> bool {
        self.done
            && !self.errored
            && self.lost == 0
            && self.merged == 0
            && self.out_of_order == 0
            && self.foreign == 0
    }
}

/// `[EMAIL]`, `[CREDIT_CARD]`: what a masking redactor writes in place of an entity.
fn is_mask(word: &str) -> bool {
    word.strip_prefix('[')
        .and_then(|w| w.strip_suffix(']'))
        .is_some_and(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> String {
        format!(
            r#"{{"id":"c","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}]}}"#,
            serde_json::Value::String(content.to_owned())
        )
    }

    #[test]
    fn a_clean_stream() {
        let mut c = StreamCheck::default();
        assert_eq!(
            c.on_event(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
            EventKind::Empty
        );
        for i in 0..3 {
            assert_eq!(
                c.on_event(&chunk(&format!("tok{i} "))),
                EventKind::Tokens(1)
            );
        }
        assert_eq!(
            c.on_event(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#),
            EventKind::Empty
        );
        assert_eq!(c.on_event("[DONE]"), EventKind::Done);
        c.finish(3);
        assert!(c.is_clean(), "{c:?}");
        assert_eq!((c.events, c.tokens), (3, 3));
    }

    #[test]
    fn lost_merged_and_reordered_tokens() {
        let mut c = StreamCheck::default();
        c.on_event(&chunk("tok0 "));
        c.on_event(&chunk("tok2 ")); // tok1 lost
        c.on_event(&chunk("tok3 tok4 ")); // merged
        c.on_event(&chunk("tok1 ")); // late
        c.on_event(&chunk("hello ")); // takes position 5
        c.on_event("[DONE]");
        c.finish(7); // tok6 never came
        assert_eq!(c.lost, 2);
        assert_eq!(c.merged, 1);
        assert_eq!(c.out_of_order, 1);
        assert_eq!(c.foreign, 1);
        assert!(!c.is_clean());
    }

    #[test]
    fn other_words_take_their_position_and_masks_are_counted() {
        let mut c = StreamCheck::default();
        for word in ["tok0 ", "Card ", "4111 ", "1111 ", "tok4 "] {
            c.on_event(&chunk(word));
        }
        c.on_event("[DONE]");
        c.finish(5);
        assert_eq!((c.lost, c.foreign, c.masks), (0, 3, 0));

        let mut m = StreamCheck::default();
        for word in ["tok0 ", "Card ", "[CREDIT_CARD] tok4 "] {
            m.on_event(&chunk(word));
        }
        m.on_event("[DONE]");
        m.finish(5);
        assert_eq!((m.lost, m.foreign, m.masks, m.merged), (1, 2, 1, 1));
        assert!(!is_mask("[x]") && !is_mask("[]") && is_mask("[IP_2]"));
    }

    #[test]
    fn padded_tokens_count_by_their_index() {
        let reply = padded_reply(3, 5);
        assert_eq!(reply, "tok0~ppppp tok1~ppppp tok2~ppppp");
        let mut c = StreamCheck::default();
        for word in reply.split(' ') {
            c.on_event(&chunk(&format!("{word} ")));
        }
        c.on_event("[DONE]");
        c.finish(3);
        assert!(c.is_clean(), "{c:?}");
        assert_eq!(padded_reply(0, 5), "");
    }

    #[test]
    fn errors_and_missing_done() {
        let mut c = StreamCheck::default();
        assert_eq!(
            c.on_event(r#"{"error":{"message":"boom","type":"server_error"}}"#),
            EventKind::Error
        );
        assert_eq!(c.on_event("not json"), EventKind::Error);
        assert!(c.errored);
        let mut d = StreamCheck::default();
        d.on_event(&chunk("tok0 "));
        d.finish(1);
        assert!(!d.is_clean(), "no [DONE]");
    }
}
