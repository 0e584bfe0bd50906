//! What the operator configures: which entities to look for, what to do with each of them
//! in each direction, custom patterns and deny words. The config crate embeds
//! [`RedactConfig`] as it is; [`RedactConfig::validate`] reports every problem with its
//! path relative to the embedding point.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most deny words one config may list: each becomes a branch of the detection automaton,
/// whose build time and memory grow with the count.
pub const MAX_DENY_WORDS: usize = 10_000;

/// Most custom patterns one config may list, for the same reason as [`MAX_DENY_WORDS`].
pub const MAX_CUSTOM_RULES: usize = 256;

/// Longest custom rule name; it also becomes the mask label (`[EMPLOYEE_ID]`) and bounds
/// how much a placeholder restorer holds back.
pub const MAX_RULE_NAME_BYTES: usize = 48;

/// Shortest `hash_key` accepted when some rule hashes: a short key lets anyone who knows it
/// brute-force small value spaces (phone numbers, SSNs) back from their pseudonyms.
pub const MIN_HASH_KEY_BYTES: usize = 16;

/// A built-in entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// An e-mail address.
    Email,
    /// A phone number in E.164 or a common national format.
    Phone,
    /// A payment card number (Luhn-checked).
    CreditCard,
    /// A US social security number outside the never-issued ranges.
    Ssn,
    /// An international bank account number (mod-97 checked).
    Iban,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A credential: provider API keys and tokens, JWTs, private-key blocks, and
    /// high-entropy values in `key=`/`token:` forms.
    Secret,
}

impl EntityKind {
    /// Every built-in kind, in a fixed order.
    pub const ALL: [EntityKind; 7] = [
        EntityKind::Email,
        EntityKind::Phone,
        EntityKind::CreditCard,
        EntityKind::Ssn,
        EntityKind::Iban,
        EntityKind::Ip,
        EntityKind::Secret,
    ];

    /// The word that replaces a masked entity, inside brackets: `[EMAIL]`.
    pub fn label(self) -> &'static str {
        match self {
            EntityKind::Email => "EMAIL",
            EntityKind::Phone => "PHONE",
            EntityKind::CreditCard => "CREDIT_CARD",
            EntityKind::Ssn => "SSN",
            EntityKind::Iban => "IBAN",
            EntityKind::Ip => "IP_ADDRESS",
            EntityKind::Secret => "SECRET",
        }
    }

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Email => "email",
            EntityKind::Phone => "phone",
            EntityKind::CreditCard => "credit_card",
            EntityKind::Ssn => "ssn",
            EntityKind::Iban => "iban",
            EntityKind::Ip => "ip",
            EntityKind::Secret => "secret",
        }
    }

    fn all_vec() -> Vec<EntityKind> {
        EntityKind::ALL.to_vec()
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to a detected entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace it with its label: `[EMAIL]`.
    #[default]
    Mask,
    /// Replace it with a stable per-tenant pseudonym: `[EMAIL_1a2b3c4d]`.
    Hash,
    /// Replace it with a numbered placeholder (`[EMAIL_1]`) and restore the original in the
    /// response. Only requests are pseudonymized; in responses it acts as [`Action::Mask`],
    /// since a placeholder there would have nothing to restore.
    Pseudonymize,
    /// Refuse the request (or end the response stream) with a reason code.
    Block,
    /// Leave it as it is; the kind is not even looked for in that direction.
    Allow,
}

/// Which way text travels through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client to the provider.
    Request,
    /// From the provider back to the client.
    Response,
}

impl Direction {
    fn both() -> Vec<Direction> {
        vec![Direction::Request, Direction::Response]
    }
}

/// The action for one kind: the same in both directions (`block`), or per direction
/// (`{ request: pseudonymize, response: mask }`; a direction left out takes the config's
/// default `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ActionRule {
    Same(Action),
    PerDirection(DirectionActions),
}

/// Per-direction actions of an [`ActionRule`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionActions {
    #[serde(default)]
    pub request: Option<Action>,
    #[serde(default)]
    pub response: Option<Action>,
}

impl ActionRule {
    fn resolve(self, direction: Direction, default: Action) -> Action {
        match (self, direction) {
            (ActionRule::Same(action), _) => action,
            (ActionRule::PerDirection(per), Direction::Request) => per.request.unwrap_or(default),
            (ActionRule::PerDirection(per), Direction::Response) => per.response.unwrap_or(default),
        }
    }

    fn uses(self, action: Action) -> bool {
        match self {
            ActionRule::Same(a) => a == action,
            ActionRule::PerDirection(per) => {
                per.request == Some(action) || per.response == Some(action)
            }
        }
    }
}

/// An operator-defined pattern, detected like a built-in entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// `[a-z0-9_]`, unique; upper-cased it is the mask label (`employee_id` → `[EMPLOYEE_ID]`).
    pub name: String,
    /// A regular expression (Rust `regex` syntax) that cannot match more than
    /// [`crate::MAX_ENTITY_BYTES`] bytes nor the empty string.
    pub pattern: String,
    /// Defaults to the config's `action`.
    #[serde(default)]
    pub action: Option<ActionRule>,
}

/// Words and phrases that must not pass, matched case-insensitively as whole words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyList {
    pub words: Vec<String>,
    /// Defaults to `block`: a deny list names what must not pass at all.
    #[serde(default)]
    pub action: Option<ActionRule>,
}

/// The redaction settings of one guardrail.
///
/// ```yaml
/// entities: [email, phone, credit_card, ssn, iban, ip, secret]   # default: all
/// action: mask                          # default for every entity: mask
/// on: [request, response]               # default: both
/// actions: { credit_card: block, email: { request: pseudonymize, response: mask } }
/// custom: [{ name: employee_id, pattern: 'EMP-[0-9]{6}', action: hash }]
/// deny: { words: [project falcon], action: block }
/// hash_key: "${TOLLGATE_HASH_KEY}"      # needed when some rule hashes
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    #[serde(default = "EntityKind::all_vec")]
    pub entities: Vec<EntityKind>,
    #[serde(default)]
    pub action: Action,
    #[serde(default = "Direction::both")]
    pub on: Vec<Direction>,
    #[serde(default)]
    pub actions: BTreeMap<EntityKind, ActionRule>,
    #[serde(default)]
    pub custom: Vec<CustomRule>,
    #[serde(default)]
    pub deny: Option<DenyList>,
    /// Secret mixed into [`Action::Hash`] pseudonyms, so they cannot be recomputed outside
    /// the gateway.
    #[serde(default)]
    pub hash_key: String,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            entities: EntityKind::all_vec(),
            action: Action::Mask,
            on: Direction::both(),
            actions: BTreeMap::new(),
            custom: Vec::new(),
            deny: None,
            hash_key: String::new(),
        }
    }
}

/// One problem of a [`RedactConfig`], with the path of the offending value relative to the
/// config's root (`custom[2].pattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl RedactConfig {
    /// The action for a built-in kind in a direction; [`Action::Allow`] when the kind is not
    /// enabled or the direction is not inspected.
    pub fn entity_action(&self, kind: EntityKind, direction: Direction) -> Action {
        if !self.on.contains(&direction) || !self.entities.contains(&kind) {
            return Action::Allow;
        }
        match self.actions.get(&kind) {
            Some(rule) => rule.resolve(direction, self.action),
            None => self.action,
        }
    }

    /// The action for custom rule `index` in a direction.
    pub fn custom_action(&self, index: usize, direction: Direction) -> Action {
        if !self.on.contains(&direction) {
            return Action::Allow;
        }
        match self.custom.get(index) {
            Some(rule) => match rule.action {
                Some(r) => r.resolve(direction, self.action),
                None => self.action,
            },
            None => Action::Allow,
        }
    }

    /// The action for deny-list words in a direction.
    pub fn deny_action(&self, direction: Direction) -> Action {
        if !self.on.contains(&direction) {
            return Action::Allow;
        }
        match &self.deny {
            Some(deny) if !deny.words.is_empty() => match deny.action {
                Some(r) => r.resolve(direction, Action::Block),
                None => Action::Block,
            },
            _ => Action::Allow,
        }
    }

    fn uses(&self, action: Action) -> bool {
        self.action == action && (!self.entities.is_empty() || !self.custom.is_empty())
            || self.actions.values().any(|r| r.uses(action))
            || self
                .custom
                .iter()
                .any(|c| c.action.is_some_and(|r| r.uses(action)))
            || self
                .deny
                .as_ref()
                .is_some_and(|d| d.action.is_some_and(|r| r.uses(action)))
    }

    /// Every problem serde cannot see, in document order. An empty list means
    /// [`crate::Redactor::new`] will accept the config.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut report = |path: String, message: String| {
            issues.push(ConfigIssue { path, message });
        };
        for kind in self.actions.keys() {
            if !self.entities.contains(kind) {
                report(
                    format!("actions.{kind}"),
                    format!(
                        "`{kind}` is not listed in `entities`; add it there or drop this entry"
                    ),
                );
            }
        }
        if self.custom.len() > MAX_CUSTOM_RULES {
            report(
                "custom".to_owned(),
                format!("at most {MAX_CUSTOM_RULES} custom rules are allowed"),
            );
        }
        let mut names = HashSet::new();
        for (i, rule) in self.custom.iter().enumerate() {
            let valid_name = !rule.name.is_empty()
                && rule.name.len() <= MAX_RULE_NAME_BYTES
                && rule
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                report(
                    format!("custom[{i}].name"),
                    format!("must be 1 to {MAX_RULE_NAME_BYTES} characters of a-z, 0-9 and `_`"),
                );
            } else if !names.insert(rule.name.as_str()) {
                report(
                    format!("custom[{i}].name"),
                    format!("`{}` is used by an earlier custom rule", rule.name),
                );
            }
            if let Err(message) = crate::patterns::check_custom_pattern(&rule.pattern) {
                report(format!("custom[{i}].pattern"), message);
            }
        }
        if let Some(deny) = &self.deny {
            if deny.words.len() > MAX_DENY_WORDS {
                report(
                    "deny.words".to_owned(),
                    format!("at most {MAX_DENY_WORDS} words are allowed"),
                );
            }
            for (i, word) in deny.words.iter().enumerate() {
                match crate::detect::deny_word_pattern(word) {
                    Ok(Some(_)) => {}
                    Ok(None) => report(format!("deny.words[{i}]"), "must not be empty".to_owned()),
                    Err(message) => report(format!("deny.words[{i}]"), message),
                }
            }
        }
        if self.uses(Action::Hash) && self.hash_key.len() < MIN_HASH_KEY_BYTES {
            report(
                "hash_key".to_owned(),
                format!(
                    "a rule uses `hash`: set a secret of at least {MIN_HASH_KEY_BYTES} bytes \
                     (e.g. \"${{TOLLGATE_HASH_KEY}}\")"
                ),
            );
        }
        issues
    }
}
