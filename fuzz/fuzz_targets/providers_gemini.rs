//! Fuzz target for Gemini's generateContent: any bytes as an upstream answer, SSE stream
//! and error body, translated for both client dialects, must not panic, and translated
//! streams stay well-formed SSE.

#![no_main]

// The client-request half of the shared module serves the ingress targets.
#[allow(dead_code)]
#[path = "providers_common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tollgate_providers::ProviderKind;

fuzz_target!(|input: &[u8]| {
    common::provider_answer(ProviderKind::Gemini, input);
});
