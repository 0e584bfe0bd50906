//! Fuzz target for Anthropic's Messages API: any bytes as a client request (built for
//! every provider kind) and as an upstream answer, stream and error body (translated for
//! both client dialects) must not panic, and translated streams stay well-formed SSE.

#![no_main]

#[path = "providers_common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tollgate_providers::{Dialect, ProviderKind};

fuzz_target!(|input: &[u8]| {
    common::client_request(Dialect::Anthropic, input);
    common::provider_answer(ProviderKind::Anthropic, input);
});
