//! Olm-encrypted to-device messages: encrypting for devices and decrypting
//! what arrives in a sync, with every plaintext field checked.

use std::collections::BTreeMap;

use ruma_client_api::to_device::send_event_to_device;
use ruma_common::{DeviceId, OwnedTransactionId, TransactionId, UserId, serde::Raw, to_device::DeviceIdOrAllDevices};
use ruma_events::ToDeviceEventType;
use serde_json::{Value, json};
use vodozemac::olm::OlmMessage;

use super::{OlmMachine, lock, pending::Meta, session_cache::SessionCache, sync::OlmDecryptionInfo};
use crate::{
    AnyOutgoingRequest, OutgoingRequest, StoreError, Timestamp,
    devices::DeviceData,
    olm::{
        Account, OlmEncryptionError, OlmError, Session, build_plaintext, check_plaintext, encrypted_content,
        parse_incoming,
    },
    store::Changes,
};

/// The most messages one to-device request carries.
pub const TO_DEVICE_BATCH: usize = 250;

/// The result of [`OlmMachine::encrypt_to_device`].
#[derive(Debug)]
pub struct ToDeviceEncryption {
    /// Requests carrying the encrypted messages (at most [`TO_DEVICE_BATCH`] each).
    pub requests: Vec<OutgoingRequest>,
    /// Devices that could not be encrypted for, and why.
    pub failures: Vec<OlmEncryptionError>,
}

impl OlmMachine {
    /// Olm-encrypts one event for each listed device, using the newest
    /// session with each. The advanced sessions are saved before the requests
    /// are returned. Answer each request with `mark_request_as_sent`.
    pub async fn encrypt_to_device(
        &self,
        recipients: &[(&UserId, &DeviceId)],
        event_type: &str,
        content: &Value,
        now: Timestamp,
    ) -> Result<ToDeviceEncryption, StoreError> {
        let mut devices = Vec::new();
        let mut failures = Vec::new();
        for (user_id, device_id) in recipients {
            match self.inner.store.get_device(user_id, device_id).await? {
                Some(device) if !device.is_deleted() => devices.push(device),
                _ => failures.push(OlmEncryptionError::UnknownDevice {
                    user_id: (*user_id).to_owned(),
                    device_id: (*device_id).to_owned(),
                }),
            }
        }
        let (messages, more_failures) = self.encrypt_for_devices(&devices, event_type, content, now).await?;
        failures.extend(more_failures);
        let requests = messages
            .chunks(TO_DEVICE_BATCH)
            .map(|chunk| {
                let id = TransactionId::new();
                let request = to_device_request(id.clone(), "m.room.encrypted", chunk);
                self.register_with_id(id, request, Meta::None, false)
            })
            .collect();
        Ok(ToDeviceEncryption { requests, failures })
    }

    /// Encrypts for each device with its newest session and saves the
    /// advanced sessions in one batch.
    pub(crate) async fn encrypt_for_devices(
        &self,
        devices: &[DeviceData],
        event_type: &str,
        content: &Value,
        now: Timestamp,
    ) -> Result<(Vec<(DeviceData, Value)>, Vec<OlmEncryptionError>), StoreError> {
        let mut sessions = self.inner.sessions.lock().await;
        let mut changes = Changes::default();
        let result =
            self.encrypt_for_devices_into(&mut sessions, devices, event_type, content, now, &mut changes).await?;
        self.save(None, Some(&mut sessions), changes).await?;
        Ok(result)
    }

    /// Encrypts for each device with its newest session, adding the advanced
    /// sessions to `changes`; the caller saves them before releasing `sessions`.
    pub(super) async fn encrypt_for_devices_into(
        &self,
        sessions: &mut SessionCache,
        devices: &[DeviceData],
        event_type: &str,
        content: &Value,
        now: Timestamp,
        changes: &mut Changes,
    ) -> Result<(Vec<(DeviceData, Value)>, Vec<OlmEncryptionError>), StoreError> {
        let mut messages = Vec::new();
        let mut failures = Vec::new();
        for device in devices {
            let list = sessions.get_or_load(&*self.inner.store, device.curve25519_key()).await?;
            let Some(session) = list.iter_mut().max_by_key(|s| s.recency()) else {
                failures.push(OlmEncryptionError::NoSession {
                    user_id: device.user_id().to_owned(),
                    device_id: device.device_id().to_owned(),
                });
                continue;
            };
            match self.encrypt_with_session(session, device, event_type, content, now) {
                Ok(encrypted) => {
                    changes.sessions.push(session.to_stored());
                    messages.push((device.clone(), encrypted));
                }
                Err(error) => failures.push(error),
            }
        }
        Ok((messages, failures))
    }

    /// The `m.room.encrypted` content of one event for `device`, advancing `session`.
    pub(super) fn encrypt_with_session(
        &self,
        session: &mut Session,
        device: &DeviceData,
        event_type: &str,
        content: &Value,
        now: Timestamp,
    ) -> Result<Value, OlmEncryptionError> {
        let plaintext = build_plaintext(&self.inner.own, device, event_type, content);
        let bytes = serde_json::to_vec(&plaintext).map_err(|e| OlmEncryptionError::Serialization(e.to_string()))?;
        let message = session.encrypt(&bytes, now).map_err(|e| OlmEncryptionError::Encryption(e.to_string()))?;
        Ok(encrypted_content(&self.inner.own, device.curve25519_key(), &message))
    }

    /// Queues encrypted messages to be listed by `outgoing_requests`.
    pub(super) fn queue_to_device(&self, event_type: &str, messages: Vec<(DeviceData, Value)>) {
        for chunk in messages.chunks(TO_DEVICE_BATCH) {
            let id = TransactionId::new();
            let request = to_device_request(id.clone(), event_type, chunk);
            self.register_with_id(id, request, Meta::None, true);
        }
    }

    /// Decrypts one `m.room.encrypted` to-device event. The outer `Result` is a
    /// store failure (the whole sync fails); the inner one is this event's fate.
    /// A rejected event leaves account and sessions as they were.
    pub(super) async fn decrypt_olm_event(
        &self,
        account: &mut Account,
        sessions: &mut SessionCache,
        event: &Value,
        now: Timestamp,
        changes: &mut Changes,
    ) -> Result<Result<(Value, OlmDecryptionInfo), OlmError>, StoreError> {
        let incoming = match parse_incoming(event, &self.inner.own.curve25519) {
            Ok(incoming) => incoming,
            Err(error) => return Ok(Err(error)),
        };
        let known_device = self
            .inner
            .store
            .get_user_devices(&incoming.sender)
            .await?
            .into_values()
            .find(|d| d.curve25519_key() == incoming.sender_key);
        let check = |plaintext: &[u8]| {
            check_plaintext(plaintext, &incoming.sender, incoming.sender_key, &self.inner.own, known_device.as_ref())
        };

        let list = sessions.get_or_load(&*self.inner.store, incoming.sender_key).await?;
        let mut tried = 0;
        let mut order: Vec<usize> = (0..list.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(list[i].recency()));
        for i in order {
            let session = &mut list[i];
            if let OlmMessage::PreKey(m) = &incoming.message
                && m.session_id() != session.session_id()
            {
                continue;
            }
            tried += 1;
            let before = session.snapshot();
            let Ok(plaintext) = session.decrypt(&incoming.message, now) else { continue };
            return Ok(match check(&plaintext) {
                Ok(checked) => {
                    changes.sessions.push(session.to_stored());
                    Ok(decrypted(&incoming.sender, incoming.sender_key, session.session_id(), checked))
                }
                Err(error) => {
                    *session = before;
                    Err(error)
                }
            });
        }

        let OlmMessage::PreKey(pre_key) = &incoming.message else {
            self.note_wedged(&incoming.sender, incoming.sender_key, known_device.as_ref(), now, changes);
            return Ok(Err(OlmError::NoMatchingSession {
                sender_key: incoming.sender_key.to_base64(),
                sessions_tried: tried,
            }));
        };
        let before = account.snapshot();
        let created = match account.create_inbound_session(incoming.sender_key, pre_key) {
            Ok(created) => created,
            Err(error) => return Ok(Err(OlmError::SessionCreation(error.to_string()))),
        };
        match check(&created.plaintext) {
            Ok(checked) => {
                let session = Session::new(created.session, incoming.sender_key, now);
                let info = decrypted(&incoming.sender, incoming.sender_key, session.session_id(), checked);
                changes.sessions.push(session.to_stored());
                changes.account = Some(account.to_stored());
                list.push(session);
                Ok(Ok(info))
            }
            Err(error) => {
                *account = before;
                Ok(Err(error))
            }
        }
    }

    /// A normal message nothing decrypts: schedule a new session with the
    /// sender (at most once per hour per device), or a keys query if the
    /// device is unknown.
    fn note_wedged(
        &self,
        sender: &UserId,
        sender_key: vodozemac::Curve25519PublicKey,
        device: Option<&DeviceData>,
        now: Timestamp,
        changes: &mut Changes,
    ) {
        let mut claims = lock(&self.inner.claims);
        if !claims.should_unwedge(sender_key, now) {
            return;
        }
        match device {
            Some(device) => {
                tracing::info!(user_id = %sender, device_id = %device.device_id(), "Olm session wedged; establishing a new one");
                claims.mark_wedged((device.user_id().to_owned(), device.device_id().to_owned()));
            }
            None => {
                drop(claims);
                changes.tracked_users.extend(lock(&self.inner.tracking).mark_dirty(sender));
            }
        }
    }
}

fn decrypted(
    sender: &UserId,
    sender_key: vodozemac::Curve25519PublicKey,
    session_id: &str,
    checked: crate::olm::CheckedPlaintext,
) -> (Value, OlmDecryptionInfo) {
    let event = json!({ "sender": sender, "type": checked.event_type, "content": checked.content });
    let info = OlmDecryptionInfo {
        sender: sender.to_owned(),
        sender_device: checked.sender_device.as_ref().map(|d| d.device_id().to_owned()),
        sender_curve25519_key: sender_key,
        sender_ed25519_key: checked.sender_ed25519,
        session_id: session_id.to_owned(),
        event_type: checked.event_type,
    };
    (event, info)
}

pub(super) fn to_device_request(
    id: OwnedTransactionId,
    event_type: &str,
    messages: &[(DeviceData, Value)],
) -> AnyOutgoingRequest {
    let mut map: send_event_to_device::v3::Messages = BTreeMap::new();
    for (device, content) in messages {
        let raw = Raw::new(content).map(Raw::cast_unchecked);
        // Serializing a `serde_json::Value` cannot fail.
        if let Ok(raw) = raw {
            map.entry(device.user_id().to_owned())
                .or_default()
                .insert(DeviceIdOrAllDevices::DeviceId(device.device_id().to_owned()), raw);
        }
    }
    AnyOutgoingRequest::ToDevice(send_event_to_device::v3::Request::new_raw(
        ToDeviceEventType::from(event_type),
        id,
        map,
    ))
}
