//! Why an event stays unreadable, as data: [`UtdCause`], beside the
//! [`MegolmError`] that says what failed. The error is the mechanism (no
//! key, a later index, an untrusted sender); the cause is the explanation
//! an application shows and counts (sent before we joined, withheld by the
//! sender, lost in transit, a message older than this device and no
//! backup...). [`classify`] is the rule, from the error and the facts the
//! engine and its caller know; `OlmMachine::utd_cause` gathers the facts.
//! [`pending`] keeps the events that may still heal and decides how to heal
//! them (ask our devices, look up the backup).

use serde::{Deserialize, Serialize};

pub mod pending;

pub use pending::{BackupReadDue, PendingEvent};

use crate::megolm::{MegolmError, TrustRequirement, WithheldCode};

/// Whether our user could read the event when it was sent: a member by the
/// room's history visibility (joined, or invited where invited members
/// receive keys). The caller knows the room's membership; the engine does
/// not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipAtEvent {
    /// We were a member the event was meant for.
    Member,
    /// We were not: the sender had no reason to share the key with us.
    NotMember,
    /// The caller does not know.
    #[default]
    Unknown,
}

/// Whether a key backup could hold a missing key for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupAvailability {
    /// No backup is enabled on this device.
    NotEnabled,
    /// A backup is enabled, but we do not hold its private key: keys can
    /// be uploaded, not restored.
    NoDecryptionKey,
    /// A backup is enabled and we hold its key: the key was looked up, or
    /// can be, and was not there yet.
    Usable,
}

/// Why an event could not be decrypted, as an application would explain it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum UtdCause {
    /// We were not a member the event was meant for when it was sent
    /// (not joined yet, or already left, or invited under `joined`
    /// history visibility): no key was ever meant for us.
    SentBeforeWeJoined,
    /// The event is older than this device, and no backup gave us its key.
    HistoricalMessage {
        /// What a backup could do about it.
        backup: BackupAvailability,
    },
    /// The sender told us it withholds the key, and why.
    Withheld {
        /// The sender's code (`m.unverified`, `m.no_olm`, ...).
        code: WithheldCode,
    },
    /// We never received an Olm message from the sending device, so its key
    /// cannot have reached us: it did not know our device when it sent (its
    /// device list was out of date), or its messages to us have not arrived
    /// (not synced yet, or lost). From our side these cannot be told apart.
    NoSessionWithSender,
    /// We share an Olm session with the sending device, but the key has not
    /// arrived: it is late, or it was lost in transit.
    KeyNotReceived {
        /// Whether a request for it is open to our other devices.
        requested_from_own_devices: bool,
        /// What a backup could do about it.
        backup: BackupAvailability,
    },
    /// We hold the key from a later message index only (it was shared with
    /// us after this message, e.g. when our device joined the session).
    PartialKey {
        /// The first index our copy of the key can decrypt.
        first_known_index: u32,
        /// The message's index.
        message_index: u32,
    },
    /// The sending device does not meet our trust requirement.
    SenderNotTrusted {
        /// The requirement it failed.
        requirement: TrustRequirement,
    },
    /// The event itself was refused: malformed, forged (its sender does not
    /// own the key), replayed, meant for another room, or corrupt. No key
    /// would make it readable.
    Rejected,
    /// The store failed while decrypting: trying again may succeed.
    StoreFailure,
}

impl UtdCause {
    /// A short stable name, for counting and logs (`"withheld"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::SentBeforeWeJoined => "sent_before_we_joined",
            Self::HistoricalMessage { .. } => "historical_message",
            Self::Withheld { .. } => "withheld",
            Self::NoSessionWithSender => "no_session_with_sender",
            Self::KeyNotReceived { .. } => "key_not_received",
            Self::PartialKey { .. } => "partial_key",
            Self::SenderNotTrusted { .. } => "sender_not_trusted",
            Self::Rejected => "rejected",
            Self::StoreFailure => "store_failure",
        }
    }
}

/// What is known about an undecryptable event, for [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UtdFacts {
    /// Our membership when the event was sent, from the caller.
    pub membership: MembershipAtEvent,
    /// The event's `origin_server_ts` (ms), if it has one.
    pub event_ts: Option<u64>,
    /// When this device's account was created (ms).
    pub device_created: u64,
    /// Whether we hold an Olm session with the sending device.
    pub session_with_sender: bool,
    /// Whether a request for the key is open to our other devices.
    pub requested_from_own_devices: bool,
    /// What a backup could do.
    pub backup: BackupAvailability,
}

impl UtdFacts {
    /// Facts for errors that need only the membership (every error but a
    /// missing key that was not withheld).
    pub fn from_membership(membership: MembershipAtEvent) -> Self {
        Self {
            membership,
            event_ts: None,
            device_created: 0,
            session_with_sender: false,
            requested_from_own_devices: false,
            backup: BackupAvailability::NotEnabled,
        }
    }
}

/// The cause of a decryption failure: the error says what failed, the facts
/// say why. Order matters: the sender's own word (withheld) first, then our
/// membership, then the age of our device, then what we know of the path
/// the key should have taken.
pub fn classify(error: &MegolmError, facts: &UtdFacts) -> UtdCause {
    match error {
        MegolmError::MissingRoomKey { withheld: Some(code), .. } => UtdCause::Withheld { code: code.clone() },
        MegolmError::MissingRoomKey { withheld: None, .. } => missing_key_cause(facts),
        MegolmError::UnknownMessageIndex { first_known_index, message_index } => {
            if facts.membership == MembershipAtEvent::NotMember {
                UtdCause::SentBeforeWeJoined
            } else {
                UtdCause::PartialKey { first_known_index: *first_known_index, message_index: *message_index }
            }
        }
        MegolmError::UnverifiedSenderDevice => {
            UtdCause::SenderNotTrusted { requirement: TrustRequirement::VerifiedDevice }
        }
        MegolmError::InsufficientSenderTrust { requirement } => {
            UtdCause::SenderNotTrusted { requirement: *requirement }
        }
        MegolmError::Store(_) => UtdCause::StoreFailure,
        MegolmError::Malformed(_)
        | MegolmError::UnsupportedAlgorithm(_)
        | MegolmError::Replay { .. }
        | MegolmError::SenderMismatch { .. }
        | MegolmError::RoomMismatch { .. }
        | MegolmError::DecryptionFailed(_)
        | MegolmError::Internal(_) => UtdCause::Rejected,
    }
}

/// A key that never arrived and was not withheld.
fn missing_key_cause(facts: &UtdFacts) -> UtdCause {
    if facts.membership == MembershipAtEvent::NotMember {
        return UtdCause::SentBeforeWeJoined;
    }
    if facts.event_ts.is_some_and(|ts| ts < facts.device_created) {
        return UtdCause::HistoricalMessage { backup: facts.backup };
    }
    if !facts.session_with_sender {
        return UtdCause::NoSessionWithSender;
    }
    UtdCause::KeyNotReceived { requested_from_own_devices: facts.requested_from_own_devices, backup: facts.backup }
}

#[cfg(test)]
mod tests;
