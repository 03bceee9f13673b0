//! Checking one user's entry in a `/keys/query` answer against what we knew.
//!
//! Every device must be self-signed and listed under its own user and device
//! id. A known device whose identity keys changed is rejected and the old keys
//! kept: the server accepts such a change silently, only a client can catch it.
//! Devices the server no longer lists are marked deleted.

use std::collections::BTreeMap;

use ruma_common::{OwnedDeviceId, UserId, encryption::DeviceKeys, serde::Raw};
use serde_json::Value;

use super::{DeviceData, DeviceKeysError};
use crate::{
    contain::contain,
    identities::{CrossSigningPublicKey, key_confusion},
    olm::OwnIdentity,
};

/// What one user's keys-query entry changed.
#[derive(Debug, Default)]
pub(crate) struct KeysQueryOutcome {
    /// Devices that are new, updated, or newly marked deleted.
    pub(crate) changed: Vec<DeviceData>,
    /// Devices whose keys were refused, with the reason.
    pub(crate) rejected: Vec<DeviceKeysError>,
}

/// Compares `listed` (the server's answer for `user_id`) with `known`.
/// `identity_keys` are the user's cross-signing keys: a device colliding
/// with one is refused, and a known one marked deleted.
pub(crate) fn process_user_devices(
    user_id: &UserId,
    known: &BTreeMap<OwnedDeviceId, DeviceData>,
    listed: &BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>,
    own: &OwnIdentity,
    identity_keys: &[CrossSigningPublicKey],
) -> KeysQueryOutcome {
    let mut outcome = KeysQueryOutcome::default();
    let confused =
        |device: &DeviceData| key_confusion(device.device_id().as_str(), Some(device.ed25519_key()), identity_keys);
    for (device_id, raw) in listed {
        if user_id == own.user_id && *device_id == own.device_id {
            continue; // our own device is not tracked as a peer
        }
        // A bug hit by one device's keys rejects that device alone.
        let accepted = contain("a device in a keys-query answer", || {
            let parsed = raw
                .deserialize_as_unchecked::<Value>()
                .map_err(|e| DeviceKeysError::Malformed(e.to_string()))
                .and_then(|value| DeviceData::from_signed_keys(value, user_id, Some(device_id)));
            parsed.and_then(|device| match known.get(device_id) {
                _ if confused(&device) => {
                    Err(DeviceKeysError::KeyConfusion { user_id: user_id.to_owned(), device_id: device_id.clone() })
                }
                Some(old) => old.accept_update(device),
                _ => Ok(device),
            })
        })
        .unwrap_or_else(|reason| Err(DeviceKeysError::Malformed(reason)));
        match accepted {
            Ok(device) if known.get(device_id) != Some(&device) => outcome.changed.push(device),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%user_id, %device_id, %error, "rejected device keys from /keys/query");
                outcome.rejected.push(error);
            }
        }
    }
    for (device_id, device) in known {
        let gone = !listed.contains_key(device_id) || confused(device);
        if gone && !device.is_deleted() {
            let mut deleted = device.clone();
            deleted.mark_deleted();
            outcome.changed.push(deleted);
        }
    }
    outcome
}

/// The event-level summary of what a query changed for `user_id`.
pub(crate) fn device_changes(
    user_id: &UserId,
    known: &BTreeMap<OwnedDeviceId, DeviceData>,
    changed: &[DeviceData],
) -> Option<crate::events::DeviceChanges> {
    let mut summary = crate::events::DeviceChanges {
        user_id: user_id.to_owned(),
        added: Vec::new(),
        changed: Vec::new(),
        deleted: Vec::new(),
    };
    for device in changed {
        let id = device.device_id().to_owned();
        match known.get(device.device_id()) {
            _ if device.is_deleted() => summary.deleted.push(id),
            Some(old) if !old.is_deleted() => summary.changed.push(id),
            // New, or listed again after it was gone.
            _ => summary.added.push(id),
        }
    }
    let empty = summary.added.is_empty() && summary.changed.is_empty() && summary.deleted.is_empty();
    (!empty).then_some(summary)
}
