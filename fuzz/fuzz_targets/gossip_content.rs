//! Fuzz target `gossip_content`: see `hush_testing::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_testing::fuzz::run("gossip_content", data));
