//! Three machines (Alice on two devices, Bob) wired through the in-process
//! server: key upload, device tracking, session setup, to-device both ways,
//! key top-up and fallback rotation, restarts, wedged sessions.

use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{AnyOutgoingRequest, MemoryStore, OlmError, OlmMachine, ToDeviceOutcome};
use hush_testing::{RogueDevice, TestDevice, TestServer, VirtualClock, decrypted};
use ruma_common::{OwnedDeviceId, user_id};
use serde_json::json;

struct World {
    server: Arc<TestServer>,
    clock: VirtualClock,
    alice1: TestDevice,
    alice2: TestDevice,
    bob: TestDevice,
}

async fn world() -> World {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user_id!("@alice:example.org");
    let bob = user_id!("@bob:example.org");
    let alice1 = TestDevice::new(&server, &clock, alice, "ALICE1").await;
    let alice2 = TestDevice::new(&server, &clock, alice, "ALICE2").await;
    let bob = TestDevice::new(&server, &clock, bob, "BOB1").await;
    let (mut alice1, mut alice2, mut bob) = (alice1, alice2, bob);
    // A first sync each, as a client would run: it brings device-list news.
    for device in [&mut alice1, &mut alice2, &mut bob] {
        device.sync().await;
    }
    World { server, clock, alice1, alice2, bob }
}

#[tokio::test]
async fn three_devices_exchange_olm_messages_both_ways() {
    let mut w = world().await;
    let (alice, bob) = (w.alice1.user_id.clone(), w.bob.user_id.clone());

    w.alice1.establish_sessions(&[&alice, &bob]).await;
    w.alice1.send_to_device(&bob, &w.bob.device_id, "org.example.hello", &json!({"n": 1})).await;
    w.alice1.send_to_device(&alice, &w.alice2.device_id, "org.example.hello", &json!({"n": 2})).await;

    let got = decrypted(&w.bob.sync().await);
    assert_eq!(got, vec![(alice.clone(), "org.example.hello".to_owned(), json!({"n": 1}))]);
    let got = decrypted(&w.alice2.sync().await);
    assert_eq!(got, vec![(alice.clone(), "org.example.hello".to_owned(), json!({"n": 2}))]);

    // Bob answers over the session Alice's pre-key message created.
    w.bob.establish_sessions(&[&alice]).await;
    w.bob.send_to_device(&alice, &w.alice1.device_id, "org.example.reply", &json!({"ok": true})).await;
    let output = w.alice1.sync().await;
    assert_eq!(decrypted(&output), vec![(bob.clone(), "org.example.reply".to_owned(), json!({"ok": true}))]);
    let ToDeviceOutcome::Decrypted { info, .. } = &output.to_device[0] else { panic!("not decrypted") };
    assert_eq!(info.sender_device.as_deref(), Some(w.bob.device_id.as_ref()));
    assert_eq!(info.sender_curve25519_key, w.bob.machine.identity_keys().1);
    assert_eq!(info.sender_ed25519_key, w.bob.machine.identity_keys().0);

    // And a second message each way reuses the sessions (normal messages).
    w.alice1.send_to_device(&bob, &w.bob.device_id, "org.example.hello", &json!({"n": 3})).await;
    assert_eq!(decrypted(&w.bob.sync().await).len(), 1);
}

#[tokio::test]
async fn devices_are_tracked_and_changes_are_followed() {
    let mut w = world().await;
    let bob = w.bob.user_id.clone();
    let alice = w.alice1.user_id.clone();
    w.alice1.machine.update_tracked_users([bob.as_ref()]).await.unwrap();
    w.alice1.drain().await;
    assert_eq!(w.alice1.machine.get_user_devices(&bob).await.unwrap().len(), 1);
    // Own user is tracked from the start: Alice sees her other device.
    let own = w.alice1.machine.get_user_devices(&alice).await.unwrap();
    assert_eq!(own.keys().map(|d| d.as_str()).collect::<Vec<_>>(), vec!["ALICE2"]);

    // Bob adds a device: Alice learns of it from the next sync.
    let _bob2 = TestDevice::new(&w.server, &w.clock, &bob, "BOB2").await;
    assert!(!w.alice1.machine.is_user_dirty(&bob));
    w.alice1.sync().await;
    assert_eq!(w.alice1.machine.get_user_devices(&bob).await.unwrap().len(), 2);

    // Bob deletes it: it is marked deleted, not forgotten.
    w.server.delete_device(&bob, &"BOB2".into());
    w.alice1.sync().await;
    let device = w.alice1.machine.get_device(&bob, "BOB2".into()).await.unwrap().unwrap();
    assert!(device.is_deleted());
    assert_eq!(w.alice1.machine.get_user_devices(&bob).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_changed_identity_key_is_rejected_and_the_old_one_kept() {
    let mut w = world().await;
    let bob = w.bob.user_id.clone();
    w.alice1.establish_sessions(&[&bob]).await;
    let before = w.alice1.machine.get_device(&bob, &w.bob.device_id).await.unwrap().unwrap();

    // The server swaps in other keys (validly self-signed) under Bob's device id.
    let impostor = RogueDevice::register(&w.server, user_id!("@mallory:example.org"), "BOB1");
    w.server.overwrite_device_keys(&bob, &w.bob.device_id, impostor.device_keys_for(&bob));
    w.alice1.sync().await;
    let after = w.alice1.machine.get_device(&bob, &w.bob.device_id).await.unwrap().unwrap();
    assert_eq!(after.ed25519_key(), before.ed25519_key());
    assert_eq!(after.curve25519_key(), before.curve25519_key());
    assert!(!w.alice1.machine.is_user_dirty(&bob));
}

#[tokio::test]
async fn device_keys_under_the_wrong_ids_or_unsigned_are_rejected() {
    let mut w = world().await;
    let bob = w.bob.user_id.clone();
    // Keys of a device named BOB9 listed under BOB7; keys of Mallory listed under Bob;
    // keys with a broken signature.
    let rogue = RogueDevice::register(&w.server, user_id!("@mallory:example.org"), "BOB9");
    w.server.overwrite_device_keys(&bob, &"BOB7".into(), rogue.device_keys_for(&bob));
    let mallory_keys = rogue.device_keys_for(user_id!("@mallory:example.org"));
    w.server.overwrite_device_keys(&bob, &"BOB9".into(), mallory_keys);
    let mut broken = rogue.device_keys_for(&bob);
    broken["device_id"] = json!("BOB8");
    broken["keys"] =
        json!({"ed25519:BOB8": rogue.ed25519_key().to_base64(), "curve25519:BOB8": rogue.curve25519_key().to_base64()});
    w.server.overwrite_device_keys(&bob, &"BOB8".into(), broken);

    w.alice1.machine.update_tracked_users([bob.as_ref()]).await.unwrap();
    w.alice1.sync().await;
    let devices = w.alice1.machine.get_user_devices(&bob).await.unwrap();
    assert_eq!(devices.keys().map(|d| d.as_str()).collect::<Vec<_>>(), vec!["BOB1"]);
}

#[tokio::test]
async fn one_time_keys_are_replaced_and_the_fallback_key_rotated() {
    let mut w = world().await;
    let bob = w.bob.user_id.clone();
    let bob_device = w.bob.device_id.clone();
    assert_eq!(w.server.one_time_key_count(&bob, &bob_device), 25);

    w.alice1.establish_sessions(&[&bob]).await;
    assert_eq!(w.server.one_time_key_count(&bob, &bob_device), 24);
    w.alice1.send_to_device(&bob, &bob_device, "m.dummy", &json!({})).await;
    assert_eq!(decrypted(&w.bob.sync().await).len(), 1);
    // The sync reported 24 keys: Bob uploaded one more.
    assert_eq!(w.server.one_time_key_count(&bob, &bob_device), 25);

    // Drain every one-time key; the next claim gets the fallback key.
    let mut rogues = Vec::new();
    for i in 0..26 {
        let mut rogue = RogueDevice::register(&w.server, user_id!("@mallory:example.org"), &format!("M{i}"));
        rogue.open_session(&w.server, &bob, &bob_device);
        rogues.push(rogue);
    }
    assert_eq!(w.server.one_time_key_count(&bob, &bob_device), 0);
    let uploads = w.server.upload_count();
    let output = w.bob.sync().await;
    assert!(output.to_device.is_empty());
    // Bob topped up one-time keys and rotated the used fallback key.
    assert_eq!(w.server.upload_count(), uploads + 1);
    assert_eq!(w.server.one_time_key_count(&bob, &bob_device), 25);
    let second = w.bob.sync().await;
    assert!(second.to_device.is_empty());
    assert_eq!(w.server.upload_count(), uploads + 1, "no second rotation without a new use");

    // The rogue that got the old fallback key can still reach Bob.
    let mut last = rogues.pop().unwrap();
    let (ed, curve) = w.bob.machine.identity_keys();
    let plaintext = last.valid_plaintext(&bob, &ed, "m.dummy", json!({}));
    let event = last.encrypt_raw(&curve, &plaintext);
    w.server.inject_to_device(&bob, &bob_device, event);
    assert_eq!(decrypted(&w.bob.sync().await).len(), 1);
}

#[tokio::test]
async fn an_unacknowledged_upload_is_repeated_with_the_same_keys_after_a_restart() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store = Arc::new(MemoryStore::new());
    let alice = user_id!("@alice:example.org");
    let device: OwnedDeviceId = "ALICE1".into();

    let upload_body = |machine_requests: Vec<hush_crypto_core::OutgoingRequest>| {
        machine_requests
            .iter()
            .find_map(|r| match r.request() {
                AnyOutgoingRequest::KeysUpload(u) => Some(u.clone()),
                _ => None,
            })
            .expect("a keys upload")
    };

    let first = OlmMachine::open(alice, &device, store.clone(), clock.now()).await.unwrap();
    let before = upload_body(first.outgoing_requests(clock.now()).await.unwrap());
    // The server stores it, but the answer never reaches the client.
    server.upload_keys(alice, &device, &before).unwrap();
    drop(first);

    let second = OlmMachine::open(alice, &device, store.clone(), clock.now()).await.unwrap();
    let after = upload_body(second.outgoing_requests(clock.now()).await.unwrap());
    assert_eq!(
        serde_json::to_value(&before.one_time_keys).unwrap(),
        serde_json::to_value(&after.one_time_keys).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&before.fallback_keys).unwrap(),
        serde_json::to_value(&after.fallback_keys).unwrap()
    );
    assert_eq!(
        before.device_keys.as_ref().map(|k| k.json().get().to_owned()),
        after.device_keys.map(|k| k.json().get().to_owned())
    );
    // The server accepts the repeat (no duplicate one-time key error).
    server.upload_keys(alice, &device, &before).unwrap();

    // The machine is bound to its device.
    let error = OlmMachine::open(alice, "OTHER".into(), store, clock.now()).await.unwrap_err();
    // The same error the store gives when its header names another device.
    assert!(
        matches!(error, hush_crypto_core::OpenError::Store(hush_crypto_core::StoreError::AccountMismatch { .. })),
        "{error}"
    );
}

#[tokio::test]
async fn a_wedged_session_is_replaced_at_most_once_an_hour() {
    let mut w = world().await;
    let (alice, bob) = (w.alice1.user_id.clone(), w.bob.user_id.clone());
    w.alice1.establish_sessions(&[&bob]).await;
    w.alice1.send_to_device(&bob, &w.bob.device_id, "m.dummy", &json!({})).await;
    w.bob.machine.update_tracked_users([alice.as_ref()]).await.unwrap();
    assert_eq!(decrypted(&w.bob.sync().await).len(), 1);

    // A normal message claiming Alice's key that no session of Bob decrypts.
    let (alice_curve, bob_curve) = (w.alice1.machine.identity_keys().1, w.bob.machine.identity_keys().1);
    let wedged = || hush_testing::wedged_message(&alice, alice_curve, bob_curve);
    let (server, bob_device) = (w.server.clone(), w.bob.device_id.clone());
    let inject = |event: serde_json::Value| server.inject_to_device(&bob, &bob_device, event);

    inject(wedged());
    let output = w.bob.sync().await;
    assert!(matches!(
        &output.to_device[0],
        ToDeviceOutcome::Failed { error: OlmError::NoMatchingSession { sessions_tried: 1, .. }, .. }
    ));
    // Bob claimed a new session and sent Alice an m.dummy over it.
    let got = decrypted(&w.alice1.sync().await);
    assert_eq!(got, vec![(bob.clone(), "m.dummy".to_owned(), json!({}))]);

    // Within the hour, a second wedge does not trigger another one.
    inject(wedged());
    w.bob.sync().await;
    assert!(decrypted(&w.alice1.sync().await).is_empty());

    // After an hour it does.
    w.clock.advance(Duration::from_secs(3601));
    inject(wedged());
    w.bob.sync().await;
    assert_eq!(decrypted(&w.alice1.sync().await).len(), 1);
}

#[tokio::test]
async fn failed_claims_back_off_instead_of_retrying_every_call() {
    let w = world().await;
    let bob = w.bob.user_id.clone();
    w.alice1.machine.update_tracked_users([bob.as_ref()]).await.unwrap();
    w.alice1.drain().await;
    // Bob's device has no keys left and no fallback: the claim returns nothing.
    for i in 0..25 {
        let mut rogue = RogueDevice::register(&w.server, user_id!("@mallory:example.org"), &format!("M{i}"));
        rogue.open_session(&w.server, &bob, &w.bob.device_id);
    }
    let mut no_fallback = ruma_client_api::keys::claim_keys::v3::Response::new(Default::default());
    let claim = w.alice1.machine.get_missing_sessions([bob.as_ref()], w.clock.now()).await.unwrap().unwrap();
    // Answer with an empty claim response (e.g. the server had nothing).
    no_fallback.one_time_keys.clear();
    w.alice1.machine.mark_request_as_sent(claim.request_id(), &no_fallback, w.clock.now()).await.unwrap();

    assert!(w.alice1.machine.get_missing_sessions([bob.as_ref()], w.clock.now()).await.unwrap().is_none());
    w.clock.advance(Duration::from_secs(16));
    assert!(w.alice1.machine.get_missing_sessions([bob.as_ref()], w.clock.now()).await.unwrap().is_some());
}

#[tokio::test]
async fn a_one_time_key_not_signed_by_its_device_makes_no_session() {
    let w = world().await;
    let mallory = user_id!("@mallory:example.org");
    let rogue = RogueDevice::register(&w.server, mallory, "MALLORY");
    let forger = RogueDevice::register(&w.server, user_id!("@forger:example.org"), "FORGER");
    // The server hands out a key signed by another device under Mallory's name.
    let forged = forger.sign(json!({"key": forger.curve25519_key().to_base64()}));
    let mut forged_as_mallory = forged.clone();
    forged_as_mallory["signatures"] = json!({ "@mallory:example.org": { "ed25519:MALLORY": forged["signatures"]["@forger:example.org"]["ed25519:FORGER"] } });
    let id: ruma_common::OwnedOneTimeKeyId = "signed_curve25519:AAAAAQ".try_into().unwrap();
    w.server.replace_one_time_keys(mallory, &rogue.device_id, [(id, forged_as_mallory)].into());

    w.alice1.establish_sessions(&[mallory]).await;
    let encryption = w
        .alice1
        .machine
        .encrypt_to_device(&[(mallory, rogue.device_id.as_ref())], "m.dummy", &json!({}), w.clock.now())
        .await
        .unwrap();
    assert!(encryption.requests.is_empty());
    assert!(matches!(encryption.failures.as_slice(), [hush_crypto_core::OlmEncryptionError::NoSession { .. }]));
    // And the device backs off rather than being claimed again at once.
    assert!(w.alice1.machine.get_missing_sessions([mallory], w.clock.now()).await.unwrap().is_none());
}

#[tokio::test]
async fn keys_queries_name_at_most_250_users_each() {
    let w = world().await;
    let users: Vec<ruma_common::OwnedUserId> =
        (0..600).map(|i| format!("@user{i}:example.org").try_into().unwrap()).collect();
    w.alice1.machine.update_tracked_users(users.iter().map(|u| u.as_ref())).await.unwrap();
    let requests = w.alice1.machine.outgoing_requests(w.clock.now()).await.unwrap();
    let sizes: Vec<usize> = requests
        .iter()
        .filter_map(|r| match r.request() {
            AnyOutgoingRequest::KeysQuery(q) => Some(q.device_keys.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![250, 250, 100]);
    // Listed again with the same ids until answered, never duplicated.
    let again = w.alice1.machine.outgoing_requests(w.clock.now()).await.unwrap();
    let ids =
        |rs: &[hush_crypto_core::OutgoingRequest]| rs.iter().map(|r| r.request_id().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&requests), ids(&again));
    w.alice1.drain().await;
    assert!(users.iter().all(|u| !w.alice1.machine.is_user_dirty(u)));
}
