//! Gateway keys: only SHA-256 hashes are held; a presented secret is hashed and compared
//! in constant time, so neither the config nor a timing side channel reveals a key.

use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_config::KeyConfig;

/// A gateway key as the request path sees it. Holds no secret.
#[derive(Debug)]
pub struct GatewayKey {
    pub name: Arc<str>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub models: Vec<String>,
    pub routes: Vec<String>,
    /// May call the admin API.
    pub admin: bool,
    /// A managed key's id (its request count is kept by id).
    pub managed_id: Option<String>,
    /// A managed key's lifetime request cap.
    pub max_requests: Option<u64>,
    digest: [u8; 32],
}

impl GatewayKey {
    /// A managed key as the request path sees it.
    pub fn managed(key: &tollgate_policy::ManagedKey) -> Self {
        Self {
            name: Arc::from(key.name.as_str()),
            team: Some(key.team.clone()),
            user: key.user.clone(),
            models: key.models.clone(),
            routes: key.routes.clone(),
            admin: key.role == tollgate_policy::Role::Admin,
            managed_id: Some(key.id.clone()),
            max_requests: key.max_requests,
            digest: [0; 32],
        }
    }

    /// What routing needs to know of the key.
    pub fn scope(&self) -> tollgate_routing::KeyScope<'_> {
        tollgate_routing::KeyScope {
            name: &self.name,
            team: self.team.as_deref(),
            models: &self.models,
            routes: &self.routes,
        }
    }
}

#[derive(Debug, Default)]
pub struct KeyStore {
    keys: Vec<Arc<GatewayKey>>,
}

impl KeyStore {
    pub fn from_config(keys: &[KeyConfig]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let hex_digest = key
                .hash
                .strip_prefix("sha256:")
                .ok_or_else(|| format!("key '{}': hash must start with 'sha256:'", key.name))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .map_err(|_| format!("key '{}': hash is not 64 hex digits", key.name))?;
            out.push(Arc::new(GatewayKey {
                name: Arc::from(key.name.as_str()),
                team: key.team.clone(),
                user: key.user.clone(),
                models: key.models.clone(),
                routes: key.routes.clone(),
                admin: key.role == tollgate_config::KeyRole::Admin,
                managed_id: None,
                max_requests: None,
                digest,
            }));
        }
        Ok(Self { keys: out })
    }

    /// The key whose hash matches `secret`. Every stored hash is compared, in constant
    /// time, so the answer's timing does not depend on which key (if any) matched.
    pub fn authenticate(&self, secret: &[u8]) -> Option<Arc<GatewayKey>> {
        let digest: [u8; 32] = Sha256::digest(secret).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key.clone());
            }
        }
        found
    }

    /// Whether some key in the config may call the admin API.
    pub fn has_admin(&self) -> bool {
        self.keys.iter().any(|k| k.admin)
    }
}

/// The secret a client presented: `Authorization: Bearer`, `x-api-key` or `api-key`.
pub fn presented_secret(headers: &http::HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let raw = value.as_bytes();
        if raw.len() > 7 && raw[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(trim_ascii(&raw[7..]));
        }
    }
    headers
        .get("x-api-key")
        .or_else(|| headers.get("api-key"))
        .map(|v| trim_ascii(v.as_bytes()))
}

fn trim_ascii(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &raw[start..end.max(start)]
}

/// A fresh gateway key secret: 32 random bytes, hex, with a recognisable prefix so secret
/// scanners can find leaked keys.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("tg-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        KeyStore::from_config(&[KeyConfig {
            name: "svc".into(),
            hash: tollgate_config::hash_key("tg-secret"),
            team: Some("billing".into()),
            user: None,
            models: vec![],
            routes: vec![],
            role: tollgate_config::KeyRole::User,
        }])
        .unwrap()
    }

    #[test]
    fn authenticates_by_hash_only() {
        let store = store();
        assert_eq!(&*store.authenticate(b"tg-secret").unwrap().name, "svc");
        assert!(store.authenticate(b"tg-secreT").is_none());
        assert!(store.authenticate(b"").is_none());
    }

    #[test]
    fn reads_all_three_header_forms() {
        for (name, value) in [
            ("authorization", "Bearer tg-secret"),
            ("authorization", "bearer  tg-secret "),
            ("x-api-key", "tg-secret"),
            ("api-key", "tg-secret"),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert(name, value.parse().unwrap());
            assert_eq!(
                presented_secret(&headers),
                Some(&b"tg-secret"[..]),
                "{name}: {value}"
            );
        }
        assert_eq!(presented_secret(&http::HeaderMap::new()), None);
    }

    #[test]
    fn new_secrets_are_distinct_and_hashable() {
        let a = new_secret();
        assert_ne!(a, new_secret());
        assert!(tollgate_config::hash_key(&a).starts_with("sha256:"));
    }
}
