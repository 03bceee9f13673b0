//! `to_device_test.go` (the in-process scenarios): to-device messages that
//! fail to send, that must be batched, that arrive while key queries fail,
//! and that pile up while a client cannot sync.

use hush_testing::proxy::{Calls, Fault, Rule};
use hush_testing::synapse::BareDevice;
use ruma_client_api::room::create_room::v3::RoomPreset;
use serde_json::{Value, json};

use super::*;

/// Alice and Bob in a public encrypted room, both joined.
async fn pair(net: &Net, rotation: Value) -> (TestClient, TestClient, OwnedRoomId) {
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let room = create_room(&alice, RoomPreset::PublicChat, rotation, &[]).await;
    bob.client.join_room(&room).await.unwrap();
    until_recipients(&alice, &room, 2).await;
    (alice, bob, room)
}

/// The server takes Alice's to-device requests but her client is answered
/// 504. First twice: the client's retry uses the same transaction id (the
/// server drops the repeat) and Bob decrypts. Then every time: the send
/// fails, and once the fault is gone the key is shared again, and Bob
/// decrypts the message sent then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestClientRetriesSendToDevice() {
    let net = Net::start().await;
    let (alice, bob, room) = pair(&net, json!({})).await;
    let twice = net.proxy.add(Rule::path("/sendToDevice/").calls(Calls::First(2)).fault(Fault::ReplaceResponse(504)));
    let id = send(&alice, &room, "retried").await;
    decrypts(&bob, &room, &id, "retried").await;
    assert_eq!(twice.caught(), 2);
    let puts = net.proxy.seen(Some("PUT"), "/sendToDevice/m.room.encrypted/");
    assert!(
        puts.len() >= 3 && puts[..3].iter().all(|p| p.path == puts[0].path),
        "the retries reused the transaction id"
    );
    twice.remove();

    alice.client.olm_machine().unwrap().discard_room_key(&room).await.unwrap();
    let always = net.proxy.add(Rule::path("/sendToDevice/").fault(Fault::ReplaceResponse(504)));
    let result = alice.client.get_room(&room).unwrap().send_text("maybe lost").await;
    always.remove();
    let id = match result {
        Ok(sent) => sent.event_id,
        Err(_) => send(&alice, &room, "maybe lost").await,
    };
    decrypts(&bob, &room, &id, "maybe lost").await;
    assert!(always.caught() > 0);
}

/// A message in a room of 100 other users goes out as one to-device request
/// carrying the key for all 100 (hush sends up to 250 devices per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestToDeviceMessagesAreBatched() {
    let net = Net::start().await;
    let alice = net.user("alice", "ALICE1").await;
    let room = create_room(&alice, RoomPreset::PublicChat, json!({"rotation_period_msgs": 1}), &[]).await;
    let mut users = Vec::new();
    for chunk in 0..10 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..10 {
            let room = room.clone();
            tasks.spawn(async move {
                let device = BareDevice::register(&format!("bot{chunk}x{n}")).await.expect("register");
                device.join(&room).await.expect("join");
                device.device.user_id.clone()
            });
        }
        users.extend(tasks.join_all().await);
    }
    until_recipients(&alice, &room, 101).await;
    let before = net.encrypted_to_device_requests(&alice);
    send(&alice, &room, "to a hundred").await;
    let sent = net.proxy.seen(Some("PUT"), "/sendToDevice/m.room.encrypted/");
    let mine: Vec<_> =
        sent.iter().filter(|s| s.token.as_deref() == Some(alice.session.access_token.as_str())).skip(before).collect();
    assert_eq!(mine.len(), 1, "one request for the hundred devices");
    let body = mine[0].body.as_ref().expect("a JSON body");
    let recipients = body["messages"].as_object().expect("messages");
    assert_eq!(recipients.len(), 100, "all 100 users in the one request");
    assert!(users.iter().all(|u| recipients.contains_key(u.as_str())));
}

/// Bob's first three key queries fail while Alice's new device sends its
/// first message: the room key it sent Bob over to-device is not lost, and
/// Bob decrypts the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestToDeviceMessagesArentLostWhenKeysQueryFails() {
    let net = Net::start().await;
    let (alice, bob, room) = pair(&net, json!({})).await;
    let id = send(&alice, &room, "hello world").await;
    decrypts(&bob, &room, &id, "hello world").await;
    let failing = net.proxy.add(
        Rule::path("/keys/query").token(&bob.session.access_token).calls(Calls::First(3)).fault(Fault::Status(504)),
    );
    let alice2 = net.device(&alice, "OTHER_DEVICE").await;
    alice2.sync_until("the room", |c| c.client.get_room(&room).is_some()).await;
    let id = send(&alice2, &room, "new device message from alice").await;
    decrypts(&bob, &room, &id, "new device message from alice").await;
    assert_eq!(failing.caught(), 3, "bob's key queries failed three times");
}

/// Alice cannot sync (504) while four users send 20 messages each, every
/// one under a new room key: when her sync works again, the 80 room keys
/// arrive over to-device, are processed in order, and every message
/// decrypts. (The original sends 120; hush's `Room::messages` reads the
/// latest 100 events, and pagination past that comes with the client
/// issue.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestToDeviceMessagesAreProcessedInOrder() {
    let net = Net::start().await;
    let alice = net.user("alice", "ALICE1").await;
    let room = create_room(&alice, RoomPreset::PublicChat, json!({"rotation_period_msgs": 1}), &[]).await;
    let mut bots = Vec::new();
    for n in 0..4 {
        let bot = net.user(&format!("ilikebots{n}"), "BOT").await;
        bot.client.join_room(&room).await.unwrap();
        bots.push(bot);
    }
    for bot in &bots {
        until_recipients(bot, &room, 5).await;
    }
    let blocked = net.proxy.add(Rule::path("/sync").token(&alice.session.access_token).fault(Fault::Status(504)));
    let mut sent = Vec::new();
    for round in 0..20 {
        for bot in &bots {
            let text = format!("Message {round} from {}", bot.session.user_id);
            sent.push((send(bot, &room, &text).await, text));
        }
    }
    let refused =
        alice.client.sync_once(hush_client::SyncSettings::default().timeout(Duration::from_millis(100))).await;
    assert!(refused.is_err(), "alice's sync was blocked");
    blocked.remove();
    for (id, text) in &sent {
        decrypts(&alice, &room, id, text).await;
    }
}
