//! Which crypto store a client uses, opened once the user and device are known.

#[cfg(any(feature = "redb", feature = "sled"))]
use std::path::PathBuf;
use std::sync::Arc;

use hush_crypto_core::{CryptoStore, MemoryStore, StoreError};
#[cfg(any(feature = "redb", feature = "sled", feature = "postgres"))]
use hush_store_cipher::StoreOptions;
#[cfg(feature = "postgres")]
pub use hush_store_postgres::{PgDatabase, PgSettings};
use ruma_common::{DeviceId, UserId};

/// How the client's crypto store is made.
#[derive(Clone)]
pub enum StoreConfig {
    /// In memory: every key is lost when the process ends.
    Memory,
    /// redb, at a file path, optionally encrypted with a passphrase.
    #[cfg(feature = "redb")]
    Redb {
        /// The file.
        path: PathBuf,
        /// The passphrase, or `None` for a plain store.
        passphrase: Option<String>,
    },
    /// sled, in a directory, optionally encrypted with a passphrase.
    #[cfg(feature = "sled")]
    Sled {
        /// The directory.
        path: PathBuf,
        /// The passphrase, or `None` for a plain store.
        passphrase: Option<String>,
    },
    /// PostgreSQL: the device's store in a database many devices may share,
    /// optionally encrypted with a passphrase.
    #[cfg(feature = "postgres")]
    Postgres {
        /// The database: a connection URL, or a pool shared with other clients.
        database: PostgresDatabase,
        /// The passphrase, or `None` for a plain store.
        passphrase: Option<String>,
    },
    /// Any store the application opened itself.
    Custom(Arc<dyn CryptoStore>),
}

/// Where a [`StoreConfig::Postgres`] store lives.
#[cfg(feature = "postgres")]
#[derive(Clone)]
pub enum PostgresDatabase {
    /// Connect to this URL (default settings: schema `hush`, two connections).
    Url(String),
    /// A database already connected, whose pool this client shares (a
    /// bridge running many devices opens one).
    Shared(PgDatabase),
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            #[cfg(feature = "redb")]
            Self::Redb { path, .. } => f.debug_struct("Redb").field("path", path).finish_non_exhaustive(),
            #[cfg(feature = "sled")]
            Self::Sled { path, .. } => f.debug_struct("Sled").field("path", path).finish_non_exhaustive(),
            // The URL may carry a password: not shown.
            #[cfg(feature = "postgres")]
            Self::Postgres { .. } => f.debug_struct("Postgres").finish_non_exhaustive(),
            Self::Custom(store) => f.debug_tuple("Custom").field(store).finish(),
        }
    }
}

impl StoreConfig {
    /// Whether keys survive a restart.
    pub fn is_persistent(&self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// Opens the store; `shared`: other processes share it through the
    /// store lock, so a redb or sled file is opened only while the lock is
    /// held (PostgreSQL needs nothing more).
    pub(crate) fn open(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        shared: bool,
    ) -> Result<Arc<dyn CryptoStore>, StoreError> {
        #[cfg(not(any(feature = "redb", feature = "sled", feature = "postgres")))]
        let _ = (user_id, device_id, shared);
        Ok(match self {
            Self::Memory => Arc::new(MemoryStore::new()),
            #[cfg(feature = "redb")]
            Self::Redb { path, passphrase } if shared => {
                Arc::new(hush_store_redb::open_shared(path, user_id, device_id, options(passphrase))?)
            }
            #[cfg(feature = "redb")]
            Self::Redb { path, passphrase } => {
                Arc::new(hush_store_redb::open(path, user_id, device_id, options(passphrase))?)
            }
            #[cfg(feature = "sled")]
            Self::Sled { path, passphrase } if shared => {
                Arc::new(hush_store_sled::open_shared(path, user_id, device_id, options(passphrase))?)
            }
            #[cfg(feature = "sled")]
            Self::Sled { path, passphrase } => {
                Arc::new(hush_store_sled::open(path, user_id, device_id, options(passphrase))?)
            }
            #[cfg(feature = "postgres")]
            Self::Postgres { database, passphrase } => {
                let database = match database {
                    PostgresDatabase::Url(url) => PgDatabase::connect(url, PgSettings::default())?,
                    PostgresDatabase::Shared(database) => database.clone(),
                };
                Arc::new(database.open_store(user_id, device_id, options(passphrase))?)
            }
            Self::Custom(store) => store.clone(),
        })
    }
}

/// Store options for an optional passphrase.
#[cfg(any(feature = "redb", feature = "sled", feature = "postgres"))]
fn options(passphrase: &Option<String>) -> StoreOptions {
    match passphrase {
        Some(passphrase) => StoreOptions::passphrase(passphrase),
        None => StoreOptions::default(),
    }
}
