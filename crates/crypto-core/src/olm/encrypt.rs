//! Olm-encrypting one to-device event for one device, and the to-device
//! request that carries such messages. Pure: the machine picks the session
//! and saves it afterwards.

use std::collections::BTreeMap;

use ruma_client_api::to_device::send_event_to_device;
use ruma_common::{OwnedTransactionId, serde::Raw, to_device::DeviceIdOrAllDevices};
use ruma_events::ToDeviceEventType;
use serde_json::Value;

use super::{OlmEncryptionError, OwnIdentity, Session, build_plaintext, encrypted_content};
use crate::{AnyOutgoingRequest, Timestamp, devices::DeviceData};

/// A to-device event content, serialized.
pub(crate) type ToDeviceContent = Raw<ruma_events::AnyToDeviceEventContent>;

/// The `m.room.encrypted` content of one event for `device`, advancing `session`.
pub(crate) fn encrypt_for(
    own: &OwnIdentity,
    session: &mut Session,
    device: &DeviceData,
    event_type: &str,
    content: &Value,
    now: Timestamp,
) -> Result<ToDeviceContent, OlmEncryptionError> {
    let plaintext = build_plaintext(own, device, event_type, content);
    let bytes = serde_json::to_vec(&plaintext).map_err(|e| OlmEncryptionError::Serialization(e.to_string()))?;
    let message = session.encrypt(&bytes, now).map_err(|e| OlmEncryptionError::Encryption(e.to_string()))?;
    encrypted_content(own, device.curve25519_key(), &message)
        .map_err(|e| OlmEncryptionError::Serialization(e.to_string()))
}

pub(crate) fn to_device_request(
    id: OwnedTransactionId,
    event_type: &str,
    messages: &[(DeviceData, ToDeviceContent)],
) -> AnyOutgoingRequest {
    let mut map: send_event_to_device::v3::Messages = BTreeMap::new();
    for (device, content) in messages {
        map.entry(device.user_id().to_owned())
            .or_default()
            .insert(DeviceIdOrAllDevices::DeviceId(device.device_id().to_owned()), content.clone());
    }
    AnyOutgoingRequest::ToDevice(send_event_to_device::v3::Request::new_raw(
        ToDeviceEventType::from(event_type),
        id,
        map,
    ))
}
