//! Reading the PEM files a config names (TLS certificates, keys, CA bundles), so that
//! `tollgate check` reports a missing or malformed file at the line that names it, before
//! a listener or connector is built from it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest PEM file read. A chain of a few certificates is a few KiB and a CA bundle with
/// every public root about 250 KiB; the cap keeps a wrong path from filling memory.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// The file's bytes, at most [`MAX_PEM_BYTES`].
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{} is larger than {MAX_PEM_BYTES} bytes; is it a PEM file?",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Every certificate (DER) in the PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no private key (expected -----BEGIN PRIVATE KEY-----)",
            path.display()
        ),
        e => format!("{} is not valid PEM: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn missing_and_empty_files_are_explained() {
        let dir = std::env::temp_dir().join(format!("tollgate-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        assert!(load_certs(&dir.join("nope.pem"))
            .unwrap_err()
            .starts_with("cannot read"));
        assert!(load_certs(&empty)
            .unwrap_err()
            .contains("holds no certificate"));
        assert!(load_key(&empty)
            .unwrap_err()
            .contains("holds no private key"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
