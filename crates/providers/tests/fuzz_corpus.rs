//! Replays the seeds of the `providers_*` fuzz targets (`fuzz/corpus/`) on stable, through
//! the same code the targets run, so a crash input added as a seed stays fixed.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use tollgate_providers::{Dialect, ProviderKind};

#[path = "../../../fuzz/fuzz_targets/providers_common.rs"]
mod common;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn openai_seeds() {
    for (_, bytes) in seeds("providers_openai") {
        common::client_request(Dialect::OpenAi, &bytes);
        common::provider_answer(ProviderKind::OpenAi, &bytes);
    }
}

#[test]
fn anthropic_seeds() {
    for (_, bytes) in seeds("providers_anthropic") {
        common::client_request(Dialect::Anthropic, &bytes);
        common::provider_answer(ProviderKind::Anthropic, &bytes);
    }
}

#[test]
fn gemini_seeds() {
    for (_, bytes) in seeds("providers_gemini") {
        common::provider_answer(ProviderKind::Gemini, &bytes);
    }
}

#[test]
fn bedrock_seeds() {
    for (_, bytes) in seeds("providers_bedrock") {
        common::provider_answer(ProviderKind::Bedrock, &bytes);
    }
}

/// Cut and mangled versions of every seed: the cheap part of what the fuzzer explores.
#[test]
fn mangled_seeds() {
    let targets = [
        (
            "providers_openai",
            Some(Dialect::OpenAi),
            ProviderKind::OpenAi,
        ),
        (
            "providers_anthropic",
            Some(Dialect::Anthropic),
            ProviderKind::Anthropic,
        ),
        ("providers_gemini", None, ProviderKind::Gemini),
        ("providers_bedrock", None, ProviderKind::Bedrock),
    ];
    for (target, dialect, kind) in targets {
        for (_, bytes) in seeds(target) {
            let step = (bytes.len() / 16).max(1);
            for cut in (0..bytes.len()).step_by(step) {
                let mut mangled = bytes[..cut].to_vec();
                mangled.extend_from_slice(&bytes[(cut + 1).min(bytes.len())..]);
                if let Some(dialect) = dialect {
                    common::client_request(dialect, &bytes[..cut]);
                    common::client_request(dialect, &mangled);
                }
                common::provider_answer(kind, &bytes[..cut]);
                common::provider_answer(kind, &mangled);
            }
        }
    }
}
