//! Replays the seeds of the `config_load` fuzz target (`fuzz/corpus/config_load/`) on
//! stable, whole and cut or mangled, through the same code the target runs.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

#[path = "../../../fuzz/fuzz_targets/config_common.rs"]
mod common;

#[test]
fn config_load_seeds_whole_cut_and_mangled() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config_load");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        seeds += 1;
        common::load(&bytes);
        let step = (bytes.len() / 64).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            common::load(&bytes[..cut]);
            let mut mangled = bytes[..cut].to_vec();
            mangled.extend_from_slice(&bytes[(cut + 1).min(bytes.len())..]);
            common::load(&mangled);
        }
    }
    assert!(seeds >= 4, "seeds in {}", dir.display());
}
