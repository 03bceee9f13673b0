//! Fuzz targets: one function per parser or state machine hush feeds from
//! outside, shared by the cargo-fuzz crate (`fuzz/`, where libFuzzer
//! drives them) and by the corpus replay in `cargo test`
//! (`tests/fuzz_corpora.rs`), so a crash input committed to a corpus is a
//! plain test failure. A target may reject its input any way it likes; it
//! must never panic, hang or grow without bound.
//!
//! Stateful targets keep one engine per thread (building one costs more
//! than thousands of inputs) and build it again every few thousand inputs,
//! so state the fuzzer manages to add cannot accumulate.

mod engines;
mod export_file;
mod parsers;
pub mod seeds;

/// Every target, by the name its cargo-fuzz binary and corpus carry.
pub const TARGETS: [&str; 10] = [
    "to_device",
    "olm_plaintext",
    "megolm_event",
    "keys_query",
    "keys_claim",
    "key_export",
    "store_values",
    "gossip_content",
    "backup_data",
    "secret_storage",
];

/// Runs the target `name` on `data`. Unknown names panic (a harness bug).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "to_device" => engines::to_device(data),
        "olm_plaintext" => engines::olm_plaintext(data),
        "megolm_event" => engines::megolm_event(data),
        "keys_query" => engines::keys_query(data),
        "keys_claim" => engines::keys_claim(data),
        "key_export" => parsers::key_export(data),
        "store_values" => parsers::store_values(data),
        "gossip_content" => parsers::gossip_content(data),
        "backup_data" => parsers::backup_data(data),
        "secret_storage" => parsers::secret_storage(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Inputs per engine before it is built again.
const REBUILD_EVERY: u32 = 4096;

/// The input as JSON, if it is.
fn json(data: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(data).ok()
}
