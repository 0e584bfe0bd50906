//! Provider-shaped streams, delivered in uneven chunks as a network would, decode to the
//! events a relay needs.

use tollgate_sse::{encode, SseDecoder, SseError, SseEvent};

fn decode_in_chunks(stream: &[u8], sizes: &[usize]) -> (Vec<SseEvent>, Result<(), SseError>) {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        if let Err(err) = decoder.feed(chunk, &mut events) {
            return (events, Err(err));
        }
        rest = tail;
    }
    let end = decoder.finish();
    (events, end)
}

const OPENAI_CHAT: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
    "\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    ": keepalive\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],",
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC_MESSAGES: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",",
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-latest\",",
    "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi ü\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn openai_chat_stream() {
    for sizes in [&[OPENAI_CHAT.len()][..], &[1], &[7, 13, 2], &[64]] {
        let (events, end) = decode_in_chunks(OPENAI_CHAT.as_bytes(), sizes);
        assert_eq!(end, Ok(()));
        assert_eq!(events.len(), 5, "the comment is not an event");
        assert!(events.iter().all(|e| e.event.is_none() && e.id.is_none()));
        assert!(events[1].data.contains("\"content\":\"Hello\""));
        assert!(events[3].data.contains("\"total_tokens\":10"));
        assert_eq!(events[4].data, "[DONE]");
    }
}

#[test]
fn anthropic_messages_stream() {
    for sizes in [&[ANTHROPIC_MESSAGES.len()][..], &[1], &[5, 31], &[100]] {
        let (events, end) = decode_in_chunks(ANTHROPIC_MESSAGES.as_bytes(), sizes);
        assert_eq!(end, Ok(()));
        let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert!(events[3].data.contains("\"text\":\"Hi ü\""));
    }
}

#[test]
fn stream_cut_mid_event_is_reported() {
    let cut = &ANTHROPIC_MESSAGES.as_bytes()[..ANTHROPIC_MESSAGES.len() - 10];
    let (events, end) = decode_in_chunks(cut, &[16]);
    assert_eq!(end, Err(SseError::Truncated));
    assert_eq!(
        events.len(),
        6,
        "complete events before the cut still arrive"
    );
}

#[test]
fn reframed_stream_is_byte_identical() {
    let (events, _) = decode_in_chunks(ANTHROPIC_MESSAGES.as_bytes(), &[9]);
    let mut reframed = Vec::new();
    for event in &events {
        encode(event, &mut reframed);
    }
    assert_eq!(reframed, ANTHROPIC_MESSAGES.as_bytes());
}
