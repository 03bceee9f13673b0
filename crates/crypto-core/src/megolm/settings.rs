//! [`EncryptionSettings`] for sending in a room and [`DecryptionSettings`] for
//! reading: what a room's `m.room.encryption` event and the user's trust
//! choices say.

use std::time::Duration;

use ruma_events::room::history_visibility::HistoryVisibility;
use serde::{Deserialize, Serialize};

use crate::megolm::MEGOLM_ALGORITHM;

/// Default rotation period of an outbound session (the spec's one week).
pub const DEFAULT_ROTATION_PERIOD: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Default number of messages after which an outbound session is rotated.
pub const DEFAULT_ROTATION_MESSAGES: u64 = 100;

/// The shortest rotation period a room's settings can ask for. A room that
/// names less (even 0) gets this: below it, a hostile or mistaken
/// `m.room.encryption` (also from an invite's unauthenticated stripped
/// state) would retire every key as soon as it was shared, and each message
/// would cost a key shared with every device, forever.
pub const MIN_ROTATION_PERIOD: Duration = Duration::from_secs(60 * 60);
/// The fewest messages per room key a room's settings can ask for (0 would
/// retire a key before its first message).
pub const MIN_ROTATION_MESSAGES: u64 = 1;

/// Which devices receive room keys. Blocked devices never do (they get
/// `m.blacklisted`), whatever the strategy.
///
/// Spec v1.18's recommended behaviour (MSC4153, enforced by Element) is
/// [`IdentityBased`](Self::IdentityBased): no room key for a device its
/// owner did not cross-sign. That is [`recommended`](Self::recommended) and
/// hush-client's default. The engine's `Default` stays
/// [`LegacyAllDevices`](Self::LegacyAllDevices), so an embedder that chose
/// nothing keeps what it had; choose explicitly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharingStrategy {
    /// The legacy choice: every device of every member, cross-signed or
    /// not (before spec v1.18). A device the server adds to a member's list
    /// gets the key.
    #[default]
    #[serde(alias = "AllDevices")]
    LegacyAllDevices,
    /// Every device of every member, but sharing is refused
    /// ([`ShareError::VerifiedUserProblem`](super::ShareError::VerifiedUserProblem),
    /// naming them) while a user we verified has a device their identity did
    /// not sign, or a verification violation.
    ErrorOnVerifiedUserProblem,
    /// MSC4153: only devices cross-signed by their owner; the others (and
    /// every device of a user without cross-signing) get `m.unverified`.
    /// Sharing is refused while a user we verified has a verification
    /// violation (their devices are signed by keys nobody verified).
    IdentityBased,
    /// Only verified devices (by hand, or cross-signed by a verified
    /// owner); the others get `m.unverified`.
    OnlyTrustedDevices,
}

impl SharingStrategy {
    /// Spec v1.18's recommended behaviour: [`IdentityBased`](Self::IdentityBased).
    pub const fn recommended() -> Self {
        Self::IdentityBased
    }

    /// Whether the strategy looks at cross-signing trust at all.
    pub(crate) fn needs_trust(self) -> bool {
        self != Self::LegacyAllDevices
    }
}

/// How a room's messages are encrypted: from its `m.room.encryption` event,
/// its history visibility, and the sharing strategy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionSettings {
    /// The algorithm; only `m.megolm.v1.aes-sha2` is supported.
    pub algorithm: String,
    /// Rotate the outbound session after this much time.
    #[serde(with = "duration_ms")]
    pub rotation_period: Duration,
    /// Rotate the outbound session after this many messages.
    pub rotation_period_msgs: u64,
    /// The room's history visibility: decides `shared_history` and who gets keys.
    pub history_visibility: HistoryVisibility,
    /// Which devices receive the key.
    pub sharing_strategy: SharingStrategy,
}

impl Default for EncryptionSettings {
    fn default() -> Self {
        Self {
            algorithm: MEGOLM_ALGORITHM.to_owned(),
            rotation_period: DEFAULT_ROTATION_PERIOD,
            rotation_period_msgs: DEFAULT_ROTATION_MESSAGES,
            history_visibility: HistoryVisibility::Shared,
            sharing_strategy: SharingStrategy::LegacyAllDevices,
        }
    }
}

impl EncryptionSettings {
    /// Settings from an `m.room.encryption` content's optional rotation
    /// fields (absent fields take the spec's defaults; values below
    /// [`MIN_ROTATION_PERIOD`] and [`MIN_ROTATION_MESSAGES`] are raised to them).
    pub fn from_room_encryption(
        rotation_period_ms: Option<u64>,
        rotation_period_msgs: Option<u64>,
        history_visibility: HistoryVisibility,
        sharing_strategy: SharingStrategy,
    ) -> Self {
        Self {
            algorithm: MEGOLM_ALGORITHM.to_owned(),
            rotation_period: rotation_period_ms
                .map_or(DEFAULT_ROTATION_PERIOD, Duration::from_millis)
                .max(MIN_ROTATION_PERIOD),
            rotation_period_msgs: rotation_period_msgs.unwrap_or(DEFAULT_ROTATION_MESSAGES).max(MIN_ROTATION_MESSAGES),
            history_visibility,
            sharing_strategy,
        }
    }

    /// Whether keys made under these settings may be shared with later members.
    pub fn shared_history(&self) -> bool {
        matches!(self.history_visibility, HistoryVisibility::Shared | HistoryVisibility::WorldReadable)
    }
}

/// What a decryption demands of the sending device.
///
/// Spec v1.18: messages from devices their owner did not cross-sign
/// "SHOULD NOT be displayed": [`recommended`](Self::recommended) is
/// [`ExcludeInsecureDevices`](Self::ExcludeInsecureDevices), hush-client's
/// default. The engine's `Default` stays [`Untrusted`](Self::Untrusted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustRequirement {
    /// Decrypt whatever device sent it; the info says how far it is trusted.
    #[default]
    Untrusted,
    /// Show only events from a device its owner cross-signed (or that we
    /// verified by hand, or ours): refuse a device the sender's device list
    /// does not hold (`UnknownDevice`: one the server made and hides, or
    /// one too new to be known; a client tries such events again when the
    /// sender's devices change), a device whose keys do not match the key's
    /// claim, and a sender with a verification violation. A key from a
    /// backup, a forward or a file (`UnauthenticatedSource`: whose device
    /// made it is only claimed) is judged by the device it names, and
    /// marked as such: a backup's entries are not authenticated, so an
    /// application shows such events as of unconfirmed authenticity.
    ExcludeInsecureDevices,
    /// Refuse events from unknown devices and keys not received over Olm,
    /// and from devices their owner did not cross-sign, unless we know no
    /// cross-signing identity for the owner (a legacy user). Weaker than it
    /// looks: a server can hide a user's identity from us, and their
    /// unsigned devices then pass. Every requirement but `Untrusted`
    /// refuses senders with a verification violation.
    CrossSignedOrLegacy,
    /// Refuse events from unknown devices and keys not received over Olm,
    /// and from devices their owner did not cross-sign (or verified by hand).
    CrossSigned,
    /// Refuse events from devices the user has not verified.
    VerifiedDevice,
}

impl TrustRequirement {
    /// Spec v1.18's recommended behaviour: [`ExcludeInsecureDevices`](Self::ExcludeInsecureDevices).
    pub const fn recommended() -> Self {
        Self::ExcludeInsecureDevices
    }
}

/// Settings for [`OlmMachine::decrypt_room_event`](crate::OlmMachine::decrypt_room_event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptionSettings {
    /// The trust the sending device must have.
    pub sender_device_trust_requirement: TrustRequirement,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
