//! Room keys among 3 users on 5 devices, with a virtual clock: sharing,
//! rotation by count, age and membership, new devices, replays, withheld
//! notices and spoofed senders.

use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{EncryptionSettings, LocalTrust, MegolmError, SharingStrategy, VerificationState, WithheldCode};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{OwnedUserId, RoomId, room_id, user_id};
use serde_json::{Value, json};

struct Room {
    server: Arc<TestServer>,
    clock: VirtualClock,
    alice1: TestDevice,
    alice2: TestDevice,
    bob1: TestDevice,
    bob2: TestDevice,
    carol: TestDevice,
}

const ROOM: &str = "!room:example.org";

fn room() -> &'static RoomId {
    room_id!("!room:example.org")
}

impl Room {
    async fn new() -> Self {
        let server = Arc::new(TestServer::new());
        let clock = VirtualClock::default();
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        let carol = user_id!("@carol:example.org");
        let mut room = Self {
            alice1: TestDevice::new(&server, &clock, alice, "ALICE1").await,
            alice2: TestDevice::new(&server, &clock, alice, "ALICE2").await,
            bob1: TestDevice::new(&server, &clock, bob, "BOB1").await,
            bob2: TestDevice::new(&server, &clock, bob, "BOB2").await,
            carol: TestDevice::new(&server, &clock, carol, "CAROL1").await,
            server,
            clock,
        };
        // Every member's client tracks the room's members, as clients do.
        let members = room.members();
        for device in [&room.alice1, &room.alice2, &room.bob1, &room.bob2, &room.carol] {
            device.machine.update_tracked_users(members.iter().map(|u| u.as_ref())).await.unwrap();
        }
        room.sync_all().await;
        room
    }

    fn members(&self) -> Vec<OwnedUserId> {
        vec![self.alice1.user_id.clone(), self.bob1.user_id.clone(), self.carol.user_id.clone()]
    }

    async fn sync_all(&mut self) {
        for device in [&mut self.alice1, &mut self.alice2, &mut self.bob1, &mut self.bob2, &mut self.carol] {
            device.sync().await;
        }
    }

    /// Alice1 shares with `members` and sends one message; returns the event.
    async fn alice_sends(&mut self, members: &[OwnedUserId], body: &str, settings: &EncryptionSettings) -> Value {
        let users: Vec<_> = members.iter().map(|u| u.as_ref()).collect();
        self.alice1.share_room_key(room(), &users, settings).await;
        self.alice1.encrypt_text(room(), body).await
    }

    fn receivers(&self) -> [&TestDevice; 4] {
        [&self.alice2, &self.bob1, &self.bob2, &self.carol]
    }
}

fn session_id(event: &Value) -> String {
    event["content"]["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_device_in_the_room_decrypts() {
    let mut r = Room::new().await;
    let event = r.alice_sends(&r.members(), "hello room", &EncryptionSettings::default()).await;
    r.sync_all().await;
    for device in r.receivers() {
        assert_eq!(device.decrypt_text(room(), &event).await.unwrap(), "hello room", "{}", device.device_id);
    }
    // Alice reads her own message too, as verified.
    let raw = ruma_common::serde::Raw::new(&event).unwrap();
    let own = r.alice1.machine.decrypt_room_event(&raw, room(), &Default::default()).await.unwrap();
    assert_eq!(own.info.verification_state, VerificationState::Verified);
    let on_bob = r.bob1.machine.decrypt_room_event(&raw, room(), &Default::default()).await.unwrap();
    assert_eq!(on_bob.info.sender_device.as_deref(), Some(r.alice1.device_id.as_ref()));
    assert_eq!(on_bob.info.verification_state, VerificationState::Unverified);
    assert_eq!(on_bob.info.key_source, hush_crypto_core::KeySource::Olm);
}

#[tokio::test]
async fn two_hundred_fifty_messages_use_three_sessions() {
    let mut r = Room::new().await;
    let settings = EncryptionSettings::default();
    let members = r.members();
    let mut sessions = Vec::new();
    let mut events = Vec::new();
    for i in 0..250 {
        let event = r.alice_sends(&members, &format!("message {i}"), &settings).await;
        if sessions.last() != Some(&session_id(&event)) {
            sessions.push(session_id(&event));
        }
        events.push(event);
    }
    // 100 messages per key: 1-100, 101-200, 201-250 — two rotations after the first key.
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    r.sync_all().await;
    for (i, event) in events.iter().enumerate().step_by(37) {
        assert_eq!(r.carol.decrypt_text(room(), event).await.unwrap(), format!("message {i}"));
    }
}

#[tokio::test]
async fn a_week_of_virtual_time_rotates_the_key() {
    let mut r = Room::new().await;
    let settings = EncryptionSettings::default();
    let members = r.members();
    let first = r.alice_sends(&members, "monday", &settings).await;
    r.clock.advance(Duration::from_secs(6 * 24 * 3600));
    let second = r.alice_sends(&members, "saturday", &settings).await;
    assert_eq!(session_id(&first), session_id(&second));
    r.clock.advance(Duration::from_secs(24 * 3600));
    let third = r.alice_sends(&members, "next monday", &settings).await;
    assert_ne!(session_id(&first), session_id(&third));
    // Encrypting with an expired key without sharing first is refused.
    r.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let err = r
        .alice1
        .machine
        .encrypt_room_event(room(), "m.room.message", &json!({"body": "late"}), r.clock.now())
        .await
        .unwrap_err();
    assert!(matches!(err, hush_crypto_core::EncryptError::SessionExpired(_)));
}

#[tokio::test]
async fn a_member_who_left_cannot_read_later_messages() {
    let mut r = Room::new().await;
    let settings = EncryptionSettings::default();
    let before = r.alice_sends(&r.members(), "before carol left", &settings).await;
    // Carol leaves: she is no longer among the members.
    let remaining = vec![r.alice1.user_id.clone(), r.bob1.user_id.clone()];
    let after = r.alice_sends(&remaining, "after carol left", &settings).await;
    assert_ne!(session_id(&before), session_id(&after));
    r.sync_all().await;
    assert_eq!(r.carol.decrypt_text(room(), &before).await.unwrap(), "before carol left");
    assert!(matches!(r.carol.decrypt_text(room(), &after).await, Err(MegolmError::MissingRoomKey { .. })));
    assert_eq!(r.bob2.decrypt_text(room(), &after).await.unwrap(), "after carol left");
}

#[tokio::test]
async fn a_new_device_gets_the_current_key_at_its_current_index() {
    let mut r = Room::new().await;
    let settings = EncryptionSettings::default();
    let members = r.members();
    let old = r.alice_sends(&members, "before the new device", &settings).await;

    let mut carol2 = TestDevice::new(&r.server, &r.clock, user_id!("@carol:example.org"), "CAROL2").await;
    r.alice1.sync().await; // learns of CAROL2 from device_lists.changed
    let new = r.alice_sends(&members, "after the new device", &settings).await;
    assert_eq!(session_id(&old), session_id(&new), "a new device must not rotate the key");

    carol2.sync().await;
    assert_eq!(carol2.decrypt_text(room(), &new).await.unwrap(), "after the new device");
    assert!(matches!(
        carol2.decrypt_text(room(), &old).await,
        Err(MegolmError::UnknownMessageIndex { first_known_index: 1, message_index: 0 })
    ));
}

#[tokio::test]
async fn a_deleted_or_blocked_device_rotates_the_key() {
    let mut r = Room::new().await;
    let settings = EncryptionSettings::default();
    let members = r.members();
    let first = r.alice_sends(&members, "one", &settings).await;
    r.server.delete_device(&r.bob2.user_id, &r.bob2.device_id);
    r.alice1.sync().await;
    let second = r.alice_sends(&members, "two", &settings).await;
    assert_ne!(session_id(&first), session_id(&second));

    r.alice1.machine.set_local_trust(&r.carol.user_id, &r.carol.device_id, LocalTrust::BlackListed).await.unwrap();
    let third = r.alice_sends(&members, "three", &settings).await;
    assert_ne!(session_id(&second), session_id(&third));
    r.carol.sync().await;
    assert_eq!(
        r.carol.decrypt_text(room(), &third).await,
        Err(MegolmError::MissingRoomKey { session_id: session_id(&third), withheld: Some(WithheldCode::Blacklisted) })
    );
}

#[tokio::test]
async fn changed_settings_and_discarding_rotate_the_key() {
    let mut r = Room::new().await;
    let members = r.members();
    let first = r.alice_sends(&members, "one", &EncryptionSettings::default()).await;
    let joined = EncryptionSettings {
        history_visibility: ruma_events::room::history_visibility::HistoryVisibility::Joined,
        ..Default::default()
    };
    let second = r.alice_sends(&members, "two", &joined).await;
    assert_ne!(session_id(&first), session_id(&second));
    assert!(r.alice1.machine.discard_room_key(room()).await.unwrap());
    let third = r.alice_sends(&members, "three", &joined).await;
    assert_ne!(session_id(&second), session_id(&third));
}

#[tokio::test]
async fn an_unacknowledged_share_is_repeated_not_recreated_and_sharing_is_single_flight() {
    let r = Room::new().await;
    let members = r.members();
    let users: Vec<_> = members.iter().map(|u| u.as_ref()).collect();
    r.alice1.establish_sessions(&users).await;
    let settings = EncryptionSettings::default();
    let now = r.clock.now();
    let machine = &r.alice1.machine;
    let (a, b) = tokio::join!(
        machine.share_room_key(room(), users.iter().copied(), &settings, now),
        machine.share_room_key(room(), users.iter().copied(), &settings, now),
    );
    let ids =
        |rs: &[hush_crypto_core::OutgoingRequest]| rs.iter().map(|r| r.request_id().to_owned()).collect::<Vec<_>>();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.is_empty());
    assert_eq!(ids(&a), ids(&b), "concurrent shares must produce one set of requests");
    let again = machine.share_room_key(room(), users.iter().copied(), &settings, now).await.unwrap();
    assert_eq!(ids(&a), ids(&again));
    for request in &a {
        r.alice1.send(request).await;
    }
    // Once acknowledged, nobody is left to share with.
    assert!(machine.share_room_key(room(), users.iter().copied(), &settings, now).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_replayed_event_is_rejected() {
    let mut r = Room::new().await;
    let event = r.alice_sends(&r.members(), "only once", &EncryptionSettings::default()).await;
    r.sync_all().await;
    assert_eq!(r.bob1.decrypt_text(room(), &event).await.unwrap(), "only once");
    // Decrypting the same event again is fine.
    assert_eq!(r.bob1.decrypt_text(room(), &event).await.unwrap(), "only once");
    // The same ciphertext under another event id is a replay.
    let mut replay = event.clone();
    replay["event_id"] = json!("$replayed");
    assert!(matches!(r.bob1.decrypt_text(room(), &replay).await, Err(MegolmError::Replay { message_index: 0, .. })));
    let mut replay = event.clone();
    replay["origin_server_ts"] = json!(1);
    assert!(matches!(r.bob1.decrypt_text(room(), &replay).await, Err(MegolmError::Replay { .. })));
}

#[tokio::test]
async fn a_spoofed_sender_or_room_is_rejected() {
    let mut r = Room::new().await;
    let event = r.alice_sends(&r.members(), "from alice", &EncryptionSettings::default()).await;
    r.sync_all().await;
    let mut spoofed = event.clone();
    spoofed["sender"] = json!("@carol:example.org");
    spoofed["event_id"] = json!("$spoofed");
    assert!(matches!(r.bob1.decrypt_text(room(), &spoofed).await, Err(MegolmError::SenderMismatch { .. })));
    // Moved to another room: the key is not there (keys are bound to their room).
    let other = room_id!("!other:example.org");
    assert!(matches!(r.bob1.decrypt_text(other, &event).await, Err(MegolmError::MissingRoomKey { .. })));
    // The spoof did not burn the index: the real event still decrypts.
    assert_eq!(r.bob1.decrypt_text(room(), &event).await.unwrap(), "from alice");
}

#[tokio::test]
async fn withheld_codes_reach_the_receivers() {
    let mut r = Room::new().await;
    // Carol's device cannot be reached over Olm: no keys left on the server.
    r.server.exhaust_keys(&r.carol.user_id, &r.carol.device_id);
    // Bob2 is not verified and Alice shares only with verified devices; Bob1 is.
    for device in [&r.bob1.device_id, &r.alice2.device_id] {
        let user = if device.as_str() == "BOB1" { &r.bob1.user_id } else { &r.alice2.user_id };
        assert!(r.alice1.machine.set_local_trust(user, device, LocalTrust::Verified).await.unwrap());
    }
    assert!(
        r.alice1.machine.set_local_trust(&r.carol.user_id, &r.carol.device_id, LocalTrust::Verified).await.unwrap()
    );
    let trusted = EncryptionSettings { sharing_strategy: SharingStrategy::OnlyTrustedDevices, ..Default::default() };
    let event = r.alice_sends(&r.members(), "verified only", &trusted).await;
    let sid = session_id(&event);

    r.bob1.sync().await;
    r.bob2.sync().await;
    r.carol.sync().await;
    assert_eq!(r.bob1.decrypt_text(room(), &event).await.unwrap(), "verified only");
    assert_eq!(
        r.bob2.decrypt_text(room(), &event).await,
        Err(MegolmError::MissingRoomKey { session_id: sid.clone(), withheld: Some(WithheldCode::Unverified) })
    );
    assert_eq!(
        r.carol.decrypt_text(room(), &event).await,
        Err(MegolmError::MissingRoomKey { session_id: sid, withheld: Some(WithheldCode::NoOlm) })
    );
}

#[tokio::test]
async fn a_restarted_machine_keeps_its_room_keys() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store: Arc<dyn hush_crypto_core::CryptoStore> = Arc::new(hush_crypto_core::MemoryStore::new());
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let mut bob = TestDevice::with_store(&server, &clock, user_id!("@bob:example.org"), "BOB1", store.clone()).await;
    let members = [alice.user_id.as_ref(), bob.user_id.as_ref()];
    alice.share_room_key(room(), &members, &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(room(), "kept").await;
    bob.sync().await;
    drop(bob);
    let bob = TestDevice::with_store(&server, &clock, user_id!("@bob:example.org"), "BOB1", store).await;
    assert_eq!(bob.decrypt_text(room(), &event).await.unwrap(), "kept");
    let _ = ROOM;
}

#[tokio::test]
async fn misuse_and_malformed_events_are_typed_errors() {
    let mut r = Room::new().await;
    // Encrypting before any key was shared.
    let err = r
        .alice1
        .machine
        .encrypt_room_event(room(), "m.room.message", &json!({"body": "x"}), r.clock.now())
        .await
        .unwrap_err();
    assert_eq!(err, hush_crypto_core::EncryptError::NoSharedSession(room().to_owned()));

    let event = r.alice_sends(&r.members(), "valid", &EncryptionSettings::default()).await;
    r.sync_all().await;
    let mut wrong_algorithm = event.clone();
    wrong_algorithm["content"]["algorithm"] = json!("m.olm.v1.curve25519-aes-sha2");
    assert!(matches!(
        r.bob1.decrypt_text(room(), &wrong_algorithm).await,
        Err(MegolmError::UnsupportedAlgorithm(a)) if a == "m.olm.v1.curve25519-aes-sha2"
    ));
    let mut no_ciphertext = event.clone();
    no_ciphertext["content"].as_object_mut().unwrap().remove("ciphertext");
    assert!(matches!(r.bob1.decrypt_text(room(), &no_ciphertext).await, Err(MegolmError::Malformed(_))));
    let mut garbled = event.clone();
    garbled["content"]["ciphertext"] = json!("AAAA");
    assert!(matches!(r.bob1.decrypt_text(room(), &garbled).await, Err(MegolmError::Malformed(_))));
    let mut tampered = event.clone();
    let ciphertext = event["content"]["ciphertext"].as_str().unwrap();
    let mut bytes = vodozemac::base64_decode(ciphertext).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    tampered["content"]["ciphertext"] = json!(vodozemac::base64_encode(&bytes));
    assert!(matches!(r.bob1.decrypt_text(room(), &tampered).await, Err(MegolmError::DecryptionFailed(_))));
    let mut no_sender = event.clone();
    no_sender.as_object_mut().unwrap().remove("sender");
    assert!(matches!(r.bob1.decrypt_text(room(), &no_sender).await, Err(MegolmError::Malformed(_))));
    // None of it burned the index: the real event decrypts.
    assert_eq!(r.bob1.decrypt_text(room(), &event).await.unwrap(), "valid");
}

/// The message index of a Megolm event (parsed from its ciphertext).
fn message_index(event: &Value) -> u32 {
    let ciphertext = event["content"]["ciphertext"].as_str().unwrap();
    vodozemac::megolm::MegolmMessage::from_base64(ciphertext).unwrap().message_index()
}

#[tokio::test]
async fn a_sender_restarted_after_unsaved_messages_never_reuses_an_index() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store: Arc<dyn hush_crypto_core::CryptoStore> = Arc::new(hush_crypto_core::MemoryStore::new());
    let alice_id = user_id!("@alice:example.org");
    let alice = TestDevice::with_store(&server, &clock, alice_id, "ALICE1", store.clone()).await;
    let bob_id = user_id!("@bob:example.org");
    let mut bob = TestDevice::new(&server, &clock, bob_id, "BOB1").await;
    let members = [alice_id, bob_id];
    alice.share_room_key(room(), &members, &EncryptionSettings::default()).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(alice.encrypt_text(room(), &format!("before {n}")).await);
    }
    // The process dies: whatever it did after its last save is lost.
    drop(alice);
    let alice = TestDevice::with_store(&server, &clock, alice_id, "ALICE1", store).await;
    alice.share_room_key(room(), &members, &EncryptionSettings::default()).await;
    let after = alice.encrypt_text(room(), "after").await;
    assert_eq!(session_id(&after), session_id(&sent[0]), "the same room key, no rotation");
    let used: Vec<u32> = sent.iter().map(message_index).collect();
    assert_eq!(used, vec![0, 1, 2, 3, 4]);
    assert!(message_index(&after) > 4, "index {} was already used", message_index(&after));
    bob.sync().await;
    for (n, event) in sent.iter().enumerate() {
        assert_eq!(bob.decrypt_text(room(), event).await.unwrap(), format!("before {n}"));
    }
    assert_eq!(bob.decrypt_text(room(), &after).await.unwrap(), "after");
}

#[tokio::test]
async fn a_batch_decrypts_on_several_threads_like_one_by_one() {
    let mut r = Room::new().await;
    let settings = EncryptionSettings { rotation_period_msgs: 1000, ..Default::default() };
    let users: Vec<_> = r.members();
    let users: Vec<_> = users.iter().map(|u| u.as_ref()).collect();
    r.alice1.share_room_key(room(), &users, &settings).await;
    let mut events = Vec::new();
    for n in 0..200 {
        events.push(r.alice1.encrypt_text(room(), &format!("message {n}")).await);
    }
    // A replay inside the batch (same ciphertext, another event id), a
    // malformed event and an event of an unknown session.
    let mut replay = events[10].clone();
    replay["event_id"] = json!("$replay-in-batch");
    events.push(replay);
    events.push(json!({ "type": "m.room.encrypted", "content": {} }));
    let mut unknown = events[0].clone();
    unknown["content"]["session_id"] = json!("unknown-session");
    unknown["event_id"] = json!("$unknown");
    events.push(unknown);
    r.sync_all().await;

    let raws: Vec<_> = events.iter().map(|e| ruma_common::serde::Raw::new(e).unwrap()).collect();
    let settings = hush_crypto_core::DecryptionSettings::default();
    r.bob1.machine.set_worker_threads(2);
    let batch = r.bob1.machine.decrypt_room_events(&raws, room(), &settings).await;
    r.bob2.machine.set_worker_threads(1);
    assert_eq!(batch.len(), events.len());
    for (n, (result, raw)) in batch.iter().zip(&raws).enumerate() {
        let single = r.bob2.machine.decrypt_room_event(raw, room(), &settings).await;
        match (result, &single) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.info, b.info);
                assert_eq!(a.event.json().get(), b.event.json().get());
                let value: Value = a.event.deserialize_as_unchecked().unwrap();
                assert_eq!(value["content"]["body"], json!(format!("message {n}")));
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "event {n}"),
            _ => panic!("event {n}: batch {result:?} vs single {single:?}"),
        }
    }
    assert!(matches!(batch[200], Err(MegolmError::Replay { message_index: 10, .. })));
    assert!(matches!(batch[201], Err(MegolmError::Malformed(_))));
    assert!(matches!(batch[202], Err(MegolmError::MissingRoomKey { .. })));
    // The replay records of the batch were saved: decrypting again is fine,
    // a replay of another index is caught from the store.
    assert!(r.bob1.machine.decrypt_room_event(&raws[5], room(), &settings).await.is_ok());
    let mut late_replay = events[20].clone();
    late_replay["event_id"] = json!("$late-replay");
    let late_replay = ruma_common::serde::Raw::new(&late_replay).unwrap();
    assert!(matches!(
        r.bob1.machine.decrypt_room_event(&late_replay, room(), &settings).await,
        Err(MegolmError::Replay { message_index: 20, .. })
    ));
}
