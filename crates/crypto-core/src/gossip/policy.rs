//! Whose request we answer and whose answer we take: only a device of our
//! own user that we know, that was not deleted and that we verified; and,
//! for a message that came over Olm, only if the Olm session's keys are
//! exactly the stored device's (a device id in a payload is only claimed:
//! `sender_device_keys` can name any id, self-signed by keys of the
//! sender's making). The engine gathers the facts; the verdict is here.

use ruma_common::{DeviceId, UserId};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use super::GossipError;

/// A device's two identity keys.
pub(crate) type DeviceKeys = (Curve25519PublicKey, Ed25519PublicKey);

/// What the engine knows of a device that asks us, or answers us.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counterpart<'a> {
    /// The user the message came from (for a request in the clear, as the
    /// server says; over Olm, as the session authenticated).
    pub(crate) sender: &'a UserId,
    /// The device it names.
    pub(crate) device_id: &'a DeviceId,
    /// That device as we store it, if we know it: its keys, and whether it
    /// was deleted.
    pub(crate) stored: Option<(DeviceKeys, bool)>,
    /// The keys an Olm session authenticated, for a message that came over
    /// Olm.
    pub(crate) olm_keys: Option<DeviceKeys>,
    /// Whether we verified the stored device.
    pub(crate) verified: bool,
}

/// Whether `counterpart` is one of our own (`own_user`) devices that may
/// ask us for secrets and keys, or answer our requests; if not, why not.
pub(crate) fn judge_own_device(
    own_user: &UserId,
    counterpart: &Counterpart<'_>,
    event_type: &'static str,
) -> Result<(), GossipError> {
    if counterpart.sender != own_user {
        return Err(GossipError::NotOurUser { event_type, sender: counterpart.sender.to_owned() });
    }
    let known = match counterpart.stored {
        Some((_, true)) | None => false,
        Some((keys, false)) => counterpart.olm_keys.is_none_or(|olm| olm == keys),
    };
    if !known {
        return Err(GossipError::UnknownDevice(event_type));
    }
    match counterpart.verified {
        true => Ok(()),
        false => Err(GossipError::UnverifiedDevice { event_type, device_id: counterpart.device_id.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::{device_id, user_id};
    use vodozemac::Curve25519SecretKey;

    use super::*;
    use crate::gossip::{SECRET_REQUEST, SECRET_SEND};

    fn keys(seed: u8) -> DeviceKeys {
        let curve = Curve25519PublicKey::from(&Curve25519SecretKey::from_slice(&[seed; 32]));
        let ed = vodozemac::Ed25519SecretKey::from_slice(&[seed; 32]).public_key();
        (curve, ed)
    }

    fn ours<'a>() -> Counterpart<'a> {
        Counterpart {
            sender: user_id!("@alice:example.org"),
            device_id: device_id!("PHONE"),
            stored: Some((keys(1), false)),
            olm_keys: None,
            verified: true,
        }
    }

    fn judge(counterpart: Counterpart<'_>) -> Result<(), GossipError> {
        judge_own_device(user_id!("@alice:example.org"), &counterpart, SECRET_REQUEST)
    }

    #[test]
    fn our_known_verified_device_is_answered() {
        assert_eq!(judge(ours()), Ok(()));
        assert_eq!(judge(Counterpart { olm_keys: Some(keys(1)), ..ours() }), Ok(()), "over Olm, with its keys");
    }

    /// Attack: another user asks for our secrets (or sends us one) naming
    /// a device id that happens to be ours.
    #[test]
    fn another_user_is_refused_even_naming_our_verified_device() {
        let mallory = Counterpart { sender: user_id!("@mallory:example.org"), ..ours() };
        assert_eq!(
            judge(mallory),
            Err(GossipError::NotOurUser {
                event_type: SECRET_REQUEST,
                sender: user_id!("@mallory:example.org").to_owned()
            })
        );
    }

    #[test]
    fn a_device_we_do_not_know_or_that_was_deleted_is_refused() {
        assert_eq!(judge(Counterpart { stored: None, ..ours() }), Err(GossipError::UnknownDevice(SECRET_REQUEST)));
        let deleted = Counterpart { stored: Some((keys(1), true)), ..ours() };
        assert_eq!(judge(deleted), Err(GossipError::UnknownDevice(SECRET_REQUEST)));
    }

    /// Attack: a device of ours the server (or an attacker who holds our
    /// account's password) created sends a secret over an Olm session of
    /// its own keys, claiming the id of our verified phone.
    #[test]
    fn an_olm_session_with_other_keys_than_the_named_devices_is_refused() {
        let impostor = Counterpart { olm_keys: Some(keys(2)), ..ours() };
        assert_eq!(
            judge_own_device(user_id!("@alice:example.org"), &impostor, SECRET_SEND),
            Err(GossipError::UnknownDevice(SECRET_SEND))
        );
        let half = Counterpart { olm_keys: Some((keys(1).0, keys(2).1)), ..ours() };
        assert_eq!(judge(half), Err(GossipError::UnknownDevice(SECRET_REQUEST)), "one key of two differs");
    }

    #[test]
    fn our_unverified_device_is_refused() {
        assert_eq!(
            judge(Counterpart { verified: false, ..ours() }),
            Err(GossipError::UnverifiedDevice {
                event_type: SECRET_REQUEST,
                device_id: device_id!("PHONE").to_owned()
            })
        );
    }
}
