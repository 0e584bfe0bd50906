//! Replays the fuzz seed corpora (`fuzz/corpus/redact_*`) on stable with the fuzz targets'
//! checks: entity offsets are ordered, in bounds and on character boundaries; every cut of
//! a seed into deltas redacts and restores like the whole seed.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use tollgate_redact::{injection, Blocked, Detector, Pseudonyms, RedactConfig, Redactor};

const CONFIG: &str = r#"
actions: { email: hash, phone: pseudonymize }
custom: [{ name: ticket, pattern: 'TCK-[0-9]{4,8}' }]
deny: { words: [project falcon, "c++"], action: mask }
hash_key: "fuzzing-hash-key-0123456789"
"#;

fn config(block: bool) -> RedactConfig {
    let mut config: RedactConfig = serde_yaml_ng::from_str(CONFIG).unwrap();
    if block {
        config.actions.insert(
            tollgate_redact::EntityKind::CreditCard,
            tollgate_redact::ActionRule::Same(tollgate_redact::Action::Block),
        );
    }
    config
}

fn seeds(target: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()).into_owned())
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 4,
        "seed corpus missing from {}",
        dir.display()
    );
    seeds
}

fn streamed(redactor: &Arc<Redactor>, deltas: &[&str]) -> Result<String, Blocked> {
    let mut stream = redactor.stream("tenant");
    let mut out = String::new();
    for delta in deltas {
        stream.push(delta, &mut out)?;
    }
    stream.finish(&mut out)?;
    Ok(out)
}

fn deltas(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

#[test]
fn detect_seeds_replay() {
    let detector = Detector::new(&config(false)).unwrap();
    let redactor = Redactor::new(&config(false)).unwrap();
    for text in seeds("redact_detect") {
        let mut last = 0;
        let found = detector.find(&text);
        for entity in &found {
            assert!(entity.start >= last && entity.start < entity.end && entity.end <= text.len());
            assert!(text.is_char_boundary(entity.start) && text.is_char_boundary(entity.end));
            last = entity.end;
        }
        let mut pseudonyms = Pseudonyms::new();
        redactor
            .redact_request(&text, "tenant", &mut pseudonyms)
            .unwrap();
        redactor.redact_response(&text, "tenant").unwrap();
        let score = injection::score(&text);
        assert!((0.0..=1.0).contains(&score.score));
        if text.contains("Ignore all previous") {
            assert!(score.exceeds(injection::DEFAULT_THRESHOLD), "{score:?}");
        } else {
            assert!(!found.is_empty(), "nothing found in {text:?}");
        }
    }
}

#[test]
fn stream_seeds_replay() {
    let masking = Arc::new(Redactor::new(&config(false)).unwrap());
    let blocking = Arc::new(Redactor::new(&config(true)).unwrap());
    for text in seeds("redact_stream") {
        for redactor in [&masking, &blocking] {
            let whole = redactor
                .redact_response(&text, "tenant")
                .map(|r| r.text.into_owned());
            for size in [1, 2, 3, 5, 8, 13, 64] {
                assert_eq!(
                    streamed(redactor, &deltas(&text, size)),
                    whole,
                    "size {size}"
                );
            }
        }
        let mut pseudonyms = Pseudonyms::new();
        let request = masking
            .redact_request(&text, "tenant", &mut pseudonyms)
            .unwrap();
        let reply = format!("{}{}", request.text, text);
        let whole = pseudonyms.restore(&reply).into_owned();
        for size in [1, 4, 9] {
            let mut restorer = pseudonyms.clone().into_restorer();
            let mut out = String::new();
            for delta in deltas(&reply, size) {
                restorer.push(delta, &mut out);
            }
            restorer.finish(&mut out);
            assert_eq!(out, whole, "size {size}");
        }
    }
}
