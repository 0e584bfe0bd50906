//! TLS termination on the client listeners with rustls: certificates chosen by the server
//! name the client asks for (SNI) with a default for every other name, optional client
//! certificates checked against a CA, ALPN with HTTP/2. Certificates are re-read on config
//! reload, so a renewed certificate is served without a restart; the listener addresses and
//! the client CA are fixed at start.
//!
//! Every file is loaded and checked here, and Pingora's `TlsSettings` only ever gets a
//! ready resolver and verifier: its own file loading panics on a bad file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::tls::sign::CertifiedKey;
use pingora_core::tls::{
    ClientHello, CryptoProvider, ResolvesServerCert, RootCertStore, WebPkiClientVerifier,
};
use tollgate_config::{load_certs, load_key, TlsListenConfig};

// === impl ListenerTls ===

/// What every TLS listener of the process shares.
pub struct ListenerTls {
    certs: Arc<CertResolver>,
    client_ca: Option<Arc<dyn pingora_core::tls::ClientCertVerifier>>,
    http2: bool,
}

impl ListenerTls {
    /// Loads every certificate, key and the client CA of `cfg`.
    pub fn load(cfg: &TlsListenConfig) -> Result<Self, String> {
        let client_ca = match &cfg.client_ca {
            Some(path) => Some(client_verifier(path)?),
            None => None,
        };
        Ok(Self {
            certs: Arc::new(CertResolver(ArcSwap::from_pointee(CertSet::load(cfg)?))),
            client_ca,
            http2: cfg.http2,
        })
    }

    /// Settings for one listening address.
    pub fn settings(&self) -> Result<TlsSettings, String> {
        // The paths are ignored once a resolver is set.
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| e.to_string())?;
        settings.set_cert_resolver(self.certs.clone());
        if let Some(verifier) = &self.client_ca {
            settings.set_client_cert_verifier(verifier.clone());
        }
        if self.http2 {
            settings.enable_h2();
        }
        Ok(settings)
    }

    /// Serves the certificates of `cfg` from the next handshake on; on an error the
    /// current ones stay.
    pub fn reload_certs(&self, cfg: &TlsListenConfig) -> Result<(), String> {
        self.certs.0.store(Arc::new(CertSet::load(cfg)?));
        Ok(())
    }
}

fn client_verifier(path: &Path) -> Result<Arc<dyn pingora_core::tls::ClientCertVerifier>, String> {
    install_provider();
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", path.display()))?;
    }
    WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn install_provider() {
    pingora_core::tls::install_default_crypto_provider();
}

// === impl CertSet ===

/// The certificates of one config version, by the name they serve.
#[derive(Debug, Default)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    fn load(cfg: &TlsListenConfig) -> Result<Self, String> {
        let mut set = CertSet::default();
        if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
            set.default = Some(certified_key(cert, key)?);
        }
        for entry in &cfg.sni {
            let certified = certified_key(&entry.cert, &entry.key)?;
            for name in &entry.names {
                let name = name.to_ascii_lowercase();
                let slot = match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_owned()),
                    None => set.exact.entry(name),
                };
                // The first entry naming a host wins, as documented.
                slot.or_insert_with(|| certified.clone());
            }
        }
        if set.default.is_none() && set.exact.is_empty() && set.wildcard.is_empty() {
            return Err("no certificate: give cert and key, or sni entries".to_owned());
        }
        Ok(set)
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).cloned().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).cloned()
            })
        });
        by_name.or_else(|| self.default.clone())
    }
}

/// A certificate chain with its key, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    install_provider();
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_owned())?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} is not the key of {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

// === impl CertResolver ===

/// Picks the certificate for each handshake from the current [`CertSet`].
#[derive(Debug)]
struct CertResolver(ArcSwap<CertSet>);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tollgate_config::SniCertConfig;

    use super::*;

    struct Files(PathBuf);

    impl Files {
        fn new(tag: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("tollgate-tls-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }

        /// A self-signed certificate for `names`, as (cert path, key path).
        fn cert(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
            let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
            let made = rcgen::generate_simple_self_signed(names).unwrap();
            let cert = self.0.join(format!("{file}.crt"));
            let key = self.0.join(format!("{file}.key"));
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            (cert, key)
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(default: (PathBuf, PathBuf), sni: Vec<SniCertConfig>) -> TlsListenConfig {
        TlsListenConfig {
            listen: vec!["127.0.0.1:0".to_owned()],
            cert: Some(default.0),
            key: Some(default.1),
            sni,
            client_ca: None,
            http2: true,
        }
    }

    fn served(tls: &ListenerTls, name: Option<&str>) -> Vec<u8> {
        tls.certs.0.load().pick(name).unwrap().cert[0].to_vec()
    }

    #[test]
    fn picks_by_exact_name_then_wildcard_then_default() {
        let files = Files::new("pick");
        let default = files.cert("default", &["default.test"]);
        let api = files.cert("api", &["api.test"]);
        let wild = files.cert("wild", &["*.internal.test"]);
        let sni = vec![
            SniCertConfig {
                names: vec!["API.test".to_owned()],
                cert: api.0.clone(),
                key: api.1,
            },
            SniCertConfig {
                names: vec!["*.internal.test".to_owned()],
                cert: wild.0.clone(),
                key: wild.1,
            },
        ];
        let tls = ListenerTls::load(&config(default.clone(), sni)).unwrap();
        let der = |path: &PathBuf| load_certs(path).unwrap()[0].to_vec();
        assert_eq!(served(&tls, Some("api.test")), der(&api.0));
        assert_eq!(served(&tls, Some("a.internal.test")), der(&wild.0));
        assert_eq!(served(&tls, Some("a.b.internal.test")), der(&default.0));
        assert_eq!(served(&tls, None), der(&default.0));

        // A reload serves the new default; a broken one keeps it.
        let renewed = files.cert("renewed", &["default.test"]);
        tls.reload_certs(&config(renewed.clone(), Vec::new()))
            .unwrap();
        assert_eq!(served(&tls, Some("api.test")), der(&renewed.0));
        let broken = (renewed.0.clone(), default.1.clone());
        let err = tls.reload_certs(&config(broken, Vec::new())).unwrap_err();
        assert!(err.contains("is not the key of"), "{err}");
        assert_eq!(served(&tls, None), der(&renewed.0));
        assert!(tls.settings().is_ok());
    }

    #[test]
    fn a_client_ca_that_is_no_certificate_is_an_error() {
        let files = Files::new("ca");
        let default = files.cert("default", &["default.test"]);
        let mut cfg = config(default.clone(), Vec::new());
        cfg.client_ca = Some(default.1.clone());
        let err = ListenerTls::load(&cfg).err().unwrap();
        assert!(err.contains("holds no certificate"), "{err}");
        cfg.client_ca = Some(default.0);
        assert!(ListenerTls::load(&cfg).is_ok());
    }
}
