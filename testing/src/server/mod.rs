//! [`TestServer`]: the homeserver's key and to-device endpoints, in process.
//!
//! It behaves like Synapse where that matters to an E2EE engine: one-time keys
//! are handed out once, the fallback key when none are left (and reported as
//! used), a changed one-time key under a used id is refused (Synapse's 400),
//! device keys are stored unchecked (the server does not verify signatures),
//! and a new or changed device is announced in other users' `device_lists`.

mod backup;
mod cross_signing;
mod rooms;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hush_crypto_core::{DeviceListChanges, SyncChanges};
use js_int::UInt;
use ruma_client_api::{
    keys::{claim_keys, get_keys, upload_keys},
    to_device::send_event_to_device,
};
use ruma_common::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UserId,
    encryption::{DeviceKeys, OneTimeKey},
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use ruma_events::AnyToDeviceEvent;
use serde_json::{Value, json};

/// An error the stand-in server answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// A one-time key id was uploaded again with different content (Synapse: HTTP 400).
    DuplicateOneTimeKey(String),
    /// The uploaded device keys name another user or device than the caller.
    WrongDevice,
    /// Replacing cross-signing keys needs user-interactive auth (Synapse: 401).
    AuthRequired,
    /// An uploaded cross-signing key is malformed or names another user.
    BadSigningKey,
}

#[derive(Debug, Default)]
struct DeviceRecord {
    keys: Option<Raw<DeviceKeys>>,
    one_time_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    /// Every one-time key id ever uploaded, with its content.
    seen_key_ids: BTreeMap<OwnedOneTimeKeyId, String>,
    fallback_key: Option<(OwnedOneTimeKeyId, Raw<OneTimeKey>)>,
    fallback_used: bool,
    inbox: Vec<Raw<AnyToDeviceEvent>>,
    changed_users: BTreeSet<OwnedUserId>,
}

#[derive(Debug, Default)]
struct State {
    devices: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceRecord>>,
    uploads: usize,
    /// (sender, transaction id) of every to-device request taken: a repeat
    /// is dropped, as a real server does.
    to_device_txns: BTreeSet<(OwnedUserId, String)>,
    /// How many to-device requests were dropped as repeats.
    repeated_to_device: usize,
    /// Each user's cross-signing keys, signatures merged in.
    cross_signing: BTreeMap<OwnedUserId, cross_signing::Keys>,
    /// Room timelines.
    rooms: BTreeMap<ruma_common::OwnedRoomId, rooms::Timeline>,
    /// Key backups by user.
    backups: BTreeMap<OwnedUserId, backup::Backups>,
    /// Global account data by user and type.
    account_data: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
}

/// An in-process stand-in for a homeserver's E2EE endpoints.
#[derive(Debug, Default)]
pub struct TestServer {
    state: Mutex<State>,
}

impl TestServer {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many to-device requests were dropped as repeats of an earlier
    /// transaction id.
    pub fn repeated_to_device_requests(&self) -> usize {
        self.state().repeated_to_device
    }

    /// `POST /keys/upload` by `user_id` / `device_id`.
    pub fn upload_keys(
        &self,
        user_id: &UserId,
        device_id: &OwnedDeviceId,
        request: &upload_keys::v3::Request,
    ) -> Result<upload_keys::v3::Response, ServerError> {
        let mut state = self.state();
        state.uploads += 1;
        let record = state.devices.entry(user_id.to_owned()).or_default().entry(device_id.clone()).or_default();
        for (id, key) in &request.one_time_keys {
            if let Some(previous) = record.seen_key_ids.get(id)
                && previous != key.json().get()
            {
                return Err(ServerError::DuplicateOneTimeKey(id.to_string()));
            }
        }
        let mut announce = false;
        if let Some(keys) = &request.device_keys {
            let value: Value = keys.deserialize_as_unchecked().map_err(|_| ServerError::WrongDevice)?;
            if value["user_id"] != json!(user_id) || value["device_id"] != json!(device_id) {
                return Err(ServerError::WrongDevice);
            }
            announce = record.keys.as_ref().map(|k| k.json().get()) != Some(keys.json().get());
            record.keys = Some(keys.clone());
        }
        for (id, key) in &request.one_time_keys {
            record.seen_key_ids.insert(id.clone(), key.json().get().to_owned());
            record.one_time_keys.insert(id.clone(), key.clone());
        }
        if let Some((id, key)) = request.fallback_keys.iter().next() {
            record.fallback_key = Some((id.clone(), key.clone()));
            record.fallback_used = false;
        }
        let count = record.one_time_keys.len();
        if announce {
            Self::announce_change(&mut state, user_id);
        }
        Ok(upload_keys::v3::Response::new(counts(count)))
    }

    fn announce_change(state: &mut State, changed: &UserId) {
        for devices in state.devices.values_mut() {
            for record in devices.values_mut() {
                record.changed_users.insert(changed.to_owned());
            }
        }
    }

    /// Replaces a device's keys without any check, as a malicious or broken
    /// server could: used to test that clients catch changed identity keys.
    pub fn overwrite_device_keys(&self, user_id: &UserId, device_id: &OwnedDeviceId, keys: Value) {
        let mut state = self.state();
        let record = state.devices.entry(user_id.to_owned()).or_default().entry(device_id.clone()).or_default();
        record.keys = Raw::new(&keys).ok().map(Raw::cast_unchecked);
        Self::announce_change(&mut state, user_id);
    }

    /// Replaces the one-time keys the server holds for a device, unchecked,
    /// as a malicious server could (e.g. keys signed by someone else).
    pub fn replace_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &OwnedDeviceId,
        keys: BTreeMap<OwnedOneTimeKeyId, Value>,
    ) {
        let mut state = self.state();
        let record = state.devices.entry(user_id.to_owned()).or_default().entry(device_id.clone()).or_default();
        record.one_time_keys =
            keys.into_iter().filter_map(|(id, key)| Some((id, Raw::new(&key).ok()?.cast_unchecked()))).collect();
    }

    /// Removes every one-time key and the fallback key of a device, so a
    /// claim for it returns nothing.
    pub fn exhaust_keys(&self, user_id: &UserId, device_id: &OwnedDeviceId) {
        let mut state = self.state();
        if let Some(record) = state.devices.get_mut(user_id).and_then(|d| d.get_mut(device_id)) {
            record.one_time_keys.clear();
            record.fallback_key = None;
        }
    }

    /// Deletes a device, announcing the change.
    pub fn delete_device(&self, user_id: &UserId, device_id: &OwnedDeviceId) {
        let mut state = self.state();
        if let Some(devices) = state.devices.get_mut(user_id) {
            devices.remove(device_id);
        }
        Self::announce_change(&mut state, user_id);
    }

    /// `POST /keys/query` by no one in particular: devices, and master and
    /// self-signing keys (a user-signing key is only listed to its owner:
    /// see [`query_keys_as`](Self::query_keys_as)).
    pub fn query_keys(&self, request: &get_keys::v3::Request) -> get_keys::v3::Response {
        let state = self.state();
        let mut response = get_keys::v3::Response::new();
        for user_id in request.device_keys.keys() {
            let devices = state
                .devices
                .get(user_id)
                .map(|d| d.iter().filter_map(|(id, r)| Some((id.clone(), r.keys.clone()?))).collect())
                .unwrap_or_default();
            response.device_keys.insert(user_id.clone(), devices);
        }
        cross_signing::list(&state, None, request, &mut response);
        response
    }

    /// `POST /keys/query` by `requester`: as [`query_keys`](Self::query_keys),
    /// with the requester's own user-signing key.
    pub fn query_keys_as(&self, requester: &UserId, request: &get_keys::v3::Request) -> get_keys::v3::Response {
        let mut response = self.query_keys(request);
        cross_signing::list(&self.state(), Some(requester), request, &mut response);
        response
    }

    /// `POST /keys/claim`: one one-time key per device, else the fallback key.
    pub fn claim_keys(&self, request: &claim_keys::v3::Request) -> claim_keys::v3::Response {
        let mut state = self.state();
        let mut claimed: BTreeMap<OwnedUserId, claim_keys::v3::OneTimeKeys> = BTreeMap::new();
        for (user_id, devices) in &request.one_time_keys {
            for device_id in devices.keys() {
                let Some(record) = state.devices.get_mut(user_id).and_then(|d| d.get_mut(device_id)) else {
                    continue;
                };
                let key = match record.one_time_keys.pop_first() {
                    Some(key) => Some(key),
                    None => record.fallback_key.clone().inspect(|_| record.fallback_used = true),
                };
                if let Some((id, key)) = key {
                    claimed.entry(user_id.clone()).or_default().insert(device_id.clone(), BTreeMap::from([(id, key)]));
                }
            }
        }
        claim_keys::v3::Response::new(claimed)
    }

    /// `PUT /sendToDevice` by `sender`. A request whose transaction id the
    /// sender used before is accepted and dropped, as a real server does.
    pub fn send_to_device(&self, sender: &UserId, request: &send_event_to_device::v3::Request) {
        let mut state = self.state();
        if !state.to_device_txns.insert((sender.to_owned(), request.txn_id.to_string())) {
            state.repeated_to_device += 1;
            return;
        }
        for (user_id, messages) in &request.messages {
            for (target, content) in messages {
                let Some(devices) = state.devices.get_mut(user_id) else { continue };
                let event = json!({
                    "sender": sender,
                    "type": request.event_type.to_string(),
                    "content": content.deserialize_as_unchecked::<Value>().unwrap_or(Value::Null),
                });
                let Ok(event) = Raw::new(&event).map(Raw::cast_unchecked) else { continue };
                match target {
                    DeviceIdOrAllDevices::AllDevices => devices.values_mut().for_each(|r| r.inbox.push(event.clone())),
                    DeviceIdOrAllDevices::DeviceId(id) => {
                        if let Some(record) = devices.get_mut(id) {
                            record.inbox.push(event);
                        }
                    }
                }
            }
        }
    }

    /// Puts a raw to-device event in a device's inbox, as the server would
    /// deliver it (tests use it to inject hostile events).
    pub fn inject_to_device(&self, user_id: &UserId, device_id: &OwnedDeviceId, event: Value) {
        let mut state = self.state();
        let record = state.devices.entry(user_id.to_owned()).or_default().entry(device_id.clone()).or_default();
        if let Ok(event) = Raw::new(&event) {
            record.inbox.push(event.cast_unchecked());
        }
    }

    /// The crypto part of a `/sync` for one device; drains its inbox.
    pub fn sync(&self, user_id: &UserId, device_id: &OwnedDeviceId, next_batch: String) -> SyncChanges {
        let mut state = self.state();
        let record = state.devices.entry(user_id.to_owned()).or_default().entry(device_id.clone()).or_default();
        let fallback_unused = record.fallback_key.is_some() && !record.fallback_used;
        SyncChanges {
            to_device_events: std::mem::take(&mut record.inbox),
            device_lists: DeviceListChanges {
                changed: std::mem::take(&mut record.changed_users).into_iter().collect(),
                left: Vec::new(),
                is_initial: false,
            },
            one_time_keys_counts: hush_crypto_core::OneTimeKeyCounts::from_sync_v3(counts(record.one_time_keys.len())),
            unused_fallback_keys: Some(if fallback_unused {
                vec![OneTimeKeyAlgorithm::SignedCurve25519]
            } else {
                vec![]
            }),
            next_batch_token: Some(next_batch),
            custom_values: Vec::new(),
        }
    }

    /// How many one-time keys the server holds for a device.
    pub fn one_time_key_count(&self, user_id: &UserId, device_id: &OwnedDeviceId) -> usize {
        self.state().devices.get(user_id).and_then(|d| d.get(device_id)).map_or(0, |r| r.one_time_keys.len())
    }

    /// The public one-time key ids the server holds for a device.
    pub fn one_time_key_ids(&self, user_id: &UserId, device_id: &OwnedDeviceId) -> Vec<OwnedOneTimeKeyId> {
        self.state()
            .devices
            .get(user_id)
            .and_then(|d| d.get(device_id))
            .map(|r| r.one_time_keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The device keys as stored for a device.
    pub fn device_keys(&self, user_id: &UserId, device_id: &OwnedDeviceId) -> Option<Value> {
        let state = self.state();
        state.devices.get(user_id)?.get(device_id)?.keys.as_ref()?.deserialize_as_unchecked().ok()
    }

    /// How many `/keys/upload` calls the server answered.
    pub fn upload_count(&self) -> usize {
        self.state().uploads
    }
}

fn counts(count: usize) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
    BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::try_from(count).unwrap_or(UInt::MAX))])
}
