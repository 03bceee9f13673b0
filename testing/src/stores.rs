//! Store factories for the conformance suite, the crash test and benchmarks:
//! MemoryStore, redb and sled, each plain or encrypted.

use std::path::PathBuf;

use hush_crypto_core::MemoryStore;
use hush_store_cipher::StoreOptions;
use hush_store_redb::RedbStore;
use hush_store_sled::SledStore;
use tempfile::TempDir;

use crate::conformance::{StoreFactory, owner};

/// Encryption for a persistent test store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// A plain store.
    None,
    /// Encrypted under a raw key (no KDF cost).
    RawKey,
    /// Encrypted under a passphrase (PBKDF2 with few rounds, for speed).
    Passphrase,
}

impl Encryption {
    /// The store options for this mode.
    pub fn options(self) -> StoreOptions {
        match self {
            Self::None => StoreOptions::default(),
            Self::RawKey => StoreOptions::key([7; 32]),
            Self::Passphrase => StoreOptions {
                kdf_rounds: hush_store_cipher::MIN_KDF_ROUNDS,
                ..StoreOptions::passphrase("conformance")
            },
        }
    }
}

/// Fresh memory stores (nothing to reopen).
#[derive(Debug, Default)]
pub struct MemoryFactory;

impl StoreFactory for MemoryFactory {
    type Store = MemoryStore;
    fn create(&mut self) -> MemoryStore {
        MemoryStore::new()
    }
    fn reopen(&mut self) -> Option<MemoryStore> {
        None
    }
}

/// redb stores in a temporary directory.
#[derive(Debug)]
pub struct RedbFactory {
    dir: TempDir,
    count: usize,
    encryption: Encryption,
}

impl RedbFactory {
    /// A factory with the given encryption.
    pub fn new(encryption: Encryption) -> Self {
        Self { dir: TempDir::new().expect("temp dir"), count: 0, encryption }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(format!("store{}.redb", self.count))
    }
}

impl StoreFactory for RedbFactory {
    type Store = RedbStore;
    fn create(&mut self) -> RedbStore {
        self.count += 1;
        let (user, device) = owner();
        hush_store_redb::open(self.path(), &user, &device, self.encryption.options()).expect("open redb store")
    }
    fn reopen(&mut self) -> Option<RedbStore> {
        let (user, device) = owner();
        Some(hush_store_redb::open(self.path(), &user, &device, self.encryption.options()).expect("reopen redb store"))
    }
}

/// sled stores in a temporary directory.
#[derive(Debug)]
pub struct SledFactory {
    dir: TempDir,
    count: usize,
    encryption: Encryption,
}

impl SledFactory {
    /// A factory with the given encryption.
    pub fn new(encryption: Encryption) -> Self {
        Self { dir: TempDir::new().expect("temp dir"), count: 0, encryption }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(format!("store{}.sled", self.count))
    }
}

impl StoreFactory for SledFactory {
    type Store = SledStore;
    fn create(&mut self) -> SledStore {
        self.count += 1;
        let (user, device) = owner();
        hush_store_sled::open(self.path(), &user, &device, self.encryption.options()).expect("open sled store")
    }
    fn reopen(&mut self) -> Option<SledStore> {
        let (user, device) = owner();
        Some(hush_store_sled::open(self.path(), &user, &device, self.encryption.options()).expect("reopen sled store"))
    }
}

impl crate::conformance::FaultyStoreFactory for RedbFactory {
    fn fail_next_write_after(store: &RedbStore, ops: usize) {
        store.backend().fail_next_write_after(ops);
    }
}

impl crate::conformance::FaultyStoreFactory for SledFactory {
    fn fail_next_write_after(store: &SledStore, ops: usize) {
        store.backend().fail_next_write_after(ops);
    }
}
