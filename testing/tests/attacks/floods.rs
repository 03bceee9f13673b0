//! Issue 30, findings 2 and 3: floods of requests in the clear. Anyone who
//! can reach us sends verification requests and key requests without a
//! session; a flood from one user must use up only that user's share,
//! never silence another user's verification, our own request, or our own
//! devices' key requests.

use hush_crypto_core::{
    EncryptionSettings, Timestamp,
    verification::{
        FlowId, RequestState,
        limits::{MAX_INCOMING_PER_ROOM, MAX_INCOMING_PER_USER},
    },
};
use hush_testing::{
    TestDevice,
    own_devices::{alice, first_device, second_device},
};
use ruma_common::{OwnedUserId, UserId, owned_room_id, user_id};
use serde_json::{Value, json};

use super::Victim;

const FLOOD: usize = 1000;

/// A to-device verification request in the clear, as `sender` would send it.
fn verification_request(sender: &UserId, device: &str, txn: &str, now: Timestamp) -> Value {
    json!({
        "type": "m.key.verification.request",
        "sender": sender,
        "content": {
            "from_device": device,
            "methods": ["m.sas.v1"],
            "timestamp": now.as_millis(),
            "transaction_id": txn,
        },
    })
}

/// An in-room verification request from `sender` to `to`.
fn room_request(sender: &UserId, to: &UserId, event_id: &str, now: Timestamp) -> Value {
    json!({
        "type": "m.room.message",
        "sender": sender,
        "event_id": event_id,
        "origin_server_ts": now.as_millis(),
        "content": {
            "msgtype": "m.key.verification.request",
            "body": "verify?",
            "from_device": "DEV",
            "methods": ["m.sas.v1"],
            "to": to,
        },
    })
}

/// Attack (finding 2): Mallory sends Bob 1,000 verification requests that
/// nobody will answer, in the clear, then Alice sends a genuine one in the
/// same sync. Before, the engine held at most 64 flows in all and only
/// finished ones made room: Alice's request was dropped without a trace
/// and Bob could not even start a request of his own ("too many
/// verification flows are in progress"). Now Mallory's requests displace
/// only Mallory's.
#[tokio::test]
async fn a_thousand_verification_requests_from_one_user_block_neither_another_user_nor_our_own() {
    let mut victim = Victim::new().await;
    let now = victim.clock.now();
    let alice = TestDevice::new(&victim.server, &victim.clock, user_id!("@alice:example.org"), "ALICE1").await;
    let (bob, mallory) = (victim.bob.user_id.clone(), victim.mallory.user_id.clone());
    for n in 0..FLOOD {
        let request = verification_request(&mallory, "MALLORY", &format!("flood-{n}"), now);
        victim.server.inject_to_device(&bob, &victim.bob.device_id, request);
    }
    alice.refresh_keys(&[&bob]).await;
    let genuine = alice.machine.request_verification(&bob, None, now).await.expect("alice's request");
    alice.drain().await;
    victim.bob.sync().await;

    let state = victim.bob.machine.verification_state(&alice.user_id, &genuine).expect("alice's request arrived");
    assert_eq!(state.request, RequestState::Requested);
    let mallorys = victim.bob.machine.verifications_with(&mallory).len();
    assert_eq!(mallorys, MAX_INCOMING_PER_USER, "mallory keeps only a sender's share");
    victim.bob.refresh_keys(&[&alice.user_id]).await;
    let ours = victim.bob.machine.request_verification(&alice.user_id, None, now).await;
    assert!(ours.is_ok(), "bob's own request: {ours:?}");
}

/// Attack (finding 2, in a room): a co-member sends 1,000 in-room
/// requests to Bob, then 1,000 members (a Sybil crowd) one each; then
/// Alice asks in the same room. Alice's request is kept; the co-member
/// keeps a sender's share and the room a room's share of open requests.
#[tokio::test]
async fn a_thousand_in_room_requests_do_not_silence_a_genuine_one_in_the_same_room() {
    let victim = Victim::new().await;
    let now = victim.clock.now();
    let room = owned_room_id!("!crowded:example.org");
    let (bob, mallory) = (victim.bob.user_id.clone(), victim.mallory.user_id.clone());
    let receive = |event: Value| {
        let machine = victim.bob.machine.clone();
        let room = room.clone();
        async move { machine.receive_room_verification_event(&room, &event, now).await.expect("handled") }
    };
    for n in 0..FLOOD {
        receive(room_request(&mallory, &bob, &format!("$mallory{n}"), now)).await;
    }
    assert_eq!(victim.bob.machine.verifications_with(&mallory).len(), MAX_INCOMING_PER_USER);
    for n in 0..FLOOD {
        let crowd: OwnedUserId = format!("@crowd{n}:example.org").try_into().expect("user id");
        receive(room_request(&crowd, &bob, &format!("$crowd{n}"), now)).await;
    }
    let alice = user_id!("@alice:example.org");
    receive(room_request(alice, &bob, "$genuine", now)).await;
    let flow = FlowId::InRoom { room_id: room.clone(), event_id: "$genuine".try_into().expect("event id") };
    let state = victim.bob.machine.verification_state(alice, &flow).expect("alice's request is kept");
    assert_eq!(state.request, RequestState::Requested);
    let crowd_left = (0..FLOOD)
        .filter(|n| {
            let user: OwnedUserId = format!("@crowd{n}:example.org").try_into().expect("user id");
            !victim.bob.machine.verifications_with(&user).is_empty()
        })
        .count();
    assert!(crowd_left < MAX_INCOMING_PER_ROOM, "the room holds at most its share: {crowd_left} of the crowd left");
}

/// Attack (finding 3): in one sync, Mallory (another user) sends ALICE1
/// 1,000 room-key requests in the clear, and the server 1,000 more under
/// device ids of Alice's that do not exist, ahead of a genuine request
/// from ALICE2, her verified device. Before, every request counted against
/// the 32-per-sync budget before its sender was checked, so the genuine
/// one was dropped. Now the sender is checked first: ALICE2 gets the key.
#[tokio::test]
async fn a_thousand_key_requests_from_others_do_not_crowd_out_our_own_devices_request() {
    let (server, clock, mut first, _) = first_device().await;
    let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    bob.sync().await;
    let room = owned_room_id!("!history:example.org");
    // Shared before ALICE2 existed.
    bob.share_room_key(&room, &[alice()], &EncryptionSettings::default()).await;
    let event = bob.encrypt_text(&room, "only ALICE1 got this key").await;
    first.sync().await;
    let mut second = second_device(&server, &clock, &first, true).await;
    second.sync().await;
    assert!(second.decrypt_text(&room, &event).await.is_err(), "ALICE2 lacks the key");
    let session_id = event["content"]["session_id"].as_str().expect("session id").to_owned();

    let key_request = |sender: &UserId, device: &str, n: usize| {
        json!({
            "type": "m.room_key_request",
            "sender": sender,
            "content": {
                "action": "request",
                "requesting_device_id": device,
                "request_id": format!("flood-{n}"),
                "body": {"algorithm": "m.megolm.v1.aes-sha2", "room_id": room, "session_id": session_id},
            },
        })
    };
    let mallory = user_id!("@mallory:example.org");
    for n in 0..FLOOD {
        server.inject_to_device(alice(), &first.device_id, key_request(mallory, "MALLORY", n));
        server.inject_to_device(alice(), &first.device_id, key_request(alice(), &format!("GHOST{n}"), n));
    }
    second.machine.request_room_key(&room, &session_id).await.expect("opened").expect("a request");
    second.drain().await;
    first.sync().await;
    first.drain().await;
    second.sync().await;
    assert_eq!(second.decrypt_text(&room, &event).await.as_deref(), Ok("only ALICE1 got this key"));
}
