//! # hush-store-cipher
//!
//! What hush's persistent crypto stores share:
//!
//! * [`StoreCipher`]: encryption at rest. A random 32-byte store key encrypts
//!   every value with XChaCha20-Poly1305 (fresh nonce per value, versioned
//!   envelope, bound to its table and key) and keys the HMAC-SHA256 hashes
//!   that replace table keys (user, device, room and session ids), so a stolen
//!   file shows neither secrets nor who talks to whom. The store key is
//!   wrapped under the user's passphrase (PBKDF2-HMAC-SHA256, 200,000 rounds
//!   by default, run once per open) or a raw 32-byte key.
//! * [`KvCryptoStore`]: the whole [`CryptoStore`](hush_crypto_core::CryptoStore)
//!   on top of any ordered key-value engine that can apply a batch
//!   atomically ([`KvBackend`]): record layout, schema version and
//!   migrations, the owner check, encryption. A backend crate (redb, sled)
//!   only moves bytes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cipher;
mod codec;
mod kv;
mod migrations;
mod shared;
mod store;

pub use cipher::{
    CipherError, DEFAULT_KDF_ROUNDS, KeyHasher, MAX_KDF_ROUNDS, MIN_KDF_ROUNDS, StoreCipher, StoreSecret,
    WrappedStoreKey,
};
pub use kv::{Decide, Entries, KvBackend, KvEngine, Table, WriteFault, WriteOp, guard_engine};
pub use migrations::SCHEMA_VERSION;
pub use shared::{OpenBackend, SharedStore};
pub use store::{KvCryptoStore, StoreKeys, StoreOptions};
