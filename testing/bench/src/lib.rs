//! Benchmarks of hush beside matrix-sdk-crypto: the store workloads behind one
//! interface for every backend, and the named engine workloads (hush, matrix-sdk-crypto,
//! bare vodozemac). Memory readings come from `hush_testing::memory`.

pub mod sqlite;
pub mod stores;
pub mod workloads;
