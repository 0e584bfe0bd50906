//! [`Subject`]: the facts about a request that limits and budgets match on and count by,
//! and [`Scope`], one budget or kill-switch target.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::{BudgetConfig, BudgetScope, LimitScope, Match};

/// Who is asking and for what. The gateway fills it from the authenticated key and the
/// parsed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The gateway key's name: matched by `match.key`, counted by `scope: key`.
    pub key: String,
    pub user: Option<String>,
    pub team: Option<String>,
    /// The requested (logical) model; a downgrade replaces it.
    pub model: String,
    /// The route that serves the request, when known before admission.
    pub route: Option<String>,
    /// The request's tags (its `metadata` entries).
    pub tags: BTreeMap<String, String>,
}

impl Match {
    /// Whether every given condition holds for `subject`.
    pub(crate) fn matches(&self, subject: &Subject) -> bool {
        fn any(list: &[String], value: Option<&str>) -> bool {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|item| item == v))
        }
        any(&self.key, Some(&subject.key))
            && any(&self.user, subject.user.as_deref())
            && any(&self.team, subject.team.as_deref())
            && any(&self.model, Some(&subject.model))
            && any(&self.route, subject.route.as_deref())
            && self
                .tags
                .iter()
                .all(|(name, value)| subject.tags.get(name) == Some(value))
    }
}

impl LimitScope {
    /// The config's name of the scope.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitScope::Key => "key",
            LimitScope::User => "user",
            LimitScope::Team => "team",
            LimitScope::Model => "model",
            LimitScope::Route => "route",
            LimitScope::Global => "global",
        }
    }

    /// The value that names this subject's counter; `None` when the subject has no value
    /// for the scope (a team limit and a key without a team), and the limit does not apply.
    pub(crate) fn value(self, subject: &Subject) -> Option<&str> {
        match self {
            LimitScope::Key => Some(&subject.key),
            LimitScope::User => subject.user.as_deref(),
            LimitScope::Team => subject.team.as_deref(),
            LimitScope::Model => Some(&subject.model),
            LimitScope::Route => subject.route.as_deref(),
            LimitScope::Global => Some(""),
        }
    }
}

/// One budget counter's owner, or a kill-switch target: a key (by name), a user, a team,
/// or one value of a request tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Key(String),
    User(String),
    Team(String),
    Tag { name: String, value: String },
}

impl Scope {
    /// The scopes a subject belongs to, in the order key, user, team, tags.
    pub(crate) fn of(subject: &Subject) -> Vec<Scope> {
        let mut scopes = vec![Scope::Key(subject.key.clone())];
        scopes.extend(subject.user.clone().map(Scope::User));
        scopes.extend(subject.team.clone().map(Scope::Team));
        scopes.extend(subject.tags.iter().map(|(name, value)| Scope::Tag {
            name: name.clone(),
            value: value.clone(),
        }));
        scopes
    }

    /// The budget's scope for this subject; `None` when the subject lacks it.
    pub(crate) fn for_budget(budget: &BudgetConfig, subject: &Subject) -> Option<Scope> {
        match budget.scope {
            BudgetScope::Key => Some(Scope::Key(subject.key.clone())),
            BudgetScope::User => subject.user.clone().map(Scope::User),
            BudgetScope::Team => subject.team.clone().map(Scope::Team),
            BudgetScope::Tag => {
                let name = budget.tag.as_deref()?;
                let value = subject.tags.get(name)?;
                Some(Scope::Tag {
                    name: name.to_owned(),
                    value: value.clone(),
                })
            }
        }
    }

    /// Whether this scope is of the kind a budget counts by (and the same tag).
    pub(crate) fn fits(&self, budget: &BudgetConfig) -> bool {
        match (self, budget.scope) {
            (Scope::Key(_), BudgetScope::Key)
            | (Scope::User(_), BudgetScope::User)
            | (Scope::Team(_), BudgetScope::Team) => true,
            (Scope::Tag { name, .. }, BudgetScope::Tag) => budget.tag.as_ref() == Some(name),
            _ => false,
        }
    }
}

/// `key:billing-svc`, `team:billing`, `tag:project=apollo`: the form used in counter keys,
/// kill-switch entries and logs.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Key(v) => write!(f, "key:{v}"),
            Scope::User(v) => write!(f, "user:{v}"),
            Scope::Team(v) => write!(f, "team:{v}"),
            Scope::Tag { name, value } => write!(f, "tag:{name}={value}"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    /// Parses the [`fmt::Display`] form.
    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("'{text}' is not <kind>:<value>"))?;
        match kind {
            "key" => Ok(Scope::Key(rest.to_owned())),
            "user" => Ok(Scope::User(rest.to_owned())),
            "team" => Ok(Scope::Team(rest.to_owned())),
            "tag" => {
                let (name, value) = rest
                    .split_once('=')
                    .ok_or_else(|| format!("'{text}' is not tag:<name>=<value>"))?;
                Ok(Scope::Tag {
                    name: name.to_owned(),
                    value: value.to_owned(),
                })
            }
            other => Err(format!(
                "unknown scope kind '{other}' (key, user, team, tag)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn subject() -> Subject {
        Subject {
            key: "svc".into(),
            team: Some("billing".into()),
            model: "gpt-4o".into(),
            tags: BTreeMap::from([("project".into(), "apollo".into())]),
            ..Subject::default()
        }
    }

    #[test]
    fn matches_every_given_condition() {
        let mut m = Match::default();
        assert!(m.matches(&subject()));
        m.team = vec!["ops".into(), "billing".into()];
        assert!(m.matches(&subject()));
        m.user = vec!["ann".into()];
        assert!(!m.matches(&subject()), "the subject has no user");
        m.user.clear();
        m.tags.insert("project".into(), "zeus".into());
        assert!(!m.matches(&subject()));
    }

    #[test]
    fn scopes_round_trip_through_text() {
        for scope in Scope::of(&subject()) {
            assert_eq!(scope.to_string().parse::<Scope>().unwrap(), scope);
        }
        assert_eq!(
            "tag:project=a=b".parse::<Scope>().unwrap(),
            Scope::Tag {
                name: "project".into(),
                value: "a=b".into()
            }
        );
        assert!("org:x".parse::<Scope>().is_err());
    }
}
