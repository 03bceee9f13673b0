//! Server-side key backup, `m.megolm_backup.v1.curve25519-aes-sha2`: the
//! backup key pair, room keys encrypted to the backup's public key and
//! decrypted with its private key, and the backup's `auth_data` (its public
//! key and signatures).
//!
//! What the v1 algorithm cannot promise: its MAC is computed over the empty
//! string (a libolm bug every implementation kept), and anyone who knows the
//! public key (the homeserver does) can encrypt entries to it. So a key read
//! from a backup, even our own trusted one, proves nothing about who sent it:
//! it is marked [`KeySource::Backup`](crate::KeySource::Backup) and never
//! authenticated. A backup's trust only decides whether we upload to it.

mod auth;
mod convert;
mod key;
mod server;
mod session_data;
mod upload;

pub use auth::{BackupAuthData, BackupInfo, BackupTrust};
pub(crate) use convert::{backup_entry, session_from_backup};
pub use key::{BackupDecryptionKey, BackupEncryptionKey, BackupKeyError};
pub(crate) use server::judge;
pub use server::{BackupDisabledReason, MAX_VERSION_OR_ETAG_BYTES, ServerBackup};
pub use session_data::{BackedUpRoomKey, EncryptedSessionData, KeyBackupData};
pub(crate) use upload::Uploads;

/// The backup algorithm hush reads and writes.
pub const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
