//! Two engines sharing one device's store through the store lock, as an
//! app and its notification helper do: they take turns, each reloading
//! what the other changed, while a peer keeps sending. Nothing may be lost
//! or used twice: no undecryptable message, no Megolm index or Olm ratchet
//! step used twice, no one-time key uploaded twice with different keys.
//! And an engine whose lease was taken over cannot write.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{
    CryptoStore, EncryptError, EncryptionSettings, EngineEvent, MemoryStore, StoreError, ToDeviceOutcome,
};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

const LEASE: Duration = Duration::from_secs(30);
const ROUNDS: usize = 300;

fn user(name: &str) -> OwnedUserId {
    format!("@{name}:example.org").try_into().expect("user id")
}

/// The Megolm session and message index of an encrypted room event.
fn ratchet_position(event: &Value) -> (String, u32) {
    let content = &event["content"];
    let ciphertext = content["ciphertext"].as_str().expect("ciphertext");
    let message = vodozemac::megolm::MegolmMessage::from_base64(ciphertext).expect("a Megolm message");
    (content["session_id"].as_str().expect("session id").to_owned(), message.message_index())
}

/// Every to-device event of a sync was decrypted (none failed).
fn all_decrypted(outcomes: &[ToDeviceOutcome], who: &str) {
    for outcome in outcomes {
        assert!(
            matches!(outcome, ToDeviceOutcome::Decrypted { .. } | ToDeviceOutcome::PlainText(_)),
            "{who}: a to-device event was not decrypted: {outcome:?}"
        );
    }
}

/// The app and the helper alternate for 300 rounds. Each round the holder
/// takes the lock (and must have reloaded, since the other held it last),
/// syncs the peer's new room keys, decrypts the peer's message, sends its
/// own, and lets go. Every tenth round the peer logs in a new device,
/// which claims one of our one-time keys, so the holder must upload more.
#[tokio::test]
async fn two_engines_taking_turns_on_one_store_lose_and_reuse_nothing() {
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    taking_turns([store.clone(), store]).await;
}

/// The same on one redb file, each engine with its own [`SharedRedbStore`]
/// handle (as two processes have): the file is open only under the lock.
#[tokio::test]
async fn two_engines_taking_turns_on_one_redb_file_lose_and_reuse_nothing() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let path = dir.path().join("alice.redb");
    let alice = user("alice");
    let options = || hush_store_redb::StoreOptions::key([3; 32]);
    let first: Arc<dyn CryptoStore> =
        Arc::new(hush_store_redb::open_shared(&path, &alice, "ALICE1".into(), options()).expect("open"));
    let second: Arc<dyn CryptoStore> =
        Arc::new(hush_store_redb::open_shared(&path, &alice, "ALICE1".into(), options()).expect("open"));
    taking_turns([first, second]).await;
}

async fn taking_turns(stores: [Arc<dyn CryptoStore>; 2]) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, bob_id) = (user("alice"), user("bob"));
    let room: OwnedRoomId = "!shared:example.org".try_into().expect("room id");
    let settings = EncryptionSettings { rotation_period_msgs: 7, ..Default::default() };

    let names = ["app", "helper"];
    stores[0].try_lock(names[0], clock.now(), LEASE).await.expect("the app takes the lock to create the device");
    let app = TestDevice::with_store(&server, &clock, &alice, "ALICE1", stores[0].clone()).await;
    app.machine.lock_store(names[0], clock.now(), LEASE).await.expect("lock");
    app.machine.unlock_store().await.expect("unlock");
    let lease = stores[1].try_lock(names[1], clock.now(), LEASE).await.expect("the helper takes the lock to open");
    let helper = TestDevice::with_store(&server, &clock, &alice, "ALICE1", stores[1].clone()).await;
    stores[1].unlock(&lease).await.expect("unlock");
    let mut engines = [app, helper];

    let mut bob = TestDevice::new(&server, &clock, &bob_id, "BOB0").await;
    let mut peers: Vec<TestDevice> = Vec::new();
    let mut positions = BTreeSet::new();
    let mut reloads = 0;
    for round in 0..ROUNDS {
        let (name, engine) = (names[round % 2], &mut engines[round % 2]);
        let outcome = engine.machine.lock_store(name, clock.now(), LEASE).await.expect("the lock is free");
        reloads += usize::from(outcome.reloaded);
        assert!(outcome.reloaded, "round {round}: the other engine held the lock last, yet {name} did not reload");

        if round % 10 == 0 {
            // A new device of the peer: it claims one of our one-time keys.
            let peer = TestDevice::new(&server, &clock, &bob_id, &format!("BOB{}", round / 10 + 1)).await;
            peer.share_room_key(&room, &[&alice], &settings).await;
            peers.push(peer);
        }
        bob.share_room_key(&room, &[&alice], &settings).await;
        let message = bob.encrypt_text(&room, &format!("bob {round}")).await;

        let synced = engine.sync().await;
        all_decrypted(&synced.to_device, name);
        let body = engine.decrypt_text(&room, &message).await;
        assert_eq!(body.as_deref(), Ok(format!("bob {round}").as_str()), "round {round}: {name} could not decrypt");

        engine.share_room_key(&room, &[&bob_id], &settings).await;
        let ours = engine.encrypt_text(&room, &format!("alice {round}")).await;
        assert!(positions.insert(ratchet_position(&ours)), "round {round}: a Megolm index was used twice");
        engine.machine.unlock_store().await.expect("unlock");

        let bob_synced = bob.sync().await;
        all_decrypted(&bob_synced.to_device, "bob");
        let body = bob.decrypt_text(&room, &ours).await;
        assert_eq!(body.as_deref(), Ok(format!("alice {round}").as_str()), "round {round}: bob could not decrypt");
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(reloads, ROUNDS);
    assert_eq!(positions.len(), ROUNDS);
    assert!(peers.len() >= ROUNDS / 10, "the peer's new devices claimed keys");
}

/// A holder whose lease ran out is taken over; its next batch (a sync) is
/// refused whole, and the new holder goes on.
#[tokio::test]
async fn an_engine_whose_lease_was_taken_over_cannot_write() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user("alice");
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let stale = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    let fresh = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    stale.machine.lock_store("stale", clock.now(), LEASE).await.expect("lock");
    let held = fresh.machine.lock_store("fresh", clock.now(), LEASE).await.expect_err("held");
    assert!(matches!(held, StoreError::LockHeld { ref holder, .. } if holder == "stale"), "{held:?}");

    clock.advance(LEASE + Duration::from_secs(1));
    let taken = fresh.machine.lock_store("fresh", clock.now(), LEASE).await.expect("an expired lease is taken over");
    assert!(taken.reloaded);

    let token_before = store.load_next_batch_token().await.expect("token");
    let changes = hush_crypto_core::SyncChanges { next_batch_token: Some("stale-batch".into()), ..Default::default() };
    let refused = stale.machine.receive_sync_changes(changes, clock.now()).await.expect_err("a stale write");
    assert!(matches!(refused, StoreError::LockLost { ref holder, .. } if holder == "fresh"), "{refused:?}");
    assert_eq!(store.load_next_batch_token().await.expect("token"), token_before, "the stale batch was written");

    let changes = hush_crypto_core::SyncChanges { next_batch_token: Some("fresh-batch".into()), ..Default::default() };
    fresh.machine.receive_sync_changes(changes, clock.now()).await.expect("the holder writes");
    assert_eq!(store.load_next_batch_token().await.expect("token").as_deref(), Some("fresh-batch"));
}

/// Work running under a lease that was lost meanwhile must not be handed
/// the new lease (it holds state from before): renewing fails with
/// `LockLost`, and lets go of the lock it took in passing.
#[tokio::test]
async fn renewing_a_lease_that_changed_hands_fails_and_lets_go() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user("alice");
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let first = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    let second = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    first.machine.lock_store("first", clock.now(), LEASE).await.expect("lock");
    first.machine.renew_store_lock("first", clock.now(), LEASE).await.expect("a renewal of a held lease");
    clock.advance(LEASE + Duration::from_secs(1));
    second.machine.lock_store("second", clock.now(), LEASE).await.expect("taken over");
    second.machine.unlock_store().await.expect("released");

    let lost = first.machine.renew_store_lock("first", clock.now(), LEASE).await.expect_err("changed hands");
    assert!(matches!(lost, StoreError::LockLost { .. }), "{lost:?}");
    let free = store.try_lock("third", clock.now(), LEASE).await.expect("the failed renewal let go");
    assert_eq!(free.holder, "third");
}

/// A damaged lock file beside a shared redb store (anyone with the disk can
/// write it) is a typed error: nobody takes the lock from it, and the store
/// file is neither created nor touched.
#[tokio::test]
async fn a_damaged_lock_file_is_an_error_and_takes_nothing() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let path = dir.path().join("alice.redb");
    let alice = user("alice");
    let store =
        hush_store_redb::open_shared(&path, &alice, "ALICE1".into(), hush_store_redb::StoreOptions::key([3; 32]))
            .expect("open");
    let lock_path = dir.path().join("alice.redb.lock");
    for garbage in [&b"\xff\xfe not a lock record"[..], &[0x93, 0x01][..], &[0xc1][..]] {
        std::fs::write(&lock_path, garbage).expect("write the lock file");
        let error =
            store.try_lock("app", hush_crypto_core::Timestamp::from_millis(1), LEASE).await.expect_err("garbage");
        assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
        assert_eq!(std::fs::read(&lock_path).expect("read"), garbage, "the lock file was rewritten");
        assert!(!path.exists(), "the store file was created from a damaged lock");
    }
}

/// Attack on a shared store (issue 30): work that outlives its lease. The
/// app's lease runs out while it still holds the room key in memory; the
/// helper takes the lock over and rotates the key (as it must when a member
/// leaves). The app must then send nothing: no event encrypted with the
/// key the helper retired (the member who left could read it), no request
/// queued under the old lease. Both are refused before anything leaves.
/// Before the fix the app encrypted from memory, which writes nothing
/// within a reserved block of indices, so no fence stopped it. Below a
/// third of the lease left, the app refuses too, until it renews.
#[tokio::test]
async fn work_that_outlived_its_lease_sends_nothing() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, bob_id) = (user("alice"), user("bob"));
    let room: OwnedRoomId = "!shared:example.org".try_into().expect("room id");
    let settings = EncryptionSettings::default();
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let app = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    let helper = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    let _bob = TestDevice::new(&server, &clock, &bob_id, "BOB1").await;
    let encrypt = |device: &TestDevice| {
        let machine = device.machine.clone();
        let now = clock.now();
        let room = room.clone();
        async move {
            let content = serde_json::json!({"msgtype": "m.text", "body": "hello"});
            machine.encrypt_room_event(&room, "m.room.message", &content, now).await
        }
    };

    app.machine.lock_store("app", clock.now(), LEASE).await.expect("lock");
    app.share_room_key(&room, &[&bob_id], &settings).await;
    let before = app.encrypt_text(&room, "under the lease").await;
    let old_session = ratchet_position(&before).0;

    // Two thirds and a second into the lease: too little left to send.
    clock.advance(LEASE * 2 / 3 + Duration::from_secs(1));
    let short = encrypt(&app).await.expect_err("less than a third of the lease left");
    assert!(matches!(short, EncryptError::Store(StoreError::LockNotHeld { expires_at: Some(_), .. })), "{short:?}");
    app.machine.renew_store_lock("app", clock.now(), LEASE).await.expect("renewed");
    encrypt(&app).await.expect("a renewed lease sends again");

    // The lease runs out; the helper takes over and rotates the key.
    app.machine.update_tracked_users([bob_id.as_ref()]).await.expect("track");
    clock.advance(LEASE + Duration::from_secs(1));
    helper.machine.lock_store("helper", clock.now(), LEASE).await.expect("an expired lease is taken over");
    assert!(helper.machine.discard_room_key(&room).await.expect("rotate"), "the helper knew the room key");
    helper.share_room_key(&room, &[&bob_id], &settings).await;
    let rotated = ratchet_position(&helper.encrypt_text(&room, "after the rotation").await).0;
    assert_ne!(rotated, old_session, "the helper rotated the key");

    let refused = encrypt(&app).await.expect_err("the app's lease was taken over");
    assert!(matches!(refused, EncryptError::Store(StoreError::LockNotHeld { .. })), "{refused:?}");
    let drained = app.machine.outgoing_requests(clock.now()).await.expect_err("requests under a lost lease");
    assert!(matches!(drained, StoreError::LockNotHeld { .. }), "{drained:?}");
}

/// The helper reads a message before its key arrived and lets go of the
/// lock; the app takes it over (reloading) and syncs the key. The app must
/// know the event the helper left waiting: it decrypts it and announces it
/// as a late decryption. Before the fix the reload kept only the app's own
/// list of waiting events, and the message stayed unreadable until the app
/// happened to read it again.
#[tokio::test]
async fn an_event_left_waiting_by_the_other_engine_heals_after_the_lock_changes_hands() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, bob_id) = (user("alice"), user("bob"));
    let room: OwnedRoomId = "!waiting:example.org".try_into().expect("room id");
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let mut app = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    let helper = TestDevice::with_store(&server, &clock, &alice, "ALICE1", store.clone()).await;
    let bob = TestDevice::new(&server, &clock, &bob_id, "BOB0").await;
    app.machine.lock_store("app", clock.now(), LEASE).await.expect("lock");
    app.drain().await;
    app.machine.unlock_store().await.expect("unlock");

    bob.share_room_key(&room, &[&alice], &EncryptionSettings::default()).await;
    let message = bob.encrypt_text(&room, "sent while the helper held the store").await;
    helper.machine.lock_store("helper", clock.now(), LEASE).await.expect("the helper takes the lock");
    let unreadable = helper.decrypt_text(&room, &message).await;
    assert!(unreadable.is_err(), "the helper has not synced the key: {unreadable:?}");
    helper.machine.unlock_store().await.expect("unlock");

    let outcome = app.machine.lock_store("app", clock.now(), LEASE).await.expect("the app takes the lock back");
    assert!(outcome.reloaded, "the helper held the lock last");
    let _ = app.machine.drain_events();
    let synced = app.sync().await;
    all_decrypted(&synced.to_device, "app");
    app.drain().await;
    let late: Vec<String> = app
        .machine
        .drain_events()
        .into_iter()
        .filter_map(|event| match event {
            EngineEvent::LateDecryption(late) => Some(late.event_id),
            _ => None,
        })
        .collect();
    let event_id = message["event_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(late, vec![event_id], "the event the helper left waiting was decrypted by the app");
}
