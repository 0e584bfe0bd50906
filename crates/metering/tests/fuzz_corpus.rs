//! Replays the seeds of the `metering_tokens` fuzz target (`fuzz/corpus/metering_tokens/`)
//! on stable, with every piece size, through the same code the target runs.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

#[path = "../../../fuzz/fuzz_targets/metering_common.rs"]
mod common;

#[test]
fn metering_tokens_seeds_count_alike_in_pieces_of_every_size() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/metering_tokens");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let mut bytes = std::fs::read(entry.unwrap().path()).unwrap();
        seeds += 1;
        common::count(&bytes);
        for step in [0u8, 1, 2, 5, 31, 127, 255] {
            bytes[0] = step;
            common::count(&bytes);
        }
    }
    assert!(seeds >= 4, "seeds in {}", dir.display());
}
