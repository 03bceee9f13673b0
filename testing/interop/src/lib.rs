//! Drives a matrix-sdk-crypto `OlmMachine` against hush's in-process
//! [`TestServer`], so the two engines meet only on the wire.

use std::collections::BTreeMap;
use std::sync::Arc;

use hush_crypto_core::SyncChanges;
use hush_testing::TestServer;
use matrix_sdk_common::deserialized_responses::ProcessedToDeviceEvent;
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement, store::types::RoomKeyInfo,
    types::requests::AnyOutgoingRequest,
};
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::client::{keys::get_keys, sync::sync_events::DeviceLists, to_device::send_event_to_device},
};
use serde_json::Value;

/// A matrix-sdk-crypto device wired to a [`TestServer`].
pub struct SdkDevice {
    /// The engine.
    pub machine: OlmMachine,
    /// The device's user.
    pub user_id: OwnedUserId,
    /// The device id.
    pub device_id: OwnedDeviceId,
    server: Arc<TestServer>,
    syncs: u64,
    /// How many events of each room this device has read.
    room_positions: std::sync::Mutex<BTreeMap<ruma::OwnedRoomId, usize>>,
}

impl SdkDevice {
    /// Encrypts a text message in `room_id` and wraps it as the room event
    /// the server would deliver.
    pub async fn encrypt_text(&self, room_id: &ruma::RoomId, body: &str, event_id: &str) -> Value {
        let content: ruma::serde::Raw<ruma::events::AnyMessageLikeEventContent> =
            ruma::serde::Raw::new(&serde_json::json!({"msgtype": "m.text", "body": body}))
                .expect("json")
                .cast_unchecked();
        let result = self.machine.encrypt_room_event_raw(room_id, "m.room.message", &content).await.expect("encrypts");
        serde_json::json!({
            "type": "m.room.encrypted",
            "event_id": event_id,
            "sender": self.user_id,
            "origin_server_ts": 1_700_000_000_000u64,
            "room_id": room_id,
            "content": result.content,
        })
    }

    /// A new device with matrix-sdk-crypto's memory store, keys uploaded.
    pub async fn new(server: &Arc<TestServer>, user_id: &UserId, device_id: &str) -> Self {
        let device_id: OwnedDeviceId = device_id.into();
        let machine = OlmMachine::new(user_id, &device_id).await;
        Self::with_machine(server, machine).await
    }

    /// A device around an already built machine (e.g. on another store), keys uploaded.
    pub async fn with_machine(server: &Arc<TestServer>, machine: OlmMachine) -> Self {
        let user_id = machine.user_id().to_owned();
        let device_id = machine.device_id().to_owned();
        let device =
            Self { machine, user_id, device_id, server: server.clone(), syncs: 0, room_positions: Default::default() };
        device.drain().await;
        device
    }

    /// Sends every outgoing request to the server and hands the answers back.
    pub async fn drain(&self) {
        for _ in 0..10 {
            let requests = self.machine.outgoing_requests().await.expect("outgoing requests");
            if requests.is_empty() {
                return;
            }
            for request in requests {
                let id = request.request_id();
                match request.request() {
                    AnyOutgoingRequest::KeysUpload(r) => {
                        let response = self.server.upload_keys(&self.user_id, &self.device_id, r).expect("upload");
                        self.machine.mark_request_as_sent(id, &response).await.expect("upload answer");
                    }
                    AnyOutgoingRequest::KeysQuery(r) => {
                        let mut query = get_keys::v3::Request::new();
                        query.device_keys = r.device_keys.clone();
                        let response = self.server.query_keys_as(&self.user_id, &query);
                        self.machine.mark_request_as_sent(id, &response).await.expect("query answer");
                    }
                    AnyOutgoingRequest::KeysClaim(r) => {
                        let response = self.server.claim_keys(r);
                        self.machine.mark_request_as_sent(id, &response).await.expect("claim answer");
                    }
                    AnyOutgoingRequest::ToDeviceRequest(r) => self.send_to_device(r).await,
                    AnyOutgoingRequest::SignatureUpload(r) => {
                        let response = self.server.upload_signatures(&self.user_id, r);
                        self.machine.mark_request_as_sent(id, &response).await.expect("signature answer");
                    }
                    AnyOutgoingRequest::RoomMessage(r) => self.send_room_message(r).await,
                }
            }
        }
        panic!("matrix-sdk-crypto's outgoing requests did not settle");
    }

    /// Bootstraps cross-signing as matrix-sdk-crypto does it: the device
    /// keys (if needed), the signing keys, then the signatures, in order.
    pub async fn bootstrap_cross_signing(&self, reset: bool) {
        let requests = self.machine.bootstrap_cross_signing(reset).await.expect("bootstrap");
        if let Some(upload) = &requests.upload_keys_req
            && let AnyOutgoingRequest::KeysUpload(r) = upload.request()
        {
            let response = self.server.upload_keys(&self.user_id, &self.device_id, r).expect("upload");
            self.machine.mark_request_as_sent(upload.request_id(), &response).await.expect("upload answer");
        }
        let keys = &requests.upload_signing_keys_req;
        let raw = |key: &Option<matrix_sdk_crypto::types::CrossSigningKey>| {
            key.as_ref().map(|k| ruma::serde::Raw::new(k).expect("json").cast_unchecked())
        };
        let mut upload = ruma::api::client::keys::upload_signing_keys::v3::Request::new();
        upload.master_key = raw(&keys.master_key);
        upload.self_signing_key = raw(&keys.self_signing_key);
        upload.user_signing_key = raw(&keys.user_signing_key);
        upload.auth = Some(ruma::api::client::uiaa::AuthData::FallbackAcknowledgement(
            ruma::api::client::uiaa::FallbackAcknowledgement::new("interop".into()),
        ));
        self.server.upload_signing_keys(&self.user_id, &upload).expect("signing keys accepted");
        self.server.upload_signatures(&self.user_id, &requests.upload_signatures_req);
        self.drain().await;
    }

    /// Sends a signature upload matrix-sdk-crypto returned from a command;
    /// the server's answer (its failures).
    pub fn upload_signatures(
        &self,
        request: &ruma::api::client::keys::upload_signatures::v3::Request,
    ) -> ruma::api::client::keys::upload_signatures::v3::Response {
        self.server.upload_signatures(&self.user_id, request)
    }

    /// Sends one of matrix-sdk-crypto's to-device requests through the server.
    pub async fn send_to_device(&self, request: &matrix_sdk_crypto::types::requests::ToDeviceRequest) {
        let ruma_request = send_event_to_device::v3::Request::new_raw(
            request.event_type.clone(),
            request.txn_id.clone(),
            request.messages.clone(),
        );
        self.server.send_to_device(&self.user_id, &ruma_request);
        self.machine
            .mark_request_as_sent(&request.txn_id, &send_event_to_device::v3::Response::new())
            .await
            .expect("to-device answer");
    }

    /// Sends one of matrix-sdk-crypto's room events (in-room verification)
    /// into the server's room, in the clear, at the real time (the SDK
    /// checks timestamps against the wall clock).
    pub async fn send_room_message(&self, request: &matrix_sdk_crypto::types::requests::RoomMessageRequest) {
        use ruma::events::MessageLikeEventContent;
        let event_type = request.content.event_type().to_string();
        let content = serde_json::to_value(&*request.content).expect("json");
        let now = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
        let response = self.server.send_room_event(&self.user_id, &request.room_id, &event_type, &content, now);
        self.machine.mark_request_as_sent(&request.txn_id, &response).await.expect("room message answer");
    }

    /// Sends a verification message an SDK command returned.
    pub async fn send_verification(&self, request: matrix_sdk_crypto::types::requests::OutgoingVerificationRequest) {
        match request {
            matrix_sdk_crypto::types::requests::OutgoingVerificationRequest::ToDevice(r) => {
                self.send_to_device(&r).await;
            }
            matrix_sdk_crypto::types::requests::OutgoingVerificationRequest::InRoom(r) => {
                self.send_room_message(&r).await;
            }
        }
    }

    /// Reads the rooms' new events and feeds them to matrix-sdk-crypto's
    /// verification (events it does not take are ignored), then drains.
    pub async fn sync_rooms(&self) {
        for room_id in self.server.rooms() {
            let from = self.room_positions.lock().expect("positions").get(&room_id).copied().unwrap_or(0);
            let events = self.server.room_events(&room_id, from);
            self.room_positions.lock().expect("positions").insert(room_id.clone(), from + events.len());
            for event in events {
                let raw: ruma::serde::Raw<ruma::events::AnyMessageLikeEvent> =
                    ruma::serde::Raw::new(&event).expect("json").cast_unchecked();
                if let Ok(event) = raw.deserialize() {
                    self.machine.receive_verification_event(&event).await.expect("verification event");
                }
            }
        }
        self.drain().await;
    }

    /// One sync; returns the to-device events as matrix-sdk-crypto processed them.
    pub async fn sync(&mut self) -> Vec<ProcessedToDeviceEvent> {
        let changes = self.server.sync(&self.user_id, &self.device_id, format!("sdk-{}", self.syncs + 1));
        let (events, _) = self.receive(changes).await;
        self.drain().await;
        events
    }

    /// Feeds one sync's changes to matrix-sdk-crypto (without draining its
    /// requests); returns the processed to-device events and the room keys
    /// it accepted.
    pub async fn receive(&mut self, changes: SyncChanges) -> (Vec<ProcessedToDeviceEvent>, Vec<RoomKeyInfo>) {
        self.syncs += 1;
        let mut lists = DeviceLists::new();
        lists.changed = changes.device_lists.changed.clone();
        lists.left = changes.device_lists.left.clone();
        let unused = changes.unused_fallback_keys.clone().unwrap_or_default();
        let counts = match &changes.one_time_keys_counts {
            hush_crypto_core::OneTimeKeyCounts::Known(counts) => counts.clone(),
            hush_crypto_core::OneTimeKeyCounts::Unknown => Default::default(),
        };
        let sync = EncryptionSyncChanges {
            to_device_events: changes.to_device_events,
            changed_devices: &lists,
            one_time_keys_counts: &counts,
            unused_fallback_keys: Some(&unused),
            next_batch_token: changes.next_batch_token,
        };
        let settings = DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted };
        self.machine.receive_sync_changes(sync, &settings).await.expect("sync processed")
    }

    /// Tracks users, queries them and claims Olm sessions with their devices.
    pub async fn establish_sessions(&self, users: &[&UserId]) {
        self.machine.update_tracked_users(users.iter().copied()).await.expect("track");
        self.drain().await;
        if let Some((id, request)) =
            self.machine.get_missing_sessions(users.iter().copied()).await.expect("missing sessions")
        {
            let response = self.server.claim_keys(&request);
            self.machine.mark_request_as_sent(&id, &response).await.expect("claim answer");
        }
    }
}

/// The decrypted events of matrix-sdk-crypto's sync output, as JSON.
pub fn sdk_decrypted(events: &[ProcessedToDeviceEvent]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcessedToDeviceEvent::Decrypted { raw, .. } => raw.deserialize_as_unchecked().ok(),
            _ => None,
        })
        .collect()
}

/// Counts of one-time keys, keyed as the sync API does.
pub type KeyCounts = BTreeMap<ruma::OneTimeKeyAlgorithm, ruma::UInt>;
