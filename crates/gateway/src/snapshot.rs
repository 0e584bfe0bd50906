//! Everything a request needs from the configuration, built once per config version. A
//! request pins the snapshot it started with, so a reload never changes a request midway.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_config::{Config, ProviderConfig};
use tollgate_metering::PriceTable;
use tollgate_providers::{AwsCredentials, ProviderKind};
use tollgate_routing::{Router, Upstreams};

use crate::auth::KeyStore;
use crate::guardrails::Guardrails;

pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub upstreams: Arc<Upstreams>,
    pub keys: KeyStore,
    /// Prices per catalog model.
    pub prices: PriceTable,
    /// How to speak to each provider, by name.
    pub providers: HashMap<String, ProviderWire>,
    /// The smallest context window in the catalog: prompts of at most this many bytes fit
    /// every model, so they need no exact token count.
    pub min_context_window: u64,
    /// Whether limits or budgets decide on prompt tokens (a `tpm` limit or any budget):
    /// then every prompt is counted with the tokenizer, not just long ones.
    pub exact_prompt_tokens: bool,
    pub guardrails: Guardrails,
    /// See [`crate::policy::policy_fingerprint`].
    pub policy_fingerprint: u64,
}

impl Snapshot {
    /// The cache settings of a route, when it has a `cache:` block.
    pub fn route_cache(&self, route: &str) -> Option<&tollgate_cache::RouteCacheConfig> {
        self.config
            .routes
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| r.cache.as_ref())
    }

    pub fn build(config: Config) -> Result<Self, String> {
        Self::build_after(config, None).map(|(snapshot, _)| snapshot)
    }

    /// Builds the snapshot that replaces `previous` on reload: providers whose definition
    /// did not change keep their runtime state (circuits, health, latency, key
    /// cool-downs). Also returns the names of those providers.
    pub fn build_after(
        config: Config,
        previous: Option<&Snapshot>,
    ) -> Result<(Self, Vec<String>), String> {
        let router = Router::from_config(&config).map_err(|e| e.to_string())?;
        let mut upstreams = Upstreams::from_config(&config).map_err(|e| e.to_string())?;
        let kept = previous.map_or_else(Vec::new, |p| upstreams.keep_unchanged(&p.upstreams));
        let upstreams = Arc::new(upstreams);
        let keys = KeyStore::from_config(&config.keys)?;
        let prices = PriceTable::from_config(&config).map_err(|e| e.to_string())?;
        let guardrails = Guardrails::from_config(&config)?;
        let policy_fingerprint = crate::policy::policy_fingerprint(&config);
        let providers = config
            .providers
            .iter()
            .map(|(name, p)| (name.clone(), ProviderWire::from_config(p)))
            .collect();
        let min_context_window = config
            .models
            .values()
            .filter_map(|m| m.context_window)
            .min()
            .unwrap_or(u64::MAX);
        let exact_prompt_tokens =
            config.limits.iter().any(|l| l.tpm.is_some()) || !config.budgets.is_empty();
        let snapshot = Self {
            exact_prompt_tokens,
            config,
            router,
            upstreams,
            keys,
            prices,
            providers,
            min_context_window,
            guardrails,
            policy_fingerprint,
        };
        Ok((snapshot, kept))
    }
}

/// What the request path needs to build a provider's requests.
pub struct ProviderWire {
    pub kind: ProviderKind,
    /// Operator-configured upstream headers.
    pub headers: Vec<(String, String)>,
    pub api_version: Option<String>,
    pub region: Option<String>,
    pub aws: Option<AwsCredentials>,
}

impl ProviderWire {
    fn from_config(p: &ProviderConfig) -> Self {
        use tollgate_config::ProviderKind as Kind;
        Self {
            kind: match p.kind {
                Kind::Openai => ProviderKind::OpenAi,
                Kind::AzureOpenai => ProviderKind::AzureOpenAi,
                Kind::Anthropic => ProviderKind::Anthropic,
                Kind::Gemini => ProviderKind::Gemini,
                Kind::Bedrock => ProviderKind::Bedrock,
            },
            headers: p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            api_version: p.api_version.clone(),
            region: p.region.clone(),
            aws: p.aws.as_ref().map(|aws| AwsCredentials {
                access_key_id: aws.access_key_id.clone(),
                secret_access_key: aws.secret_access_key.clone(),
                // `${AWS_SESSION_TOKEN:-}` with the variable unset means no token.
                session_token: aws.session_token.clone().filter(|t| !t.is_empty()),
            }),
        }
    }
}
