//! Benchmarks of hush beside matrix-sdk-crypto: the store workloads behind one
//! interface for every backend. Memory readings come from `hush_testing::memory`.

pub mod sqlite;
pub mod stores;
