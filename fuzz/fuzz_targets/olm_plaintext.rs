//! Fuzz target `olm_plaintext`: see `hush_testing::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_testing::fuzz::run("olm_plaintext", data));
