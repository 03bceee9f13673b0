//! Trust, as data: who is verified, from what we hold.
//!
//! * Our own identity is verified when this device trusts its master key.
//! * A master key the user had replaced is never verified again (a server
//!   replaying an old identity, signatures and all, is a rollback).
//! * Another user's identity is verified when our own is, and our
//!   user-signing key signed their master key.
//! * A device is cross-signed by its owner when the owner's self-signing
//!   key signed its device keys; it is verified when the user verified it
//!   by hand (local trust), or it is cross-signed by its owner and the
//!   owner's identity is verified.
//!
//! A device whose id, or whose ed25519 key, is one of its owner's
//! cross-signing public keys is refused outright (`key_confusion`): a
//! signature under `ed25519:<id>` could otherwise be read as the
//! cross-signing key's (Albrecht et al., IEEE S&P 2023).

use vodozemac::Ed25519PublicKey;

use super::{CrossSigningPublicKey, UserIdentityData, keys::key_id_of};
use crate::{devices::DeviceData, signing::verify_json};

/// Whether `identity` is verified, from our own identity as we know it.
pub(crate) fn identity_is_verified(identity: &UserIdentityData, own: Option<&UserIdentityData>) -> bool {
    let Some(own) = own else { return false };
    if identity.is_master_replaced() || own.is_master_replaced() {
        return false;
    }
    if identity.user_id() == own.user_id() {
        return own.is_master_trusted() && own.master_key().key() == identity.master_key().key();
    }
    match own.user_signing_key() {
        Some(user_signing) if own.is_master_trusted() => {
            identity.master_key().is_signed_by(own.user_id(), &user_signing.key())
        }
        _ => false,
    }
}

/// Whether the owner's self-signing key signed `device`'s keys.
pub(crate) fn is_cross_signed_by_owner(device: &DeviceData, owner: &UserIdentityData) -> bool {
    if owner.user_id() != device.user_id() {
        return false;
    }
    let self_signing = owner.self_signing_key().key();
    verify_json(device.signed_keys(), device.user_id(), &key_id_of(&self_signing), &self_signing).is_ok()
}

/// A device's trust, every part of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceTrust {
    /// The user verified the device by hand.
    pub locally_verified: bool,
    /// The owner's self-signing key signed it.
    pub cross_signed_by_owner: bool,
    /// The owner's identity is verified.
    pub owner_verified: bool,
}

impl DeviceTrust {
    /// Verified: by hand, or cross-signed by a verified owner.
    pub fn is_verified(&self) -> bool {
        self.locally_verified || (self.cross_signed_by_owner && self.owner_verified)
    }
}

/// `device`'s trust given its owner's identity and ours.
pub(crate) fn device_trust(
    device: &DeviceData,
    owner: Option<&UserIdentityData>,
    own: Option<&UserIdentityData>,
) -> DeviceTrust {
    let cross_signed = owner.is_some_and(|owner| is_cross_signed_by_owner(device, owner));
    DeviceTrust {
        locally_verified: device.is_locally_verified(),
        cross_signed_by_owner: cross_signed,
        owner_verified: cross_signed && owner.is_some_and(|owner| identity_is_verified(owner, own)),
    }
}

/// Whether `device` collides with one of `keys` (its owner's cross-signing
/// keys): its device id is one of them in base64, or its ed25519 key is one.
pub(crate) fn key_confusion<'a>(
    device_id: &str,
    ed25519: Option<Ed25519PublicKey>,
    keys: impl IntoIterator<Item = &'a CrossSigningPublicKey>,
) -> bool {
    keys.into_iter().any(|key| key.key().to_base64() == device_id || Some(key.key()) == ed25519)
}
