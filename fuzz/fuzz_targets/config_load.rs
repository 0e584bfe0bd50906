//! Fuzz target for the config loader (YAML, `${VAR}` interpolation, validation): any
//! bytes load or are refused with located problems, without a panic.

#![no_main]

#[path = "config_common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| common::load(input));
