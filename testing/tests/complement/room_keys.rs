//! `room_keys_test.go`: when the room key rotates, when it must not, and a
//! spoofed event sender. Each check looks at the rotation itself (the
//! Megolm session of the messages, and the encrypted to-device messages the
//! sender sent), not only at who could read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hush_crypto_core::MegolmError;
use hush_testing::proxy::{Fault, Rewrite, Rule};
use hush_testing::synapse::{ClientOptions, StoreKind};
use ruma_client_api::room::create_room::v3::RoomPreset;
use serde_json::{Value, json};

use super::*;

/// Alice, Bob and Charlie in a trusted private chat, all joined.
async fn three(net: &Net, rotation: Value) -> (TestClient, TestClient, TestClient, OwnedRoomId) {
    let (alice, bob, charlie) =
        (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await, net.user("charlie", "CHARLIE1").await);
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, rotation, &[&bob, &charlie]).await;
    bob.join(&room).await;
    charlie.join(&room).await;
    until_recipients(&alice, &room, 3).await;
    (alice, bob, charlie, room)
}

/// Alice's second device logs out: her next message uses a new session,
/// shared again over to-device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestRoomKeyIsCycledOnDeviceLogout() {
    let net = Net::start().await;
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let alice2 = net.device(&alice, "OTHER_DEVICE").await;
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, json!({}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    until_device_known(&alice, &alice2, "OTHER_DEVICE", true).await;
    let first = send(&alice, &room, "Test Message").await;
    let before = decrypts(&bob, &room, &first, "Test Message").await;
    decrypts(&alice2, &room, &first, "Test Message").await;

    logout(&alice2).await;
    drop(alice2);
    until_device_known(&alice, &alice, "OTHER_DEVICE", false).await;
    let shares = net.encrypted_to_device_requests(&alice);
    let second = send(&alice, &room, "Another Test Message").await;
    let after = decrypts(&bob, &room, &second, "Another Test Message").await;
    assert_ne!(before, after, "the room key did not rotate on the logout");
    let recipients = net.encrypted_to_device(&alice, shares);
    assert!(recipients.iter().any(|(user, _)| user == bob.session.user_id.as_str()), "no new key went to bob");
}

/// With `rotation_period_msgs: 5`, the sixth message uses a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestRoomKeyIsCycledAfterEnoughMessages() {
    let net = Net::start().await;
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, json!({"rotation_period_msgs": 5}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    let mut sessions = Vec::new();
    for n in 1..=4 {
        let id = send(&alice, &room, &format!("message {n}")).await;
        sessions.push(decrypts(&bob, &room, &id, &format!("message {n}")).await);
    }
    let shares = net.encrypted_to_device_requests(&alice);
    for n in 5..=6 {
        let id = send(&alice, &room, &format!("message {n}")).await;
        sessions.push(decrypts(&bob, &room, &id, &format!("message {n}")).await);
    }
    assert!(sessions[..5].iter().all(|s| *s == sessions[0]), "the first five share a session: {sessions:?}");
    assert_ne!(sessions[5], sessions[0], "the sixth message did not rotate the key");
    assert!(!net.encrypted_to_device(&alice, shares).is_empty(), "the new key was not shared");
}

/// With `rotation_period_ms: 3000`, a message after the period uses a new
/// session. hush, like matrix-sdk-crypto, raises a rotation period under an
/// hour to an hour (a room's state must not make us share keys in a tight
/// loop), so Alice's client runs on a clock the test moves forward by two
/// hours instead of sleeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestRoomKeyIsCycledAfterEnoughTime() {
    let net = Net::start().await;
    let (clock, offset) = movable_clock();
    let mut options = ClientOptions::at(&net.proxy.url());
    options.clock = Some(clock);
    let name = hush_testing::synapse::unique_name("alice");
    hush_testing::synapse::register(&name, "password").await.unwrap();
    let dir = Arc::new(tempfile::TempDir::new().unwrap());
    let alice = TestClient::login_with(&name, "password", "ALICE1", StoreKind::Redb, dir, options).await;
    let bob = net.user("bob", "BOB1").await;
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, json!({"rotation_period_ms": 3000}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    let start = send(&alice, &room, "Before we start").await;
    let first = decrypts(&bob, &room, &start, "Before we start").await;
    let within = send(&alice, &room, "Before the time expires").await;
    assert_eq!(decrypts(&bob, &room, &within, "Before the time expires").await, first, "rotated too early");
    let shares = net.encrypted_to_device_requests(&alice);
    offset.store(2 * 3600 * 1000, Ordering::SeqCst);
    let after = send(&alice, &room, "After the time expires").await;
    assert_ne!(decrypts(&bob, &room, &after, "After the time expires").await, first, "the key did not rotate");
    assert!(!net.encrypted_to_device(&alice, shares).is_empty(), "the new key was not shared");
}

/// Charlie leaves: Alice's next message uses a new session, Bob reads it,
/// and Charlie's store holds no key for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestRoomKeyIsCycledOnMemberLeaving() {
    let net = Net::start().await;
    let (alice, bob, charlie, room) = three(&net, json!({})).await;
    let first = send(&alice, &room, "Test Message").await;
    let before = decrypts(&bob, &room, &first, "Test Message").await;
    decrypts(&charlie, &room, &first, "Test Message").await;
    charlie.client.leave_room(&room).await.unwrap();
    until_recipients(&alice, &room, 2).await;
    let shares = net.encrypted_to_device_requests(&alice);
    let second = send(&alice, &room, "Another Test Message").await;
    let after = decrypts(&bob, &room, &second, "Another Test Message").await;
    assert_ne!(before, after, "the room key did not rotate when charlie left");
    let recipients = net.encrypted_to_device(&alice, shares);
    assert!(recipients.iter().all(|(user, _)| user != charlie.session.user_id.as_str()), "charlie got the new key");
    charlie.sync().await;
    let store = charlie.client.olm_machine().unwrap().store().clone();
    assert!(store.get_inbound_group_session(&room, &after).await.unwrap().is_none(), "charlie holds the new key");
}

/// Neither a display name change nor a new device of Bob rotates the key:
/// the session stays, and Alice sends keys only to the new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestRoomKeyIsNotCycled() {
    let net = Net::start().await;
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, json!({}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    let first = send(&alice, &room, "Test Message").await;
    let session = decrypts(&bob, &room, &first, "Test Message").await;

    // On a display name change. (The deprecated endpoint on purpose: the
    // client's path selection targets Matrix 1.1, where it is the one.)
    #[allow(deprecated)]
    let request = ruma_client_api::profile::set_display_name::v3::Request::new(
        bob.session.user_id.clone(),
        Some("Little Bobby Tables".to_owned()),
    );
    api(&bob).send(request, Some(&bob.session.access_token), Duration::ZERO).await.expect("display name");
    let shares = net.encrypted_to_device_requests(&alice);
    alice
        .sync_until("bob's new name", |c| {
            c.events.lock().unwrap().iter().any(|e| e.event["content"]["displayname"] == "Little Bobby Tables")
        })
        .await;
    let renamed = send(&alice, &room, "After the name change").await;
    assert_eq!(decrypts(&bob, &room, &renamed, "After the name change").await, session, "rotated on a rename");
    assert_eq!(net.encrypted_to_device(&alice, shares), Vec::new(), "keys sent again on a rename");

    // On a new device login.
    let bob2 = net.device(&bob, "OTHER_DEVICE").await;
    bob2.sync().await;
    until_device_known(&alice, &bob, "OTHER_DEVICE", true).await;
    let shares = net.encrypted_to_device_requests(&alice);
    let later = send(&alice, &room, "Yet Another Test Message").await;
    assert_eq!(decrypts(&bob, &room, &later, "Yet Another Test Message").await, session, "rotated on a login");
    decrypts(&bob2, &room, &later, "Yet Another Test Message").await;
    let recipients = net.encrypted_to_device(&alice, shares);
    assert!(!recipients.is_empty(), "the key went to the new device");
    assert!(recipients.iter().all(|(_, device)| device == "OTHER_DEVICE"), "keys sent to old devices: {recipients:?}");
}

/// Alice's client restarts from its store: the key does not rotate and
/// nothing is shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestRoomKeyIsNotCycledOnClientRestart() {
    let net = Net::start().await;
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, json!({}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    let first = send(&alice, &room, "test from another process").await;
    let session = decrypts(&bob, &room, &first, "test from another process").await;
    let alice = alice.restart().await;
    alice.sync().await;
    let shares = net.encrypted_to_device_requests(&alice);
    let again = send(&alice, &room, "Another Test Message").await;
    assert_eq!(decrypts(&bob, &room, &again, "Another Test Message").await, session, "rotated on a restart");
    assert_eq!(net.encrypted_to_device(&alice, shares), Vec::new(), "keys sent again after a restart");
}

/// Rewrites `sender` of Alice's encrypted timeline events in Bob's syncs.
fn spoof_sender(alice: String, spoofed: String) -> Rewrite {
    Rewrite(Arc::new(move |body: &mut Value| {
        let Some(Value::Object(rooms)) = body.pointer_mut("/rooms/join") else { return };
        for room in rooms.values_mut() {
            let Some(Value::Array(events)) = room.pointer_mut("/timeline/events") else { continue };
            for event in events {
                if event["type"] == "m.room.encrypted" && event["sender"] == alice.as_str() {
                    event["sender"] = spoofed.clone().into();
                }
            }
        }
    }))
}

/// The server rewrites the sender of Alice's encrypted events in Bob's
/// sync. To another member's id: Bob refuses to decrypt (the key belongs to
/// Alice; the original expects a red shield, hush refuses outright). To a
/// malformed id: Bob cannot decrypt it either. Charlie, not tampered with,
/// reads both messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestSpoofedEventSenderHandling() {
    let net = Net::start().await;
    let (alice, bob, charlie, room) = three(&net, json!({})).await;
    let first = send(&alice, &room, "before the spoofing").await;
    decrypts(&bob, &room, &first, "before the spoofing").await;
    decrypts(&charlie, &room, &first, "before the spoofing").await;

    for (case, spoofed) in
        [("SpoofedMXIDSender", charlie.session.user_id.to_string()), ("SpoofedPlaintextSender", "charlie".to_owned())]
    {
        let rule = net.proxy.add(
            Rule::path("/sync")
                .token(&bob.session.access_token)
                .fault(Fault::Rewrite(spoof_sender(alice.session.user_id.to_string(), spoofed.clone()))),
        );
        let id = send(&alice, &room, &format!("{case}: from alice")).await;
        decrypts(&charlie, &room, &id, &format!("{case}: from alice")).await;
        bob.sync_until("the spoofed event", |c| received(c, &room, &id).is_some()).await;
        let event = received(&bob, &room, &id).unwrap();
        assert!(event.encryption.is_none() && event.text_body().is_none(), "{case}: bob decrypted a spoofed event");
        if case == "SpoofedMXIDSender" {
            assert!(
                matches!(&event.unable_to_decrypt, Some(MegolmError::SenderMismatch { event_sender, key_owner })
                    if event_sender.as_str() == spoofed && key_owner == &alice.session.user_id),
                "{case}: {:?}",
                event.unable_to_decrypt
            );
        } else {
            assert!(event.unable_to_decrypt.is_some(), "{case}: no reason given");
        }
        assert!(rule.caught() > 0);
        rule.remove();
    }
}
