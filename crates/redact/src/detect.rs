//! [`Detector`]: every recognizer compiled into one multi-pattern automaton, run once over
//! the normalized text; checks run on candidates only.
//!
//! Detection is a left-to-right walk: take the leftmost candidate at or after the current
//! position (the earliest pattern wins a tie), confirm it or try the other patterns that
//! match at the same place, then continue after the entity (or one character further if
//! nothing was confirmed). The same walk serves whole texts and streams. A stream runs it
//! on the text received so far and stops at the first position where a match could still
//! be in progress: the start of the earliest anchored run of the automaton that has not
//! died by the end of the buffer (a lazy DFA answers that). Everything before that position
//! is decided exactly as it would be in the whole text; only the rest is held back, and
//! since no pattern matches more than [`MAX_ENTITY_BYTES`], neither is the hold-back.
//!
//! JWTs and private-key blocks are the exception: their patterns match an opener (a JWT
//! header and the start of its payload, a `-----BEGIN … PRIVATE KEY-----` line), and the
//! secret then extends by a simple rule (token characters; the key block's alphabet up to
//! its END line), up to [`MAX_OPEN_SECRET_BYTES`]. A stream emits the placeholder as soon
//! as the opener is confirmed and swallows the rest as it arrives, holding nothing back.

use std::convert::Infallible;
use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::meta::Regex;
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::pool::Pool;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, Input, Match, MatchKind, PatternID};

use crate::config::{EntityKind, RedactConfig};
use crate::normalize::{normalize, NormBuf, View};
use crate::patterns::{check_custom_pattern, deny_alternative, Check, BUILTINS};
use crate::validate;
use crate::RedactError;

/// Longest match any pattern (built-in, custom or deny word) may have, in normalized bytes.
/// It is what a stream holds back at most while an entity could still be forming, so it
/// trades latency (a held-back word waits for the next delta) against the longest
/// recognizable entity; 256 covers e-mail addresses, provider keys and IBANs with room.
pub const MAX_ENTITY_BYTES: usize = 256;

/// Longest JWT or private-key block followed after its opener; the secret ends there. A
/// 4096-bit RSA key in PEM is about 3.3 KiB; 64 KiB leaves room for large tokens without
/// letting an unterminated block swallow a whole answer.
pub const MAX_OPEN_SECRET_BYTES: usize = 64 * 1024;

/// Memory of one lazy-DFA cache used for the "could a match still be in progress" question.
/// The automaton only walks the short tail of a stream buffer, so a small cache suffices;
/// caches are pooled per thread, not per stream. A rule set too large for it (thousands of
/// deny words) gets the automaton's minimum instead.
const LIVENESS_CACHE_BYTES: usize = 1 << 20;

/// What was found: a built-in kind, a custom rule (by its index in the config), or a deny
/// word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Entity(EntityKind),
    Custom(u16),
    Deny,
}

impl Kind {
    /// Low-cardinality code for error bodies and metric labels: `pii_email`, `secret`,
    /// `custom_pattern`, `deny_word`…
    pub fn reason_code(self) -> &'static str {
        match self {
            Kind::Entity(EntityKind::Email) => "pii_email",
            Kind::Entity(EntityKind::Phone) => "pii_phone",
            Kind::Entity(EntityKind::CreditCard) => "pii_credit_card",
            Kind::Entity(EntityKind::Ssn) => "pii_ssn",
            Kind::Entity(EntityKind::Iban) => "pii_iban",
            Kind::Entity(EntityKind::Ip) => "pii_ip_address",
            Kind::Entity(EntityKind::Secret) => "secret",
            Kind::Custom(_) => "custom_pattern",
            Kind::Deny => "deny_word",
        }
    }
}

/// One detected entity; `start..end` are byte offsets into the text given to
/// [`Detector::find`], on character boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entity {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    kind: Kind,
    check: Check,
}

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// The compiled automata of a non-empty rule set.
struct Engine {
    /// Leftmost-first search for candidates.
    regex: Regex,
    /// The same patterns as a lazy DFA, stepped by hand to tell whether an anchored match
    /// attempt is still alive at the end of a buffer. It keeps every pattern's threads
    /// (`MatchKind::All`): a candidate that fails its check is retried with the other
    /// patterns, so their runs must be finished too before the place is decided.
    dfa: DFA,
    caches: Pool<Cache, CacheFn>,
}

/// Finds entities; built once per config and shared by every request and stream.
pub struct Detector {
    engine: Option<Engine>,
    rules: Vec<Rule>,
    /// Mask labels of the config's custom rules, by index.
    custom_labels: Vec<Box<str>>,
    custom_names: Vec<Box<str>>,
    /// One more than the longest match: starts further back than this from the end of a
    /// buffer are decided.
    window: usize,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("patterns", &self.rules.len())
            .field("custom", &self.custom_names)
            .finish()
    }
}

/// A piece of an entity in normalized coordinates, as the walk reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// A JWT or key block: its placeholder cannot depend on its value.
    pub(crate) open: bool,
    /// The first piece of its entity: the placeholder goes here. Later pieces of an open
    /// secret that spans buffers are swallowed; they start at the buffer's start.
    pub(crate) fresh: bool,
    /// The open secret goes on past this piece; if the piece ends inside an original
    /// character, that character belongs to the next piece.
    pub(crate) partial: bool,
}

/// Where a walk over a buffer stopped: everything before `at` is decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop {
    pub(crate) at: usize,
    /// Stopped inside an open secret, whose bytes up to `at` are swallowed.
    pub(crate) in_open: bool,
}

/// Walk state carried from one stream buffer to the next.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanState {
    pub(crate) pos: usize,
    open: Option<OpenRun>,
}

#[derive(Debug, Clone)]
struct OpenRun {
    kind: Kind,
    cont: Continuation,
    consumed: usize,
    /// Start of the secret while its placeholder is still to be emitted.
    start: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Continuation {
    Jwt { dots: u8 },
    Pem { dashes: u8, phase: PemPhase },
}

#[derive(Debug, Clone, Copy)]
enum PemPhase {
    Body,
    E,
    En,
    Label(u8),
}

/// Longest label between `-----END` and the closing dashes that is still taken for one.
const MAX_PEM_LABEL: u8 = 64;

enum Step {
    Take,
    /// The secret ends before this byte.
    End,
    /// The secret ends after this byte.
    TakeAndEnd,
    /// Undecided until the next byte arrives.
    Wait,
}

impl Continuation {
    fn step(&mut self, b: u8, next: Option<u8>, eof: bool) -> Step {
        match self {
            Continuation::Jwt { dots } => {
                let token = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
                if token(b) {
                    Step::Take
                } else if b == b'.' && *dots < 4 {
                    match next {
                        Some(n) if token(n) => {
                            *dots += 1;
                            Step::Take
                        }
                        None if !eof => Step::Wait,
                        _ => Step::End,
                    }
                } else {
                    Step::End
                }
            }
            Continuation::Pem { dashes, phase } => {
                let alphabet = b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'+' | b'/'
                            | b'='
                            | b' '
                            | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'-'
                            | b':'
                            | b','
                            | b'\\'
                    );
                if !alphabet {
                    return Step::End;
                }
                let dash = b == b'-';
                match *phase {
                    PemPhase::Body => {
                        if b == b'E' && *dashes >= 5 {
                            *phase = PemPhase::E;
                        }
                    }
                    PemPhase::E => {
                        *phase = if b == b'N' {
                            PemPhase::En
                        } else {
                            PemPhase::Body
                        }
                    }
                    PemPhase::En => {
                        *phase = if b == b'D' {
                            PemPhase::Label(0)
                        } else {
                            PemPhase::Body
                        }
                    }
                    PemPhase::Label(n) => {
                        if dash {
                            if *dashes >= 4 {
                                return Step::TakeAndEnd;
                            }
                        } else if n >= MAX_PEM_LABEL {
                            *phase = PemPhase::Body;
                        } else {
                            *phase = PemPhase::Label(n + 1);
                        }
                    }
                }
                *dashes = if dash { dashes.saturating_add(1) } else { 0 };
                Step::Take
            }
        }
    }
}

impl OpenRun {
    /// Follows the secret from `from`; returns where it stopped and whether it ended.
    fn advance(&mut self, h: &[u8], from: usize, eof: bool) -> (usize, bool) {
        let mut i = from;
        while i < h.len() {
            if self.consumed >= MAX_OPEN_SECRET_BYTES {
                return (i, true);
            }
            match self.cont.step(h[i], h.get(i + 1).copied(), eof) {
                Step::Take => {
                    i += 1;
                    self.consumed += 1;
                }
                Step::End => return (i, true),
                Step::TakeAndEnd => return (i + 1, true),
                Step::Wait => return (i, false),
            }
        }
        (i, eof)
    }
}

/// What became of a candidate.
enum Resolution {
    /// An entity (or an absorbed look-alike) of this rule at this span.
    Found(Rule, usize, usize),
    /// Nothing here; continue after this offset.
    Skip(usize),
    /// Nothing here; continue one character after the candidate's start.
    Next,
}

fn next_char_boundary(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j
}

/// A normalized word as the deny pattern sees it.
fn normalized_word(word: &str) -> String {
    let mut buf = NormBuf::new();
    buf.push(word, 0);
    buf.text
}

/// The pattern for one deny word, checked against the length bound.
pub(crate) fn deny_word_pattern(word: &str) -> Result<Option<String>, String> {
    let Some(alt) = deny_alternative(&normalized_word(word)) else {
        return Ok(None);
    };
    check_custom_pattern(&alt).map_err(|_| format!("longer than {MAX_ENTITY_BYTES} bytes"))?;
    Ok(Some(alt))
}

impl Detector {
    /// Compiles the recognizers of every kind, custom rule and deny word `config` enables.
    pub fn new(config: &RedactConfig) -> Result<Detector, RedactError> {
        Detector::build(config, |_| true)
    }

    /// Compiles only the recognizers whose kind `include` accepts.
    pub(crate) fn build(
        config: &RedactConfig,
        include: impl Fn(Kind) -> bool,
    ) -> Result<Detector, RedactError> {
        let issues = config.validate();
        if !issues.is_empty() {
            return Err(RedactError::Config(issues));
        }
        let mut patterns: Vec<String> = Vec::new();
        let mut rules = Vec::new();
        for b in BUILTINS {
            let kind = Kind::Entity(b.kind);
            if config.entities.contains(&b.kind) && include(kind) {
                patterns.push(b.pattern.to_owned());
                rules.push(Rule {
                    kind,
                    check: b.check,
                });
            }
        }
        for (i, rule) in config.custom.iter().enumerate() {
            let index =
                u16::try_from(i).map_err(|_| RedactError::Build("too many custom rules".into()))?;
            let kind = Kind::Custom(index);
            if include(kind) {
                patterns.push(rule.pattern.clone());
                rules.push(Rule {
                    kind,
                    check: Check::Accept,
                });
            }
        }
        if let Some(deny) = config.deny.as_ref().filter(|_| include(Kind::Deny)) {
            let mut alternatives = Vec::with_capacity(deny.words.len());
            for word in &deny.words {
                if let Some(alt) = deny_word_pattern(word).map_err(RedactError::Build)? {
                    alternatives.push(alt);
                }
            }
            if !alternatives.is_empty() {
                patterns.push(format!("(?:{})", alternatives.join("|")));
                rules.push(Rule {
                    kind: Kind::Deny,
                    check: Check::Accept,
                });
            }
        }
        let custom_names: Vec<Box<str>> = config
            .custom
            .iter()
            .map(|c| c.name.as_str().into())
            .collect();
        let custom_labels = config
            .custom
            .iter()
            .map(|c| c.name.to_ascii_uppercase().into_boxed_str())
            .collect();
        if patterns.is_empty() {
            return Ok(Detector {
                engine: None,
                rules,
                custom_labels,
                custom_names,
                window: 0,
            });
        }
        let build = |e: &dyn fmt::Display| RedactError::Build(e.to_string());
        let hirs = syntax::parse_many(&patterns).map_err(|e| build(&e))?;
        let longest = hirs
            .iter()
            .map(|h| h.properties().maximum_len().unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        if longest > MAX_ENTITY_BYTES {
            return Err(RedactError::Build(format!(
                "a pattern can match more than {MAX_ENTITY_BYTES} bytes"
            )));
        }
        let regex = Regex::builder()
            .build_many_from_hir(&hirs)
            .map_err(|e| build(&e))?;
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().which_captures(WhichCaptures::None))
            .build_many_from_hir(&hirs)
            .map_err(|e| build(&e))?;
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .unicode_word_boundary(true)
                    .cache_capacity(LIVENESS_CACHE_BYTES)
                    .skip_cache_capacity_check(true),
            )
            .build_from_nfa(nfa)
            .map_err(|e| build(&e))?;
        let for_pool = dfa.clone();
        let create: CacheFn = Box::new(move || Cache::new(&for_pool));
        Ok(Detector {
            engine: Some(Engine {
                regex,
                dfa,
                caches: Pool::new(create),
            }),
            rules,
            custom_labels,
            custom_names,
            window: longest + 1,
        })
    }

    /// Whether this detector looks for anything at all.
    pub fn is_empty(&self) -> bool {
        self.engine.is_none()
    }

    /// The word inside a mask: `EMAIL`, the upper-cased custom rule name, `REDACTED` for
    /// deny words.
    pub fn label(&self, kind: Kind) -> &str {
        match kind {
            Kind::Entity(k) => k.label(),
            Kind::Custom(i) => self
                .custom_labels
                .get(usize::from(i))
                .map_or("CUSTOM", |l| l),
            Kind::Deny => "REDACTED",
        }
    }

    /// The config name of what was found: `email`, the custom rule's name, `deny`.
    pub fn rule_name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Entity(k) => k.name(),
            Kind::Custom(i) => self
                .custom_names
                .get(usize::from(i))
                .map_or("custom", |n| n),
            Kind::Deny => "deny",
        }
    }

    /// Every entity in `text`, in order, not overlapping, with offsets into `text`.
    pub fn find(&self, text: &str) -> Vec<Entity> {
        let mut found = Vec::new();
        if self.engine.is_none() {
            return found;
        }
        let buf = normalize(text);
        let view = buf
            .as_ref()
            .map_or_else(|| View::plain(text), |b| b.view(text));
        let mut state = ScanState::default();
        let walked = self.scan(&view, &mut state, true, &mut |hit: Hit| {
            found.push(Entity {
                kind: hit.kind,
                start: view.orig_start(hit.start),
                end: view.orig_end(hit.end),
            });
            Ok::<(), Infallible>(())
        });
        match walked {
            Ok(_) => found,
            Err(never) => match never {},
        }
    }

    /// The walk (see the module docs) from `state.pos` over `view`; `eof` says no more text
    /// follows. Calls `on_hit` for each entity piece in order and stops early on its error.
    pub(crate) fn scan<E>(
        &self,
        view: &View<'_>,
        state: &mut ScanState,
        eof: bool,
        on_hit: &mut dyn FnMut(Hit) -> Result<(), E>,
    ) -> Result<Stop, E> {
        let len = view.text.len();
        let Some(engine) = &self.engine else {
            return Ok(Stop {
                at: len,
                in_open: false,
            });
        };
        let h = view.text.as_bytes();
        state.pos = state.pos.max(view.ctx);
        let mut cache = None;
        let mut alive: Option<usize> = None;
        loop {
            if let Some(run) = state.open.as_mut() {
                let from = state.pos;
                let (end, done) = run.advance(h, from, eof);
                if run.start.is_some() || end > from || view.splits_char(from) {
                    on_hit(Hit {
                        kind: run.kind,
                        start: run.start.unwrap_or(from),
                        end,
                        open: true,
                        fresh: run.start.is_some(),
                        partial: !done,
                    })?;
                }
                run.start = None;
                if !done {
                    state.pos = end;
                    return Ok(Stop {
                        at: end,
                        in_open: true,
                    });
                }
                state.open = None;
                state.pos = view.snap_end(end);
                continue;
            }
            let pos = state.pos;
            if pos >= len {
                return Ok(Stop {
                    at: len,
                    in_open: false,
                });
            }
            let limit = if eof {
                len
            } else {
                match alive {
                    Some(a) if a >= pos => a,
                    _ => {
                        let cache = cache.get_or_insert_with(|| engine.caches.get());
                        let a = self.first_alive(engine, cache, view, pos);
                        alive = Some(a);
                        a
                    }
                }
            };
            let found = engine.regex.search(&Input::new(h).span(pos..len));
            let Some(m) = found.filter(|m| m.start() < limit) else {
                return Ok(Stop {
                    at: limit,
                    in_open: false,
                });
            };
            match self.resolve(engine, h, m) {
                Resolution::Found(rule, s, e) => match rule.check {
                    Check::Absorb => state.pos = view.snap_end(e),
                    Check::PemOpener | Check::JwtOpener => {
                        let cont = if rule.check == Check::PemOpener {
                            Continuation::Pem {
                                dashes: 0,
                                phase: PemPhase::Body,
                            }
                        } else {
                            Continuation::Jwt { dots: 1 }
                        };
                        state.open = Some(OpenRun {
                            kind: rule.kind,
                            cont,
                            consumed: e - s,
                            start: Some(s),
                        });
                        state.pos = e;
                    }
                    _ => {
                        on_hit(Hit {
                            kind: rule.kind,
                            start: s,
                            end: e,
                            open: false,
                            fresh: true,
                            partial: false,
                        })?;
                        state.pos = view.snap_end(e);
                    }
                },
                Resolution::Skip(e) => state.pos = view.snap_end(e),
                Resolution::Next => state.pos = next_char_boundary(view.text, m.start()),
            }
        }
    }

    /// Confirms candidate `m`, or else the first other pattern matching at its start that
    /// confirms. Patterns before `m`'s cannot match there (leftmost-first picked `m`). A
    /// candidate of a distinctive shape (card, SSN, IBAN, IP) that fails its check is
    /// skipped whole: its inner digit groups are not retried as, say, phone numbers; only
    /// operator rules (custom patterns, deny words) still get a chance at its start.
    fn resolve(&self, engine: &Engine, h: &[u8], m: Match) -> Resolution {
        let first = m.pattern().as_usize();
        let Some(&rule) = self.rules.get(first) else {
            return Resolution::Next;
        };
        if let Some((s, e)) = check(rule.check, h, m.start(), m.end()) {
            return Resolution::Found(rule, s, e);
        }
        let skip = rule.check.skips_on_failure();
        for (q, rule) in self.rules.iter().enumerate().skip(first + 1) {
            if skip && rule.check != Check::Accept {
                continue;
            }
            let Ok(pid) = PatternID::new(q) else { break };
            let input = Input::new(h)
                .span(m.start()..h.len())
                .anchored(Anchored::Pattern(pid));
            if let Some(m2) = engine.regex.search(&input) {
                if let Some((s, e)) = check(rule.check, h, m2.start(), m2.end()) {
                    return Resolution::Found(*rule, s, e);
                }
            }
        }
        if skip {
            Resolution::Skip(m.end())
        } else {
            Resolution::Next
        }
    }

    /// The first character boundary at or after `from` where an anchored match attempt is
    /// still alive at the end of the buffer, or the buffer's length if there is none.
    fn first_alive(
        &self,
        engine: &Engine,
        cache: &mut Cache,
        view: &View<'_>,
        from: usize,
    ) -> usize {
        let text = view.text;
        let len = text.len();
        let lo = from.max(len.saturating_sub(self.window));
        (lo..len)
            .filter(|&s| text.is_char_boundary(s))
            .find(|&s| alive_at(&engine.dfa, cache, text.as_bytes(), s))
            .unwrap_or(len)
    }
}

/// Whether an anchored run of the automaton from `s` has not died by the end of `h`: then
/// some continuation of `h` could still produce (or change) a match starting at `s`. Any
/// doubt (a quit byte, a cache failure) answers yes, which only holds back more.
fn alive_at(dfa: &DFA, cache: &mut Cache, h: &[u8], s: usize) -> bool {
    let look_behind = s.checked_sub(1).and_then(|i| h.get(i).copied());
    let config = start::Config::new()
        .anchored(Anchored::Yes)
        .look_behind(look_behind);
    let Ok(mut sid) = dfa.start_state(cache, &config) else {
        return true;
    };
    for &b in &h[s..] {
        sid = match dfa.next_state(cache, sid, b) {
            Ok(next) => next,
            Err(_) => return true,
        };
        if sid.is_dead() {
            return false;
        }
        if sid.is_quit() {
            return true;
        }
    }
    // A match state is reached one byte after its match (the DFA delays matches to resolve
    // look-ahead); when no byte leads on from it, that match is final.
    if sid.is_match() {
        return dfa
            .byte_classes()
            .representatives(..)
            .filter_map(|unit| unit.as_u8())
            .any(|b| {
                dfa.next_state(cache, sid, b)
                    .map_or(true, |next| !next.is_dead())
            });
    }
    true
}

fn check(check: Check, h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    match check {
        Check::PemOpener | Check::Absorb | Check::Accept => Some((s, e)),
        Check::JwtOpener => validate::jwt(h, s, e),
        Check::Token { prefix } => validate::token(h, s, e, prefix),
        Check::AwsKey => validate::aws_key(h, s, e),
        Check::KeyValue => validate::key_value(h, s, e),
        Check::Bearer => validate::bearer(h, s, e),
        Check::Email => validate::email(h, s, e),
        Check::Iban => validate::iban(h, s, e),
        Check::Card => validate::card(h, s, e),
        Check::Ssn => validate::ssn(h, s, e),
        Check::PhoneIntl => validate::phone_intl(h, s, e),
        Check::PhoneNanp => validate::phone_nanp(h, s, e),
        Check::PhoneNational => validate::phone_national(h, s, e),
        Check::Ipv4 => validate::ipv4(h, s, e),
        Check::Ipv6 => validate::ipv6(h, s, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(d: &Detector, text: &str) -> Vec<(Kind, String)> {
        d.find(text)
            .into_iter()
            .map(|e| (e.kind, text[e.start..e.end].to_owned()))
            .collect()
    }

    fn one(text: &str) -> Vec<(EntityKind, String)> {
        let d = Detector::new(&RedactConfig::default()).unwrap();
        kinds(&d, text)
            .into_iter()
            .map(|(k, s)| match k {
                Kind::Entity(e) => (e, s),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn finds_each_kind() {
        use EntityKind::*;
        let cases: &[(&str, EntityKind, &str)] = &[
            (
                "mail john.doe+x@example.co.uk now",
                Email,
                "john.doe+x@example.co.uk",
            ),
            ("call +1 (415) 555-2671.", Phone, "+1 (415) 555-2671"),
            ("call 415-555-2671 today", Phone, "415-555-2671"),
            ("ring 020 7946 0958", Phone, "020 7946 0958"),
            (
                "card 4111 1111 1111 1111 12/26",
                CreditCard,
                "4111 1111 1111 1111",
            ),
            ("amex 3782-822463-10005", CreditCard, "3782-822463-10005"),
            ("ssn 078-05-1121", Ssn, "078-05-1121"),
            (
                "iban DE89 3704 0044 0532 0130 00.",
                Iban,
                "DE89 3704 0044 0532 0130 00",
            ),
            ("host 192.168.1.20:80", Ip, "192.168.1.20"),
            (
                "v6 2001:db8::8a2e:370:7334 ok",
                Ip,
                "2001:db8::8a2e:370:7334",
            ),
            ("aws AKIAIOSFODNN7EXAMPLE", Secret, "AKIAIOSFODNN7EXAMPLE"),
            ("password = \"Xy8#kk29!aQ\"", Secret, "Xy8#kk29!aQ"),
        ];
        for (text, kind, want) in cases {
            assert_eq!(one(text), vec![(*kind, (*want).to_owned())], "{text}");
        }
    }

    #[test]
    fn near_misses() {
        for text in [
            "order ORD-2024-001234 shipped 2024-03-15",
            "version 1.2.3 and 10.0.19045.2965 and 1.2.3.4.5",
            "card 4111 1111 1111 1112",
            "ssn 666-12-3456",
            "meet @ 5pm, ping @channel, icon@2x.png, lodash@4.17.21",
            "max_tokens=4096 token: 42 api_key=YOUR_API_KEY",
            "Face::add and std::vector and 10:30:45",
            "-----BEGIN PUBLIC KEY-----",
        ] {
            assert_eq!(one(text), vec![], "{text}");
        }
    }

    #[test]
    fn sees_through_unicode() {
        let text = "card ４１１１ １１１１ １１１１ １１１１ and j\u{200B}ohn@exa\u{202E}mple.com";
        let found = one(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, EntityKind::CreditCard);
        assert!(found[0].1.starts_with('４') && found[0].1.ends_with('１'));
        assert_eq!(
            found[1],
            (
                EntityKind::Email,
                "j\u{200B}ohn@exa\u{202E}mple.com".to_owned()
            )
        );
    }

    #[test]
    fn open_secrets_run_to_their_end() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc+/=\n-----END RSA PRIVATE KEY-----";
        let text = format!("key:\n{pem}\nthanks");
        assert_eq!(one(&text), vec![(EntityKind::Secret, pem.to_owned())]);
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let text = format!("token {jwt}. done");
        assert_eq!(one(&text), vec![(EntityKind::Secret, jwt.to_owned())]);
    }

    #[test]
    fn custom_and_deny() {
        let config: RedactConfig = serde_yaml_ng::from_str(
            "entities: []\ncustom: [{ name: employee_id, pattern: 'EMP-[0-9]{6}' }]\ndeny: { words: [Project Falcon, c++] }",
        )
        .unwrap();
        let d = Detector::new(&config).unwrap();
        let found = kinds(&d, "EMP-123456 on project  falcon in C++ code; falconry");
        assert_eq!(
            found,
            vec![
                (Kind::Custom(0), "EMP-123456".to_owned()),
                (Kind::Deny, "project  falcon".to_owned()),
                (Kind::Deny, "C++".to_owned()),
            ]
        );
        assert_eq!(d.label(Kind::Custom(0)), "EMPLOYEE_ID");
    }
}
