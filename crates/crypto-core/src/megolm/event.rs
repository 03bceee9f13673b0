//! A decrypted room event and what is known of its sender:
//! [`DecryptedRoomEvent`], [`MegolmDecryptionInfo`], [`VerificationState`].
//! `Debug` never shows the decrypted content.

use ruma_common::{OwnedDeviceId, OwnedUserId, serde::Raw};
use ruma_events::AnyTimelineEvent;
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use super::KeySource;

/// How far the device that sent a room event is trusted, as known today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationState {
    /// Our own device, or a device the user verified.
    Verified,
    /// A known device the user has not verified.
    Unverified,
    /// The key's device is not among the sender's known devices.
    UnknownDevice,
    /// The known device's ed25519 key differs from the one the key's sender claimed.
    KeyMismatch,
    /// The key matches a known device of the sender, but our copy did not
    /// come over Olm from that device (a key file; later a backup or a
    /// forward): who made the key is only claimed, so the sender is not
    /// reported verified, whatever the device's trust.
    UnauthenticatedSource,
}

/// Who sent a decrypted room event, and how we know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MegolmDecryptionInfo {
    /// The event's sender (checked against the key's owner).
    pub sender: OwnedUserId,
    /// The sending device, if known.
    pub sender_device: Option<OwnedDeviceId>,
    /// The curve25519 key of the device that shared the room key.
    pub sender_curve25519_key: Curve25519PublicKey,
    /// The ed25519 key that device claimed.
    pub sender_claimed_ed25519_key: Option<Ed25519PublicKey>,
    /// The Megolm session.
    pub session_id: String,
    /// The message's index in the session.
    pub message_index: u32,
    /// Where our copy of the key came from.
    pub key_source: KeySource,
    /// The sending device's trust.
    pub verification_state: VerificationState,
    /// Whether the sending device is cross-signed by its owner.
    pub sender_cross_signed: bool,
    /// The sender's cross-signing identity state, if they have one.
    pub sender_identity: Option<crate::identities::IdentityState>,
}

/// What decryption learnt about the sender of a room key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SenderState {
    pub(crate) device_id: Option<OwnedDeviceId>,
    pub(crate) verification: VerificationState,
    pub(crate) cross_signed: bool,
    pub(crate) identity: Option<crate::identities::IdentityState>,
}

impl SenderState {
    /// A sender state without cross-signing facts.
    pub(crate) fn plain(device_id: Option<OwnedDeviceId>, verification: VerificationState) -> Self {
        Self { device_id, verification, cross_signed: false, identity: None }
    }

    /// Whether the state meets `requirement` (`own`: the sender is this device).
    pub(crate) fn meets(&self, requirement: super::TrustRequirement, own: bool) -> bool {
        use super::TrustRequirement as R;
        let known = matches!(self.verification, VerificationState::Verified | VerificationState::Unverified);
        // A sender whose identity we had verified and which was replaced:
        // its devices are signed by keys nobody verified.
        let violated = self.identity == Some(crate::identities::IdentityState::VerificationViolation);
        if requirement != R::Untrusted && violated && !own {
            return false;
        }
        match requirement {
            R::Untrusted => true,
            R::ExcludeInsecureDevices => match self.verification {
                VerificationState::Verified => true,
                VerificationState::Unverified | VerificationState::UnauthenticatedSource => own || self.cross_signed,
                // Not listed for the sender (a device the server made and
                // hides, or one too new to be known): not shown until its
                // owner's device list says it is cross-signed.
                VerificationState::UnknownDevice | VerificationState::KeyMismatch => false,
            },
            R::VerifiedDevice => self.verification == VerificationState::Verified,
            R::CrossSigned => known && (own || self.cross_signed || self.verification == VerificationState::Verified),
            R::CrossSignedOrLegacy => {
                known
                    && (own
                        || self.cross_signed
                        || self.identity.is_none()
                        || self.verification == VerificationState::Verified)
            }
        }
    }
}

/// A decrypted room event: the original event with the plaintext's type and
/// content in place of the ciphertext. `Debug` omits the decrypted event.
#[derive(Clone)]
pub struct DecryptedRoomEvent {
    /// The decrypted event (`room_id` included).
    pub event: Raw<AnyTimelineEvent>,
    /// Who sent it.
    pub info: MegolmDecryptionInfo,
    /// An earlier decryption of this event failed and the engine kept it
    /// waiting for its key (`utd::pending`): this is a late decryption, to
    /// show in place of the unreadable event shown before.
    pub was_waiting: bool,
}

impl std::fmt::Debug for DecryptedRoomEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptedRoomEvent")
            .field("event", &"(decrypted content redacted)")
            .field("info", &self.info)
            .finish()
    }
}
