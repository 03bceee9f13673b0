//! The workloads on matrix-sdk-crypto 0.19, with its memory store or its
//! encrypted SQLite store (matrix-sdk-sqlite), driven against hush's test
//! server by the interop crate's `SdkDevice`.

use std::path::Path;
use std::sync::Arc;

use hush_interop::SdkDevice;
use hush_testing::{RogueDevice, TestServer};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, OlmMachineBuilder, TrustRequirement, types::requests::AnyOutgoingRequest,
};
use matrix_sdk_sqlite::SqliteCryptoStore;
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::client::{keys::get_keys, to_device::send_event_to_device},
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

/// A matrix-sdk-crypto device on `store`, wired to `server`, keys uploaded.
async fn device(server: &Arc<TestServer>, user_id: &UserId, device_id: &str, store: SdkStore, dir: &Path) -> SdkDevice {
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
    SdkDevice::with_machine(server, builder.build().await.expect("build the machine")).await
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
    let device = device(&peers.server, &user_id, &format!("SDKSHARE{run}"), store, dir).await;
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
    let devices = super::listed_devices(answers.iter().map(|(_, a)| a), &user_id);
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
    let alice = device(&server, &alice_id, &format!("ALICE{run}"), store, dir).await;
    let mut bob = device(&server, &bob_id, &format!("BOB{run}"), store, dir).await;
    alice.establish_sessions(&[&bob_id]).await;
    bob.establish_sessions(&[&alice_id]).await;
    let room = room_id();
    for request in alice.machine.share_room_key(&room, [bob_id.as_ref()].into_iter(), settings()).await.expect("share")
    {
        alice.send_to_device(&request).await;
    }
    let changes = server.sync(&bob_id, &bob.device_id, "megolm".to_owned());
    let (_, room_keys) = bob.receive(changes).await;
    assert_eq!(room_keys.len(), 1, "bob got the room key");

    let contents: Vec<Raw<_>> =
        (0..messages).map(|n| Raw::new(&message_content(n)).expect("json").cast_unchecked()).collect();
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
    let mut device = device(server, &user_id, &format!("SDKRECV{run}"), store, dir).await;
    // matrix-sdk-crypto makes its fallback key once a sync says the server supports them.
    device.sync().await;
    let keys = device.machine.identity_keys();
    super::send_room_keys(server, senders, &user_id, &device.device_id, keys.ed25519, keys.curve25519);
    let changes = server.sync(&user_id, &device.device_id, "receive".to_owned());
    assert_eq!(changes.to_device_events.len(), senders.len());

    let timer = Stopwatch::start();
    let (_, room_keys) = device.receive(changes).await;
    let phase = timer.phase("receive", senders.len());
    assert_eq!(room_keys.len(), senders.len(), "every room key accepted");
    vec![phase]
}
