//! Fuzz target for detection: any text (bytes made UTF-8 lossily) must yield entities in
//! order, without overlap, on character boundaries and within the text; redaction in both
//! directions and injection scoring must not panic.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tollgate_redact::{
    injection, Action, ActionRule, CustomRule, DenyList, Detector, EntityKind, Pseudonyms,
    RedactConfig, Redactor,
};

fn config() -> RedactConfig {
    RedactConfig {
        actions: BTreeMap::from([
            (EntityKind::Email, ActionRule::Same(Action::Hash)),
            (EntityKind::Phone, ActionRule::Same(Action::Pseudonymize)),
        ]),
        custom: vec![CustomRule {
            name: "ticket".into(),
            pattern: "TCK-[0-9]{4,8}".into(),
            action: None,
        }],
        deny: Some(DenyList {
            words: vec!["project falcon".into(), "c++".into()],
            action: Some(ActionRule::Same(Action::Mask)),
        }),
        hash_key: "fuzzing-hash-key-0123456789".into(),
        ..RedactConfig::default()
    }
}

static DETECTOR: LazyLock<Detector> = LazyLock::new(|| Detector::new(&config()).unwrap());
static REDACTOR: LazyLock<Redactor> = LazyLock::new(|| Redactor::new(&config()).unwrap());

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let mut last = 0;
    for entity in DETECTOR.find(&text) {
        assert!(entity.start >= last, "overlap or disorder: {entity:?}");
        assert!(
            entity.start < entity.end && entity.end <= text.len(),
            "{entity:?}"
        );
        assert!(text.is_char_boundary(entity.start) && text.is_char_boundary(entity.end));
        last = entity.end;
    }
    let mut pseudonyms = Pseudonyms::new();
    if let Ok(redacted) = REDACTOR.redact_request(&text, "tenant", &mut pseudonyms) {
        let _ = pseudonyms.restore(&redacted.text);
    }
    let _ = REDACTOR.redact_response(&text, "tenant");
    let score = injection::score(&text);
    assert!((0.0..=1.0).contains(&score.score), "{score:?}");
});
