//! # hush-store-redb
//!
//! hush's crypto store on [redb](https://docs.rs/redb): the default
//! persistent store. One file; every `save_changes` is one redb write
//! transaction, committed durably before it returns, so a batch is on disk
//! entirely or not at all. Reads are by key; opening loads nothing but the
//! store's metadata, whatever the number of sessions.
//!
//! Opened without a passphrase or key, the store is **plain**: anyone with the
//! file can read every key in it. With a passphrase (PBKDF2, once per open)
//! or a raw 32-byte key, every value is encrypted and every table key hashed
//! (see `hush-store-cipher`).
//!
//! ```no_run
//! # async fn example() -> Result<(), hush_crypto_core::StoreError> {
//! use hush_store_redb::StoreOptions;
//! use ruma_common::{device_id, user_id};
//!
//! let store = hush_store_redb::open(
//!     "crypto.redb",
//!     user_id!("@alice:example.org"),
//!     device_id!("ALICEDEVICE"),
//!     StoreOptions::passphrase("correct horse battery staple"),
//! )?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod backend;

use std::path::Path;

pub use backend::RedbBackend;
use hush_crypto_core::StoreError;
use hush_store_cipher::KvCryptoStore;
pub use hush_store_cipher::{SCHEMA_VERSION, StoreOptions, StoreSecret};
use ruma_common::{DeviceId, UserId};

/// The crypto store of one device in a redb file.
pub type RedbStore = KvCryptoStore<RedbBackend>;

/// A redb store shared by several processes through the store lock (an app
/// and its notification helper): see [`open_shared`].
pub type SharedRedbStore = hush_store_cipher::SharedStore<RedbBackend>;

/// Opens the store at `path` for several processes to share: redb lets one
/// process at a time open a file, so the store is open only while this
/// process holds the store lock, whose lease lives in `<path>.lock` (see
/// [`hush_store_cipher::SharedStore`]). Every process sharing it must open
/// it this way and take the lock around its work (hush-client's
/// `store_lock` does). Errors as [`open`]'s.
pub fn open_shared(
    path: impl AsRef<Path>,
    user_id: &UserId,
    device_id: &DeviceId,
    options: StoreOptions,
) -> Result<SharedRedbStore, StoreError> {
    let path = path.as_ref().to_owned();
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let open_backend: hush_store_cipher::OpenBackend<RedbBackend> = Box::new(move || RedbBackend::open(&path));
    hush_store_cipher::SharedStore::new(lock_path.into(), user_id, device_id, options, open_backend)
}

/// Opens the store at `path` (creating it if absent) for `user_id` /
/// `device_id`. Errors: the file is damaged or not a store
/// ([`StoreError::Corrupt`]), it belongs to another device
/// ([`StoreError::AccountMismatch`]), the passphrase is wrong
/// ([`StoreError::WrongPassphrase`]) or missing
/// ([`StoreError::PassphraseRequired`]), or it was written by a newer hush
/// ([`StoreError::UnsupportedSchema`]). It is never reset or overwritten.
pub fn open(
    path: impl AsRef<Path>,
    user_id: &UserId,
    device_id: &DeviceId,
    options: StoreOptions,
) -> Result<RedbStore, StoreError> {
    let path = path.as_ref();
    // Checked read-only first: an open refused for a wrong or missing
    // passphrase, another device's store or a newer schema writes nothing
    // (a redb database opened for writing rewrites its header). A file a
    // crash left needing repair is repaired by the read-write open below.
    // A file never initialized (a first open that failed after redb made
    // the file) is created by the read-write open too.
    if path.exists()
        && let Some(read_only) = RedbBackend::open_read_only(path)?
    {
        drop(KvCryptoStore::open_checked(read_only, user_id, device_id, &options)?);
    }
    KvCryptoStore::open(RedbBackend::open(path)?, user_id, device_id, options)
}
