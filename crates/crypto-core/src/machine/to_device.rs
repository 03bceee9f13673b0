//! Olm-encrypted to-device messages: encrypting for devices and decrypting
//! what arrives in a sync, with every plaintext field checked.

use std::collections::HashMap;

use ruma_common::{DeviceId, UserId};
use serde_json::Value;

use super::{OlmMachine, lock};
use crate::{
    OutgoingRequest, StoreError, Timestamp,
    devices::DeviceData,
    olm::{OlmEncryptionError, Session, SessionCache, ToDeviceContent, WedgeDecision, encrypt_for, to_device_request},
    parallel::run_split,
    requests::Meta,
    store::Changes,
};
use vodozemac::Curve25519PublicKey;

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
    /// are returned. The requests are queued: `outgoing_requests` lists them
    /// until they are answered, so dropping the returned copies loses nothing.
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
        let requests = self.queue_to_device("m.room.encrypted", messages);
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
    ) -> Result<(Vec<(DeviceData, ToDeviceContent)>, Vec<OlmEncryptionError>), StoreError> {
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
    ) -> Result<(Vec<(DeviceData, ToDeviceContent)>, Vec<OlmEncryptionError>), StoreError> {
        // Group by identity key: one job per Olm session list.
        let mut jobs: Vec<(Curve25519PublicKey, Vec<Session>, Vec<&DeviceData>)> = Vec::new();
        let mut job_of: HashMap<Curve25519PublicKey, usize> = HashMap::new();
        for device in devices {
            let key = device.curve25519_key();
            match job_of.get(&key) {
                Some(&job) => jobs[job].2.push(device),
                None => {
                    let list = sessions.take(&*self.inner.store, key).await?;
                    job_of.insert(key, jobs.len());
                    jobs.push((key, list, vec![device]));
                }
            }
        }
        // Each device's encryption is independent of the others'.
        let own = &self.inner.own;
        let done = run_split(
            jobs,
            self.workers(),
            |(_, _, devices)| devices.len(),
            |part| {
                part.into_iter()
                    .map(|(key, mut list, devices)| {
                        let results: Vec<_> = devices
                            .into_iter()
                            .map(|device| {
                                match list.iter_mut().filter(|s| s.belongs_to(device)).max_by_key(|s| s.recency()) {
                                    None => Err(OlmEncryptionError::NoSession {
                                        user_id: device.user_id().to_owned(),
                                        device_id: device.device_id().to_owned(),
                                    }),
                                    Some(session) => encrypt_for(own, session, device, event_type, content, now)
                                        .map(|encrypted| (device.clone(), encrypted, session.to_stored())),
                                }
                            })
                            .collect();
                        (key, list, results)
                    })
                    .collect::<Vec<_>>()
            },
        );
        let mut messages = Vec::with_capacity(devices.len());
        let mut failures = Vec::new();
        for (key, list, results) in done.into_iter().flatten() {
            for result in results {
                match result {
                    Ok((device, encrypted, stored)) => {
                        changes.sessions.push(stored);
                        messages.push((device, encrypted));
                    }
                    Err(error) => failures.push(error),
                }
            }
            sessions.put_back(key, list);
        }
        Ok((messages, failures))
    }

    /// Queues to-device messages (at most [`TO_DEVICE_BATCH`] per request)
    /// to be listed by `outgoing_requests`; returns copies of the requests.
    pub(super) fn queue_to_device(
        &self,
        event_type: &str,
        messages: Vec<(DeviceData, ToDeviceContent)>,
    ) -> Vec<OutgoingRequest> {
        messages
            .chunks(TO_DEVICE_BATCH)
            .map(|chunk| self.queue_to_device_chunk(event_type, chunk, Meta::None))
            .collect()
    }

    /// Queues one to-device request; its id is also its transaction id.
    pub(super) fn queue_to_device_chunk(
        &self,
        event_type: &str,
        chunk: &[(DeviceData, ToDeviceContent)],
        meta: Meta,
    ) -> OutgoingRequest {
        let mut requests = lock(&self.inner.requests);
        let id = self.fresh_id(&requests);
        let request = to_device_request(id.clone(), event_type, chunk);
        requests.push(OutgoingRequest::with_id(id, request), meta)
    }

    /// A normal message nothing decrypts. Only a message whose sender key
    /// belongs to a known device of the event's `sender` spends that
    /// device's unwedging budget (a new session at most once per hour,
    /// persisted so a restart does not reset it; a wedge within the hour is
    /// deferred to its end, see `poll_timeout`): the event's `sender_key`
    /// is unauthenticated, so a forgery naming someone else's key must not
    /// block unwedging with them. A message from an unknown device only
    /// marks its sender's device list outdated.
    /// Returns whether the claim state changed (the caller saves its record
    /// once per batch).
    pub(super) fn note_wedged(
        &self,
        sender: &UserId,
        sender_key: Curve25519PublicKey,
        device: Option<&DeviceData>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> bool {
        let Some(device) = device.filter(|d| d.user_id() == sender && d.curve25519_key() == sender_key) else {
            self.note_unknown_device(sender, sender_key, changes);
            return false;
        };
        let mut claims = lock(&self.inner.claims);
        let key = (device.user_id().to_owned(), device.device_id().to_owned());
        match claims.report_wedged(key, sender_key, now) {
            WedgeDecision::UnwedgeNow => {
                tracing::info!(user_id = %sender, device_id = %device.device_id(), "Olm session wedged; establishing a new one");
            }
            WedgeDecision::Deferred(at) => {
                tracing::info!(user_id = %sender, device_id = %device.device_id(), at = at.as_millis(), "Olm session wedged; unwedging deferred");
            }
        }
        true
    }

    /// A message (Olm or Megolm) from a device of `sender` we do not know:
    /// the sender's device list is marked outdated, once per device key per
    /// process, so a flood of unknown keys costs at most one query each.
    pub(super) fn note_unknown_device(&self, sender: &UserId, sender_key: Curve25519PublicKey, changes: &mut Changes) {
        let mut tracker = lock(&self.inner.tracker);
        if tracker.first_unknown_device_report(sender, sender_key) {
            tracing::info!(user_id = %sender, "a message from an unknown device; querying the user's devices");
            changes.tracked_users.extend(tracker.mark_dirty(sender));
        }
    }
}
