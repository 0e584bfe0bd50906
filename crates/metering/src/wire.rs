//! Usage as each provider family reports it, turned into [`UsageObservation`]s. Each
//! function takes the JSON the provider sent and returns `None` when it holds no usage.

use serde_json::Value;

use crate::meter::{UsageObservation, UsageSemantics};

fn count(object: &Value, key: &str) -> Option<u64> {
    object.get(key).and_then(Value::as_u64)
}

fn nested(object: &Value, outer: &str, inner: &str) -> Option<u64> {
    object.get(outer).and_then(|o| count(o, inner))
}

fn sum(parts: &[Option<u64>]) -> Option<u64> {
    parts.iter().flatten().copied().reduce(u64::saturating_add)
}

/// OpenAI's `usage` object (chat completions: `prompt_tokens`/`completion_tokens`; the
/// Responses API: `input_tokens`/`output_tokens`), from a non-streaming body or the final
/// chunk of a stream asked for with `stream_options.include_usage`. Always final.
pub fn openai_usage(usage: &Value) -> Option<UsageObservation> {
    if !usage.is_object() {
        return None;
    }
    let input = count(usage, "prompt_tokens").or_else(|| count(usage, "input_tokens"));
    let output = count(usage, "completion_tokens").or_else(|| count(usage, "output_tokens"));
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(UsageObservation {
        input,
        output,
        cached_input: nested(usage, "prompt_tokens_details", "cached_tokens")
            .or_else(|| nested(usage, "input_tokens_details", "cached_tokens")),
        reasoning: nested(usage, "completion_tokens_details", "reasoning_tokens")
            .or_else(|| nested(usage, "output_tokens_details", "reasoning_tokens")),
        semantics: UsageSemantics::Final,
    })
}

/// An Anthropic `usage` object. Anthropic's `input_tokens` leaves out the tokens read
/// from and written to the prompt cache, so they are added back to make `input` the whole
/// prompt. Use [`UsageSemantics::Final`] for a non-streaming body and
/// [`UsageSemantics::Cumulative`] inside a stream.
pub fn anthropic_usage(usage: &Value, semantics: UsageSemantics) -> Option<UsageObservation> {
    let uncached = count(usage, "input_tokens");
    let cache_read = count(usage, "cache_read_input_tokens");
    let cache_write = count(usage, "cache_creation_input_tokens");
    let input = sum(&[uncached, cache_read, cache_write]);
    let output = count(usage, "output_tokens");
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(UsageObservation {
        input,
        output,
        cached_input: cache_read,
        reasoning: None,
        semantics,
    })
}

/// The usage in one Anthropic stream event: `message_start` carries the prompt count in
/// `message.usage`, each `message_delta` the cumulative output count in `usage`.
pub fn anthropic_event_usage(event: &Value) -> Option<UsageObservation> {
    let usage = match event.get("type").and_then(Value::as_str)? {
        "message_start" => event.get("message")?.get("usage")?,
        "message_delta" => event.get("usage")?,
        _ => return None,
    };
    anthropic_usage(usage, UsageSemantics::Cumulative)
}

/// Gemini's `usageMetadata`, present on stream chunks as running totals. Gemini counts
/// thinking apart from the answer (`thoughtsTokenCount` is not in
/// `candidatesTokenCount`), so output is their sum; tool-use prompt tokens are input.
pub fn gemini_usage(usage_metadata: &Value) -> Option<UsageObservation> {
    let prompt = count(usage_metadata, "promptTokenCount");
    let tool_prompt = count(usage_metadata, "toolUsePromptTokenCount");
    let candidates = count(usage_metadata, "candidatesTokenCount");
    let thoughts = count(usage_metadata, "thoughtsTokenCount");
    let input = sum(&[prompt, tool_prompt]);
    let output = sum(&[candidates, thoughts]);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(UsageObservation {
        input,
        output,
        cached_input: count(usage_metadata, "cachedContentTokenCount"),
        reasoning: thoughts,
        semantics: UsageSemantics::Cumulative,
    })
}

/// Bedrock Converse `usage` (the stream's `metadata` event or a non-streaming body):
/// `inputTokens` leaves out cache reads and writes, as Anthropic's does. Always final.
pub fn bedrock_usage(usage: &Value) -> Option<UsageObservation> {
    let uncached = count(usage, "inputTokens");
    let cache_read = count(usage, "cacheReadInputTokens");
    let cache_write = count(usage, "cacheWriteInputTokens");
    let input = sum(&[uncached, cache_read, cache_write]);
    let output = count(usage, "outputTokens");
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(UsageObservation {
        input,
        output,
        cached_input: cache_read,
        reasoning: None,
        semantics: UsageSemantics::Final,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::meter::{StreamEnd, StreamMeter};

    #[test]
    fn openai_final_chunk_with_details() {
        let usage = json!({
            "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 128}
        });
        assert_eq!(
            openai_usage(&usage),
            Some(UsageObservation {
                input: Some(1200),
                output: Some(300),
                cached_input: Some(1024),
                reasoning: Some(128),
                semantics: UsageSemantics::Final,
            })
        );
        assert_eq!(openai_usage(&Value::Null), None);
        assert_eq!(openai_usage(&json!({"total_tokens": 3})), None);
        let responses = json!({"input_tokens": 5, "output_tokens": 6,
            "output_tokens_details": {"reasoning_tokens": 2}});
        let seen = openai_usage(&responses).unwrap();
        assert_eq!(
            (seen.input, seen.output, seen.reasoning),
            (Some(5), Some(6), Some(2))
        );
    }

    #[test]
    fn anthropic_stream_is_neither_dropped_nor_double_counted() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "usage": {
                "input_tokens": 20, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": null},
                "usage": {"output_tokens": 10}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 37}}),
            json!({"type": "message_stop"}),
        ];
        let mut meter = StreamMeter::new();
        for event in &events {
            if let Some(seen) = anthropic_event_usage(event) {
                meter.observe_usage(seen);
            }
        }
        let usage = meter.finish(StreamEnd::Complete, || unreachable!());
        assert_eq!(usage.input_tokens, 125);
        assert_eq!(usage.cached_input_tokens, 100);
        assert_eq!(usage.output_tokens, 37);
        assert!(!usage.estimated);
    }

    #[test]
    fn gemini_running_totals_with_thoughts() {
        let chunks = [
            json!({"promptTokenCount": 50, "candidatesTokenCount": 4, "totalTokenCount": 54}),
            json!({"promptTokenCount": 50, "candidatesTokenCount": 19,
                "thoughtsTokenCount": 30, "cachedContentTokenCount": 32}),
        ];
        let mut meter = StreamMeter::new();
        for chunk in &chunks {
            meter.observe_usage(gemini_usage(chunk).unwrap());
        }
        let usage = meter.finish(StreamEnd::Complete, || unreachable!());
        assert_eq!((usage.input_tokens, usage.output_tokens), (50, 49));
        assert_eq!(
            (usage.cached_input_tokens, usage.reasoning_tokens),
            (32, 30)
        );
    }

    #[test]
    fn bedrock_metadata_usage() {
        let usage = json!({"inputTokens": 10, "outputTokens": 20, "totalTokens": 30,
            "cacheReadInputTokens": 90});
        let seen = bedrock_usage(&usage).unwrap();
        assert_eq!(
            (seen.input, seen.output, seen.cached_input),
            (Some(100), Some(20), Some(90))
        );
        assert_eq!(seen.semantics, UsageSemantics::Final);
        assert_eq!(bedrock_usage(&json!({})), None);
    }
}
