//! Secret storage (`m.secret_storage.v1.aes-hmac-sha2`, the spec's
//! "Secrets" module): the secret-storage key and its two user-facing forms
//! (a recovery key, a passphrase), the key's description and check in
//! account data, and secrets encrypted into account data under that key.
//!
//! Everything here is pure: the caller fetches and writes account data.
//! Everything read from account data is hostile: the description's check is
//! verified in constant time before a key is used, passphrase work is capped,
//! and a secret's MAC is checked before a byte of it is decrypted.

mod cipher;
mod error;
mod key;
mod recovery_key;

pub use cipher::{EncryptedSecret, SecretContent, decrypt_secret, encrypt_secret};
pub use error::SecretStorageError;
pub use key::{
    DefaultKeyContent, KeyDescription, MAX_PBKDF2_ITERATIONS, PBKDF2_ITERATIONS, PassphraseInfo, SecretStorageKey,
};
pub use recovery_key::{decode_recovery_key, encode_recovery_key};

/// The only secret-storage algorithm the spec defines.
pub const SECRET_STORAGE_ALGORITHM: &str = "m.secret_storage.v1.aes-hmac-sha2";
/// The account-data type naming the default key.
pub const DEFAULT_KEY_EVENT_TYPE: &str = "m.secret_storage.default_key";
/// The prefix of a key description's account-data type.
pub const KEY_EVENT_TYPE_PREFIX: &str = "m.secret_storage.key.";

/// The names of the secrets hush stores and shares.
pub mod names {
    /// Our master cross-signing private key.
    pub const MASTER: &str = "m.cross_signing.master";
    /// Our self-signing private key.
    pub const SELF_SIGNING: &str = "m.cross_signing.self_signing";
    /// Our user-signing private key.
    pub const USER_SIGNING: &str = "m.cross_signing.user_signing";
    /// The private key of our server-side key backup.
    pub const BACKUP: &str = "m.megolm_backup.v1";
    /// Every secret above.
    pub const ALL: [&str; 4] = [MASTER, SELF_SIGNING, USER_SIGNING, BACKUP];
}
