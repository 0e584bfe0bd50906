//! The model catalog and the routes: matching a request to a route top-down, checking the
//! gateway key's scopes, and turning the route into a plan of candidates (the primary
//! target chosen by the route's strategy, then its fallbacks).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderName};
use rand::Rng;
use serde_json::{Map, Value};
use tollgate_config::{
    Config, ModelMode, PriceConfig, RetryConfig, RouteConfig, Strategy, TimeoutsConfig,
};

use crate::attempts::RetryPolicy;
use crate::pool::Upstreams;
use crate::{strategy, RoutingError};

// === catalog ===

/// One logical model of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogModel {
    /// The logical name clients and routes use.
    pub name: Arc<str>,
    pub provider: Arc<str>,
    /// The model id the provider knows.
    pub upstream_model: Arc<str>,
    pub mode: ModelMode,
    pub context_window: Option<u64>,
    /// USD per 1M tokens.
    pub price: Option<PriceConfig>,
}

impl CatalogModel {
    fn fits(&self, prompt_tokens: u64) -> bool {
        self.context_window.is_none_or(|w| w >= prompt_tokens)
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            model: self.name.clone(),
            provider: self.provider.clone(),
            upstream_model: self.upstream_model.clone(),
        }
    }
}

/// What a request asks of routing.
pub struct RouteRequest<'a> {
    /// The `model` field of the request.
    pub model: &'a str,
    pub key: KeyScope<'a>,
    pub headers: &'a HeaderMap,
    /// The request's `metadata` object, if it has one.
    pub metadata: Option<&'a Map<String, Value>>,
    /// Prompt size estimate, for skipping models whose context window is too small.
    pub estimated_prompt_tokens: u64,
}

/// The gateway key a request authenticated with.
#[derive(Debug, Clone, Copy)]
pub struct KeyScope<'a> {
    pub name: &'a str,
    pub team: Option<&'a str>,
    /// Allowed model names; empty allows all.
    pub models: &'a [String],
    /// Allowed route names; empty allows all.
    pub routes: &'a [String],
}

impl KeyScope<'_> {
    fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    fn allows_route(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }
}

/// One model of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Logical (catalog) name.
    pub model: Arc<str>,
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.model, self.provider)
    }
}

/// How one request will be served: candidates in order, with the route's retry and timeouts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub route: Arc<str>,
    /// The selected target, then the route's fallbacks; never empty.
    pub candidates: Vec<Candidate>,
    pub retry: RetryPolicy,
    pub timeouts: TimeoutsConfig,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelListing {
    pub id: String,
    pub mode: ModelMode,
}

// === routes ===

pub(crate) struct Target {
    pub model: Arc<CatalogModel>,
    pub weight: u32,
}

struct Route {
    name: Arc<str>,
    matcher: Matcher,
    targets: Vec<Target>,
    strategy: Strategy,
    fallback: Vec<Arc<CatalogModel>>,
    retry: RetryPolicy,
    timeouts: TimeoutsConfig,
}

#[derive(Default)]
struct Matcher {
    models: Vec<String>,
    keys: Vec<String>,
    teams: Vec<String>,
    headers: Vec<(HeaderName, String)>,
    metadata: Vec<(String, String)>,
}

impl Matcher {
    fn matches(&self, req: &RouteRequest<'_>) -> bool {
        self.matches_key(&req.key)
            && (self.models.is_empty() || self.models.iter().any(|m| m == req.model))
            && self.headers.iter().all(|(name, want)| {
                req.headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == want.as_bytes())
            })
            && self.metadata.iter().all(|(name, want)| {
                req.metadata
                    .and_then(|m| m.get(name))
                    .is_some_and(|v| metadata_equals(v, want))
            })
    }

    /// The conditions known from the key alone.
    fn matches_key(&self, key: &KeyScope<'_>) -> bool {
        (self.keys.is_empty() || self.keys.iter().any(|k| k == key.name))
            && (self.teams.is_empty()
                || key
                    .team
                    .is_some_and(|team| self.teams.iter().any(|t| t == team)))
    }
}

/// Strings compare exactly; numbers and booleans by their JSON text, so `tier: 1` in a
/// request matches `tier: "1"` in the config.
fn metadata_equals(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        _ => false,
    }
}

impl Route {
    fn implicit(model: &Arc<CatalogModel>) -> Self {
        Self {
            name: model.name.clone(),
            matcher: Matcher::default(),
            targets: vec![Target {
                model: model.clone(),
                weight: 1,
            }],
            strategy: Strategy::Weighted,
            fallback: Vec::new(),
            retry: RetryPolicy::from(&RetryConfig::default()),
            timeouts: TimeoutsConfig::default(),
        }
    }

    fn from_config(
        i: usize,
        cfg: &RouteConfig,
        catalog: &HashMap<String, Arc<CatalogModel>>,
    ) -> Result<Self, RoutingError> {
        let lookup = |model: &str, path: String| {
            catalog.get(model).cloned().ok_or_else(|| {
                RoutingError::config(path, format!("'{model}' is not a model of the catalog"))
            })
        };
        if cfg.targets.is_empty() {
            return Err(RoutingError::config(
                format!("routes[{i}].targets"),
                "a route needs at least one target",
            ));
        }
        let targets = cfg
            .targets
            .iter()
            .enumerate()
            .map(|(j, t)| {
                Ok(Target {
                    model: lookup(&t.model, format!("routes[{i}].targets[{j}].model"))?,
                    weight: t.weight,
                })
            })
            .collect::<Result<_, RoutingError>>()?;
        let fallback = cfg
            .fallback
            .iter()
            .enumerate()
            .map(|(j, m)| lookup(m, format!("routes[{i}].fallback[{j}]")))
            .collect::<Result<_, _>>()?;
        let headers = cfg
            .matcher
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    RoutingError::config(
                        format!("routes[{i}].match.headers"),
                        format!("'{name}' is not a valid header name"),
                    )
                })?;
                Ok((name, value.clone()))
            })
            .collect::<Result<_, RoutingError>>()?;
        Ok(Self {
            name: cfg.name.as_str().into(),
            matcher: Matcher {
                models: cfg.matcher.model.clone(),
                keys: cfg.matcher.key.clone(),
                teams: cfg.matcher.team.clone(),
                headers,
                metadata: cfg
                    .matcher
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            targets,
            strategy: cfg.strategy,
            fallback,
            retry: RetryPolicy::from(&cfg.retry),
            timeouts: cfg.timeouts.clone(),
        })
    }

    fn plan(
        &self,
        req: &RouteRequest<'_>,
        upstreams: &Upstreams,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Plan, RoutingError> {
        let tokens = req.estimated_prompt_tokens;
        let models = || {
            self.targets
                .iter()
                .map(|t| &t.model)
                .chain(self.fallback.iter())
        };
        if !models().any(|m| m.fits(tokens)) {
            return Err(RoutingError::ContextTooLong {
                model: req.model.to_owned(),
                tokens,
                window: models().filter_map(|m| m.context_window).max().unwrap_or(0),
            });
        }
        let usable = |m: &CatalogModel| {
            m.fits(tokens)
                && upstreams
                    .provider(&m.provider)
                    .is_some_and(|p| p.is_available(now))
        };
        let eligible: Vec<&Target> = self.targets.iter().filter(|t| usable(&t.model)).collect();
        let primary = strategy::select(self.strategy, &eligible, upstreams, now, rng);

        let mut candidates: Vec<Candidate> = Vec::with_capacity(1 + self.fallback.len());
        for model in primary
            .map(|t| &t.model)
            .into_iter()
            .chain(self.fallback.iter())
        {
            if usable(model) && !candidates.iter().any(|c| c.model == model.name) {
                candidates.push(model.candidate());
            }
        }
        if candidates.is_empty() {
            return Err(RoutingError::Unavailable {
                model: req.model.to_owned(),
                route: self.name.to_string(),
            });
        }
        Ok(Plan {
            route: self.name.clone(),
            candidates,
            retry: self.retry,
            timeouts: self.timeouts.clone(),
        })
    }
}

// === impl Router ===

/// The catalog and routes of one config snapshot.
pub struct Router {
    catalog: HashMap<String, Arc<CatalogModel>>,
    routes: Vec<Route>,
    /// The route a catalog model is served by when no configured route matches.
    implicit: HashMap<String, Route>,
}

impl Router {
    pub fn from_config(cfg: &Config) -> Result<Self, RoutingError> {
        let mut catalog = HashMap::with_capacity(cfg.models.len());
        for (name, m) in &cfg.models {
            if !cfg.providers.contains_key(&m.provider) {
                return Err(RoutingError::config(
                    format!("models.{name}.provider"),
                    format!("'{}' is not a configured provider", m.provider),
                ));
            }
            let model = CatalogModel {
                name: name.as_str().into(),
                provider: m.provider.as_str().into(),
                upstream_model: m.model.as_str().into(),
                mode: m.mode,
                context_window: m.context_window,
                price: m.price.clone(),
            };
            catalog.insert(name.clone(), Arc::new(model));
        }
        let routes = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::from_config(i, r, &catalog))
            .collect::<Result<_, _>>()?;
        let implicit = catalog
            .iter()
            .map(|(name, model)| (name.clone(), Route::implicit(model)))
            .collect();
        Ok(Self {
            catalog,
            routes,
            implicit,
        })
    }

    pub fn model(&self, logical: &str) -> Option<&CatalogModel> {
        self.catalog.get(logical).map(Arc::as_ref)
    }

    /// Matches the request against the routes top-down (the first match wins; a catalog
    /// model no route matches is served alone with default retry and timeouts), checks the
    /// key's scopes, and plans the candidates: the target the route's strategy picks among
    /// available targets that fit the prompt, then the fitting, available fallbacks.
    pub fn plan(
        &self,
        req: &RouteRequest<'_>,
        upstreams: &Upstreams,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Plan, RoutingError> {
        if !req.key.allows_model(req.model) {
            return Err(RoutingError::ModelNotAllowed {
                key: req.key.name.to_owned(),
                model: req.model.to_owned(),
            });
        }
        let route = self
            .routes
            .iter()
            .find(|r| r.matcher.matches(req))
            .or_else(|| self.implicit.get(req.model))
            .ok_or_else(|| RoutingError::ModelNotFound {
                model: req.model.to_owned(),
            })?;
        if !req.key.allows_route(&route.name) {
            return Err(RoutingError::RouteNotAllowed {
                key: req.key.name.to_owned(),
                model: req.model.to_owned(),
                route: route.name.to_string(),
            });
        }
        route.plan(req, upstreams, now, rng)
    }

    /// The model names a key may request, sorted and deduplicated, optionally of one mode:
    /// the `match.model` names of routes the key can reach (their key and team conditions
    /// hold and the key's `routes` scope allows them) and the catalog models, each filtered
    /// by the key's `models` scope. A route name's mode is that of its first target.
    pub fn models_for_key(&self, key: &KeyScope<'_>, mode: Option<ModelMode>) -> Vec<ModelListing> {
        let wanted = |m: ModelMode| mode.is_none_or(|want| want == m);
        let reachable = || {
            self.routes
                .iter()
                .filter(|r| r.matcher.matches_key(key) && key.allows_route(&r.name))
        };
        let catch_all = reachable().any(|r| r.matcher.models.is_empty());
        let mut out: BTreeMap<&str, ModelMode> = BTreeMap::new();
        for route in reachable() {
            let Some(first) = route.targets.first() else {
                continue;
            };
            for name in &route.matcher.models {
                if key.allows_model(name) && wanted(first.model.mode) {
                    out.entry(name).or_insert(first.model.mode);
                }
            }
        }
        for (name, model) in &self.catalog {
            let served = catch_all
                || key.allows_route(name)
                || reachable().any(|r| r.matcher.models.iter().any(|m| m == name));
            if served && key.allows_model(name) && wanted(model.mode) {
                out.entry(name).or_insert(model.mode);
            }
        }
        out.into_iter()
            .map(|(id, mode)| ModelListing {
                id: id.to_owned(),
                mode,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
