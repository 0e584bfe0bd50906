//! What the `providers_*` fuzz targets do with their input, shared with
//! `crates/providers/tests/fuzz_corpus.rs`, which replays the corpora on stable: any bytes,
//! read as a client request, a provider answer, a provider stream or an error body, must
//! translate or be refused without panicking, and every translated stream must still be
//! well-formed SSE.

use std::time::UNIX_EPOCH;

use tollgate_providers::{
    classify_error, translate_response, upstream_request, AwsCredentials, Credentials, Dialect,
    IngressRequest, Operation, ProviderKind, ResponseMeta, StreamTranslator, Target,
};
use tollgate_sse::eventstream::EventStreamDecoder;
use tollgate_sse::SseDecoder;

const KINDS: [ProviderKind; 5] = [
    ProviderKind::OpenAi,
    ProviderKind::AzureOpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
    ProviderKind::Bedrock,
];

const META: ResponseMeta<'static> = ResponseMeta {
    request_id: "req_fuzz",
    created: 0,
    model: "fuzz-model",
};

/// A valid request of `dialect`, the context for translating answers.
fn ingress(dialect: Dialect, stream: bool) -> IngressRequest {
    let body = match dialect {
        Dialect::OpenAi => format!(
            r#"{{"model":"m","stream":{stream},"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ),
        Dialect::Anthropic => format!(
            r#"{{"model":"m","stream":{stream},"max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]}}"#
        ),
    };
    match IngressRequest::parse(dialect, Operation::ChatCompletions, body.as_bytes()) {
        Ok(ingress) => ingress,
        Err(e) => panic!("the fixed request must parse: {e}"),
    }
}

/// `data` as a client request of `dialect`, built for every provider kind.
pub fn client_request(dialect: Dialect, data: &[u8]) {
    let Ok(ingress) = IngressRequest::parse(dialect, Operation::ChatCompletions, data) else {
        return;
    };
    let mut text = String::new();
    ingress.prompt_text(&mut text);
    let aws = AwsCredentials {
        access_key_id: "AKID".into(),
        secret_access_key: "secret".into(),
        session_token: None,
    };
    for kind in KINDS {
        let credentials = match kind {
            ProviderKind::Bedrock => Credentials::Aws {
                credentials: &aws,
                region: Some("us-east-1"),
            },
            _ => Credentials::ApiKey("key"),
        };
        let target = Target {
            kind,
            upstream_model: "upstream",
            path_prefix: "",
            host: "example.com",
            credentials,
            api_version: None,
            extra_headers: &[],
        };
        let _ = upstream_request(&ingress, &target, UNIX_EPOCH);
    }
}

/// `data` as a complete answer, a stream and an error body of a `kind` provider.
pub fn provider_answer(kind: ProviderKind, data: &[u8]) {
    let _ = classify_error(kind, 400, data);
    let _ = classify_error(kind, 500, data);
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let _ = translate_response(kind, &ingress(dialect, false), data, &META);
        let mut translator = StreamTranslator::new(kind, &ingress(dialect, true), &META);
        let mut out = Vec::new();
        if kind == ProviderKind::Bedrock {
            let mut decoder = EventStreamDecoder::new();
            let mut messages = Vec::new();
            let _ = decoder.feed(data, &mut messages);
            for message in &messages {
                let step = translator.on_message(message, &mut out);
                if let Some(error) = step.error {
                    translator.fail(&error, &mut out);
                }
            }
        } else {
            let mut decoder = SseDecoder::new();
            let mut events = Vec::new();
            let _ = decoder.feed(data, &mut events);
            for event in &events {
                let step = translator.on_event(event, &mut out);
                if let Some(error) = step.error {
                    translator.fail(&error, &mut out);
                }
            }
        }
        translator.finish(&mut out);
        let _ = translator.usage();
        let mut check = SseDecoder::with_max_event_bytes(usize::MAX);
        let mut events = Vec::new();
        assert!(
            check.feed(&out, &mut events).is_ok(),
            "translated stream is not SSE"
        );
        assert!(
            check.finish().is_ok(),
            "translated stream ends inside an event"
        );
    }
}
