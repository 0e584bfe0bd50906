//! Fuzz target for the streaming token counter: provider text cut into deltas at any
//! size counts like the whole text, without a panic.

#![no_main]

#[path = "metering_common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| common::count(input));
