//! # hush-store-postgres
//!
//! hush's crypto store on PostgreSQL, for bridges and bot fleets that keep
//! their state in a database they already run, and for devices on several
//! hosts. Many devices share one database: each store is a row of
//! `hush_stores`, by owner (user id, device id), and its records are rows
//! of `hush_kv` under that store's id, all inside one PostgreSQL schema
//! (`hush` unless [`PgSettings::schema`] says otherwise).
//!
//! The store is [`KvCryptoStore`] on [`PgBackend`]: the same record
//! format, encryption at rest, owner check, schema version and migrations
//! as the redb and sled stores, and one PostgreSQL transaction per
//! `save_changes` batch. Opened with a passphrase or key, every value is
//! encrypted and every record key hashed before it reaches the server; the
//! owner's user and device ids in `hush_stores` are in the clear (a fleet's
//! operator needs to find its devices' stores).
//!
//! One [`PgDatabase`] (a pool of connections, each on its own worker
//! thread) serves any number of stores:
//!
//! ```no_run
//! # fn example() -> Result<(), hush_crypto_core::StoreError> {
//! use hush_store_postgres::{PgDatabase, PgSettings, StoreOptions};
//! use ruma_common::{device_id, user_id};
//!
//! let database = PgDatabase::connect("postgres://hush@127.0.0.1/hush", PgSettings::default())?;
//! let store = database.open_store(
//!     user_id!("@bridgebot:example.org"),
//!     device_id!("BRIDGE1"),
//!     StoreOptions::passphrase("correct horse battery staple"),
//! )?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod backend;
mod pool;
mod schema;

use std::sync::Arc;

pub use backend::PgBackend;
use hush_crypto_core::StoreError;
use hush_store_cipher::KvCryptoStore;
pub use hush_store_cipher::{SCHEMA_VERSION, StoreOptions, StoreSecret};
use pool::Pool;
use ruma_common::{DeviceId, UserId};
pub use schema::LAYOUT_VERSION;

/// The crypto store of one device in a PostgreSQL database.
pub type PgStore = KvCryptoStore<PgBackend>;

/// How a [`PgDatabase`] connects and where it keeps its tables.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// The PostgreSQL schema (namespace) holding hush's tables, created if
    /// absent: lower-case letters, digits and `_`.
    pub schema: String,
    /// Connections (each with its worker thread). Calls of one store run
    /// one at a time; several stores on one database use several.
    pub connections: usize,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self { schema: "hush".to_owned(), connections: 2 }
    }
}

/// A PostgreSQL database holding hush stores: a pool of connections shared
/// by every store opened from it.
#[derive(Clone, Debug)]
pub struct PgDatabase {
    pool: Arc<Pool>,
    schema: String,
}

impl PgDatabase {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string), creating hush's schema and tables if
    /// absent or migrating them. Errors: the server cannot be reached or
    /// refuses the login ([`StoreError::Backend`], with the server's
    /// message), or its tables were made by a newer hush
    /// ([`StoreError::UnsupportedSchema`]).
    pub fn connect(url: &str, settings: PgSettings) -> Result<Self, StoreError> {
        let schema = schema::checked_namespace(&settings.schema)?.to_owned();
        let config: postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("not a PostgreSQL connection string: {e}")))?;
        let pool = Arc::new(Pool::new(config, settings.connections)?);
        let ns = schema.clone();
        pool.run(move |connection| schema::prepare(connection, &ns))?;
        Ok(Self { pool, schema })
    }

    /// Opens the store of `user_id` / `device_id` (creating it if absent).
    /// Errors as [`hush_store_redb::open`]'s: another device's store
    /// ([`StoreError::AccountMismatch`]), a wrong or missing passphrase, a
    /// store written by a newer hush. It is never reset or overwritten.
    ///
    /// [`hush_store_redb::open`]: https://docs.rs/hush-store-redb
    pub fn open_store(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        options: StoreOptions,
    ) -> Result<PgStore, StoreError> {
        let (ns, user, device) = (self.schema.clone(), user_id.to_string(), device_id.to_string());
        let store_id = self.pool.run(move |connection| schema::store_id(connection, &ns, &user, &device))?;
        let backend = PgBackend::new(Arc::clone(&self.pool), &self.schema, store_id);
        KvCryptoStore::open(backend, user_id, device_id, options)
    }

    /// Deletes the store of `user_id` / `device_id` with every record in it
    /// (a device logged out for good); whether there was one.
    pub fn delete_store(&self, user_id: &UserId, device_id: &DeviceId) -> Result<bool, StoreError> {
        let (ns, user, device) = (self.schema.clone(), user_id.to_string(), device_id.to_string());
        self.pool.run(move |connection| schema::delete_store(connection, &ns, &user, &device))
    }
}

/// Connects to `url` with default settings and opens one store: for a
/// single device. A fleet opens its stores from one [`PgDatabase`].
pub fn open(url: &str, user_id: &UserId, device_id: &DeviceId, options: StoreOptions) -> Result<PgStore, StoreError> {
    PgDatabase::connect(url, PgSettings::default())?.open_store(user_id, device_id, options)
}
