//! [`DeviceData`]: another device's checked identity keys and our local trust in it.

use ruma_common::{DeviceId, EventEncryptionAlgorithm, OwnedDeviceId, OwnedUserId, UserId, encryption::DeviceKeys};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use crate::signing::{SignatureError, verify_json};

/// The trust the local user placed in a device by hand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LocalTrust {
    /// No decision yet.
    #[default]
    Unset,
    /// Verified by the user (e.g. by comparing keys out of band).
    Verified,
    /// Blocked: never share keys with it.
    BlackListed,
    /// Ignored: treated as unverified without warnings.
    Ignored,
}

/// Why a device's keys were rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceKeysError {
    /// The JSON is not a device-keys object.
    #[error("malformed device keys: {0}")]
    Malformed(String),
    /// The `user_id` inside the keys differs from the user they were listed under.
    #[error("device keys list user {found}, expected {expected}")]
    UserMismatch {
        /// The user the keys were listed under.
        expected: OwnedUserId,
        /// The user named inside the keys.
        found: OwnedUserId,
    },
    /// The `device_id` inside the keys differs from the device they were listed under.
    #[error("device keys list device {found}, expected {expected}")]
    DeviceMismatch {
        /// The device the keys were listed under.
        expected: OwnedDeviceId,
        /// The device named inside the keys.
        found: OwnedDeviceId,
    },
    /// A required identity key is absent or not a valid key.
    #[error("device keys lack a valid {0} key")]
    MissingKey(&'static str),
    /// The device's self-signature is missing or wrong.
    #[error("device self-signature rejected: {0}")]
    Signature(#[from] SignatureError),
    /// The device's id or ed25519 key is one of its owner's cross-signing
    /// keys (key confusion: its signatures could pass for the
    /// cross-signing key's).
    #[error("device {device_id} of {user_id} collides with a cross-signing key; refused")]
    KeyConfusion {
        /// The device's owner.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// A known device presented a different identity key: the old keys are kept.
    #[error("device {device_id} of {user_id} changed its {which} identity key; the change was rejected")]
    IdentityKeyChanged {
        /// The device's owner.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
        /// `ed25519` or `curve25519`.
        which: &'static str,
    },
}

/// Another device of some user (possibly our own user), as learnt from a keys
/// query or from the `sender_device_keys` of an Olm message, with signature checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceData {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    ed25519: Ed25519PublicKey,
    curve25519: Curve25519PublicKey,
    algorithms: Vec<EventEncryptionAlgorithm>,
    display_name: Option<String>,
    /// The signed JSON exactly as received, so its signatures can be checked
    /// again (shared: devices are copied often, their keys never change).
    signed_keys: Arc<Value>,
    local_trust: LocalTrust,
    deleted: bool,
}

impl DeviceData {
    /// Parses signed device keys and checks their self-signature, that they
    /// belong to `user_id`, and (if given) to `device_id`.
    pub fn from_signed_keys(
        signed_keys: Value,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
    ) -> Result<Self, DeviceKeysError> {
        let depth = crate::store::json_depth(&signed_keys);
        if depth > crate::store::MAX_JSON_DEPTH {
            return Err(DeviceKeysError::Malformed(format!(
                "nested {depth} levels deep (at most {})",
                crate::store::MAX_JSON_DEPTH
            )));
        }
        let keys = DeviceKeys::deserialize(&signed_keys).map_err(|e| DeviceKeysError::Malformed(e.to_string()))?;
        if keys.user_id != user_id {
            return Err(DeviceKeysError::UserMismatch { expected: user_id.to_owned(), found: keys.user_id });
        }
        if let Some(expected) = device_id
            && keys.device_id != expected
        {
            return Err(DeviceKeysError::DeviceMismatch { expected: expected.to_owned(), found: keys.device_id });
        }
        let key_for = |algorithm: &str| {
            let id = format!("{algorithm}:{}", keys.device_id);
            keys.keys.iter().find(|(key_id, _)| key_id.as_str() == id).map(|(_, key)| key.as_str())
        };
        let ed25519 = key_for("ed25519")
            .and_then(|k| crate::keys::ed25519_from_base64(k).ok())
            .ok_or(DeviceKeysError::MissingKey("ed25519"))?;
        let curve25519 = key_for("curve25519")
            .and_then(|k| crate::keys::curve25519_from_base64(k).ok())
            .ok_or(DeviceKeysError::MissingKey("curve25519"))?;
        verify_json(&signed_keys, user_id, &format!("ed25519:{}", keys.device_id), &ed25519)?;
        Ok(Self {
            user_id: keys.user_id,
            device_id: keys.device_id,
            ed25519,
            curve25519,
            algorithms: keys.algorithms,
            display_name: keys.unsigned.device_display_name,
            signed_keys: Arc::new(signed_keys),
            local_trust: LocalTrust::Unset,
            deleted: false,
        })
    }

    /// Takes `newer` keys for this device, keeping local trust, or refuses them
    /// if an identity key changed.
    pub(crate) fn accept_update(&self, mut newer: Self) -> Result<Self, DeviceKeysError> {
        let changed = |which| DeviceKeysError::IdentityKeyChanged {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            which,
        };
        if newer.ed25519 != self.ed25519 {
            return Err(changed("ed25519"));
        }
        if newer.curve25519 != self.curve25519 {
            return Err(changed("curve25519"));
        }
        newer.local_trust = self.local_trust;
        Ok(newer)
    }

    /// The owner of the device.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The device's ed25519 fingerprint key.
    pub fn ed25519_key(&self) -> Ed25519PublicKey {
        self.ed25519
    }

    /// The device's curve25519 identity key.
    pub fn curve25519_key(&self) -> Curve25519PublicKey {
        self.curve25519
    }

    /// The encryption algorithms the device advertises.
    pub fn algorithms(&self) -> &[EventEncryptionAlgorithm] {
        &self.algorithms
    }

    /// The device's display name, if the server reported one.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// The signed device-keys JSON as received.
    pub fn signed_keys(&self) -> &Value {
        &self.signed_keys
    }

    /// The user's local trust decision.
    pub fn local_trust(&self) -> LocalTrust {
        self.local_trust
    }

    /// Whether the user verified this device by hand (its local trust), and
    /// only that: whether it counts as verified (also when cross-signed by
    /// an owner we verified) is `OlmMachine::device_trust(..).is_verified()`.
    pub fn is_locally_verified(&self) -> bool {
        self.local_trust == LocalTrust::Verified
    }

    /// Whether the user blocked this device.
    pub fn is_blacklisted(&self) -> bool {
        self.local_trust == LocalTrust::BlackListed
    }

    /// Whether the server no longer lists this device.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The device's signed keys, to add a signature to (our self-signing
    /// key's, when we cross-sign one of our devices).
    pub(crate) fn signed_keys_mut(&mut self) -> &mut Value {
        Arc::make_mut(&mut self.signed_keys)
    }

    /// Sets a local trust other than `Verified` (which needs a proof, see
    /// [`mark_verified`](Self::mark_verified)); returns whether it was set.
    pub(crate) fn set_local_trust(&mut self, trust: LocalTrust) -> bool {
        if trust == LocalTrust::Verified {
            return false;
        }
        self.local_trust = trust;
        true
    }

    /// Marks the device verified, if `proof` covers exactly this device and
    /// its current ed25519 key; returns whether it did.
    pub(crate) fn mark_verified(&mut self, proof: &crate::verification::VerificationProof) -> bool {
        let covered = proof.covers_device(&self.user_id, &self.device_id, self.ed25519);
        if covered {
            self.local_trust = LocalTrust::Verified;
        }
        covered
    }

    pub(crate) fn mark_deleted(&mut self) {
        self.deleted = true;
    }
}
