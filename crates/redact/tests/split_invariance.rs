//! A stream's redacted output must not depend on where the stream is cut: property tests
//! over texts built from entities, their prefixes, prose and Unicode disguises, cut at
//! arbitrary character boundaries, against the whole-text redaction; plus exhaustive cuts
//! of tricky texts and checks that ordinary text flows with little delay.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use proptest::prelude::*;
use tollgate_redact::{Blocked, RedactConfig, Redactor, MAX_ENTITY_BYTES};

const CONFIG: &str = r#"
action: mask
actions: { email: hash, ip: { response: hash } }
custom: [{ name: ticket, pattern: 'TCK-[0-9]{4,8}' }]
deny: { words: [project falcon, "c++"], action: mask }
hash_key: "0123456789abcdef-test"
"#;

fn redactor(yaml: &str) -> Arc<Redactor> {
    let config: RedactConfig = serde_yaml_ng::from_str(yaml).unwrap();
    Arc::new(Redactor::new(&config).unwrap())
}

fn streamed(r: &Arc<Redactor>, chunks: &[&str]) -> Result<String, Blocked> {
    let mut s = r.stream("tenant");
    let mut out = String::new();
    for chunk in chunks {
        s.push(chunk, &mut out)?;
        assert!(
            s.held_back() <= 40 * (MAX_ENTITY_BYTES + 1),
            "held back {} bytes",
            s.held_back()
        );
    }
    s.finish(&mut out)?;
    Ok(out)
}

fn whole(r: &Redactor, text: &str) -> Result<String, Blocked> {
    r.redact_response(text, "tenant")
        .map(|r| r.text.into_owned())
}

fn cut<'a>(text: &'a str, points: &[usize]) -> Vec<&'a str> {
    let mut points: Vec<usize> = points
        .iter()
        .map(|p| {
            let mut p = p % (text.len() + 1);
            while !text.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points {
        chunks.push(&text[start..p]);
        start = p;
    }
    chunks.push(&text[start..]);
    chunks
}

fn per_char(text: &str) -> Vec<&str> {
    text.char_indices()
        .map(|(i, c)| &text[i..i + c.len_utf8()])
        .collect()
}

fn assert_invariant(r: &Arc<Redactor>, text: &str, points: &[usize]) {
    let expected = whole(r, text);
    assert_eq!(
        streamed(r, &cut(text, points)),
        expected,
        "cut at {points:?}: {text:?}"
    );
    assert_eq!(streamed(r, &per_char(text)), expected, "per char: {text:?}");
}

const FRAGMENTS: &[&str] = &[
    "john.doe@example.com",
    "JOHN.DOE@EXAMPLE.COM",
    "j\u{200B}ohn@exa\u{202E}mple.org",
    "ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    "+1 (415) 555-2671",
    "415-555-2671",
    "020 7946 0958",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "４１１１１１１１１１１１１１１１",
    "4111 1111 1111 1112",
    "3782-822463-10005",
    "078-05-1121",
    "666-12-3456",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "192.168.10.20",
    "1.2.3.4.5",
    "2001:db8::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-proj-4f9Qz7Xk2Lm8Np3Rs6Tv1Wy5Ab0Cd9Ef",
    "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "password = \"Xy8#kk29!aQ\"",
    "api_key=Zq8Wm2Lp9Rt4Vx7N",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L\nZ+/9=\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA",
    "TCK-123456",
    "project falcon",
    "Project\n Falcon",
    "C++",
    "john@",
    "4111 ",
    "+1 (",
    "-----BEGIN RSA",
    "eyJhbGciOi",
    "sk-",
    "password: ",
    "[EMAIL_1]",
    "hello",
    "world",
    " ",
    "  ",
    "\n",
    ". ",
    ", ",
    "@",
    "-",
    ":",
    ".",
    "=",
    "1",
    "42",
    "2024-03-15",
    "v1.2.3",
    "é",
    "e\u{301}",
    "\u{200B}",
    "\u{200D}",
    "ﬁ",
    "⒈",
    "㎏",
    "日本語",
    "😀",
    "٤",
];

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stream_equals_whole(text in text_strategy(), points in prop::collection::vec(any::<usize>(), 0..12)) {
        let r = redactor(CONFIG);
        assert_invariant(&r, &text, &points);
    }

    #[test]
    fn blocking_is_split_invariant(text in text_strategy(), points in prop::collection::vec(any::<usize>(), 0..8)) {
        let r = redactor("actions: { credit_card: block, secret: block }");
        assert_invariant(&r, &text, &points);
    }

    #[test]
    fn arbitrary_text(text in "\\PC{0,120}", points in prop::collection::vec(any::<usize>(), 0..8)) {
        let r = redactor(CONFIG);
        assert_invariant(&r, &text, &points);
    }
}

#[test]
fn every_two_cuts_of_tricky_texts() {
    let r = redactor(CONFIG);
    for text in [
        "mail pers.im@mon.example.com now",
        "card ４１１１ １１１１ １１１１ １１１１ 12/26.",
        "x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig⒈ y",
        "k -----BEGIN EC PRIVATE KEY-----\nAB\u{200B}CD\n-----END EC PRIVATE KEY-----\u{200B}.",
        "ip 10.0.0.1.5 and ::ffff:192.168.1.1 ok",
        "token: 'aB3dE5gH7jK9' TCK-1234 c++",
    ] {
        let expected = whole(&r, text);
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &a in &bounds {
            for &b in bounds.iter().filter(|&&b| b >= a) {
                let chunks = [&text[..a], &text[a..b], &text[b..]];
                assert_eq!(streamed(&r, &chunks), expected, "{text:?} cut at {a},{b}");
            }
        }
    }
}

#[test]
fn entity_split_like_a_peer_would_leak() {
    let r = redactor(CONFIG);
    let out = streamed(&r, &["mail pers", "im", "mon@example.com", " now"]).unwrap();
    assert!(
        out.starts_with("mail [EMAIL_") && out.ends_with("] now"),
        "{out}"
    );
}

#[test]
fn ordinary_text_flows() {
    let r = redactor(CONFIG);
    let mut s = r.stream("t");
    let mut out = String::new();
    s.push("The quick brown fox jumps", &mut out).unwrap();
    assert_eq!(out, "The quick brown fox ");
    s.push(" over the lazy dog. ", &mut out).unwrap();
    assert_eq!(out, "The quick brown fox jumps over the lazy dog. ");
    s.finish(&mut out).unwrap();
    assert_eq!(s.held_back(), 0);
}

#[test]
fn key_blocks_are_masked_as_they_stream() {
    let r = redactor(CONFIG);
    let mut s = r.stream("t");
    let mut out = String::new();
    s.push("here: -----BEGIN RSA PRIVATE KEY-----\n", &mut out)
        .unwrap();
    assert_eq!(out, "here: [SECRET]");
    for _ in 0..200 {
        s.push(
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n",
            &mut out,
        )
        .unwrap();
        assert!(s.held_back() <= 1, "held back {}", s.held_back());
    }
    s.push("-----END RSA PRIVATE KEY-----\nDone.", &mut out)
        .unwrap();
    s.finish(&mut out).unwrap();
    assert_eq!(out, "here: [SECRET]\nDone.");
}
