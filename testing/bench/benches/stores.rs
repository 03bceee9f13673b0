//! Store workloads (criterion), hush's redb, sled and PostgreSQL stores
//! beside matrix-sdk-crypto's SQLite store, in one run (PostgreSQL is the
//! test cluster on loopback, which `cargo xtask bench stores` starts):
//!
//! * `save_10000_in_one_batch`: 10,000 room keys in one write.
//! * `save_1000_batches_of_10`: 1,000 writes of 10 room keys each.
//! * `lookup_in_100000`: one room key by (room, session) in a store of 100,000.
//! * `open_100000`: opening a store that holds 100,000 room keys; after the
//!   criterion timings, the peak RSS growth of one open is printed per backend.
//!
//! Run with `cargo xtask bench stores`.

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use hush_bench::stores::{Backend, KeyId};
use ruma::{OwnedRoomId, RoomId};

const BIG: usize = 100_000;

fn room(n: usize) -> OwnedRoomId {
    format!("!bench{n}:example.org").try_into().unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The SQLite store needs the runtime's context even where it is dropped.
    let _context = runtime.enter();
    let mut criterion = Criterion::default().configure_from_args().sample_size(10).warm_up_time(Duration::from_secs(1));
    let backends: Vec<Backend> = match std::env::var("HUSH_BENCH_STORES") {
        Ok(list) => Backend::ALL.into_iter().filter(|b| list.split(',').any(|n| n == b.name())).collect(),
        Err(_) => Backend::ALL.to_vec(),
    };
    let mut rss = Vec::new();
    let postgres = backends.iter().any(|b| matches!(b, Backend::Postgres | Backend::PostgresEncrypted));
    if postgres {
        hush_bench::stores::drop_bench_schemas();
    }

    for backend in &backends {
        let backend = *backend;
        let mut group = criterion.benchmark_group(backend.name());

        group.bench_function("save_10000_in_one_batch", |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::TempDir::new().unwrap();
                    let store = runtime.block_on(backend.open(&dir.path().join("store")));
                    let batch = store.fixtures(10_000, &room(0));
                    (dir, store, batch)
                },
                |(dir, store, batch)| {
                    runtime.block_on(store.save(batch));
                    (dir, store)
                },
                BatchSize::PerIteration,
            )
        });

        group.bench_function("save_1000_batches_of_10", |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = tempfile::TempDir::new().unwrap();
                    let store = runtime.block_on(backend.open(&dir.path().join("store")));
                    let batches: Vec<_> = (0..1000).map(|i| store.fixtures(10, &room(i % 50))).collect();
                    let started = Instant::now();
                    for batch in batches {
                        runtime.block_on(store.save(batch));
                    }
                    total += started.elapsed();
                }
                total
            })
        });

        // A store of 100,000 room keys for the lookup and open workloads.
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("store");
        let mut probes: Vec<KeyId> = Vec::new();
        {
            let store = runtime.block_on(backend.open(&path));
            for chunk in 0..BIG / 10_000 {
                let batch = store.fixtures(10_000, &room(chunk));
                probes.extend(batch.ids().into_iter().step_by(100));
                runtime.block_on(store.save(batch));
            }
        }
        {
            let store = runtime.block_on(backend.open(&path));
            let mut next = 0;
            group.bench_function("lookup_in_100000", |b| {
                b.iter(|| {
                    next = (next + 1) % probes.len();
                    assert!(runtime.block_on(store.lookup(&probes[next])));
                })
            });
        }
        group.bench_function("open_100000", |b| {
            b.iter(|| {
                let store = runtime.block_on(backend.open(&path));
                drop(store);
            })
        });
        group.finish();

        hush_testing::memory::reset_peak_rss();
        let (before, _) = hush_testing::memory::rss_mib();
        let started = Instant::now();
        let store = runtime.block_on(backend.open(&path));
        assert!(runtime.block_on(store.lookup(&probes[0])));
        let elapsed = started.elapsed();
        let (_, peak) = hush_testing::memory::rss_mib();
        rss.push((backend, elapsed, peak - before));
        drop(store);
        let _: &RoomId = &room(0);
    }
    criterion.final_summary();
    if postgres {
        hush_bench::stores::drop_bench_schemas();
    }
    println!("\nopen a store of {BIG} room keys + one lookup (single run):");
    println!("{:<16} {:>12} {:>16}", "backend", "time", "peak RSS growth");
    for (backend, elapsed, growth) in rss {
        println!("{:<16} {:>12.1?} {:>13.1} MiB", backend.name(), elapsed, growth);
    }
}
