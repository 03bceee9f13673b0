//! The store workloads, behind one interface for every backend: hush's redb
//! and sled stores (plain and encrypted) and matrix-sdk-crypto's SQLite store.
//! Encrypted stores use a raw key on both sides, so no KDF is timed.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use hush_crypto_core::{Changes, CryptoStore, megolm::StoredInboundGroupSession};
use hush_store_cipher::StoreOptions;
use hush_store_postgres::{PgDatabase, PgSettings};
use ruma::{OwnedRoomId, RoomId};

/// A room key id: (room, session).
pub type KeyId = (OwnedRoomId, String);

/// Room keys ready to save, made before the timing starts.
pub enum Batch {
    /// For a hush store.
    Hush(Vec<StoredInboundGroupSession>),
    /// For matrix-sdk-crypto's store.
    Sdk(Vec<matrix_sdk_crypto::olm::InboundGroupSession>),
}

impl Batch {
    /// The ids of the keys in the batch.
    pub fn ids(&self) -> Vec<KeyId> {
        match self {
            Self::Hush(s) => s.iter().map(|s| (s.room_id.clone(), s.session_id.clone())).collect(),
            Self::Sdk(s) => s.iter().map(|s| (s.room_id().to_owned(), s.session_id().to_owned())).collect(),
        }
    }
}

/// One store under test.
#[async_trait]
pub trait BenchStore: Send + Sync {
    /// Makes `count` new room keys for `room` (not timed).
    fn fixtures(&self, count: usize, room: &RoomId) -> Batch;
    /// Saves a batch in one write.
    async fn save(&self, batch: Batch);
    /// Reads one room key.
    async fn lookup(&self, key: &KeyId) -> bool;
}

/// The backends compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// hush on redb, plain.
    Redb,
    /// hush on redb, encrypted.
    RedbEncrypted,
    /// hush on sled, plain.
    Sled,
    /// hush on sled, encrypted.
    SledEncrypted,
    /// hush on PostgreSQL (the test cluster, on loopback), plain.
    Postgres,
    /// hush on PostgreSQL, encrypted.
    PostgresEncrypted,
    /// matrix-sdk-crypto's SQLite store, plain.
    Sqlite,
    /// matrix-sdk-crypto's SQLite store, encrypted.
    SqliteEncrypted,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: [Self; 8] = [
        Self::Redb,
        Self::RedbEncrypted,
        Self::Sled,
        Self::SledEncrypted,
        Self::Postgres,
        Self::PostgresEncrypted,
        Self::Sqlite,
        Self::SqliteEncrypted,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redb => "hush-redb",
            Self::RedbEncrypted => "hush-redb-enc",
            Self::Sled => "hush-sled",
            Self::SledEncrypted => "hush-sled-enc",
            Self::Postgres => "hush-postgres",
            Self::PostgresEncrypted => "hush-postgres-enc",
            Self::Sqlite => "sdk-sqlite",
            Self::SqliteEncrypted => "sdk-sqlite-enc",
        }
    }

    /// Opens (or creates) the store at `path` (PostgreSQL: in the schema
    /// named after `path`, see [`bench_schema`]).
    pub async fn open(self, path: &Path) -> Box<dyn BenchStore> {
        let (user, device) = hush_testing::conformance::owner();
        let key = || StoreOptions::key([42; 32]);
        let plain = StoreOptions::default;
        match self {
            Self::Redb => hush(hush_store_redb::open(path, &user, &device, plain()).unwrap()),
            Self::RedbEncrypted => hush(hush_store_redb::open(path, &user, &device, key()).unwrap()),
            Self::Sled => hush(hush_store_sled::open(path, &user, &device, plain()).unwrap()),
            Self::SledEncrypted => hush(hush_store_sled::open(path, &user, &device, key()).unwrap()),
            Self::Postgres | Self::PostgresEncrypted => {
                let settings = PgSettings { schema: bench_schema(path), connections: 2 };
                let database = PgDatabase::connect(&hush_testing::stores::postgres_url(), settings)
                    .expect("the test PostgreSQL (bash testing/postgres/postgres.sh start; cargo xtask bench starts it)");
                let options = if self == Self::Postgres { plain() } else { key() };
                hush(database.open_store(&user, &device, options).unwrap())
            }
            Self::Sqlite => Box::new(crate::sqlite::Sqlite::open(path, false).await),
            Self::SqliteEncrypted => Box::new(crate::sqlite::Sqlite::open(path, true).await),
        }
    }
}

/// The PostgreSQL schema standing for the store "file" at `path`.
pub fn bench_schema(path: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    format!("bench_{:016x}", hasher.finish())
}

/// Drops every schema the benchmark made on the test cluster.
pub fn drop_bench_schemas() {
    let url = hush_testing::stores::postgres_url();
    // The synchronous client must not run in the benchmark's runtime context.
    let dropped = std::thread::spawn(move || -> Result<usize, postgres::Error> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        let rows = client.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'", &[])?;
        for row in &rows {
            let schema: String = row.try_get(0)?;
            client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
        }
        Ok(rows.len())
    })
    .join();
    if !matches!(dropped, Ok(Ok(_))) {
        eprintln!("could not drop the benchmark's PostgreSQL schemas: {dropped:?}");
    }
}

fn hush(store: impl CryptoStore + 'static) -> Box<dyn BenchStore> {
    Box::new(Hush(Arc::new(store)))
}

/// A hush store.
struct Hush(Arc<dyn CryptoStore>);

#[async_trait]
impl BenchStore for Hush {
    fn fixtures(&self, count: usize, room: &RoomId) -> Batch {
        Batch::Hush((0..count).map(|_| hush_testing::conformance::inbound_fixture(room)).collect())
    }

    async fn save(&self, batch: Batch) {
        let Batch::Hush(sessions) = batch else { panic!("a matrix-sdk-crypto batch for a hush store") };
        self.0.save_changes(Changes { inbound_group_sessions: sessions, ..Default::default() }).await.unwrap();
    }

    async fn lookup(&self, (room, session): &KeyId) -> bool {
        self.0.get_inbound_group_session(room, session).await.unwrap().is_some()
    }
}
