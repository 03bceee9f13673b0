//! The fuzz corpora, replayed by plain `cargo test`: every committed input
//! in `fuzz/corpus/<target>/` (the seeds and what fuzzing kept, minimised)
//! and freshly made seeds, through the same target functions libFuzzer
//! runs. An input that once crashed a target stays here as a test.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        inputs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    inputs
}

fn replay(target: &str) {
    let committed = corpus(target);
    assert!(!committed.is_empty(), "no committed corpus for {target}");
    let fresh: Vec<_> = hush_testing::fuzz::seeds::all()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, name, bytes)| (format!("fresh seed {name}"), bytes))
        .collect();
    assert!(!fresh.is_empty(), "no seeds for {target}");
    for (name, bytes) in committed.iter().chain(&fresh) {
        let outcome = std::panic::catch_unwind(|| hush_testing::fuzz::run(target, bytes));
        assert!(outcome.is_ok(), "{target}: {name} panicked");
    }
}

macro_rules! replay_tests {
    ($($target:ident),*) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*
        #[test]
        fn every_target_is_replayed() {
            let mut here = vec![$(stringify!($target)),*];
            here.sort_unstable();
            let mut all = hush_testing::fuzz::TARGETS.to_vec();
            all.sort_unstable();
            assert_eq!(here, all);
        }
    };
}

replay_tests!(
    to_device,
    olm_plaintext,
    megolm_event,
    keys_query,
    keys_claim,
    key_export,
    store_values,
    gossip_content,
    backup_data,
    secret_storage
);
