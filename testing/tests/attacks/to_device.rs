//! Points 3, 8, 9 and 10 (b, c): the unwedging budget, devices learnt while
//! offline, redelivered to-device messages, malformed events, and sessions
//! tied to the device they were made with.

use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{CryptoStore, MemoryStore, OlmEncryptionError, OlmError, ToDeviceOutcome};
use hush_testing::{RogueDevice, TestDevice, TestServer, VirtualClock, decrypted};
use ruma_common::user_id;
use serde_json::{Value, json};

use super::Victim;

/// Alice and Bob with Olm sessions both ways (Alice's next message to Bob
/// is a normal message, not a pre-key one). Bob's store is returned so he
/// can be restarted.
async fn alice_and_bob(
    server: &Arc<TestServer>,
    clock: &VirtualClock,
) -> (TestDevice, TestDevice, Arc<dyn CryptoStore>) {
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let mut alice = TestDevice::new(server, clock, user_id!("@alice:example.org"), "ALICE1").await;
    let mut bob = TestDevice::with_store(server, clock, user_id!("@bob:example.org"), "BOB1", store.clone()).await;
    alice.establish_sessions(&[&bob.user_id]).await;
    bob.machine.update_tracked_users([alice.user_id.as_ref()]).await.unwrap();
    alice.send_to_device(&bob.user_id, &bob.device_id, "org.example.hi", &json!({})).await;
    bob.sync().await;
    bob.send_to_device(&alice.user_id, &alice.device_id, "org.example.hi", &json!({})).await;
    alice.sync().await;
    (alice, bob, store)
}

/// Alice's next to-device message to Bob, taken from the server instead of
/// being delivered (Bob's inbox is otherwise empty).
async fn next_message(alice: &TestDevice, server: &TestServer, bob: &TestDevice) -> Value {
    alice.send_to_device(&bob.user_id, &bob.device_id, "org.example.msg", &json!({"n": 1})).await;
    let mut events = server.sync(&bob.user_id, &bob.device_id, "taken".into()).to_device_events;
    assert_eq!(events.len(), 1);
    events.remove(0).deserialize_as_unchecked().unwrap()
}

/// The same message with its MAC broken: no session decrypts it.
fn corrupted(mut event: Value) -> Value {
    let (key, entry) = event["content"]["ciphertext"].as_object().unwrap().iter().next().unwrap();
    let key = key.clone();
    assert_eq!(entry["type"], 1, "a normal message");
    let mut body = vodozemac::base64_decode(entry["body"].as_str().unwrap()).unwrap();
    let last = body.len() - 1;
    body[last] ^= 1;
    event["content"]["ciphertext"][key]["body"] = json!(vodozemac::base64_encode(body));
    event
}

/// How many `m.dummy` messages (the sign of a replaced wedged session) Alice received.
async fn dummies_received(alice: &mut TestDevice) -> usize {
    decrypted(&alice.sync().await).iter().filter(|(_, t, _)| t == "m.dummy").count()
}

/// Attack (3): Mallory forges a to-device event naming Alice's curve25519
/// key as `sender_key`, with a ciphertext nothing decrypts, to spend Bob's
/// once-an-hour budget for replacing a wedged session with Alice. Alice's
/// genuinely wedged session must still be replaced.
#[tokio::test]
async fn a_forged_sender_key_does_not_spend_the_unwedging_budget() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (mut alice, mut bob, _) = alice_and_bob(&server, &clock).await;
    let mut forged = corrupted(next_message(&alice, &server, &bob).await);
    forged["sender"] = json!("@mallory:example.org");
    server.inject_to_device(&bob.user_id, &bob.device_id, forged);
    bob.sync().await;
    assert_eq!(dummies_received(&mut alice).await, 0, "the forgery made Bob replace Alice's session");

    let wedged = corrupted(next_message(&alice, &server, &bob).await);
    server.inject_to_device(&bob.user_id, &bob.device_id, wedged);
    bob.sync().await;
    assert_eq!(dummies_received(&mut alice).await, 1, "Alice's wedged session was not replaced");
}

/// Attack (9): the server delivers Alice's message a second time (a sync
/// token that moved back, a crash before the token was saved; here after a
/// restart too). Each redelivery used to count as a wedged session and cost
/// a one-time key and a new session; it must be dropped quietly.
#[tokio::test]
async fn a_redelivered_message_is_dropped_and_makes_no_session() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (mut alice, mut bob, store) = alice_and_bob(&server, &clock).await;
    let message = next_message(&alice, &server, &bob).await;
    server.inject_to_device(&bob.user_id, &bob.device_id, message.clone());
    assert_eq!(decrypted(&bob.sync().await).len(), 1);
    let sessions_before = store.get_sessions(&alice.machine.identity_keys().1).await.unwrap().len();
    let keys_before = server.one_time_key_count(&alice.user_id, &alice.device_id);

    server.inject_to_device(&bob.user_id, &bob.device_id, message.clone());
    let output = bob.sync().await;
    assert!(matches!(output.to_device.as_slice(), [ToDeviceOutcome::Failed { error: OlmError::Redelivered, .. }]));
    // After a restart the redelivery is still recognised.
    drop(bob);
    let mut bob = TestDevice::with_store(&server, &clock, user_id!("@bob:example.org"), "BOB1", store.clone()).await;
    server.inject_to_device(&bob.user_id, &bob.device_id, message);
    let output = bob.sync().await;
    assert!(matches!(output.to_device.as_slice(), [ToDeviceOutcome::Failed { error: OlmError::Redelivered, .. }]));

    assert_eq!(store.get_sessions(&alice.machine.identity_keys().1).await.unwrap().len(), sessions_before);
    assert_eq!(server.one_time_key_count(&alice.user_id, &alice.device_id), keys_before, "a one-time key was claimed");
    assert_eq!(dummies_received(&mut alice).await, 0);
}

/// Attack (9): a peer whose messages keep failing must not make Bob replace
/// the session again right after a restart: the once-an-hour budget is
/// persisted.
#[tokio::test]
async fn the_unwedging_budget_survives_a_restart() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (mut alice, mut bob, store) = alice_and_bob(&server, &clock).await;
    server.inject_to_device(&bob.user_id, &bob.device_id, corrupted(next_message(&alice, &server, &bob).await));
    bob.sync().await;
    assert_eq!(dummies_received(&mut alice).await, 1, "the first wedge replaced the session");
    // Alice's next message goes over the new session; break that one too.
    bob.send_to_device(&alice.user_id, &alice.device_id, "org.example.hi", &json!({})).await;
    alice.sync().await;
    drop(bob);
    let mut bob = TestDevice::with_store(&server, &clock, user_id!("@bob:example.org"), "BOB1", store).await;
    clock.advance(Duration::from_secs(60));
    server.inject_to_device(&bob.user_id, &bob.device_id, corrupted(next_message(&alice, &server, &bob).await));
    bob.sync().await;
    assert_eq!(dummies_received(&mut alice).await, 0, "the restart reset the unwedging budget");
    clock.advance(Duration::from_secs(3600));
    server.inject_to_device(&bob.user_id, &bob.device_id, corrupted(next_message(&alice, &server, &bob).await));
    bob.sync().await;
    assert_eq!(dummies_received(&mut alice).await, 1, "an hour later the session is replaced again");
}

/// Attack (8): Mallory adds a device while Bob's client is not running. The
/// restart's full sync carries no device-list change, so Bob never learns
/// the device and never shares room keys with it. After a sync without a
/// since-token every tracked user must be queried again.
#[tokio::test]
async fn a_sync_from_nothing_requeries_every_tracked_user() {
    let v = Victim::new().await;
    assert!(!v.bob.machine.is_user_dirty(&v.mallory.user_id));
    let _new = RogueDevice::register(&v.server, &v.mallory.user_id, "MALLORY3");
    // The notification is lost with the old process.
    let mut sync = v.server.sync(&v.bob.user_id, &v.bob.device_id, "fresh".into());
    sync.device_lists.changed.clear();
    sync.device_lists.is_initial = true;
    v.bob.machine.receive_sync_changes(sync, v.clock.now()).await.unwrap();
    assert!(v.bob.machine.is_user_dirty(&v.mallory.user_id), "a tracked user was not marked outdated");
    v.bob.drain().await;
    assert!(v.bob.machine.get_device(&v.mallory.user_id, "MALLORY3".into()).await.unwrap().is_some());
}

/// Attack (8): a message from a device Bob does not know (its list change
/// was lost) must make Bob query its owner, not just decrypt it as from an
/// unknown device and move on.
#[tokio::test]
async fn a_message_from_an_unknown_device_requeries_its_owner() {
    let mut v = Victim::new().await;
    let mut newcomer = RogueDevice::register(&v.server, &v.mallory.user_id, "MALLORY3");
    let _ = v.server.sync(&v.bob.user_id, &v.bob.device_id, "lost".into());
    newcomer.open_session(&v.server, &v.bob.user_id, &v.bob.device_id);
    let (ed, curve) = v.bob.machine.identity_keys();
    let plaintext = newcomer.valid_plaintext(&v.bob.user_id, &ed, "org.example.hi", json!({}));
    let event = newcomer.encrypt_raw(&curve, &plaintext);
    v.server.inject_to_device(&v.bob.user_id, &v.bob.device_id, event);
    let output = v.bob.sync().await;
    assert_eq!(decrypted(&output).len(), 1);
    assert!(
        v.bob.machine.get_device(&v.mallory.user_id, "MALLORY3".into()).await.unwrap().is_some(),
        "the sender's devices were not queried"
    );
}

/// Attack (10b): a to-device "event" that is not a JSON object.
#[tokio::test]
async fn a_to_device_event_that_is_not_an_object_is_malformed() {
    let v = Victim::new().await;
    let mut bob = v.bob;
    for bad in [json!([1, 2]), json!("text"), json!(7), json!({"type": 5})] {
        v.server.inject_to_device(&bob.user_id, &bob.device_id, bad);
        let output = bob.sync().await;
        assert!(
            matches!(output.to_device.as_slice(), [ToDeviceOutcome::Failed { error: OlmError::Malformed(_), .. }]),
            "{:?}",
            output.to_device
        );
    }
}

/// Attack (10c): Eve publishes a device (self-signed with her own ed25519
/// key) that claims Alice's curve25519 key. Bob holds an Olm session with
/// Alice's device; he must not encrypt for Eve's device with it.
#[tokio::test]
async fn a_session_is_never_used_for_another_device_claiming_its_key() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, mut bob, _) = alice_and_bob(&server, &clock).await;
    let eve = RogueDevice::register(&server, user_id!("@eve:example.org"), "EVE");
    let mut keys = eve.device_keys_for(&eve.user_id);
    keys["keys"]["curve25519:EVE"] = json!(alice.machine.identity_keys().1.to_base64());
    keys.as_object_mut().unwrap().remove("signatures");
    server.overwrite_device_keys(&eve.user_id, &eve.device_id, eve.sign(keys));
    bob.machine.update_tracked_users([eve.user_id.as_ref()]).await.unwrap();
    bob.sync().await;
    let device = bob.machine.get_device(&eve.user_id, &eve.device_id).await.unwrap().expect("Eve's device known");
    assert_eq!(device.curve25519_key(), alice.machine.identity_keys().1);

    let users: [&ruma_common::UserId; 1] = [&eve.user_id];
    let encryption = bob
        .machine
        .encrypt_to_device(&[(users[0], &eve.device_id)], "org.example.secret", &json!({}), clock.now())
        .await
        .unwrap();
    assert!(encryption.requests.is_empty(), "Bob encrypted for Eve's device with Alice's session");
    assert!(matches!(encryption.failures.as_slice(), [OlmEncryptionError::NoSession { .. }]));
    let claim = bob.machine.get_missing_sessions(users, clock.now()).await.unwrap();
    assert!(claim.is_some(), "Eve's device was taken as having a session");
}
