//! The workloads on hush, with its memory store or its encrypted redb store.

use std::path::Path;
use std::sync::Arc;

use hush_crypto_core::{
    AnyOutgoingRequest, CryptoStore, MemoryStore, ToDeviceOutcome,
    megolm::{DecryptionSettings, EncryptionSettings},
};
use hush_store_cipher::StoreOptions;
use hush_testing::{RogueDevice, TestDevice, TestServer, VirtualClock};
use ruma::{
    OwnedUserId, UserId,
    api::client::{keys::claim_keys, to_device::send_event_to_device},
    serde::Raw,
};
use serde_json::Value;

use super::{Phase, SharePeers, Stopwatch, message_content, room_id, timeline_event};

/// Where the hush device keeps its state.
#[derive(Clone, Copy, Debug)]
pub enum HushStore {
    /// The memory store.
    Memory,
    /// The redb store, encrypted with a raw key.
    Redb,
}

impl HushStore {
    fn open(self, dir: &Path, user_id: &UserId, device_id: &str) -> Arc<dyn CryptoStore> {
        match self {
            Self::Memory => Arc::new(MemoryStore::new()),
            Self::Redb => {
                let path = dir.join(format!("hush-{device_id}.redb"));
                let store = hush_store_redb::open(&path, user_id, device_id.into(), StoreOptions::key([42; 32]))
                    .expect("open the redb store");
                Arc::new(store)
            }
        }
    }
}

/// `HUSH_BENCH_WORKERS` overrides the engine's worker threads (to see what
/// the second core brings).
fn apply_worker_setting(machine: &hush_crypto_core::OlmMachine) {
    if let Some(workers) = std::env::var("HUSH_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()) {
        machine.set_worker_threads(workers);
    }
}

fn settings() -> EncryptionSettings {
    // One session for the whole workload.
    EncryptionSettings { rotation_period_msgs: 1_000_000, ..Default::default() }
}

/// `share/U,D` on hush. `run` makes the device id unique.
pub async fn share(peers: &SharePeers, store: HushStore, dir: &Path, run: usize) -> Vec<Phase> {
    let clock = VirtualClock::default();
    let user_id: OwnedUserId = "@hush:hush.example".try_into().expect("valid user id");
    let device_id = format!("HUSHSHARE{run}");
    let store = store.open(dir, &user_id, &device_id);
    let device = TestDevice::with_store(&peers.server, &clock, &user_id, &device_id, store).await;
    apply_worker_setting(&device.machine);
    let machine = &device.machine;
    let now = clock.now();
    let users: Vec<&UserId> = peers.users.iter().map(|u| u.as_ref()).collect();
    machine.update_tracked_users(users.iter().copied()).await.expect("track users");

    // The server's answers are built before the clock starts.
    let mut answers = Vec::new();
    for request in machine.outgoing_requests(now).await.expect("outgoing requests") {
        if let AnyOutgoingRequest::KeysQuery(query) = request.request() {
            answers.push((request.request_id().to_owned(), peers.server.query_keys(query)));
        }
    }
    let timer = Stopwatch::start();
    for (id, answer) in &answers {
        machine.mark_request_as_sent(id, answer, now).await.expect("keys query answer");
    }
    let devices = super::listed_devices(answers.iter().map(|(_, a)| a), &user_id);
    let keys_query = timer.phase("keys_query", devices);

    let timer = Stopwatch::start();
    let claim = machine.get_missing_sessions(users.iter().copied(), now).await.expect("missing sessions");
    let claim_request = timer.phase("claim_request", devices);
    let claim = claim.expect("a claim for every device");
    let AnyOutgoingRequest::KeysClaim(claim_body) = claim.request() else { panic!("not a claim") };
    assert_eq!(claim_body.one_time_keys.values().map(|d| d.len()).sum::<usize>(), devices);
    let answer: claim_keys::v3::Response = peers.server.claim_keys(claim_body);

    let timer = Stopwatch::start();
    machine.mark_request_as_sent(claim.request_id(), &answer, now).await.expect("claim answer");
    let keys_claim = timer.phase("keys_claim", devices);

    let timer = Stopwatch::start();
    let requests =
        machine.share_room_key(&room_id(), users.iter().copied(), &settings(), now).await.expect("share room key");
    let mut sent = 0;
    for request in &requests {
        if let AnyOutgoingRequest::ToDevice(body) = request.request() {
            sent += body.messages.values().map(|d| d.len()).sum::<usize>();
        }
        machine
            .mark_request_as_sent(request.request_id(), &send_event_to_device::v3::Response::new(), now)
            .await
            .expect("to-device answer");
    }
    let share_room_key = timer.phase("share_room_key", devices);
    assert_eq!(sent, devices, "every device gets the room key");
    vec![keys_query, claim_request, keys_claim, share_room_key]
}

/// `megolm/M` on hush: one device encrypts, another decrypts.
pub async fn megolm(messages: usize, store: HushStore, dir: &Path, run: usize) -> Vec<Phase> {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice_id: OwnedUserId = "@alice:hush.example".try_into().expect("valid user id");
    let bob_id: OwnedUserId = "@bob:hush.example".try_into().expect("valid user id");
    let alice_device = format!("ALICE{run}");
    let bob_device = format!("BOB{run}");
    let alice_store = store.open(dir, &alice_id, &alice_device);
    let bob_store = store.open(dir, &bob_id, &bob_device);
    let alice = TestDevice::with_store(&server, &clock, &alice_id, &alice_device, alice_store).await;
    let mut bob = TestDevice::with_store(&server, &clock, &bob_id, &bob_device, bob_store).await;
    apply_worker_setting(&alice.machine);
    apply_worker_setting(&bob.machine);
    alice.establish_sessions(&[&bob_id]).await;
    bob.establish_sessions(&[&alice_id]).await;
    let now = clock.now();
    let room = room_id();
    alice.machine.share_room_key(&room, [bob_id.as_ref()], &settings(), now).await.expect("share");
    alice.drain().await;
    let received = bob.sync().await;
    assert_eq!(received.room_keys.len(), 1, "bob got the room key");

    // Contents held as JSON text, as matrix-sdk-crypto's side holds them.
    let contents: Vec<Raw<Value>> = (0..messages).map(|n| Raw::new(&message_content(n)).expect("json")).collect();
    let timer = Stopwatch::start();
    let mut encrypted = Vec::with_capacity(messages);
    for content in &contents {
        encrypted.push(
            alice.machine.encrypt_room_event_raw(&room, "m.room.message", content, now).await.expect("encrypt"),
        );
    }
    let encrypt = timer.phase("encrypt", messages);

    let events: Vec<Raw<Value>> = encrypted
        .into_iter()
        .enumerate()
        .map(|(n, c)| {
            let content: Value = c.deserialize_as_unchecked().expect("json");
            Raw::new(&timeline_event(alice_id.as_str(), n, content)).expect("json")
        })
        .collect();
    // The streaming form: each result is looked at and dropped, as a
    // client rendering a backlog would; memory stays flat.
    let timer = Stopwatch::start();
    let mut decrypted = 0;
    bob.machine
        .decrypt_room_events_each(&events, &room, &DecryptionSettings::default(), |_, result| {
            decrypted += usize::from(result.is_ok());
        })
        .await;
    let decrypt = timer.phase("decrypt", messages);
    assert_eq!(decrypted, messages, "every event decrypts");
    vec![encrypt, decrypt]
}

/// `receive-keys/N` on hush: one sync with a room key from each sender.
pub async fn receive_keys(
    server: &Arc<TestServer>,
    senders: &mut [RogueDevice],
    store: HushStore,
    dir: &Path,
    run: usize,
) -> Vec<Phase> {
    let clock = VirtualClock::default();
    let user_id: OwnedUserId = "@receiver:hush.example".try_into().expect("valid user id");
    let device_id = format!("HUSHRECV{run}");
    let store = store.open(dir, &user_id, &device_id);
    let mut device = TestDevice::with_store(server, &clock, &user_id, &device_id, store).await;
    apply_worker_setting(&device.machine);
    let (ed25519, curve25519) = device.machine.identity_keys();
    super::send_room_keys(server, senders, &user_id, &device.device_id, ed25519, curve25519);
    let changes = server.sync(&user_id, &device.device_id, "receive".to_owned());
    assert_eq!(changes.to_device_events.len(), senders.len());

    let timer = Stopwatch::start();
    let output = device.machine.receive_sync_changes(changes, clock.now()).await.expect("sync processed");
    let phase = timer.phase("receive", senders.len());
    let failed: Vec<_> = output
        .to_device
        .iter()
        .filter_map(|o| match o {
            ToDeviceOutcome::Failed { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .take(3)
        .collect();
    assert!(failed.is_empty(), "to-device events failed: {failed:?}");
    assert_eq!(output.room_keys.len(), senders.len(), "every room key accepted");
    let _ = &mut device;
    vec![phase]
}
