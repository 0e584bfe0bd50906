//! Fuzz target for the streaming redactor: any text, cut into deltas at character
//! boundaries derived from the input's first bytes, must redact to exactly what the
//! whole-text redaction gives (also when a rule blocks), and restoring placeholders must not
//! depend on the cut either.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use tollgate_redact::{
    Action, ActionRule, Blocked, CustomRule, DenyList, EntityKind, Pseudonyms, RedactConfig,
    Redactor,
};

fn redactor(block: bool) -> Arc<Redactor> {
    let mut actions = BTreeMap::from([
        (EntityKind::Email, ActionRule::Same(Action::Hash)),
        (EntityKind::Phone, ActionRule::Same(Action::Pseudonymize)),
    ]);
    if block {
        actions.insert(EntityKind::CreditCard, ActionRule::Same(Action::Block));
    }
    let config = RedactConfig {
        actions,
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
    };
    Arc::new(Redactor::new(&config).unwrap())
}

static MASKING: LazyLock<Arc<Redactor>> = LazyLock::new(|| redactor(false));
static BLOCKING: LazyLock<Arc<Redactor>> = LazyLock::new(|| redactor(true));

/// Delta lengths from a small xorshift generator seeded by the input's first bytes, moved
/// forward to character boundaries.
fn deltas(text: &str, seed: u64) -> Vec<&str> {
    let max_len = 1 + (seed % 61) as usize;
    let mut state = seed | 1;
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut end = (start + 1 + (state % max_len as u64) as usize).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
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

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let seed = input
        .iter()
        .take(8)
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let cut = deltas(&text, seed);
    let per_char: Vec<&str> = text
        .char_indices()
        .map(|(i, c)| &text[i..i + c.len_utf8()])
        .collect();
    for redactor in [&*MASKING, &*BLOCKING] {
        let whole = redactor
            .redact_response(&text, "tenant")
            .map(|r| r.text.into_owned());
        assert_eq!(streamed(redactor, &cut), whole);
        assert_eq!(streamed(redactor, &per_char), whole, "per char");
    }

    let mut pseudonyms = Pseudonyms::new();
    if let Ok(request) = MASKING.redact_request(&text, "tenant", &mut pseudonyms) {
        let reply = format!("{}{}", request.text, text);
        let whole = pseudonyms.restore(&reply).into_owned();
        let mut restorer = pseudonyms.into_restorer();
        let mut out = String::new();
        for delta in deltas(&reply, seed.rotate_left(17)) {
            restorer.push(delta, &mut out);
        }
        restorer.finish(&mut out);
        assert_eq!(out, whole);
    }
});
