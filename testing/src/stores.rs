//! Store factories for the conformance suite, the crash test and benchmarks:
//! MemoryStore, redb, sled and PostgreSQL, each plain or encrypted.

use std::path::PathBuf;

use hush_crypto_core::MemoryStore;
use hush_store_cipher::StoreOptions;
use hush_store_postgres::{PgDatabase, PgSettings, PgStore};
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

impl crate::conformance::FaultyStoreFactory for PgFactory {
    fn fail_next_write_after(store: &PgStore, ops: usize) {
        store.backend().fail_next_write_after(ops);
    }
}

/// The private PostgreSQL cluster the tests use (`testing/postgres/postgres.sh`,
/// started by `cargo xtask test`): `HUSH_POSTGRES_URL`, or its default.
pub fn postgres_url() -> String {
    std::env::var("HUSH_POSTGRES_URL").unwrap_or_else(|_| "postgres://hush:hush@127.0.0.1:8150/hush".to_owned())
}

/// A PostgreSQL schema name no other test (or test run) uses.
pub fn unique_schema(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// Drops a test schema and everything in it.
pub fn drop_schema(schema: &str) {
    let url = postgres_url();
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    // The synchronous client must not run on an async runtime's thread.
    let dropped = std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute(&sql)
    })
    .join();
    if !matches!(dropped, Ok(Ok(()))) {
        eprintln!("could not drop the test schema {schema}: {dropped:?}");
    }
}

/// PostgreSQL stores on the test cluster, each in a schema of its own
/// (dropped with the factory), since the suite opens every store for the
/// same owner.
#[derive(Debug)]
pub struct PgFactory {
    schemas: Vec<String>,
    database: Option<PgDatabase>,
    encryption: Encryption,
}

impl PgFactory {
    /// A factory with the given encryption.
    pub fn new(encryption: Encryption) -> Self {
        Self { schemas: Vec::new(), database: None, encryption }
    }

    /// The database of the store last created.
    pub fn database(&self) -> &PgDatabase {
        self.database.as_ref().expect("a store was created")
    }
}

impl StoreFactory for PgFactory {
    type Store = PgStore;
    fn create(&mut self) -> PgStore {
        let schema = unique_schema("conformance");
        self.schemas.push(schema.clone());
        let settings = PgSettings { schema, connections: 1 };
        let database = PgDatabase::connect(&postgres_url(), settings).expect(
            "connect to the test PostgreSQL (bash testing/postgres/postgres.sh start, or run through cargo xtask test)",
        );
        let (user, device) = owner();
        let store = database.open_store(&user, &device, self.encryption.options()).expect("open PostgreSQL store");
        self.database = Some(database);
        store
    }
    fn reopen(&mut self) -> Option<PgStore> {
        let (user, device) = owner();
        let schema = self.schemas.last().expect("a store was created").clone();
        // A new pool, as another process would have.
        let database = PgDatabase::connect(&postgres_url(), PgSettings { schema, connections: 1 }).expect("reconnect");
        let store = database.open_store(&user, &device, self.encryption.options()).expect("reopen PostgreSQL store");
        self.database = Some(database);
        Some(store)
    }
}

impl Drop for PgFactory {
    fn drop(&mut self) {
        self.database = None;
        for schema in &self.schemas {
            drop_schema(schema);
        }
    }
}
