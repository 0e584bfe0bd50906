//! Gateway key hashes: the config holds `sha256:<hex>` of each secret, never the secret.

use sha2::{Digest, Sha256};

const PREFIX: &str = "sha256:";

/// `sha256:` followed by the 64 lowercase hex digits of SHA-256 over the secret's bytes.
pub fn hash_key(secret: &str) -> String {
    format!("{PREFIX}{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// Whether `text` has the form [`hash_key`] produces.
pub(crate) fn is_key_hash(text: &str) -> bool {
    text.strip_prefix(PREFIX).is_some_and(|digest| {
        digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_to_the_checked_form() {
        let hash = hash_key("tg-secret");
        assert!(is_key_hash(&hash), "{hash}");
        assert_eq!(
            hash_key(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rejects_other_forms() {
        let digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(!is_key_hash(digest));
        assert!(!is_key_hash(&format!("sha256:{}", digest.to_uppercase())));
        assert!(!is_key_hash(&format!("sha256:{}", &digest[1..])));
        assert!(!is_key_hash(&format!("md5:{digest}")));
        assert!(!is_key_hash(&format!("sha256:{}g", &digest[1..])));
    }
}
