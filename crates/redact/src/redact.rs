//! [`Redactor`]: applies each direction's actions to what the detectors find, on whole
//! texts (request fields, non-streamed responses); see `stream` for deltas.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{Action, Direction, EntityKind, RedactConfig};
use crate::detect::{Detector, Hit, Kind, ScanState};
use crate::normalize::{normalize, View};
use crate::pseudonym::Pseudonyms;
use crate::stream::StreamRedactor;
use crate::RedactError;

/// How many entities of one kind got one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub kind: Kind,
    pub action: Action,
    /// See [`Kind::reason_code`].
    pub reason_code: &'static str,
    pub count: u32,
}

/// A text after redaction; borrowed when nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted<'t> {
    pub text: Cow<'t, str>,
    /// One entry per kind and action applied, in order of first occurrence.
    pub applied: Vec<Applied>,
}

/// A [`Action::Block`] rule matched: the request must be refused (HTTP 400 with
/// `reason_code` in the error body) or the response stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub kind: Kind,
    /// See [`Kind::reason_code`].
    pub reason_code: &'static str,
    /// The config name of the rule: `credit_card`, a custom rule's name, `deny`.
    pub rule: Box<str>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blocked by the redaction rule `{}` ({})",
            self.rule, self.reason_code
        )
    }
}

impl std::error::Error for Blocked {}

/// Actions of one direction, resolved from the config once.
#[derive(Debug, Clone)]
struct Actions {
    entity: [Action; EntityKind::ALL.len()],
    custom: Vec<Action>,
    deny: Action,
}

impl Actions {
    fn new(config: &RedactConfig, direction: Direction) -> Actions {
        Actions {
            entity: EntityKind::ALL.map(|k| config.entity_action(k, direction)),
            custom: (0..config.custom.len())
                .map(|i| config.custom_action(i, direction))
                .collect(),
            deny: config.deny_action(direction),
        }
    }

    fn get(&self, kind: Kind) -> Action {
        match kind {
            Kind::Entity(k) => {
                let i = EntityKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
                self.entity[i]
            }
            Kind::Custom(i) => self
                .custom
                .get(usize::from(i))
                .copied()
                .unwrap_or(Action::Allow),
            Kind::Deny => self.deny,
        }
    }

    fn same_kinds(&self, other: &Actions) -> bool {
        let active = |a: &Action| *a != Action::Allow;
        self.entity
            .iter()
            .map(active)
            .eq(other.entity.iter().map(active))
            && self
                .custom
                .iter()
                .map(active)
                .eq(other.custom.iter().map(active))
            && active(&self.deny) == active(&other.deny)
    }
}

/// Where replacements go: the output text, the tally, and what they depend on.
pub(crate) struct Sink<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) pseudonyms: Option<&'a mut Pseudonyms>,
    pub(crate) out: &'a mut String,
    pub(crate) applied: &'a mut Vec<Applied>,
}

/// One direction: its detector (only the kinds it acts on) and actions.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) detector: Arc<Detector>,
    actions: Actions,
}

/// Detects and redacts per the config; built once per config snapshot, shared by every
/// request (wrap it in an [`Arc`] to start streams).
#[derive(Debug)]
pub struct Redactor {
    request: Option<Side>,
    response: Option<Side>,
    hash_key: Box<[u8]>,
}

impl Redactor {
    pub fn new(config: &RedactConfig) -> Result<Redactor, RedactError> {
        let issues = config.validate();
        if !issues.is_empty() {
            return Err(RedactError::Config(issues));
        }
        let request = Actions::new(config, Direction::Request);
        let response = Actions::new(config, Direction::Response);
        let build = |actions: &Actions| {
            Detector::build(config, |kind| actions.get(kind) != Action::Allow).map(Arc::new)
        };
        let request_detector = build(&request)?;
        let response_detector = if request.same_kinds(&response) {
            Arc::clone(&request_detector)
        } else {
            build(&response)?
        };
        let side = |detector: Arc<Detector>, actions: Actions| {
            (!detector.is_empty()).then_some(Side { detector, actions })
        };
        Ok(Redactor {
            request: side(request_detector, request),
            response: side(response_detector, response),
            hash_key: config.hash_key.as_bytes().into(),
        })
    }

    /// Whether anything is looked for in `direction`.
    pub fn is_active(&self, direction: Direction) -> bool {
        self.side(direction).is_some()
    }

    /// The detector used in `direction`, if any.
    pub fn detector(&self, direction: Direction) -> Option<&Detector> {
        self.side(direction).map(|s| &*s.detector)
    }

    pub(crate) fn side(&self, direction: Direction) -> Option<&Side> {
        match direction {
            Direction::Request => self.request.as_ref(),
            Direction::Response => self.response.as_ref(),
        }
    }

    /// Redacts one request text (a message, a tool result…). Pseudonymized values are
    /// recorded in `pseudonyms`, which the caller keeps for the response: use one map for
    /// all texts of a request so that a value gets the same placeholder everywhere.
    pub fn redact_request<'t>(
        &self,
        text: &'t str,
        tenant: &str,
        pseudonyms: &mut Pseudonyms,
    ) -> Result<Redacted<'t>, Blocked> {
        self.redact_whole(Direction::Request, text, tenant, Some(pseudonyms))
    }

    /// Redacts one whole response text; [`Action::Pseudonymize`] masks here. Gives the same
    /// text as a [`StreamRedactor`] fed the same text in any pieces.
    pub fn redact_response<'t>(
        &self,
        text: &'t str,
        tenant: &str,
    ) -> Result<Redacted<'t>, Blocked> {
        self.redact_whole(Direction::Response, text, tenant, None)
    }

    /// A redactor for one response stream of `tenant`.
    pub fn stream(self: &Arc<Self>, tenant: &str) -> StreamRedactor {
        StreamRedactor::new(Arc::clone(self), tenant)
    }

    fn redact_whole<'t>(
        &self,
        direction: Direction,
        text: &'t str,
        tenant: &str,
        pseudonyms: Option<&mut Pseudonyms>,
    ) -> Result<Redacted<'t>, Blocked> {
        let Some(side) = self.side(direction) else {
            return Ok(Redacted {
                text: Cow::Borrowed(text),
                applied: Vec::new(),
            });
        };
        let buf = normalize(text);
        let view = buf
            .as_ref()
            .map_or_else(|| View::plain(text), |b| b.view(text));
        let mut out = String::new();
        let mut applied = Vec::new();
        let mut sink = Sink {
            tenant,
            pseudonyms,
            out: &mut out,
            applied: &mut applied,
        };
        let mut last = 0;
        let mut state = ScanState::default();
        side.detector.scan(&view, &mut state, true, &mut |hit| {
            let start = view.orig_start(hit.start);
            let end = view.orig_end(hit.end);
            sink.out.push_str(&text[last..start]);
            self.apply(side, &view, hit, start..end, &mut sink)?;
            last = end;
            Ok(())
        })?;
        if applied.is_empty() {
            return Ok(Redacted {
                text: Cow::Borrowed(text),
                applied,
            });
        }
        out.push_str(&text[last..]);
        Ok(Redacted {
            text: Cow::Owned(out),
            applied,
        })
    }

    /// Writes the replacement of one entity piece to the sink and counts it; a piece that
    /// continues an open secret from an earlier buffer writes nothing.
    pub(crate) fn apply(
        &self,
        side: &Side,
        view: &View<'_>,
        hit: Hit,
        orig: std::ops::Range<usize>,
        sink: &mut Sink<'_>,
    ) -> Result<(), Blocked> {
        let action = side.actions.get(hit.kind);
        let detector = &side.detector;
        if action == Action::Block {
            return Err(Blocked {
                kind: hit.kind,
                reason_code: hit.kind.reason_code(),
                rule: detector.rule_name(hit.kind).into(),
            });
        }
        if !hit.fresh {
            return Ok(());
        }
        let original = &view.orig[orig];
        let label = detector.label(hit.kind);
        let value = &view.text[hit.start..hit.end];
        let out = &mut *sink.out;
        match action {
            Action::Allow => out.push_str(original),
            Action::Hash if !hit.open => {
                let canonical = canonical(hit.kind, value);
                let digest = pseudonym_hash(&self.hash_key, sink.tenant, label, &canonical);
                out.push('[');
                out.push_str(label);
                out.push('_');
                out.push_str(&digest);
                out.push(']');
            }
            Action::Pseudonymize if sink.pseudonyms.is_some() => {
                let canonical = canonical(hit.kind, value);
                let placeholder = sink
                    .pseudonyms
                    .as_deref_mut()
                    .and_then(|p| p.placeholder(label, &canonical, original));
                match placeholder {
                    Some(placeholder) => out.push_str(placeholder),
                    None => mask(label, out),
                }
            }
            _ => mask(label, out),
        }
        match sink
            .applied
            .iter_mut()
            .find(|a| a.kind == hit.kind && a.action == action)
        {
            Some(a) => a.count = a.count.saturating_add(1),
            None => sink.applied.push(Applied {
                kind: hit.kind,
                action,
                reason_code: hit.kind.reason_code(),
                count: 1,
            }),
        }
        Ok(())
    }
}

fn mask(label: &str, out: &mut String) {
    out.push('[');
    out.push_str(label);
    out.push(']');
}

/// The form of a value that two spellings of the same entity share: digits of numbers,
/// lower-case e-mail addresses, compact upper-case IBANs, parsed IP addresses.
fn canonical(kind: Kind, value: &str) -> Cow<'_, str> {
    match kind {
        Kind::Entity(EntityKind::Email) => Cow::Owned(value.to_ascii_lowercase()),
        Kind::Entity(EntityKind::Phone | EntityKind::CreditCard | EntityKind::Ssn) => {
            Cow::Owned(value.chars().filter(char::is_ascii_digit).collect())
        }
        Kind::Entity(EntityKind::Iban) => Cow::Owned(
            value
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        ),
        Kind::Entity(EntityKind::Ip) => {
            if let Ok(v4) = value.parse::<Ipv4Addr>() {
                Cow::Owned(v4.to_string())
            } else if let Ok(v6) = value.parse::<Ipv6Addr>() {
                Cow::Owned(v6.to_string())
            } else {
                Cow::Borrowed(value)
            }
        }
        Kind::Deny => Cow::Owned(
            value
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase(),
        ),
        Kind::Entity(EntityKind::Secret) | Kind::Custom(_) => Cow::Borrowed(value),
    }
}

/// Eight hex digits of SHA-256 over the key, tenant, label and value, each length-prefixed
/// so that no two inputs share an encoding.
fn pseudonym_hash(key: &[u8], tenant: &str, label: &str, value: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [key, tenant.as_bytes(), label.as_bytes(), value.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(yaml: &str) -> Redactor {
        let config: RedactConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Redactor::new(&config).unwrap()
    }

    #[test]
    fn masks_and_borrows() {
        let r = redactor("{}");
        let mut p = Pseudonyms::new();
        let out = r
            .redact_request("mail a.b@example.com or call 415-555-2671", "t", &mut p)
            .unwrap();
        assert_eq!(out.text, "mail [EMAIL] or call [PHONE]");
        assert_eq!(out.applied.len(), 2);
        assert_eq!(out.applied[0].reason_code, "pii_email");
        let plain = r.redact_request("nothing here", "t", &mut p).unwrap();
        assert!(matches!(plain.text, Cow::Borrowed(_)));
    }

    #[test]
    fn hashes_stably_per_tenant() {
        let r = redactor("action: hash\nhash_key: 0123456789abcdef0123");
        let a = r
            .redact_response("x A.B@Example.com y a.b@example.com", "t1")
            .unwrap();
        let words: Vec<&str> = a.text.split(' ').collect();
        assert_eq!(words[1], words[3]);
        assert!(words[1].starts_with("[EMAIL_") && words[1].len() == "[EMAIL_12345678]".len());
        let b = r.redact_response("a.b@example.com", "t2").unwrap();
        assert_ne!(b.text, words[1]);
    }

    #[test]
    fn pseudonymizes_and_restores() {
        let r = redactor("action: pseudonymize");
        let mut p = Pseudonyms::new();
        let a = r
            .redact_request("from a@x.io to b@y.io cc A@X.IO", "t", &mut p)
            .unwrap();
        assert_eq!(a.text, "from [EMAIL_1] to [EMAIL_2] cc [EMAIL_1]");
        assert_eq!(p.restore("reply to [EMAIL_2]"), "reply to b@y.io");
        let resp = r.redact_response("new c@z.io", "t").unwrap();
        assert_eq!(resp.text, "new [EMAIL]");
    }

    #[test]
    fn blocks_with_reason() {
        let r = redactor("actions: { credit_card: block }");
        let err = r
            .redact_response("pay 4111111111111111 now", "t")
            .unwrap_err();
        assert_eq!(err.reason_code, "pii_credit_card");
        assert_eq!(&*err.rule, "credit_card");
    }

    #[test]
    fn directions_differ() {
        let r = redactor(
            "actions: { email: { request: allow, response: mask } }\non: [request, response]",
        );
        let mut p = Pseudonyms::new();
        assert_eq!(
            r.redact_request("a@x.io", "t", &mut p).unwrap().text,
            "a@x.io"
        );
        assert_eq!(r.redact_response("a@x.io", "t").unwrap().text, "[EMAIL]");
    }

    #[test]
    fn shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Redactor>();
        send_sync::<crate::StreamRedactor>();
        send_sync::<crate::Detector>();
    }

    #[test]
    fn large_deny_lists_build() {
        let words: Vec<String> = (0..5000).map(|i| format!("codeword{i}x")).collect();
        let config = RedactConfig {
            deny: Some(crate::DenyList {
                words,
                action: Some(crate::ActionRule::Same(Action::Mask)),
            }),
            ..RedactConfig::default()
        };
        let r = Arc::new(Redactor::new(&config).unwrap());
        let text = "say codeword4999x and codeword12x, not codeword12";
        let whole = r.redact_response(text, "t").unwrap().text.into_owned();
        assert_eq!(whole, "say [REDACTED] and [REDACTED], not codeword12");
        let mut s = r.stream("t");
        let mut out = String::new();
        for c in text.as_bytes().chunks(3) {
            s.push(std::str::from_utf8(c).unwrap(), &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        assert_eq!(out, whole);
    }

    #[test]
    fn rejects_bad_config() {
        let config: RedactConfig =
            serde_yaml_ng::from_str("action: hash\ncustom: [{ name: Bad, pattern: 'a+' }]")
                .unwrap();
        let Err(RedactError::Config(issues)) = Redactor::new(&config) else {
            panic!("accepted")
        };
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["custom[0].name", "custom[0].pattern", "hash_key"]);
        let long = "w ".repeat(200);
        let config: RedactConfig =
            serde_yaml_ng::from_str(&format!("deny: {{ words: ['{long}', ' '] }}")).unwrap();
        let paths: Vec<String> = config.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["deny.words[0]", "deny.words[1]"]);
        assert!(serde_yaml_ng::from_str::<RedactConfig>("colour: red").is_err());
    }
}
