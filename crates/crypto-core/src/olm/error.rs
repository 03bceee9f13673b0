//! [`OlmError`]: why an Olm-encrypted to-device event was rejected, and
//! [`OlmEncryptionError`]: why we could not encrypt one.

use ruma_common::{OwnedDeviceId, OwnedUserId};

use crate::devices::DeviceKeysError;

/// Why an incoming Olm-encrypted to-device event was rejected. Carried in the
/// event's result; the rest of the sync is still processed and nothing stored
/// changes because of the rejected event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OlmError {
    /// The event or its content is not the shape the spec requires.
    #[error("malformed to-device event: {0}")]
    Malformed(String),
    /// The content names an algorithm other than `m.olm.v1.curve25519-aes-sha2`.
    #[error("unsupported to-device encryption algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// A key in the content is not valid base64 of the right length.
    #[error("invalid {what}: {reason}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The ciphertext map has no entry for our curve25519 key.
    #[error("the message has no ciphertext for this device")]
    NotForThisDevice,
    /// The Olm message body does not decode.
    #[error("invalid Olm message: {0}")]
    InvalidMessage(String),
    /// A normal message that none of our sessions with the sender decrypts:
    /// the session is wedged; a new one will be established.
    #[error("no Olm session with {sender_key} decrypts the message ({sessions_tried} tried)")]
    NoMatchingSession {
        /// The sender's curve25519 key.
        sender_key: String,
        /// How many sessions were tried.
        sessions_tried: usize,
    },
    /// A pre-key message from which no inbound session could be made
    /// (unknown or already used one-time key, bad MAC ...).
    #[error("could not create an inbound Olm session: {0}")]
    SessionCreation(String),
    /// The plaintext's `sender` is not the event's sender.
    #[error("plaintext sender {plaintext_sender} differs from event sender {event_sender}")]
    SenderMismatch {
        /// The event's `sender`.
        event_sender: OwnedUserId,
        /// The `sender` inside the plaintext.
        plaintext_sender: OwnedUserId,
    },
    /// The plaintext's `recipient` is not us.
    #[error("plaintext recipient {found} is not {expected}")]
    RecipientMismatch {
        /// Our user id.
        expected: OwnedUserId,
        /// The `recipient` inside the plaintext.
        found: OwnedUserId,
    },
    /// The plaintext's `recipient_keys.ed25519` is not our key.
    #[error("plaintext recipient_keys.ed25519 is not this device's key")]
    RecipientKeyMismatch,
    /// The plaintext's `keys.ed25519` is not the key of the sending device we know.
    #[error("plaintext keys.ed25519 does not match device {device_id} of the sender")]
    SenderKeyMismatch {
        /// The known device whose key differs.
        device_id: OwnedDeviceId,
    },
    /// `sender_device_keys` is invalid or does not belong to the sender.
    #[error("invalid sender_device_keys: {0}")]
    InvalidSenderDeviceKeys(String),
    /// An `m.room_key` names a session id we hold for another owner (another
    /// sender key, claimed ed25519 key or user): a different key, refused.
    #[error("room key {session_id} is held for another owner ({mismatch:?} differs); refused")]
    RoomKeyConflict {
        /// The session id the key claims.
        session_id: String,
        /// Which owner fact differs.
        mismatch: crate::megolm::OwnerMismatch,
    },
    /// A secret or forwarded room key that the gossip rules refused.
    #[error(transparent)]
    Gossip(#[from] crate::gossip::GossipError),
    /// The server delivered a message we already decrypted (e.g. after a
    /// sync token moved back): dropped, and not taken for a wedged session.
    #[error("this Olm message was already decrypted; a redelivery was dropped")]
    Redelivered,
    /// A bug in hush was hit while processing the event; it was contained
    /// and the event rejected (nothing stored changed because of it).
    #[error("{0}")]
    Internal(String),
    /// The message decrypted, but what it carries is unusable (e.g. a room
    /// key whose session id does not match its key).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The sender device's keys failed their checks.
    #[error(transparent)]
    SenderDevice(#[from] DeviceKeysError),
}

/// Why a to-device message could not be Olm-encrypted for a device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OlmEncryptionError {
    /// We do not know the device (query its user's keys first).
    #[error("unknown device {device_id} of {user_id}")]
    UnknownDevice {
        /// The device's owner.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// No Olm session with the device (claim a one-time key first).
    #[error("no Olm session with device {device_id} of {user_id}")]
    NoSession {
        /// The device's owner.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// The session could not encrypt (degenerate peer ratchet key).
    #[error("Olm encryption failed: {0}")]
    Encryption(String),
    /// The event content could not be serialized.
    #[error("content could not be serialized: {0}")]
    Serialization(String),
}
