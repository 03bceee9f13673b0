//! The attacks suite's restart and redelivery cases against a real Synapse
//! (points 0, 8 and 9 of issue 10): two clients, restarts, and the server's
//! own caching. Ignored by a plain `cargo test`; `cargo xtask test` starts
//! Synapse and runs them.

use std::sync::Arc;
use std::time::Duration;

use hush_client::http::HttpClient;
use hush_client::hush_crypto_core::{
    AnyOutgoingRequest, DeviceListChanges, OlmError, SyncChanges, Timestamp, ToDeviceOutcome,
};
use hush_testing::synapse::{StoreKind, TestClient, homeserver_url};
use ruma_client_api::{room::get_room_event, state::send_state_event, sync::sync_events};
use ruma_common::{EventId, OwnedRoomId, RoomId, serde::Raw};
use ruma_events::StateEventType;
use serde_json::{Value, json};

fn http() -> HttpClient {
    HttpClient::new(&homeserver_url(), Default::default()).expect("http client")
}

/// The event as the server holds it.
async fn server_copy(reader: &TestClient, room: &RoomId, event_id: &EventId) -> Value {
    let request = get_room_event::v3::Request::new(room.to_owned(), event_id.to_owned());
    let response = http().send(request, Some(&reader.session.access_token), Duration::ZERO).await.expect("event");
    response.event.deserialize_as_unchecked().expect("json")
}

async fn room_with(alice: &TestClient, bob: &TestClient, encrypted: bool) -> OwnedRoomId {
    let room = alice.client.create_room("attacks", encrypted, &[&bob.session.user_id]).await.expect("create room");
    alice.sync_until("the new room", |c| c.client.get_room(&room).is_some()).await;
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    room
}

/// `sender` sends `text` into `room`: the server holds only ciphertext, and
/// `reader` decrypts it.
async fn sends_encrypted(sender: &TestClient, reader: &TestClient, room: &OwnedRoomId, text: &str) {
    let event_id = sender.client.get_room(room).expect("the room is known").send_text(text).await.unwrap().event_id;
    let held = server_copy(reader, room, &event_id).await;
    assert_eq!(held["type"], "m.room.encrypted", "sent in the clear: {held}");
    reader.sync_until("the message", |c| c.texts(room).contains(&text.to_owned())).await;
}

/// A client whose process ended, with what a new process restores it from.
struct Stopped {
    dir: Arc<tempfile::TempDir>,
    credentials: (String, String),
    session: String,
}

impl Stopped {
    fn of(client: TestClient) -> Self {
        let session = serde_json::to_string(&client.session).unwrap();
        let (dir, credentials) = client.close();
        Self { dir, credentials, session }
    }

    async fn restore(&self) -> TestClient {
        TestClient::login_restore(StoreKind::Redb, &self.dir, &self.credentials, &self.session).await
    }
}

/// Synapse's sync tokens start `s<stream position>_`.
fn stream_position(token: &str) -> u64 {
    token.trim_start_matches('s').split('_').next().and_then(|n| n.parse().ok()).expect("a Synapse token")
}

async fn stored_token(client: &TestClient) -> String {
    let machine = client.client.olm_machine().expect("machine");
    machine.store().load_next_batch_token().await.expect("store").expect("a token")
}

/// Attack (0): Bob's client restarts seconds after joining an encrypted
/// room. Its first sync used to be a full one, identical to the previous
/// process's, which Synapse answers from its response cache: an answer from
/// before the join, so the room's encryption was unknown and `send` went out
/// as a plain `m.room.message`. The message must be encrypted, and the
/// stored token must not move back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_restart_right_after_joining_still_sends_encrypted() {
    let alice = TestClient::new_user("alice", "ALICE1", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB1", StoreKind::Redb).await;
    let room = room_with(&alice, &bob, true).await;
    let before = stored_token(&bob).await;
    let bob = bob.restart().await;
    bob.sync().await;
    let after = stored_token(&bob).await;
    assert!(stream_position(&after) >= stream_position(&before), "the token moved back: {before} -> {after}");
    sends_encrypted(&bob, &alice, &room, "secret").await;
}

/// Attack (0): encryption is switched on while Bob's client is not running;
/// after the restart Bob sends before any sync, into a room whose
/// `m.room.encryption` event his client never saw. It must not go out in
/// the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_send_into_a_room_whose_encryption_was_never_seen_is_encrypted() {
    let alice = TestClient::new_user("alice", "ALICE1", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB1", StoreKind::Redb).await;
    let room = room_with(&alice, &bob, false).await;
    assert!(!bob.client.get_room(&room).unwrap().is_encrypted());
    let bob = Stopped::of(bob);

    let content: Raw<ruma_events::AnyStateEventContent> =
        Raw::new(&json!({"algorithm": "m.megolm.v1.aes-sha2"})).unwrap().cast_unchecked();
    let request =
        send_state_event::v3::Request::new_raw(room.clone(), StateEventType::RoomEncryption, String::new(), content);
    http().send(request, Some(&alice.session.access_token), Duration::ZERO).await.expect("enable encryption");

    let bob = bob.restore().await;
    alice.sync_until("encryption on", |c| c.client.get_room(&room).is_some_and(|r| r.is_encrypted())).await;
    sends_encrypted(&bob, &alice, &room, "after the switch").await;
}

/// Attack (8): Alice logs in a new device while Bob's client is not
/// running. After Bob's restart, his next message must reach the new
/// device too (it used to see `MissingMegolmSession`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_device_added_while_offline_receives_the_next_room_key() {
    let alice = TestClient::new_user("alice", "ALICE1", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB1", StoreKind::Redb).await;
    let room = room_with(&alice, &bob, true).await;
    bob.client.get_room(&room).unwrap().send_text("before").await.unwrap();
    let bob = Stopped::of(bob);

    let (name, password) = alice.credentials.clone();
    let alice2 =
        TestClient::login(&name, &password, "ALICE2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap()))
            .await;
    alice2.sync().await;

    let bob = bob.restore().await;
    bob.sync().await;
    bob.client.get_room(&room).unwrap().send_text("after").await.unwrap();
    // `texts` holds only decrypted messages: the new device read it.
    alice2.sync_until("bob's message on the new device", |c| c.texts(&room).contains(&"after".to_owned())).await;
}

/// Attack (9): the server delivers to-device messages a second time (an
/// answer to an old token; Synapse repeats an answer for a repeated
/// request). Each used to count as a wedged session and cost a key claim
/// and a new session; they must be recognised and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn redelivered_to_device_messages_are_dropped() {
    let alice = TestClient::new_user("alice", "ALICE1", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB1", StoreKind::Redb).await;
    let room = room_with(&alice, &bob, true).await;
    alice.client.get_room(&room).unwrap().send_text("with a room key").await.unwrap();
    let mut since = None;
    for _ in 0..100 {
        let before = stored_token(&bob).await;
        let summary = bob.client.sync_once(Default::default()).await.expect("sync");
        if summary.room_keys > 0 {
            since = Some(before);
            break;
        }
    }
    let since = since.expect("the room key arrived");

    // The same answer again, fed to Bob's engine as a stale sync would be.
    let mut request = sync_events::v3::Request::new();
    request.since = Some(since);
    let again = http().send(request, Some(&bob.session.access_token), Duration::ZERO).await.expect("sync again");
    assert!(!again.to_device.events.is_empty(), "the server did not deliver the messages again");
    let machine = bob.client.olm_machine().unwrap();
    let changes = SyncChanges {
        to_device_events: again.to_device.events,
        device_lists: DeviceListChanges::default(),
        ..Default::default()
    };
    let output = machine.receive_sync_changes(changes, Timestamp::from_millis(u64::MAX / 2)).await.unwrap();
    let encrypted: Vec<_> = output.to_device.iter().filter(|o| !matches!(o, ToDeviceOutcome::PlainText(_))).collect();
    assert!(!encrypted.is_empty());
    for outcome in encrypted {
        assert!(
            matches!(outcome, ToDeviceOutcome::Failed { error: OlmError::Redelivered, .. }),
            "a redelivered message was not recognised: {outcome:?}"
        );
    }
    let requests = machine.outgoing_requests(Timestamp::from_millis(u64::MAX / 2)).await.unwrap();
    assert!(
        requests.iter().all(|r| !matches!(r.request(), AnyOutgoingRequest::KeysClaim(_))),
        "a redelivery made Bob claim a new session"
    );
}

/// Attack (1): Mallory uploads device keys whose ed25519 key is 33 bytes
/// (44 unpadded base64 characters: the length that made vodozemac 0.11
/// panic). This records what Synapse does with such an upload, and checks
/// that Alice, who tracks Mallory, processes the keys-query answer without
/// panicking and without accepting the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn synapse_serves_a_33_byte_device_key_and_hush_refuses_it() {
    use ruma_client_api::{keys::upload_keys, session::login};
    let alice = TestClient::new_user("alice", "ALICE1", StoreKind::Redb).await;
    let name = hush_testing::synapse::unique_name("mallory");
    hush_testing::synapse::register(&name, "password").await.unwrap();
    let identifier =
        ruma_client_api::uiaa::UserIdentifier::Matrix(ruma_client_api::uiaa::MatrixUserIdentifier::new(name.clone()));
    let password = login::v3::Password::new(identifier, "password".into());
    let mut request = login::v3::Request::new(login::v3::LoginInfo::Password(password));
    request.device_id = Some("MALLORY".into());
    let session = http().send(request, None, Duration::ZERO).await.expect("login");

    let account = vodozemac::olm::Account::new();
    let bad_key = vodozemac::base64_encode([7u8; 33]);
    let keys = json!({
        "user_id": session.user_id, "device_id": "MALLORY",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {"ed25519:MALLORY": bad_key, "curve25519:MALLORY": account.curve25519_key().to_base64()},
        "signatures": {session.user_id.as_str(): {"ed25519:MALLORY": account.sign("x").to_base64()}},
    });
    let mut upload = upload_keys::v3::Request::new();
    upload.device_keys = Some(Raw::new(&keys).unwrap().cast_unchecked());
    let uploaded = http().send(upload, Some(&session.access_token), Duration::ZERO).await;
    // Synapse 1.163.2 checks neither key lengths nor signatures here.
    assert!(uploaded.is_ok(), "Synapse refused the upload: {uploaded:?}");

    let machine = alice.client.olm_machine().unwrap();
    machine.update_tracked_users([session.user_id.as_ref()]).await.unwrap();
    alice.client.send_outgoing_requests().await.expect("the keys query answer is processed");
    assert!(!machine.is_user_dirty(&session.user_id), "the answer was not applied");
    assert!(machine.get_device(&session.user_id, "MALLORY".into()).await.unwrap().is_none(), "the device was accepted");
}
