//! What the `config_load` target checks, shared with the seed replay in `crates/config`:
//! any document loads or is refused with located problems, never a panic, and a document
//! that loads loads again the same way.

pub fn load(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match tollgate_config::parse(text, "fuzz.yaml") {
        Ok(config) => {
            let again = tollgate_config::parse(text, "fuzz.yaml")
                .unwrap_or_else(|e| panic!("loaded once, then refused: {e}"));
            assert_eq!(again.providers, config.providers);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}
