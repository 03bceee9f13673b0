//! The workloads on matrix-sdk-crypto 0.19, with its memory store or its
//! encrypted SQLite store (matrix-sdk-sqlite), driven against hush's test server.

use std::path::Path;
use std::sync::Arc;

use hush_crypto_core::SyncChanges;
use hush_testing::{RogueDevice, TestServer};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, OlmMachineBuilder, TrustRequirement,
    types::requests::{AnyOutgoingRequest, ToDeviceRequest},
};
use matrix_sdk_sqlite::SqliteCryptoStore;
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::client::{keys::get_keys, sync::sync_events::DeviceLists, to_device::send_event_to_device},
    events::room::encrypted::OriginalSyncRoomEncryptedEvent,
    serde::Raw,
};
use serde_json::Value;

use super::{Phase, SharePeers, Stopwatch, message_content, room_id, timeline_event};

/// Where the matrix-sdk-crypto device keeps its state.
#[derive(Clone, Copy, Debug)]
pub enum SdkStore {
    /// Its memory store.
    Memory,
    /// matrix-sdk-sqlite, encrypted with a raw key.
    Sqlite,
}

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
}

impl SdkDevice {
    /// A new device, keys uploaded.
    pub async fn new(server: &Arc<TestServer>, user_id: &UserId, device_id: &str, store: SdkStore, dir: &Path) -> Self {
        let device_id: OwnedDeviceId = device_id.into();
        let builder = OlmMachineBuilder::new(user_id, &device_id);
        let builder = match store {
            SdkStore::Memory => builder,
            SdkStore::Sqlite => {
                let key = [42u8; 32];
                let path = dir.join(format!("sdk-{device_id}"));
                let store = SqliteCryptoStore::open_with_key(&path, Some(&key[..])).await.expect("open sqlite store");
                builder.with_crypto_store(store)
            }
        };
        let machine = builder.build().await.expect("build the machine");
        let device = Self { machine, user_id: user_id.to_owned(), device_id, server: server.clone(), syncs: 0 };
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
                        let response = self.server.query_keys(&query);
                        self.machine.mark_request_as_sent(id, &response).await.expect("query answer");
                    }
                    AnyOutgoingRequest::KeysClaim(r) => {
                        let response = self.server.claim_keys(r);
                        self.machine.mark_request_as_sent(id, &response).await.expect("claim answer");
                    }
                    AnyOutgoingRequest::ToDeviceRequest(r) => self.send_to_device(r).await,
                    other => panic!("unexpected request from matrix-sdk-crypto: {other:?}"),
                }
            }
        }
        panic!("matrix-sdk-crypto's outgoing requests did not settle");
    }

    /// Sends one to-device request through the server.
    pub async fn send_to_device(&self, request: &ToDeviceRequest) {
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

    /// Feeds one sync's changes to the engine; returns how many room keys it accepted.
    pub async fn receive(&mut self, changes: SyncChanges) -> usize {
        self.syncs += 1;
        let mut lists = DeviceLists::new();
        lists.changed = changes.device_lists.changed.clone();
        lists.left = changes.device_lists.left.clone();
        let unused = changes.unused_fallback_keys.clone().unwrap_or_default();
        let sync = EncryptionSyncChanges {
            to_device_events: changes.to_device_events,
            changed_devices: &lists,
            one_time_keys_counts: &changes.one_time_keys_counts,
            unused_fallback_keys: Some(&unused),
            next_batch_token: changes.next_batch_token,
        };
        let (_, room_keys) = self.machine.receive_sync_changes(sync, &decryption_settings()).await.expect("sync");
        room_keys.len()
    }

    /// One sync from the server, then drain.
    pub async fn sync(&mut self) -> usize {
        let changes = self.server.sync(&self.user_id, &self.device_id, format!("sdk-{}", self.syncs));
        let keys = self.receive(changes).await;
        self.drain().await;
        keys
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

fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted }
}

fn settings() -> EncryptionSettings {
    EncryptionSettings { rotation_period_msgs: 1_000_000, ..Default::default() }
}

/// `share/U,D` on matrix-sdk-crypto.
pub async fn share(peers: &SharePeers, store: SdkStore, dir: &Path, run: usize) -> Vec<Phase> {
    let user_id: OwnedUserId = "@sdk:hush.example".try_into().expect("valid user id");
    let device = SdkDevice::new(&peers.server, &user_id, &format!("SDKSHARE{run}"), store, dir).await;
    let machine = &device.machine;
    let users: Vec<&UserId> = peers.users.iter().map(|u| u.as_ref()).collect();
    machine.update_tracked_users(users.iter().copied()).await.expect("track users");

    let mut answers = Vec::new();
    for request in machine.outgoing_requests().await.expect("outgoing requests") {
        if let AnyOutgoingRequest::KeysQuery(r) = request.request() {
            let mut query = get_keys::v3::Request::new();
            query.device_keys = r.device_keys.clone();
            answers.push((request.request_id().to_owned(), peers.server.query_keys(&query)));
        }
    }
    let devices: usize = answers
        .iter()
        .flat_map(|(_, a)| a.device_keys.iter())
        .filter(|(u, _)| **u != user_id)
        .map(|(_, d)| d.len())
        .sum();
    let timer = Stopwatch::start();
    for (id, answer) in &answers {
        machine.mark_request_as_sent(id, answer).await.expect("keys query answer");
    }
    let keys_query = timer.phase("keys_query", devices);

    let timer = Stopwatch::start();
    let claim = machine.get_missing_sessions(users.iter().copied()).await.expect("missing sessions");
    let claim_request = timer.phase("claim_request", devices);
    let (claim_id, claim) = claim.expect("a claim for every device");
    assert_eq!(claim.one_time_keys.values().map(|d| d.len()).sum::<usize>(), devices);
    let answer = peers.server.claim_keys(&claim);

    let timer = Stopwatch::start();
    machine.mark_request_as_sent(&claim_id, &answer).await.expect("claim answer");
    let keys_claim = timer.phase("keys_claim", devices);

    let timer = Stopwatch::start();
    let requests = machine.share_room_key(&room_id(), users.iter().copied(), settings()).await.expect("share");
    let mut sent = 0;
    for request in &requests {
        sent += request.message_count();
        machine
            .mark_request_as_sent(&request.txn_id, &send_event_to_device::v3::Response::new())
            .await
            .expect("to-device answer");
    }
    let share_room_key = timer.phase("share_room_key", devices);
    assert_eq!(sent, devices, "every device gets the room key");
    vec![keys_query, claim_request, keys_claim, share_room_key]
}

/// `megolm/M` on matrix-sdk-crypto.
pub async fn megolm(messages: usize, store: SdkStore, dir: &Path, run: usize) -> Vec<Phase> {
    let server = Arc::new(TestServer::new());
    let alice_id: OwnedUserId = "@alice:hush.example".try_into().expect("valid user id");
    let bob_id: OwnedUserId = "@bob:hush.example".try_into().expect("valid user id");
    let alice = SdkDevice::new(&server, &alice_id, &format!("ALICE{run}"), store, dir).await;
    let mut bob = SdkDevice::new(&server, &bob_id, &format!("BOB{run}"), store, dir).await;
    alice.establish_sessions(&[&bob_id]).await;
    bob.establish_sessions(&[&alice_id]).await;
    let room = room_id();
    for request in alice.machine.share_room_key(&room, [bob_id.as_ref()].into_iter(), settings()).await.expect("share")
    {
        alice.send_to_device(&request).await;
    }
    assert_eq!(bob.sync().await, 1, "bob got the room key");

    let contents: Vec<Raw<_>> = (0..messages).map(|n| Raw::new(&message_content(n)).expect("json").cast_unchecked()).collect();
    let timer = Stopwatch::start();
    let mut encrypted = Vec::with_capacity(messages);
    for content in &contents {
        let result = alice.machine.encrypt_room_event_raw(&room, "m.room.message", content).await.expect("encrypt");
        encrypted.push(result.content);
    }
    let encrypt = timer.phase("encrypt", messages);

    let events: Vec<Raw<OriginalSyncRoomEncryptedEvent>> = encrypted
        .into_iter()
        .enumerate()
        .map(|(n, c)| {
            let content: Value = c.deserialize_as_unchecked().expect("json");
            Raw::new(&timeline_event(alice_id.as_str(), n, content)).expect("json").cast_unchecked()
        })
        .collect();
    let settings = decryption_settings();
    let timer = Stopwatch::start();
    for event in &events {
        bob.machine.decrypt_room_event(event.cast_ref_unchecked(), &room, &settings).await.expect("decrypt");
    }
    let decrypt = timer.phase("decrypt", messages);
    vec![encrypt, decrypt]
}

/// `receive-keys/N` on matrix-sdk-crypto.
pub async fn receive_keys(
    server: &Arc<TestServer>,
    senders: &mut [RogueDevice],
    store: SdkStore,
    dir: &Path,
    run: usize,
) -> Vec<Phase> {
    let user_id: OwnedUserId = "@receiver:hush.example".try_into().expect("valid user id");
    let mut device = SdkDevice::new(server, &user_id, &format!("SDKRECV{run}"), store, dir).await;
    // matrix-sdk-crypto makes its fallback key once a sync says the server supports them.
    device.sync().await;
    let keys = device.machine.identity_keys();
    super::send_room_keys(server, senders, &user_id, &device.device_id, keys.ed25519, keys.curve25519);
    let changes = server.sync(&user_id, &device.device_id, "receive".to_owned());
    assert_eq!(changes.to_device_events.len(), senders.len());

    let timer = Stopwatch::start();
    let accepted = device.receive(changes).await;
    let phase = timer.phase("receive", senders.len());
    assert_eq!(accepted, senders.len(), "every room key accepted");
    vec![phase]
}
