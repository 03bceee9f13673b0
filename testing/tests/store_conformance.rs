//! The conformance suite, unchanged, against every backend and encryption
//! mode: one test per check and configuration (e.g.
//! `redb_plain::a_batch_is_applied_whole`). The persistent backends also run
//! the failed-batch check, with a write fault armed inside the engine.

use hush_testing::{
    conformance_suite,
    stores::{Encryption, MemoryFactory, RedbFactory, SledFactory},
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
