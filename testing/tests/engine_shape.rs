//! The engine's shape, end to end with the in-process server: one request
//! queue (nothing a command returns can be lost, obsolete requests are
//! cancelled), the event queue, timers on the virtual clock that survive a
//! restart, the room-level command, seedable ids, and the sender that
//! restarts after every message.

use std::sync::Arc;
use std::time::Duration;

use hush_crypto_core::{
    AnyOutgoingRequest, CryptoStore, DeviceChanges, DeviceListChanges, EncryptionSettings, EngineEvent, Membership,
    MemoryStore, RoomEncryption, RoomInfo, RoomReadiness, ShareError, SyncChanges, Timestamp,
};
use hush_testing::{TestDevice, TestServer, VirtualClock, decrypted};
use ruma_client_api::keys::{claim_keys, get_keys};
use ruma_common::{OwnedUserId, RoomId, UserId, room_id, user_id};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::json;

fn room() -> &'static RoomId {
    room_id!("!shape:example.org")
}

fn megolm() -> Option<RoomEncryption> {
    RoomEncryption::from_content(&json!({"algorithm": "m.megolm.v1.aes-sha2"}))
}

fn ids(requests: &[hush_crypto_core::OutgoingRequest]) -> Vec<String> {
    requests.iter().map(|r| r.request_id().to_string()).collect()
}

/// Alice and Bob, each one device, keys uploaded and a first sync done.
async fn pair(
    server: &Arc<TestServer>,
    clock: &VirtualClock,
    alice_store: Arc<dyn CryptoStore>,
) -> (TestDevice, TestDevice) {
    let mut alice = TestDevice::with_store(server, clock, user_id!("@alice:example.org"), "ALICE1", alice_store).await;
    let mut bob = TestDevice::new(server, clock, user_id!("@bob:example.org"), "BOB1").await;
    alice.sync().await;
    bob.sync().await;
    (alice, bob)
}

#[tokio::test]
async fn a_dropped_encrypt_to_device_result_is_still_sent_from_the_queue() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, mut bob) = pair(&server, &clock, Arc::new(MemoryStore::new())).await;
    alice.establish_sessions(&[&bob.user_id]).await;
    let returned = alice
        .machine
        .encrypt_to_device(&[(&bob.user_id, &bob.device_id)], "org.example.ping", &json!({"n": 1}), clock.now())
        .await
        .unwrap()
        .requests;
    let listed = alice.machine.outgoing_requests(clock.now()).await.unwrap();
    assert_eq!(ids(&listed), ids(&returned), "the returned request is the queued one");
    drop(returned);
    alice.drain().await;
    assert_eq!(decrypted(&bob.sync().await), vec![(alice.user_id.clone(), "org.example.ping".into(), json!({"n": 1}))]);
    assert!(
        alice.machine.outgoing_requests(clock.now()).await.unwrap().is_empty(),
        "answered requests leave the queue"
    );
}

#[tokio::test]
async fn a_dropped_share_room_key_result_is_still_sent_from_the_queue() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, mut bob) = pair(&server, &clock, Arc::new(MemoryStore::new())).await;
    let users = [alice.user_id.as_ref(), bob.user_id.as_ref()];
    alice.establish_sessions(&users).await;
    let returned =
        alice.machine.share_room_key(room(), users, &EncryptionSettings::default(), clock.now()).await.unwrap();
    assert!(!returned.is_empty());
    let listed = alice.machine.outgoing_requests(clock.now()).await.unwrap();
    assert!(ids(&returned).iter().all(|id| ids(&listed).contains(id)), "every share request is listed");
    drop(returned);
    alice.drain().await;
    let event = alice.encrypt_text(room(), "from the queue").await;
    bob.sync().await;
    assert_eq!(bob.decrypt_text(room(), &event).await.unwrap(), "from the queue");
}

#[tokio::test]
async fn a_rotation_cancels_the_shares_of_the_replaced_key_and_a_late_answer_is_harmless() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, _bob) = pair(&server, &clock, Arc::new(MemoryStore::new())).await;
    let users = [alice.user_id.as_ref(), user_id!("@bob:example.org")];
    alice.establish_sessions(&users).await;
    let settings = EncryptionSettings::default();
    let first = alice.machine.share_room_key(room(), users, &settings, clock.now()).await.unwrap();
    assert!(!first.is_empty());
    assert!(alice.machine.discard_room_key(room()).await.unwrap());
    let listed = alice.machine.outgoing_requests(clock.now()).await.unwrap();
    assert!(ids(&first).iter().all(|id| !ids(&listed).contains(id)), "the old key's shares were cancelled");
    // A caller that had sent it anyway hands the answer back: accepted, no effect.
    let ack = ruma_client_api::to_device::send_event_to_device::v3::Response::new();
    alice.machine.mark_request_as_sent(first[0].request_id(), &ack, clock.now()).await.unwrap();
    let second = alice.machine.share_room_key(room(), users, &settings, clock.now()).await.unwrap();
    assert!(!second.is_empty(), "the new key is shared with everyone, the cancelled share recorded nothing");
    // An id the engine never made is still refused.
    let unknown = alice.machine.mark_request_as_sent("never-made".into(), &ack, clock.now()).await;
    assert!(matches!(unknown, Err(hush_crypto_core::ResponseError::UnknownRequest(_))));
}

#[tokio::test]
async fn a_user_no_longer_tracked_has_their_query_cancelled() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let carol = user_id!("@carol:example.org");
    alice.machine.update_tracked_users([carol]).await.unwrap();
    let queries = |requests: &[hush_crypto_core::OutgoingRequest]| {
        requests
            .iter()
            .filter(|r| matches!(r.request(), AnyOutgoingRequest::KeysQuery(q) if q.device_keys.contains_key(carol)))
            .count()
    };
    assert_eq!(queries(&alice.machine.outgoing_requests(clock.now()).await.unwrap()), 1);
    let left = SyncChanges {
        device_lists: DeviceListChanges { left: vec![carol.to_owned()], ..Default::default() },
        ..Default::default()
    };
    alice.machine.receive_sync_changes(left, clock.now()).await.unwrap();
    assert_eq!(queries(&alice.machine.outgoing_requests(clock.now()).await.unwrap()), 0);
    assert!(!alice.machine.tracked_users().iter().any(|u| u == carol));
}

/// Answers Alice's queued claim for Bob with nothing (no key left), as a
/// server with exhausted keys and no fallback does.
async fn fail_claim(alice: &TestDevice, bob: &UserId, now: Timestamp) {
    let claim = alice.machine.get_missing_sessions([bob], now).await.unwrap().expect("a claim for Bob");
    let empty = claim_keys::v3::Response::new(Default::default());
    alice.machine.mark_request_as_sent(claim.request_id(), &empty, now).await.unwrap();
}

#[tokio::test]
async fn claim_back_off_runs_on_the_virtual_clock_across_a_restart() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let (alice, bob) = pair(&server, &clock, store.clone()).await;
    alice.machine.update_tracked_users([bob.user_id.as_ref()]).await.unwrap();
    alice.drain().await;
    let t0 = clock.now();
    assert_eq!(alice.machine.poll_timeout(), None, "nothing is due before a failure");
    fail_claim(&alice, &bob.user_id, t0).await;
    assert_eq!(alice.machine.poll_timeout(), Some(t0.saturating_add(Duration::from_secs(15))));

    // A restart keeps the back-off.
    drop(alice);
    let alice = TestDevice::with_store(&server, &clock, user_id!("@alice:example.org"), "ALICE1", store.clone()).await;
    let due = alice.machine.poll_timeout().expect("the back-off survived the restart");
    assert_eq!(due, t0.saturating_add(Duration::from_secs(15)));
    assert!(alice.machine.get_missing_sessions([bob.user_id.as_ref()], clock.now()).await.unwrap().is_none());

    // The clock reaches the deadline: the claim may run; a second failure doubles the wait.
    clock.advance(Duration::from_secs(15));
    alice.machine.handle_timeout(clock.now()).await.unwrap();
    assert_eq!(alice.machine.poll_timeout(), None);
    let t1 = clock.now();
    fail_claim(&alice, &bob.user_id, t1).await;
    assert_eq!(alice.machine.poll_timeout(), Some(t1.saturating_add(Duration::from_secs(30))));
    clock.advance(Duration::from_secs(30));
    alice.machine.handle_timeout(clock.now()).await.unwrap();
    alice.establish_sessions(&[&bob.user_id]).await;
    let sessions = store.get_sessions(&bob.machine.identity_keys().1).await.unwrap();
    assert_eq!(sessions.len(), 1, "after the back-off the claim went through");
}

/// A normal Olm message claiming Alice's key that no session decrypts.
fn wedged_message(alice: &TestDevice, bob: &TestDevice) -> serde_json::Value {
    hush_testing::wedged_message(&alice.user_id, alice.machine.identity_keys().1, bob.machine.identity_keys().1)
}

async fn dummies(device: &mut TestDevice) -> usize {
    decrypted(&device.sync().await).iter().filter(|(_, t, _)| t == "m.dummy").count()
}

#[tokio::test]
async fn a_deferred_unwedge_runs_on_the_virtual_clock_across_a_restart() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let bob_store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let mut alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let mut bob =
        TestDevice::with_store(&server, &clock, user_id!("@bob:example.org"), "BOB1", bob_store.clone()).await;
    alice.sync().await;
    bob.sync().await;
    alice.establish_sessions(&[&bob.user_id]).await;
    alice.send_to_device(&bob.user_id, &bob.device_id, "m.dummy", &json!({})).await;
    bob.machine.update_tracked_users([alice.user_id.as_ref()]).await.unwrap();
    assert_eq!(decrypted(&bob.sync().await).len(), 1);

    // First wedge: unwedged at once.
    server.inject_to_device(&bob.user_id, &bob.device_id, wedged_message(&alice, &bob));
    bob.sync().await;
    assert_eq!(dummies(&mut alice).await, 1);
    let first_unwedge = clock.now();

    // Second wedge ten minutes later: deferred to the end of the hour.
    clock.advance(Duration::from_secs(600));
    server.inject_to_device(&bob.user_id, &bob.device_id, wedged_message(&alice, &bob));
    bob.sync().await;
    assert_eq!(dummies(&mut alice).await, 0, "the budget allows one new session an hour");
    let due = first_unwedge.saturating_add(Duration::from_secs(3600));
    assert_eq!(bob.machine.poll_timeout(), Some(due));

    // Bob restarts: the deferred unwedge and its time are still there.
    drop(bob);
    let bob = TestDevice::with_store(&server, &clock, user_id!("@bob:example.org"), "BOB1", bob_store).await;
    assert_eq!(bob.machine.poll_timeout(), Some(due));
    clock.advance(Duration::from_secs(3000));
    assert!(clock.now() >= due);
    bob.machine.handle_timeout(clock.now()).await.unwrap();
    let claims = bob.machine.outgoing_requests(clock.now()).await.unwrap();
    assert!(
        claims.iter().any(|r| matches!(r.request(), AnyOutgoingRequest::KeysClaim(_))),
        "the due unwedge is a claim"
    );
    bob.drain().await;
    assert_eq!(dummies(&mut alice).await, 1, "the deferred unwedge ran without another wedge");
}

#[tokio::test]
async fn a_failed_keys_query_is_retried_when_its_back_off_ends() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let remote = user_id!("@dave:remote.example");
    alice.machine.update_tracked_users([remote]).await.unwrap();
    let query = |requests: Vec<hush_crypto_core::OutgoingRequest>| {
        requests
            .into_iter()
            .find(|r| matches!(r.request(), AnyOutgoingRequest::KeysQuery(q) if q.device_keys.contains_key(remote)))
    };
    let request = query(alice.machine.outgoing_requests(clock.now()).await.unwrap()).expect("a query for Dave");
    let mut unreachable = get_keys::v3::Response::new();
    unreachable
        .failures
        .insert("remote.example".into(), serde_json::from_value(json!({"errcode": "M_UNKNOWN"})).unwrap());
    alice.machine.mark_request_as_sent(request.request_id(), &unreachable, clock.now()).await.unwrap();
    assert!(alice.machine.is_user_dirty(remote));
    assert!(query(alice.machine.outgoing_requests(clock.now()).await.unwrap()).is_none(), "no retry at once");
    let due = alice.machine.poll_timeout().expect("a retry time");
    assert_eq!(due, clock.now().saturating_add(Duration::from_secs(15)));
    clock.advance(Duration::from_secs(15));
    alice.machine.handle_timeout(clock.now()).await.unwrap();
    assert!(query(alice.machine.outgoing_requests(clock.now()).await.unwrap()).is_some(), "retried after the back-off");
}

#[tokio::test]
async fn a_keys_query_reports_added_changed_and_deleted_devices_as_events() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let mut alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let bob = user_id!("@bob:example.org");
    let _bob1 = TestDevice::new(&server, &clock, bob, "BOB1").await;
    alice.machine.update_tracked_users([bob]).await.unwrap();
    alice.drain().await;
    let device_events = |alice: &TestDevice| -> Vec<DeviceChanges> {
        alice
            .machine
            .drain_events()
            .into_iter()
            .filter_map(|e| match e {
                EngineEvent::DevicesChanged(changes) if changes.user_id == bob => Some(changes),
                _ => None,
            })
            .collect()
    };
    let first = device_events(&alice);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].added, vec!["BOB1".into()] as Vec<ruma_common::OwnedDeviceId>);

    let _bob2 = TestDevice::new(&server, &clock, bob, "BOB2").await;
    alice.sync().await;
    let second = device_events(&alice);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].added, vec!["BOB2".into()] as Vec<ruma_common::OwnedDeviceId>);
    assert!(second[0].deleted.is_empty() && second[0].changed.is_empty());

    server.delete_device(bob, &"BOB1".into());
    alice.sync().await;
    let third = device_events(&alice);
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].deleted, vec!["BOB1".into()] as Vec<ruma_common::OwnedDeviceId>);

    // A query that changes nothing reports nothing.
    alice
        .machine
        .receive_sync_changes(
            SyncChanges {
                device_lists: DeviceListChanges { changed: vec![bob.to_owned()], ..Default::default() },
                ..Default::default()
            },
            clock.now(),
        )
        .await
        .unwrap();
    alice.drain().await;
    assert!(device_events(&alice).is_empty());
}

/// Who sees a message sent by the room-level command, from nothing: Alice
/// (joined) sends; Bob joined, Carol invited, Dan left.
async fn room_command_from_nothing(visibility: HistoryVisibility) -> (bool, bool, bool) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let mut others = Vec::new();
    for (user, device) in [("@bob:example.org", "BOB1"), ("@carol:example.org", "CAROL1"), ("@dan:example.org", "DAN1")]
    {
        others.push(TestDevice::new(&server, &clock, &OwnedUserId::try_from(user).unwrap(), device).await);
    }
    let members = vec![
        (alice.user_id.clone(), Membership::Join),
        (others[0].user_id.clone(), Membership::Join),
        (others[1].user_id.clone(), Membership::Invite),
        (others[2].user_id.clone(), Membership::Leave),
    ];
    let mut info = RoomInfo::new(room().to_owned(), members, megolm());
    info.history_visibility = visibility;
    // The first call queues the queries: nothing is ready yet.
    let first = alice.machine.prepare_room(&info, clock.now()).await.unwrap();
    assert!(matches!(first, RoomReadiness::Waiting { keys_queries: 1.., .. }), "{first:?}");
    let session_id = alice.prepare_room(&info).await;
    // Ready stays ready at no cost: no new request.
    let again = alice.machine.prepare_room(&info, clock.now()).await.unwrap();
    assert!(matches!(again, RoomReadiness::Ready { session_id: ref s, .. } if *s == session_id));
    assert!(alice.machine.outgoing_requests(clock.now()).await.unwrap().is_empty());

    let event = alice.encrypt_text(room(), "hello room").await;
    let mut seen = Vec::new();
    for other in &mut others {
        other.sync().await;
        seen.push(other.decrypt_text(room(), &event).await.as_deref() == Ok("hello room"));
    }
    (seen[0], seen[1], seen[2])
}

#[tokio::test]
async fn the_room_command_encrypts_from_nothing_for_joined_and_invited_members_under_each_visibility() {
    for (visibility, invited_reads) in [
        (HistoryVisibility::Joined, false),
        (HistoryVisibility::Invited, true),
        (HistoryVisibility::Shared, true),
        (HistoryVisibility::WorldReadable, true),
    ] {
        let (joined, invited, left) = room_command_from_nothing(visibility.clone()).await;
        assert!(joined, "{visibility}: the joined member must read it");
        assert_eq!(invited, invited_reads, "{visibility}: invited member");
        assert!(!left, "{visibility}: a member who left must not read it");
    }
}

#[tokio::test]
async fn the_room_command_never_lets_encryption_be_switched_off_or_weakened() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let alice = TestDevice::with_store(&server, &clock, user_id!("@alice:example.org"), "ALICE1", store.clone()).await;
    let members = vec![(alice.user_id.clone(), Membership::Join)];
    let unknown = RoomInfo::new(room().to_owned(), members.clone(), None);
    let refused = alice.machine.prepare_room(&unknown, clock.now()).await;
    assert!(matches!(refused, Err(ShareError::RoomNotEncrypted(ref r)) if r == room()));

    let strict = RoomEncryption::from_content(&json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 2}));
    alice.prepare_room(&RoomInfo::new(room().to_owned(), members.clone(), strict)).await;
    drop(alice);
    // After a restart, a caller that forgot the state, or names a weaker one, still gets the strict settings.
    let alice = TestDevice::with_store(&server, &clock, user_id!("@alice:example.org"), "ALICE1", store).await;
    let loose =
        RoomEncryption::from_content(&json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 500}));
    for said in [None, loose, RoomEncryption::from_content(&json!({"algorithm": "m.none"}))] {
        let kept = alice.machine.room_encryption(room(), said).await.unwrap().unwrap();
        assert_eq!(kept.algorithm, "m.megolm.v1.aes-sha2");
        assert_eq!(kept.rotation_period_msgs, Some(2));
    }
    let first = alice.prepare_room(&RoomInfo::new(room().to_owned(), members.clone(), None)).await;
    alice.encrypt_text(room(), "one").await;
    alice.encrypt_text(room(), "two").await;
    let rotated = alice.prepare_room(&RoomInfo::new(room().to_owned(), members, None)).await;
    assert_ne!(first, rotated, "the two-message limit of the remembered settings rotated the key");
}

#[tokio::test]
async fn a_sender_restarting_after_every_message_keeps_one_room_key() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let alice_id = user_id!("@alice:example.org");
    let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    let members = vec![(alice_id.to_owned(), Membership::Join), (bob.user_id.clone(), Membership::Join)];
    let info = RoomInfo::new(room().to_owned(), members, megolm());
    let mut events = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    for n in 0..30 {
        // One process per message, as a bot run from cron would be.
        let alice = TestDevice::with_store(&server, &clock, alice_id, "ALICE1", store.clone()).await;
        keys.insert(alice.prepare_room(&info).await);
        events.push(alice.encrypt_text(room(), &format!("message {n}")).await);
    }
    assert_eq!(keys.len(), 1, "30 sends in 30 processes used {} room keys", keys.len());
    let output = bob.sync().await;
    assert_eq!(output.room_keys.len(), 1, "Bob's device got the room key once");
    let indices: Vec<u32> = events
        .iter()
        .map(|e| {
            vodozemac::megolm::MegolmMessage::from_base64(e["content"]["ciphertext"].as_str().unwrap())
                .unwrap()
                .message_index()
        })
        .collect();
    assert_eq!(indices, (0..30).collect::<Vec<u32>>(), "no index skipped or reused");
    for (n, event) in events.iter().enumerate() {
        assert_eq!(bob.decrypt_text(room(), event).await.unwrap(), format!("message {n}"));
    }
}

#[tokio::test]
async fn a_seeded_machine_makes_the_same_request_ids_in_a_replayed_run() {
    async fn run(seed: u64) -> Vec<String> {
        let server = Arc::new(TestServer::new());
        let clock = VirtualClock::default();
        let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
        let machine =
            hush_crypto_core::OlmMachine::open(user_id!("@sim:example.org"), "SIM".into(), store, clock.now())
                .await
                .unwrap();
        machine.set_id_seed(seed);
        let _ = &server;
        machine.update_tracked_users([user_id!("@a:example.org"), user_id!("@b:example.org")]).await.unwrap();
        ids(&machine.outgoing_requests(clock.now()).await.unwrap())
    }
    let first = run(42).await;
    assert_eq!(first.len(), 2, "a keys upload and a keys query");
    assert_eq!(first, run(42).await);
    assert_ne!(first, run(43).await);
}

/// A backlog longer than one save group (512 events): the replay of an
/// index from the first group, in the second, is caught through the store.
#[tokio::test]
async fn a_long_backlog_decrypts_in_chunks_and_a_replay_across_chunks_is_caught() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, mut bob) = pair(&server, &clock, Arc::new(MemoryStore::new())).await;
    let users = [alice.user_id.as_ref(), bob.user_id.as_ref()];
    let settings = EncryptionSettings { rotation_period_msgs: 10_000, ..Default::default() };
    alice.share_room_key(room(), &users, &settings).await;
    let mut events = Vec::new();
    for n in 0..2100 {
        events.push(alice.encrypt_text(room(), &format!("m{n}")).await);
    }
    let mut replay = events[3].clone();
    replay["event_id"] = json!("$replay-in-a-later-chunk");
    events.push(replay);
    bob.sync().await;
    let raws: Vec<_> = events.iter().map(|e| ruma_common::serde::Raw::new(e).unwrap()).collect();
    let mut seen = Vec::new();
    bob.machine
        .decrypt_room_events_each(&raws, room(), &Default::default(), |index, result| {
            seen.push((index, result.is_ok()))
        })
        .await;
    assert_eq!(seen.len(), 2101);
    assert!(seen.iter().enumerate().all(|(n, (index, _))| *index == n), "results come in order");
    assert!(seen[..2100].iter().all(|(_, ok)| *ok));
    assert!(!seen[2100].1, "the replay of index 3, in the next save group, was refused");
}

#[tokio::test]
async fn room_keys_and_withheld_notices_arrive_as_events_too() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, mut bob) = pair(&server, &clock, Arc::new(MemoryStore::new())).await;
    let members = vec![(alice.user_id.clone(), Membership::Join), (bob.user_id.clone(), Membership::Join)];
    let session_id = alice.prepare_room(&RoomInfo::new(room().to_owned(), members.clone(), megolm())).await;
    let output = bob.sync().await;
    assert_eq!(output.room_keys.len(), 1);
    let events = bob.machine.drain_events();
    assert!(events.iter().any(
        |e| matches!(e, EngineEvent::RoomKeyReceived(k) if k.session_id == session_id && k.sender == alice.user_id)
    ));

    // Only verified devices: Bob's unverified device is told the key is withheld.
    let other_room = room_id!("!strict:example.org");
    let mut strict = RoomInfo::new(other_room.to_owned(), members, megolm());
    strict.sharing_strategy = hush_crypto_core::SharingStrategy::OnlyTrustedDevices;
    let withheld_id = alice.prepare_room(&strict).await;
    let output = bob.sync().await;
    assert_eq!(output.withheld.len(), 1);
    let events = bob.machine.drain_events();
    assert!(events.iter().any(|e| matches!(e, EngineEvent::RoomKeyWithheld(w)
        if w.session_id.as_deref() == Some(withheld_id.as_str()) && w.code == hush_crypto_core::WithheldCode::Unverified)));
}

/// A room key saved by an older version keeps who has it inside the session
/// (no share rows). After the upgrade, a member who left must still make the
/// key rotate: the inline shares are converted, not lost.
#[tokio::test]
async fn shares_saved_inline_by_an_older_version_still_rotate_the_key_when_a_member_leaves() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let (alice, _bob) = pair(&server, &clock, store.clone()).await;
    let both =
        vec![(alice.user_id.clone(), Membership::Join), (user_id!("@bob:example.org").to_owned(), Membership::Join)];
    let first = alice.prepare_room(&RoomInfo::new(room().to_owned(), both, megolm())).await;
    drop(alice);

    // Rewrite the store as an older version left it: shares inline, no rows.
    let mut legacy = store.get_outbound_group_session(room()).await.unwrap().unwrap();
    assert!(legacy.shared_with.contains_key(user_id!("@bob:example.org")));
    legacy.shares_in_records = false;
    let mut other = store.get_outbound_group_session(room()).await.unwrap().unwrap();
    other.session_id = "a-different-session".into();
    let save = |session| hush_crypto_core::Changes { outbound_group_sessions: vec![session], ..Default::default() };
    store.save_changes(save(other)).await.unwrap(); // drops the rows
    store.save_changes(save(legacy)).await.unwrap();
    let reloaded = store.get_outbound_group_session(room()).await.unwrap().unwrap();
    assert_eq!(reloaded.session_id, first);
    assert!(reloaded.shared_with.contains_key(user_id!("@bob:example.org")), "inline shares are read");

    // The upgraded engine loads it (converting the shares to rows and
    // rewriting the session without them), with Bob still a member.
    let alice = TestDevice::with_store(&server, &clock, user_id!("@alice:example.org"), "ALICE1", store.clone()).await;
    let both =
        vec![(alice.user_id.clone(), Membership::Join), (user_id!("@bob:example.org").to_owned(), Membership::Join)];
    assert_eq!(alice.prepare_room(&RoomInfo::new(room().to_owned(), both, megolm())).await, first);
    drop(alice);
    let converted = store.get_outbound_group_session(room()).await.unwrap().unwrap();
    assert!(converted.shares_in_records, "the session was rewritten");
    assert!(converted.shared_with.contains_key(user_id!("@bob:example.org")), "Bob's share is a row now");

    // Another restart, and Bob has left.
    let alice = TestDevice::with_store(&server, &clock, user_id!("@alice:example.org"), "ALICE1", store.clone()).await;
    let alone =
        vec![(alice.user_id.clone(), Membership::Join), (user_id!("@bob:example.org").to_owned(), Membership::Leave)];
    let after = alice.prepare_room(&RoomInfo::new(room().to_owned(), alone, megolm())).await;
    assert_ne!(after, first, "Bob left: the key he holds must not be used again");
}

#[tokio::test]
async fn raw_content_encrypts_like_a_value_and_keeps_its_relation_readable() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (alice, mut bob) = pair(&server, &clock, Arc::new(MemoryStore::new())).await;
    let members = vec![(alice.user_id.clone(), Membership::Join), (bob.user_id.clone(), Membership::Join)];
    alice.prepare_room(&RoomInfo::new(room().to_owned(), members, megolm())).await;
    let content = json!({"msgtype": "m.text", "body": "a \"quoted\" reply", "m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}});
    let raw: ruma_common::serde::Raw<serde_json::Value> = ruma_common::serde::Raw::new(&content).unwrap();
    let encrypted = alice.machine.encrypt_room_event_raw(room(), "m.room.message", &raw, clock.now()).await.unwrap();
    let encrypted: serde_json::Value = encrypted.deserialize_as_unchecked().unwrap();
    assert_eq!(encrypted["m.relates_to"], content["m.relates_to"], "the relation stays readable to the server");
    let event = json!({
        "type": "m.room.encrypted", "event_id": "$raw", "sender": alice.user_id,
        "origin_server_ts": 1, "room_id": room(), "content": encrypted,
    });
    bob.sync().await;
    let decrypted = bob
        .machine
        .decrypt_room_event(&ruma_common::serde::Raw::new(&event).unwrap(), room(), &Default::default())
        .await
        .unwrap();
    let value: serde_json::Value = decrypted.event.deserialize_as_unchecked().unwrap();
    assert_eq!(value["content"], content);
}
