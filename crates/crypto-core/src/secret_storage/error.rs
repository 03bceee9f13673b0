//! [`SecretStorageError`]: why a secret-storage key or secret was refused.

/// Why a secret-storage key could not be made or checked, or a secret could
/// not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretStorageError {
    /// The recovery key has characters outside the base58 alphabet.
    #[error("the recovery key is not valid base58")]
    NotBase58,
    /// The recovery key decodes to the wrong number of bytes.
    #[error("the recovery key decodes to {0} bytes, not 35")]
    RecoveryKeyLength(usize),
    /// The recovery key does not start with the bytes 0x8B 0x01.
    #[error("the recovery key has the prefix {0:02x?}, not [8b, 01]")]
    RecoveryKeyPrefix([u8; 2]),
    /// The recovery key's parity byte does not match its content (a typo).
    #[error("the recovery key's parity byte is {found:#04x}, expected {expected:#04x}: it was mistyped")]
    RecoveryKeyParity {
        /// The parity byte in the key.
        found: u8,
        /// The parity the other bytes give.
        expected: u8,
    },
    /// The key description names another algorithm.
    #[error("unsupported secret-storage algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The key description has no passphrase information, so it can only be
    /// opened with a recovery key.
    #[error("secret-storage key {0} has no passphrase")]
    NoPassphrase(String),
    /// The passphrase information names another derivation, or asks for an
    /// unreasonable amount of work.
    #[error("unsupported passphrase derivation: {0}")]
    UnsupportedPassphrase(String),
    /// A base64 field is malformed or has the wrong length.
    #[error("the {field} field is malformed")]
    Malformed {
        /// The field.
        field: &'static str,
    },
    /// The key does not match the description's check: a wrong recovery key
    /// or passphrase.
    #[error("the recovery key or passphrase is wrong for secret-storage key {0}")]
    WrongKey(String),
    /// The secret is not encrypted for this key.
    #[error("the secret is not encrypted for secret-storage key {0}")]
    NotEncryptedForKey(String),
    /// The secret's MAC does not match: it was modified, or encrypted under
    /// another name or key.
    #[error("the secret {0} failed its MAC check")]
    BadMac(String),
    /// The decrypted secret is not UTF-8 text.
    #[error("the secret {0} is not text")]
    NotText(String),
    /// No randomness was available.
    #[error("no randomness available: {0}")]
    Random(String),
}
