//! Errors of Megolm encryption and decryption.

use ruma_common::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId};

use super::WithheldCode;
use crate::StoreError;

/// Why a room event could not be decrypted. Every case explains itself; none
/// changes stored state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MegolmError {
    /// The event is not a well-formed `m.room.encrypted` event.
    #[error("malformed encrypted event: {0}")]
    Malformed(String),
    /// The event uses another algorithm than `m.megolm.v1.aes-sha2`.
    #[error("unsupported room encryption algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// We do not hold the room key; `withheld` says if the sender told us why.
    #[error("missing room key for session {session_id}{}", withheld.as_ref().map(|c| format!(" (withheld: {c})")).unwrap_or_default())]
    MissingRoomKey {
        /// The session the event was encrypted with.
        session_id: String,
        /// The sender's reason for not sharing it, if one arrived.
        withheld: Option<WithheldCode>,
    },
    /// We hold the key, but only from a later index than the message's.
    #[error("the room key starts at index {first_known_index}, the message is at {message_index}")]
    UnknownMessageIndex {
        /// The first index our copy of the key can decrypt.
        first_known_index: u32,
        /// The message's index.
        message_index: u32,
    },
    /// The same session and index were already decrypted for another event.
    #[error("replayed message index {message_index} (first seen in {first_event_id})")]
    Replay {
        /// The replayed index.
        message_index: u32,
        /// The event that first used it.
        first_event_id: OwnedEventId,
    },
    /// The event's sender does not own the device the room key came from
    /// (matrix-sdk-crypto's CVE-2025-48937).
    #[error("event sender {event_sender} does not own the room key (sent by {key_owner})")]
    SenderMismatch {
        /// The event's `sender`.
        event_sender: OwnedUserId,
        /// The user who shared the key.
        key_owner: OwnedUserId,
    },
    /// The decrypted payload names another room.
    #[error("the payload is for room {found}, the event is in {expected}")]
    RoomMismatch {
        /// The room the event was received in.
        expected: OwnedRoomId,
        /// The room inside the payload.
        found: String,
    },
    /// The ciphertext failed its MAC or signature check, or does not decode.
    #[error("Megolm decryption failed: {0}")]
    DecryptionFailed(String),
    /// The sending device does not meet the trust requirement.
    #[error("the sending device is not verified")]
    UnverifiedSenderDevice,
    /// The sending device does not meet the decryption settings' trust
    /// requirement (cross-signed, or cross-signed or legacy).
    #[error("the sending device does not meet the trust requirement {requirement:?}")]
    InsufficientSenderTrust {
        /// The requirement it failed.
        requirement: super::TrustRequirement,
    },
    /// A bug in hush was hit while processing the event; it was contained
    /// and the event rejected (nothing stored changed because of it).
    #[error("{0}")]
    Internal(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a room event could not be encrypted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// No room key was shared in this room yet: call `share_room_key` first.
    #[error("no shared room key in {0}; call share_room_key first")]
    NoSharedSession(OwnedRoomId),
    /// The room key reached its rotation limit: call `share_room_key` to rotate.
    #[error("the room key of {0} must be rotated; call share_room_key first")]
    SessionExpired(OwnedRoomId),
    /// The content could not be serialized.
    #[error("content could not be serialized: {0}")]
    Serialization(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why room keys could not be shared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The settings name an algorithm other than `m.megolm.v1.aes-sha2`.
    #[error("unsupported room encryption algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The room is not known to be encrypted: neither the caller nor the
    /// engine has seen its `m.room.encryption` state.
    #[error("room {0} is not known to be encrypted; nothing was shared")]
    RoomNotEncrypted(OwnedRoomId),
    /// Under [`SharingStrategy::ErrorOnVerifiedUserProblem`](super::SharingStrategy):
    /// users we verified have devices their identity did not sign, or
    /// identities that are no longer verified. Nothing was shared.
    #[error(
        "verified users have a problem: unsigned devices {unsigned_devices:?}, verification violations {violations:?}"
    )]
    VerifiedUserProblem {
        /// Devices of verified users that their owner did not cross-sign.
        unsigned_devices: Vec<(OwnedUserId, OwnedDeviceId)>,
        /// Users we had verified whose identity changed.
        violations: Vec<OwnedUserId>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
