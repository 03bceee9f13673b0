//! The JSON of backed-up room keys: [`KeyBackupData`] as the server stores
//! it, [`EncryptedSessionData`] inside it, and [`BackedUpRoomKey`], the
//! plaintext (the spec's `BackedUpSessionData`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// One room key as the backup stores it (`KeyBackupData`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBackupData {
    /// The first message index the key can decrypt.
    pub first_message_index: u64,
    /// How many times the key was forwarded before we got it.
    pub forwarded_count: u64,
    /// Whether the uploader had the key from a verified device.
    pub is_verified: bool,
    /// The encrypted key.
    pub session_data: EncryptedSessionData,
}

/// A room key encrypted to the backup's public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedSessionData {
    /// The ephemeral curve25519 public key (unpadded base64).
    pub ephemeral: String,
    /// AES-256-CBC ciphertext of the JSON plaintext (unpadded base64).
    pub ciphertext: String,
    /// The first 8 bytes of HMAC-SHA-256 over the empty string (base64).
    pub mac: String,
}

/// The plaintext of a backed-up room key (`BackedUpSessionData`). The
/// session key is secret: it is wiped on drop and never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct BackedUpRoomKey {
    /// `m.megolm.v1.aes-sha2`.
    pub algorithm: String,
    /// Curve25519 keys of the devices the key was forwarded through.
    #[serde(default)]
    pub forwarding_curve25519_key_chain: Vec<String>,
    /// Keys the sending device claimed (`ed25519`).
    #[serde(default)]
    pub sender_claimed_keys: BTreeMap<String, String>,
    /// The curve25519 key of the device that created the session.
    pub sender_key: String,
    /// The exported session key (secret).
    pub session_key: Zeroizing<String>,
    /// Whether the key may be shared with members who join later (MSC3061).
    #[serde(default, rename = "org.matrix.msc3061.shared_history", skip_serializing_if = "std::ops::Not::not")]
    pub shared_history: bool,
}

impl std::fmt::Debug for BackedUpRoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackedUpRoomKey")
            .field("algorithm", &self.algorithm)
            .field("sender_key", &self.sender_key)
            .finish_non_exhaustive()
    }
}
