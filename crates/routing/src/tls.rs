//! TLS towards one provider: the CA bundle its endpoints' certificates must chain to, the
//! client certificate for mutual TLS, and the name to verify. Loaded from the files the
//! config names once per config version, checked here so that Pingora's connector (which
//! panics on a certificate it cannot parse) only ever sees good material, and applied to
//! every peer the gateway or a health probe connects to.

use std::sync::Arc;

use pingora_core::protocols::tls::CaType;
use pingora_core::tls::{ClientConfig, PrivateKeyDer, RootCertStore};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use tollgate_config::{load_certs, load_key, ProviderTlsConfig};
use x509_parser::prelude::FromDer;

/// One provider's TLS settings, ready for its peers.
pub struct UpstreamTls {
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
    server_name: Option<String>,
    /// The DER of every loaded certificate and key, to tell an unchanged definition on
    /// reload (a renewed file at the same path is a change).
    material: Vec<Vec<u8>>,
}

impl UpstreamTls {
    /// Reads and checks the files of `cfg`; the error names the file and what is wrong.
    pub fn load(cfg: &ProviderTlsConfig) -> Result<Self, String> {
        let mut material = Vec::new();
        let ca = match &cfg.ca {
            Some(path) => {
                let certs = load_certs(path)?;
                let mut wrapped = Vec::with_capacity(certs.len());
                for cert in certs {
                    let der = cert.to_vec();
                    check_x509(&der).map_err(|e| format!("{}: {e}", path.display()))?;
                    material.push(der.clone());
                    wrapped.push(WrappedX509::new(der, parse_x509));
                }
                Some(Arc::from(wrapped.into_boxed_slice()))
            }
            None => None,
        };
        let client = match (&cfg.client_cert, &cfg.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let certs = load_certs(cert_path)?;
                let key = load_key(key_path)?;
                for cert in &certs {
                    check_x509(cert).map_err(|e| format!("{}: {e}", cert_path.display()))?;
                }
                // Pingora rebuilds the key from its DER at every handshake and the rustls
                // config from both: both must succeed here, or a handshake would panic.
                let key_der = key.secret_der().to_vec();
                PrivateKeyDer::try_from(key_der.as_slice())
                    .map_err(|e| format!("{}: {e}", key_path.display()))?;
                pingora_core::tls::install_default_crypto_provider();
                ClientConfig::builder()
                    .with_root_certificates(RootCertStore::empty())
                    .with_client_auth_cert(certs.clone(), key)
                    .map_err(|e| {
                        format!(
                            "{} and {} do not make a client certificate: {e}",
                            cert_path.display(),
                            key_path.display()
                        )
                    })?;
                let chain: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
                material.extend(chain.iter().cloned());
                material.push(key_der.clone());
                Some(Arc::new(CertKey::new(chain, key_der)))
            }
            (None, None) => None,
            _ => return Err("client_cert and client_key go together".to_owned()),
        };
        Ok(Self {
            ca,
            client,
            server_name: cfg.server_name.clone(),
            material,
        })
    }

    /// Sets the CA, client certificate and verified name on a peer of this provider.
    pub fn apply(&self, peer: &mut HttpPeer) {
        if let Some(ca) = &self.ca {
            peer.options.ca = Some(ca.clone());
        }
        if let Some(client) = &self.client {
            peer.client_cert_key = Some(client.clone());
        }
        if let Some(name) = &self.server_name {
            peer.sni = name.clone();
        }
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name && self.material == other.material
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never shown.
        f.debug_struct("UpstreamTls")
            .field("ca_certs", &self.ca.as_ref().map_or(0, |ca| ca.len()))
            .field("client_cert", &self.client.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Whether Pingora's X.509 parser (the same crate and version) accepts `der`.
fn check_x509(der: &[u8]) -> Result<(), String> {
    x509_parser::certificate::X509Certificate::from_der(der)
        .map(|_| ())
        .map_err(|e| format!("a certificate does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn files(tag: &str) -> (PathBuf, ProviderTlsConfig) {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-upstream-tls-{tag}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["models.internal".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let cfg = ProviderTlsConfig {
            ca: Some(dir.join("cert.pem")),
            client_cert: Some(dir.join("cert.pem")),
            client_key: Some(dir.join("key.pem")),
            server_name: Some("models.internal".to_owned()),
        };
        (dir, cfg)
    }

    #[test]
    fn loads_and_applies_to_a_peer() {
        let (dir, cfg) = files("ok");
        let tls = UpstreamTls::load(&cfg).unwrap();
        let mut peer = HttpPeer::new("127.0.0.1:443", true, "10.0.0.7".to_owned());
        tls.apply(&mut peer);
        assert_eq!(peer.sni, "models.internal");
        assert_eq!(peer.options.ca.as_ref().map(|ca| ca.len()), Some(1));
        assert!(peer.client_cert_key.is_some());
        assert_eq!(
            UpstreamTls::load(&cfg).unwrap(),
            tls,
            "same files, same material"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (dir, mut cfg) = files("mismatch");
        let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        std::fs::write(dir.join("other.pem"), other.signing_key.serialize_pem()).unwrap();
        cfg.client_key = Some(dir.join("other.pem"));
        let err = UpstreamTls::load(&cfg).unwrap_err();
        assert!(err.contains("do not make a client certificate"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
