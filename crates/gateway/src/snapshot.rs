//! Everything a request needs from the configuration, built once per config version. A
//! request pins the snapshot it started with, so a reload never changes a request midway.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_config::Config;
use tollgate_routing::{Router, Upstreams};

use crate::auth::KeyStore;

pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub upstreams: Arc<Upstreams>,
    pub keys: KeyStore,
    /// Operator-configured upstream headers per provider.
    pub provider_headers: HashMap<String, Vec<(String, String)>>,
    /// The smallest context window in the catalog: prompts of at most this many bytes fit
    /// every model, so they need no exact token count.
    pub min_context_window: u64,
}

impl Snapshot {
    pub fn build(config: Config) -> Result<Self, String> {
        let router = Router::from_config(&config).map_err(|e| e.to_string())?;
        let upstreams = Arc::new(Upstreams::from_config(&config).map_err(|e| e.to_string())?);
        let keys = KeyStore::from_config(&config.keys)?;
        let provider_headers = config
            .providers
            .iter()
            .map(|(name, p)| {
                let headers = p
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (name.clone(), headers)
            })
            .collect();
        let min_context_window = config
            .models
            .values()
            .filter_map(|m| m.context_window)
            .min()
            .unwrap_or(u64::MAX);
        Ok(Self {
            config,
            router,
            upstreams,
            keys,
            provider_headers,
            min_context_window,
        })
    }
}
