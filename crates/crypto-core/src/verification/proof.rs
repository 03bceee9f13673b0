//! The proof that an interactive verification succeeded: the only thing
//! that lets the engine mark a device or a user identity verified.
//!
//! A [`VerificationProof`] names the user and exactly the keys that were
//! checked (a device's ed25519 key, a master key, or both). Only this
//! module's crate-visible constructors make one, and they are called only
//! by the verification code: a SAS exchange whose MACs matched after the
//! user confirmed the short strings, a QR code whose secret came back and
//! was confirmed by the user, or the user's own comparison of a full key
//! shown out of band (the spec's manual verification), or, for our own
//! master key only, holding its private part. The trust setters
//! (`DeviceData::mark_verified`, `UserIdentityData::trust_master`, and the
//! engine's signing of another user's master key) take a
//! proof and refuse one that names another key than theirs.

use ruma_common::{OwnedDeviceId, OwnedUserId, UserId};
use vodozemac::Ed25519PublicKey;

/// How the keys of a proof were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofMethod {
    /// `m.sas.v1`: the short strings matched and so did the MACs.
    Sas,
    /// `m.qr_code.*` / `m.reciprocate.v1`: the code's keys matched and its
    /// secret came back.
    QrCode,
    /// The user compared a full key shown out of band.
    KeyComparison,
    /// This device holds the master key's private part (it made it, or the
    /// user imported it): the key is ours by possession.
    PrivateKeyHeld,
}

/// Proof that `user_id`'s named keys were verified. Not constructible
/// outside the verification code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationProof {
    user_id: OwnedUserId,
    device: Option<(OwnedDeviceId, Ed25519PublicKey)>,
    master_key: Option<Ed25519PublicKey>,
    method: ProofMethod,
}

impl VerificationProof {
    /// Made by the verification flows only, once their check passed.
    pub(in crate::verification) fn new(
        user_id: OwnedUserId,
        device: Option<(OwnedDeviceId, Ed25519PublicKey)>,
        master_key: Option<Ed25519PublicKey>,
        method: ProofMethod,
    ) -> Option<Self> {
        (device.is_some() || master_key.is_some()).then_some(Self { user_id, device, master_key, method })
    }

    /// The user whose keys were verified.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The device and its ed25519 key, if the device was verified.
    pub fn device(&self) -> Option<(&ruma_common::DeviceId, Ed25519PublicKey)> {
        self.device.as_ref().map(|(id, key)| (id.as_ref(), *key))
    }

    /// The master key, if the user's identity was verified.
    pub fn master_key(&self) -> Option<Ed25519PublicKey> {
        self.master_key
    }

    /// How it was checked.
    pub fn method(&self) -> ProofMethod {
        self.method
    }

    /// Whether it covers `user_id`'s device `device_id` with key `ed25519`.
    pub fn covers_device(
        &self,
        user_id: &UserId,
        device_id: &ruma_common::DeviceId,
        ed25519: Ed25519PublicKey,
    ) -> bool {
        self.user_id == user_id && self.device.as_ref().is_some_and(|(id, key)| id == device_id && *key == ed25519)
    }

    /// Whether it covers `user_id`'s master key `master`.
    pub fn covers_master_key(&self, user_id: &UserId, master: Ed25519PublicKey) -> bool {
        self.user_id == user_id && self.master_key == Some(master)
    }
}

/// This device holds the private part of `user_id`'s master key `master`.
pub(crate) fn private_key_held(user_id: &UserId, master: Ed25519PublicKey) -> Option<VerificationProof> {
    VerificationProof::new(user_id.to_owned(), None, Some(master), ProofMethod::PrivateKeyHeld)
}

/// The user compared `device_id`'s full ed25519 key (or `user_id`'s master
/// key) with the one shown on the other device: proof of exactly that key.
pub(crate) fn key_comparison(
    user_id: &UserId,
    device: Option<(OwnedDeviceId, Ed25519PublicKey)>,
    master_key: Option<Ed25519PublicKey>,
) -> Option<VerificationProof> {
    VerificationProof::new(user_id.to_owned(), device, master_key, ProofMethod::KeyComparison)
}
