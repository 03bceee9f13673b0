//! [`TestDevice`]: one engine and the drive loop around it, the same one
//! hush-client runs: an input, then every queued request sent and answered,
//! then the events drained.

use std::sync::Arc;

use hush_crypto_core::{
    AnyOutgoingRequest, CryptoStore, MemoryStore, OlmMachine, OutgoingRequest, RequestRefusal, SyncOutput,
    ToDeviceOutcome,
};
use ruma_client_api::to_device::send_event_to_device;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::Value;

use crate::{TestServer, VirtualClock};

/// One device in a scenario: an [`OlmMachine`] wired to a [`TestServer`].
#[derive(Debug)]
pub struct TestDevice {
    /// The engine under test.
    pub machine: OlmMachine,
    /// The device's user.
    pub user_id: OwnedUserId,
    /// The device id.
    pub device_id: OwnedDeviceId,
    server: Arc<TestServer>,
    clock: VirtualClock,
    syncs: u64,
    /// How many events of each room this device has read.
    room_positions: std::sync::Mutex<std::collections::BTreeMap<ruma_common::OwnedRoomId, usize>>,
}

impl TestDevice {
    /// A device with a fresh [`MemoryStore`], keys uploaded.
    pub async fn new(server: &Arc<TestServer>, clock: &VirtualClock, user_id: &UserId, device_id: &str) -> Self {
        Self::with_store(server, clock, user_id, device_id, Arc::new(MemoryStore::new())).await
    }

    /// A device on the given store, keys uploaded.
    pub async fn with_store(
        server: &Arc<TestServer>,
        clock: &VirtualClock,
        user_id: &UserId,
        device_id: &str,
        store: Arc<dyn CryptoStore>,
    ) -> Self {
        let device_id: OwnedDeviceId = device_id.into();
        let machine = OlmMachine::open(user_id, &device_id, store, clock.now()).await.expect("open the machine");
        let device = Self {
            machine,
            user_id: user_id.to_owned(),
            device_id,
            server: server.clone(),
            clock: clock.clone(),
            syncs: 0,
            room_positions: Default::default(),
        };
        device.drain().await;
        device
    }

    /// The server this device talks to.
    pub fn server(&self) -> &Arc<TestServer> {
        &self.server
    }

    /// Sends one request to the server and hands the answer back.
    pub async fn send(&self, request: &OutgoingRequest) {
        let now = self.clock.now();
        let id = request.request_id();
        let result = match request.request() {
            AnyOutgoingRequest::KeysUpload(r) => {
                let response =
                    self.server.upload_keys(&self.user_id, &self.device_id, r).expect("keys upload accepted");
                self.machine.mark_request_as_sent(id, &response, now).await
            }
            AnyOutgoingRequest::KeysQuery(r) => {
                self.machine.mark_request_as_sent(id, &self.server.query_keys_as(&self.user_id, r), now).await
            }
            AnyOutgoingRequest::KeysClaim(r) => {
                self.machine.mark_request_as_sent(id, &self.server.claim_keys(r), now).await
            }
            AnyOutgoingRequest::ToDevice(r) => {
                self.server.send_to_device(&self.user_id, r);
                self.machine.mark_request_as_sent(id, &send_event_to_device::v3::Response::new(), now).await
            }
            AnyOutgoingRequest::SigningKeysUpload(r) => {
                let response = self.server.upload_signing_keys(&self.user_id, r).expect("signing keys accepted");
                self.machine.mark_request_as_sent(id, &response, now).await
            }
            AnyOutgoingRequest::SignatureUpload(r) => {
                self.machine.mark_request_as_sent(id, &self.server.upload_signatures(&self.user_id, r), now).await
            }
            AnyOutgoingRequest::KeysBackup(r) => match self.server.add_backup_keys(&self.user_id, r) {
                Ok(response) => self.machine.mark_request_as_sent(id, &response, now).await,
                Err(errcode) => self.refused(id, &errcode).await,
            },
            AnyOutgoingRequest::BackupVersion(_) => match self.server.latest_backup_response(&self.user_id) {
                Ok(response) => self.machine.mark_request_as_sent(id, &response, now).await,
                Err(errcode) => self.refused(id, &errcode).await,
            },
            AnyOutgoingRequest::BackupKeyLookup(r) => match self.server.backup_key_response(&self.user_id, r) {
                Ok(response) => self.machine.mark_request_as_sent(id, &response, now).await,
                Err(errcode) => self.refused(id, &errcode).await,
            },
            AnyOutgoingRequest::RoomMessage(r) => {
                let response =
                    self.server.send_room_event(&self.user_id, &r.room_id, &r.event_type, &r.content, now.as_millis());
                self.machine.mark_request_as_sent(id, &response, now).await
            }
        };
        result.expect("response accepted");
    }

    /// Hands back a refusal the engine acts on (a backup request's 404 or
    /// wrong version).
    async fn refused(
        &self,
        id: &ruma_common::TransactionId,
        errcode: &str,
    ) -> Result<(), hush_crypto_core::ResponseError> {
        let refusal = RequestRefusal::from_errcode(errcode).expect("a refusal the engine knows");
        self.machine.mark_request_as_refused(id, refusal, self.clock.now()).await
    }

    /// The drive loop: runs due timers, then sends every queued request
    /// until none is left. Events stay queued for the test to drain.
    pub async fn drain(&self) {
        for _ in 0..10 {
            let now = self.clock.now();
            if self.machine.poll_timeout().is_some_and(|at| at <= now) {
                self.machine.handle_timeout(now).await.expect("timers handled");
            }
            let mut requests = self.machine.outgoing_requests(self.clock.now()).await.expect("outgoing requests");
            // Sent with auth by `bootstrap_cross_signing`, as a client does.
            requests.retain(|r| !matches!(r.request(), AnyOutgoingRequest::SigningKeysUpload(_)));
            if requests.is_empty() {
                return;
            }
            for request in &requests {
                self.send(request).await;
            }
        }
        panic!("outgoing requests did not settle");
    }

    /// Bootstraps cross-signing and uploads the keys with a password auth
    /// (the in-process server asks for auth only when replacing keys), then
    /// drives the queue (the device's signature upload follows).
    pub async fn bootstrap_cross_signing(&self, reset: bool) {
        let request = self.machine.bootstrap_cross_signing(reset).await.expect("bootstrap cross-signing");
        let AnyOutgoingRequest::SigningKeysUpload(upload) = request.request() else {
            panic!("bootstrap returned {:?}", request.request());
        };
        let mut upload = upload.clone();
        let identifier = ruma_client_api::uiaa::UserIdentifier::Matrix(
            ruma_client_api::uiaa::MatrixUserIdentifier::new(self.user_id.to_string()),
        );
        let password = ruma_client_api::uiaa::Password::new(identifier, "password".into());
        upload.auth = Some(ruma_client_api::uiaa::AuthData::Password(password));
        let response = self.server.upload_signing_keys(&self.user_id, &upload).expect("signing keys accepted");
        self.machine.mark_request_as_sent(request.request_id(), &response, self.clock.now()).await.expect("answer");
        self.drain().await;
    }

    /// Queries `users`' keys again (marks them outdated first) and drives the queue.
    pub async fn refresh_keys(&self, users: &[&UserId]) {
        self.machine.mark_users_outdated(users.iter().copied()).await.expect("mark outdated");
        self.drain().await;
    }

    /// Gets a room ready with the engine's room-level command, driving the
    /// queue between steps; returns the room key's session id.
    pub async fn prepare_room(&self, room: &hush_crypto_core::RoomInfo) -> String {
        for _ in 0..8 {
            match self.machine.prepare_room(room, self.clock.now()).await.expect("prepare room") {
                hush_crypto_core::RoomReadiness::Ready { session_id, .. } => return session_id,
                hush_crypto_core::RoomReadiness::Waiting { .. } => self.drain().await,
            }
        }
        panic!("the room did not become ready");
    }

    /// One sync: feed the server's changes to the engine, then drain.
    pub async fn sync(&mut self) -> SyncOutput {
        self.syncs += 1;
        let changes = self.server.sync(&self.user_id, &self.device_id, format!("batch-{}", self.syncs));
        let output = self.machine.receive_sync_changes(changes, self.clock.now()).await.expect("sync processed");
        self.drain().await;
        output
    }

    /// Reads the rooms' new events (the timeline part of a sync), feeds
    /// the verification events to the engine, and drives the queue.
    pub async fn sync_rooms(&self) {
        for room_id in self.server.rooms() {
            let from = *self.room_positions.lock().expect("positions").get(&room_id).unwrap_or(&0);
            let events = self.server.room_events(&room_id, from);
            self.room_positions.lock().expect("positions").insert(room_id.clone(), from + events.len());
            for event in events {
                self.machine
                    .receive_room_verification_event(&room_id, &event, self.clock.now())
                    .await
                    .expect("verification event handled");
            }
        }
        self.drain().await;
    }

    /// Tracks `users`, queries their devices and claims sessions with them
    /// (the low-level commands, each followed by the drive loop).
    pub async fn establish_sessions(&self, users: &[&UserId]) {
        self.machine.update_tracked_users(users.iter().copied()).await.expect("track users");
        self.drain().await;
        self.machine.get_missing_sessions(users.iter().copied(), self.clock.now()).await.expect("claim");
        self.drain().await;
    }

    /// Olm-encrypts an event for one device and sends it through the server.
    pub async fn send_to_device(&self, user_id: &UserId, device_id: &DeviceId, event_type: &str, content: &Value) {
        let encryption = self
            .machine
            .encrypt_to_device(&[(user_id, device_id)], event_type, content, self.clock.now())
            .await
            .expect("encrypt to device");
        assert!(encryption.failures.is_empty(), "encryption failures: {:?}", encryption.failures);
        self.drain().await;
    }
}

/// The decrypted events of a sync output as `(sender, type, content)`.
pub fn decrypted(output: &SyncOutput) -> Vec<(OwnedUserId, String, Value)> {
    output
        .to_device
        .iter()
        .filter_map(|o| match o {
            ToDeviceOutcome::Decrypted { event, info } => {
                let value: Value = event.deserialize_as_unchecked().ok()?;
                Some((info.sender.clone(), value["type"].as_str()?.to_owned(), value["content"].clone()))
            }
            _ => None,
        })
        .collect()
}

static EVENT_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl TestDevice {
    /// Shares the room key with `users` through the low-level commands:
    /// track and query them, claim missing sessions, share, drive the queue.
    /// Returns the share requests the command returned (all sent).
    pub async fn share_room_key(
        &self,
        room_id: &ruma_common::RoomId,
        users: &[&UserId],
        settings: &hush_crypto_core::EncryptionSettings,
    ) -> Vec<OutgoingRequest> {
        self.establish_sessions(users).await;
        let requests = self
            .machine
            .share_room_key(room_id, users.iter().copied(), settings, self.clock.now())
            .await
            .expect("share room key");
        self.drain().await;
        requests
    }

    /// Encrypts a text message and returns the event as the server would
    /// deliver it (fresh event id, sender, timestamp).
    pub async fn encrypt_text(&self, room_id: &ruma_common::RoomId, body: &str) -> Value {
        let content = serde_json::json!({"msgtype": "m.text", "body": body});
        let encrypted = self
            .machine
            .encrypt_room_event(room_id, "m.room.message", &content, self.clock.now())
            .await
            .expect("encrypt room event");
        let n = EVENT_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        serde_json::json!({
            "type": "m.room.encrypted",
            "event_id": format!("$event{n}"),
            "sender": self.user_id,
            "origin_server_ts": self.clock.now().as_millis(),
            "room_id": room_id,
            "content": encrypted.deserialize_as_unchecked::<Value>().expect("json"),
        })
    }

    /// Decrypts a room event, returning the message body or the error.
    pub async fn decrypt_text(
        &self,
        room_id: &ruma_common::RoomId,
        event: &Value,
    ) -> Result<String, hush_crypto_core::MegolmError> {
        let raw: ruma_common::serde::Raw<Value> = ruma_common::serde::Raw::new(event).expect("json");
        let decrypted = self.machine.decrypt_room_event(&raw, room_id, &Default::default()).await?;
        let value: Value = decrypted.event.deserialize_as_unchecked().expect("json");
        Ok(value["content"]["body"].as_str().unwrap_or_default().to_owned())
    }
}
