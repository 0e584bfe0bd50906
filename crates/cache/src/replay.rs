//! Answering from the cache: an entry as the client's non-stream body, or as a complete,
//! well-formed SSE stream in the client's dialect.
//!
//! Both go through the providers crate's own encoders (the response encoders and the
//! stream writers the gateway uses for translated streams), so a hit looks to the client
//! exactly like a translated answer: OpenAI clients get `chat.completion.chunk`s, the
//! finish chunk, the usage chunk when they asked for it, and `data: [DONE]`; Anthropic
//! clients get `message_start`, `content_block_*`, `message_delta` and `message_stop`.

use tollgate_providers::canonical::{StreamEvent, UsageReport};
use tollgate_providers::{anthropic, openai, AnthropicEventWriter, Dialect, OpenAiChunkWriter};

use crate::entry::{CacheEntry, EntryPart};

/// Most bytes of text or tool-call arguments in one replayed delta event. A stored answer
/// may hold up to [`crate::MAX_ENTRY_BYTES`]; cutting it into pieces keeps each SSE event
/// well under clients' and proxies' per-event limits (ours is 1 MiB) while keeping the
/// number of events, and so the framing overhead, small.
pub const REPLAY_DELTA_BYTES: usize = 16 * 1024;

/// What a replay needs of the request it answers.
#[derive(Debug, Clone, Copy)]
pub struct Replay<'a> {
    /// The gateway's id of this request: the answer's id is made from it
    /// (`chatcmpl-<id>`, `msg_<id>`), so every hit has its own.
    pub request_id: &'a str,
    /// Unix seconds, for OpenAI's `created`.
    pub created: u64,
    /// Whether an OpenAI stream client asked for the usage chunk
    /// (`IngressRequest::include_usage`); Anthropic streams always carry usage.
    pub include_usage: bool,
}

impl Replay<'_> {
    fn id(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::OpenAi => format!("chatcmpl-{}", self.request_id),
            Dialect::Anthropic => format!("msg_{}", self.request_id),
        }
    }
}

impl CacheEntry {
    /// The answer as a non-stream JSON body in `dialect`.
    pub fn replay_body(&self, dialect: Dialect, replay: &Replay<'_>) -> Vec<u8> {
        let response = self.to_response(replay.id(dialect));
        let value = match dialect {
            Dialect::OpenAi => openai::encode_response(&response, replay.created),
            Dialect::Anthropic => anthropic::encode_response(&response),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The answer as a whole SSE stream in `dialect`, from its first event to its end
    /// marker, ready to send as the body of a `text/event-stream` response.
    pub fn replay_stream(&self, dialect: Dialect, replay: &Replay<'_>) -> Vec<u8> {
        let id = replay.id(dialect);
        let events = self.stream_events(&id);
        let mut out = Vec::with_capacity(self.approx_bytes() * 2);
        match dialect {
            Dialect::OpenAi => {
                let mut writer = OpenAiChunkWriter::new(
                    id,
                    self.model.clone(),
                    replay.created,
                    replay.include_usage,
                );
                for event in &events {
                    writer.write(event, &mut out);
                }
                writer.close(Some(self.usage), &mut out);
            }
            Dialect::Anthropic => {
                let mut writer = AnthropicEventWriter::new(id, self.model.clone());
                for event in &events {
                    writer.write(event, self.usage, &mut out);
                }
                writer.close(Some(self.usage), &mut out);
            }
        }
        out
    }

    /// The canonical events of a stream that carries this answer.
    fn stream_events(&self, id: &str) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Start {
            id: Some(id.to_owned()),
            model: Some(self.model.clone()),
        }];
        for (index, part) in self.content.iter().enumerate() {
            match part {
                EntryPart::Text { text } => {
                    for piece in pieces(text) {
                        events.push(StreamEvent::TextDelta(piece.to_owned()));
                    }
                }
                EntryPart::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let index = index as u64;
                    events.push(StreamEvent::ToolCallStart {
                        index,
                        id: id.clone(),
                        name: name.clone(),
                    });
                    for piece in pieces(arguments) {
                        events.push(StreamEvent::ToolCallDelta {
                            index,
                            arguments: piece.to_owned(),
                        });
                    }
                }
            }
        }
        events.push(StreamEvent::Stop {
            reason: self.stop.reason(),
            stop_sequence: self.stop_sequence.clone(),
        });
        events.push(StreamEvent::Usage(UsageReport::full(&self.usage)));
        events.push(StreamEvent::End);
        events
    }
}

/// `text` cut into pieces of at most [`REPLAY_DELTA_BYTES`], on character boundaries.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(REPLAY_DELTA_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_characters_whole() {
        assert_eq!(pieces("").count(), 0);
        assert_eq!(pieces("abc").collect::<Vec<_>>(), ["abc"]);
        let long = "é".repeat(REPLAY_DELTA_BYTES);
        let parts: Vec<&str> = pieces(&long).collect();
        assert_eq!(parts.concat(), long);
        assert!(parts.iter().all(|p| p.len() <= REPLAY_DELTA_BYTES));
        assert_eq!(parts.len(), 2);
    }
}
