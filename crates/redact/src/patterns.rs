//! The built-in recognizers: one regular expression per entity shape, in priority order
//! (when two match at the same position, the earlier one is tried first), each with the
//! check that confirms its candidates. All of them compile into one automaton.
//!
//! Patterns run on normalized text (see `normalize`), so they only spell out ASCII; they
//! use ASCII word boundaries and never match more than [`MAX_ENTITY_BYTES`] bytes, which
//! bounds what a stream holds back. JWTs and private-key blocks can be longer: their
//! patterns match an opener only, and the rest of the secret is followed outside the
//! automaton (see `detect::Continuation`).

use regex_automata::util::syntax;

use crate::config::EntityKind;
use crate::detect::MAX_ENTITY_BYTES;

/// How a candidate of a pattern is confirmed (and, for openers, continued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Private-key block opener; the block continues to its END line.
    PemOpener,
    /// JWT opener (header and the start of the payload); the token continues.
    JwtOpener,
    /// Provider token whose first `prefix` bytes are a fixed prefix.
    Token {
        prefix: usize,
    },
    AwsKey,
    KeyValue,
    Bearer,
    /// Swallows look-alikes (long dotted number runs) so that no entity is found inside.
    Absorb,
    Email,
    Iban,
    Card,
    Ssn,
    PhoneIntl,
    PhoneNanp,
    PhoneNational,
    Ipv4,
    Ipv6,
    /// Custom patterns and deny words: the pattern is the whole check.
    Accept,
}

impl Check {
    /// Whether a candidate that fails this check is skipped whole (see
    /// `Detector::resolve`): shapes distinctive enough that nothing else hides inside.
    pub(crate) fn skips_on_failure(self) -> bool {
        matches!(
            self,
            Check::Iban | Check::Card | Check::Ssn | Check::Ipv4 | Check::Ipv6 | Check::Email
        )
    }
}

/// One built-in recognizer.
pub(crate) struct Builtin {
    pub(crate) kind: EntityKind,
    pub(crate) check: Check,
    pub(crate) pattern: &'static str,
}

const fn builtin(kind: EntityKind, check: Check, pattern: &'static str) -> Builtin {
    Builtin {
        kind,
        check,
        pattern,
    }
}

/// Every built-in recognizer, in priority order.
pub(crate) const BUILTINS: &[Builtin] = &[
    builtin(
        EntityKind::Secret,
        Check::PemOpener,
        r"(?-u)-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----",
    ),
    builtin(
        EntityKind::Secret,
        Check::JwtOpener,
        r"(?-u)\beyJ[A-Za-z0-9_-]{10,200}\.eyJ[A-Za-z0-9_-]{4}",
    ),
    builtin(
        EntityKind::Secret,
        Check::Token { prefix: 7 },
        r"(?-u)\bsk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_-]{32,200}",
    ),
    builtin(
        EntityKind::Secret,
        Check::Token { prefix: 3 },
        r"(?-u)\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}",
    ),
    builtin(
        EntityKind::Secret,
        Check::Token { prefix: 4 },
        r"(?-u)\bgh[pousr]_[A-Za-z0-9]{36,76}",
    ),
    builtin(
        EntityKind::Secret,
        Check::Token { prefix: 11 },
        r"(?-u)\bgithub_pat_[A-Za-z0-9_]{60,120}",
    ),
    builtin(
        EntityKind::Secret,
        Check::Token { prefix: 5 },
        r"(?-u)\bxox[abposr]-[A-Za-z0-9-]{10,200}",
    ),
    builtin(
        EntityKind::Secret,
        Check::AwsKey,
        r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}\b",
    ),
    builtin(
        EntityKind::Secret,
        Check::KeyValue,
        r#"(?i-u)\b[a-z0-9_.-]{0,24}(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|pwd|access[_.-]?key|auth[_.-]?key|client[_.-]?secret|private[_.-]?key|credentials?)[a-z0-9_.-]{0,16}["']?[ \t]{0,3}(?::=|=>|[:=])[ \t]{0,3}["']?[A-Za-z0-9/+=_.~!@#$%^&*-]{8,128}"#,
    ),
    builtin(
        EntityKind::Secret,
        Check::Bearer,
        r"(?i-u)\bbearer[ \t]{1,3}[A-Za-z0-9._~+/=-]{20,200}",
    ),
    builtin(
        EntityKind::Ip,
        Check::Absorb,
        r"(?-u)\b[0-9]{1,3}(?:\.[0-9]{1,10}){4,8}\b",
    ),
    builtin(
        EntityKind::Email,
        Check::Email,
        r"(?i-u)\b[a-z0-9._%+-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\.){1,4}[a-z]{2,24}\b",
    ),
    builtin(
        EntityKind::Iban,
        Check::Iban,
        r"(?-u)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    ),
    builtin(
        EntityKind::CreditCard,
        Check::Card,
        r"(?-u)\b[2-6][0-9]{12,18}\b",
    ),
    builtin(
        EntityKind::CreditCard,
        Check::Card,
        r"(?-u)\b[2-6][0-9]{3}(?:[ -][0-9]{4}){3}(?:[ -][0-9]{1,3})?\b",
    ),
    builtin(
        EntityKind::CreditCard,
        Check::Card,
        r"(?-u)\b3[47][0-9]{2}[ -][0-9]{6}[ -][0-9]{5}\b",
    ),
    builtin(
        EntityKind::CreditCard,
        Check::Card,
        r"(?-u)\b3[0689][0-9]{2}[ -][0-9]{6}[ -][0-9]{4}\b",
    ),
    builtin(
        EntityKind::Ssn,
        Check::Ssn,
        r"(?-u)\b[0-9]{3}(?:-[0-9]{2}-| [0-9]{2} )[0-9]{4}\b",
    ),
    builtin(
        EntityKind::Phone,
        Check::PhoneIntl,
        r"(?-u)\+[1-9][0-9]{0,2}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-]?[0-9]{1,5}){1,6}",
    ),
    builtin(
        EntityKind::Phone,
        Check::PhoneNanp,
        r"(?-u)(?:\b1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}\b",
    ),
    builtin(
        EntityKind::Phone,
        Check::PhoneNational,
        r"(?-u)\b0[1-9][0-9]{0,4}(?:(?: [0-9]{2,8}){1,5}|(?:-[0-9]{2,8}){2,4})\b",
    ),
    builtin(
        EntityKind::Ip,
        Check::Ipv4,
        r"(?-u)\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b",
    ),
    builtin(
        EntityKind::Ip,
        Check::Ipv6,
        r"(?i-u)\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){1,6}:(?:[0-9]{1,3}\.){3}[0-9]{1,3}:?|\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,8}",
    ),
    builtin(
        EntityKind::Ip,
        Check::Ipv6,
        r"(?i-u)::(?:[0-9a-f]{1,4}:){0,6}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9a-f]{1,4}):?",
    ),
];

/// Checks a pattern for the automaton: it must parse, match at least one byte and at
/// most [`MAX_ENTITY_BYTES`].
pub(crate) fn check_custom_pattern(pattern: &str) -> Result<(), String> {
    let hir = syntax::parse(pattern).map_err(|e| format!("invalid pattern: {e}"))?;
    let props = hir.properties();
    match props.maximum_len() {
        Some(max) if max <= MAX_ENTITY_BYTES => {}
        _ => {
            return Err(format!(
                "the pattern can match more than {MAX_ENTITY_BYTES} bytes; bound its \
                 repetitions (`{{1,40}}` instead of `+`)"
            ))
        }
    }
    if props.minimum_len() == Some(0) {
        return Err("the pattern can match the empty string".to_owned());
    }
    Ok(())
}

/// The pattern for one deny word or phrase, already normalized: whole words,
/// case-insensitive, any short whitespace between the words of a phrase. `None` for a
/// blank entry.
pub(crate) fn deny_alternative(word: &str) -> Option<String> {
    let parts: Vec<String> = word.split_whitespace().map(regex_escape).collect();
    if parts.is_empty() {
        return None;
    }
    let ascii = word.is_ascii();
    let mut alt = String::from(if ascii { "(?i-u:" } else { "(?i:" });
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if edge(word.trim_start().chars().next()) {
        alt.push_str(r"(?-u:\b)");
    }
    alt.push_str(&parts.join(r"[ \t\r\n]{1,4}"));
    if edge(word.trim_end().chars().next_back()) {
        alt.push_str(r"(?-u:\b)");
    }
    alt.push(')');
    Some(alt)
}

pub(crate) fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_bounded() {
        for b in BUILTINS {
            let hir = syntax::parse(b.pattern).unwrap();
            let max = hir.properties().maximum_len().unwrap();
            assert!(
                max <= MAX_ENTITY_BYTES,
                "{} can match {max} bytes",
                b.pattern
            );
            assert_ne!(hir.properties().minimum_len(), Some(0), "{}", b.pattern);
        }
    }

    #[test]
    fn custom_patterns_checked() {
        assert!(check_custom_pattern("EMP-[0-9]{6}").is_ok());
        assert!(check_custom_pattern("EMP-[0-9]+").is_err());
        assert!(check_custom_pattern("a*").is_err());
        assert!(check_custom_pattern("(").is_err());
    }

    #[test]
    fn deny_words_escape() {
        for w in ["c++", "project  falcon", "Müller", "秘密"] {
            let p = deny_alternative(w).unwrap();
            assert!(check_custom_pattern(&p).is_ok(), "{p}");
        }
        assert!(deny_alternative("  ").is_none());
    }
}
