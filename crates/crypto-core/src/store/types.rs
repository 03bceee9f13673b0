//! The records a [`CryptoStore`](super::CryptoStore) persists.
//!
//! Each record is a plain serializable value. Records that hold secrets
//! (account and session pickles) do not implement `Debug` with their contents.

use std::fmt;

use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use vodozemac::{Curve25519PublicKey, olm::AccountPickle, olm::SessionPickle};
use zeroize::Zeroizing;

use crate::Timestamp;

/// The device's own Olm account and its upload state.
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    /// The user the account belongs to.
    pub user_id: OwnedUserId,
    /// The device the account belongs to.
    pub device_id: OwnedDeviceId,
    /// The vodozemac account: identity keys, one-time and fallback keys (secret).
    pub pickle: AccountPickle,
    /// Whether the server acknowledged our device keys.
    pub device_keys_uploaded: bool,
    /// The server's count of our `signed_curve25519` one-time keys, as last reported.
    pub uploaded_one_time_key_count: u64,
    /// When the account was created.
    #[serde(default)]
    pub created_at: Timestamp,
}

impl fmt::Debug for StoredAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredAccount")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("device_keys_uploaded", &self.device_keys_uploaded)
            .field("uploaded_one_time_key_count", &self.uploaded_one_time_key_count)
            .finish_non_exhaustive()
    }
}

/// One Olm session with another device.
#[derive(Serialize, Deserialize)]
pub struct StoredSession {
    /// The other device's curve25519 identity key.
    pub sender_key: Curve25519PublicKey,
    /// The session id (stable across ratchet steps).
    pub session_id: String,
    /// The ratchet state (secret).
    pub pickle: SessionPickle,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When the session last encrypted or decrypted a message.
    pub last_used_at: Timestamp,
    /// The user of the device the session was made with (`None` in stores
    /// written before this was recorded).
    #[serde(default)]
    pub owner_user: Option<OwnedUserId>,
    /// That device, when known (an inbound session from a device we had
    /// not learnt yet knows only the user).
    #[serde(default)]
    pub owner_device: Option<OwnedDeviceId>,
}

impl fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSession")
            .field("sender_key", &self.sender_key)
            .field("session_id", &self.session_id)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// A Megolm message index we decrypted, and for which event: a second event
/// with the same session and index is a replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageIndexRecord {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The Megolm session.
    pub session_id: String,
    /// The message index.
    pub message_index: u32,
    /// The event that carried it.
    pub event_id: ruma_common::OwnedEventId,
    /// That event's timestamp.
    pub origin_server_ts: u64,
}

/// An Olm message we decrypted: the sender's curve25519 key and the SHA-256
/// of the message (base64). Not secret: the ciphertext was on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OlmMessageHash {
    /// The sending device's curve25519 key (base64).
    pub sender_key: String,
    /// SHA-256 of the message type and body (base64).
    pub hash: String,
}

/// A user whose devices we track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedUser {
    /// The user.
    pub user_id: OwnedUserId,
    /// Whether the device list must be queried again.
    pub dirty: bool,
}

/// A room key named by its room and session id (an entry of the backup
/// queue).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomKeyRef {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The Megolm session id.
    pub session_id: String,
}

/// A secret this device keeps (the backup key `m.megolm_backup.v1`, or one
/// received by gossip), by its secret-storage name. `value: None` deletes it.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredSecret {
    /// The secret's name.
    pub name: String,
    /// The secret (wiped on drop), or `None` to delete it.
    pub value: Option<Zeroizing<String>>,
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret").field("name", &self.name).field("deleted", &self.value.is_none()).finish()
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::{owned_device_id, owned_user_id};

    use crate::{Timestamp, olm::Account};

    /// Debug output of persisted records must never show key material.
    #[test]
    fn debug_output_carries_no_secrets() {
        let account = Account::new(owned_user_id!("@a:b.c"), owned_device_id!("DEV"), Timestamp::EPOCH);
        let stored = account.to_stored();
        let pickle = serde_json::to_string(&stored.pickle).unwrap();
        let debug = format!("{stored:?} {account:?}");
        assert!(debug.contains("DEV"));
        for secret_marker in ["signing_key", "private_keys", "diffie_hellman_key"] {
            assert!(pickle.contains(secret_marker), "the pickle should hold {secret_marker}");
            assert!(!debug.contains(secret_marker), "Debug leaks {secret_marker}");
        }
    }
}
