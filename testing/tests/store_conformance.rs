//! The conformance suite, unchanged, against every backend and encryption
//! mode: one test per check and configuration (e.g.
//! `redb_plain::a_batch_is_applied_whole`). The persistent backends also run
//! the failed-batch check, with a write fault armed inside the engine.
//! The PostgreSQL ones need the test cluster, so a plain `cargo test` skips
//! them; `cargo xtask test` starts it and runs them.

use hush_testing::{
    conformance_suite,
    stores::{Encryption, MemoryFactory, PgFactory, RedbFactory, SledFactory},
};

conformance_suite!(memory_store, MemoryFactory);
conformance_suite!(redb_plain, RedbFactory::new(Encryption::None), a_failed_batch_leaves_nothing_visible);
conformance_suite!(
    redb_encrypted_with_a_key,
    RedbFactory::new(Encryption::RawKey),
    a_failed_batch_leaves_nothing_visible
);
conformance_suite!(
    redb_encrypted_with_a_passphrase,
    RedbFactory::new(Encryption::Passphrase),
    a_failed_batch_leaves_nothing_visible
);
conformance_suite!(sled_plain, SledFactory::new(Encryption::None), a_failed_batch_leaves_nothing_visible);
conformance_suite!(
    sled_encrypted_with_a_key,
    SledFactory::new(Encryption::RawKey),
    a_failed_batch_leaves_nothing_visible
);
conformance_suite!(
    sled_encrypted_with_a_passphrase,
    SledFactory::new(Encryption::Passphrase),
    a_failed_batch_leaves_nothing_visible
);
conformance_suite!(
    #[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
    postgres_plain,
    PgFactory::new(Encryption::None),
    a_failed_batch_leaves_nothing_visible
);
conformance_suite!(
    #[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
    postgres_encrypted_with_a_key,
    PgFactory::new(Encryption::RawKey),
    a_failed_batch_leaves_nothing_visible
);
conformance_suite!(
    #[ignore = "needs the test PostgreSQL (cargo xtask test starts it)"]
    postgres_encrypted_with_a_passphrase,
    PgFactory::new(Encryption::Passphrase),
    a_failed_batch_leaves_nothing_visible
);
