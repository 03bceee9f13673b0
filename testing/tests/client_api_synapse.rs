//! The application-facing client API against a real Synapse (started by
//! `cargo xtask test`): registration, room options, send results, history
//! with late decryption, and encrypted attachments.

use std::collections::BTreeSet;
use std::time::Duration;

use hush_client::{
    AttachmentData, AttachmentError, Client, ClientError, CreateRoomOptions, MessagesOptions, RotationSettings,
    SyncSettings,
};
use hush_testing::proxy::{Fault, FaultProxy, Rule};
use hush_testing::synapse::{StoreKind, TestClient, homeserver_url, unique_name};
use ruma_common::OwnedRoomId;

async fn shared_room(alice: &TestClient, bob: &TestClient, options: CreateRoomOptions) -> OwnedRoomId {
    let options = CreateRoomOptions { invite: vec![bob.session.user_id.clone()], ..options };
    let room = alice.client.create_room_with(options).await.expect("create room");
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    room
}

/// Registration through the client, the room options written into the
/// room's state, the send result, own identity keys, and the typed escape
/// hatch for any other request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_registered_account_creates_a_room_with_rotation_settings_and_sends() {
    let dir = tempfile::TempDir::new().unwrap();
    let client = Client::builder()
        .homeserver_url(homeserver_url())
        .redb_store(dir.path().join("crypto.redb"), Some("secret"))
        .build()
        .unwrap();
    let name = unique_name("registered");
    let session =
        client.matrix_auth().register(&name, "a long password").device_id("REGISTERED").send().await.expect("register");
    assert_eq!(session.device_id.as_str(), "REGISTERED");
    assert_eq!(client.user_id().as_deref(), Some(session.user_id.as_ref()));

    let options = CreateRoomOptions {
        name: Some("rotating".into()),
        encryption: Some(RotationSettings { period: Some(Duration::from_secs(3600)), messages: Some(3) }),
        ..Default::default()
    };
    let room = client.create_room_with(options).await.expect("create");
    // The escape hatch: read the encryption state with ruma's own request type.
    let request = ruma_client_api::state::get_state_event_for_key::v3::Request::new(
        room.clone(),
        ruma_events::StateEventType::RoomEncryption,
        String::new(),
    );
    let state: serde_json::Value =
        serde_json::from_str(client.send(request).await.expect("state").event_or_content.get()).unwrap();
    assert_eq!(state["rotation_period_msgs"], 3);
    assert_eq!(state["rotation_period_ms"], 3_600_000);

    client.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.expect("sync");
    let handle = client.get_room(&room).expect("room known after sync");
    let mut sessions = Vec::new();
    for n in 0..4 {
        let sent = handle.send_text(&format!("message {n}")).await.expect("send");
        let encryption = sent.encryption.expect("sent encrypted");
        assert_eq!(encryption.algorithm, "m.megolm.v1.aes-sha2");
        assert!(sent.event_id.as_str().starts_with('$'));
        sessions.push(encryption.session_id);
    }
    assert_eq!(sessions[0], sessions[2], "three messages share a session");
    assert_ne!(sessions[2], sessions[3], "the fourth rotates, as the room's settings say");

    let keys = client.encryption().identity_keys().expect("keys");
    // The keys the server lists for this device, through the escape hatch.
    let mut query = ruma_client_api::keys::get_keys::v3::Request::new();
    query.device_keys.insert(session.user_id.clone(), vec![]);
    let answer = client.send(query).await.expect("keys query");
    let listed: serde_json::Value =
        answer.device_keys[&session.user_id][&session.device_id].deserialize_as_unchecked().unwrap();
    assert_eq!(listed["keys"]["ed25519:REGISTERED"], keys.ed25519.to_base64());
    assert_eq!(listed["keys"]["curve25519:REGISTERED"], keys.curve25519.to_base64());
}

/// Bob writes 500 messages in a room whose key rotates every 200; Alice,
/// who did not sync meanwhile, reads them all back with `messages()` page
/// by page, decrypted in batches, across the three sessions.
/// Registering without logging in (`inhibit_login`) creates the account
/// and nothing else: the client stays logged out, the server lists no
/// device for it, and a later login gets the account's first device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn an_account_registered_without_login_has_no_device_until_it_logs_in() {
    let dir = tempfile::TempDir::new().unwrap();
    let client = Client::builder()
        .homeserver_url(homeserver_url())
        .redb_store(dir.path().join("crypto.redb"), Some("secret"))
        .build()
        .unwrap();
    let name = unique_name("nologin");
    let user_id = client.matrix_auth().register(&name, "a long password").send_without_login().await.expect("register");
    assert_eq!(user_id.localpart(), name);
    assert!(client.user_id().is_none(), "still logged out");
    assert!(client.olm_machine().is_err(), "no store opened");
    let session = client.matrix_auth().login_username(&name, "a long password").send().await.expect("login");
    assert_eq!(session.user_id, user_id);
    let devices = client.send(ruma_client_api::device::get_devices::v3::Request::new()).await.expect("devices");
    assert_eq!(devices.devices.len(), 1, "only the login's device: {:?}", devices.devices);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn messages_decrypts_a_backlog_of_500_events_across_two_rotations() {
    let alice = TestClient::new_user("alice", "ALICE", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB", StoreKind::Redb).await;
    let rotation = RotationSettings { period: None, messages: Some(200) };
    let room = shared_room(&bob, &alice, CreateRoomOptions { encryption: Some(rotation), ..Default::default() }).await;
    let bob_room = bob.client.get_room(&room).unwrap();
    let mut sent_sessions = BTreeSet::new();
    for n in 0..500 {
        let sent = bob_room.send_text(&format!("backlog {n}")).await.expect("send");
        sent_sessions.insert(sent.encryption.expect("encrypted").session_id);
    }
    assert_eq!(sent_sessions.len(), 3, "two rotations");

    alice.sync().await; // the room keys (and a limited timeline)
    let alice_room = alice.client.get_room(&room).unwrap();
    let mut texts = Vec::new();
    let mut read_sessions = BTreeSet::new();
    let mut options = MessagesOptions::backward().limit(100);
    for _page in 0..20 {
        let page = alice_room.messages(options.clone()).await.expect("page");
        for event in &page.chunk {
            if event.event["sender"] == bob.session.user_id.as_str() && event.event_type() != "m.room.member" {
                assert!(event.unable_to_decrypt.is_none(), "{:?}", event.unable_to_decrypt);
                if let Some(text) = event.text_body() {
                    texts.push(text.to_owned());
                    read_sessions.insert(event.encryption.as_ref().unwrap().session_id.clone());
                }
            }
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() => options = options.from(end),
            _ => break,
        }
    }
    texts.reverse();
    let expected: Vec<String> = (0..500).map(|n| format!("backlog {n}")).collect();
    assert_eq!(texts, expected, "every message, in order, decrypted");
    assert_eq!(read_sessions, sent_sessions);
}

/// Alice reads the room's history before the room key's to-device message
/// reached her (it waits on the server until her next sync): the event
/// comes back undecryptable with its reason, and when the key arrives it
/// is delivered to her handlers as a late decryption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn history_read_before_its_key_arrives_is_delivered_again_when_the_key_comes() {
    let alice = TestClient::new_user("alice", "ALICE", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB", StoreKind::Redb).await;
    let room = shared_room(&bob, &alice, CreateRoomOptions::default()).await;
    alice.sync().await;
    bob.client.get_room(&room).unwrap().send_text("read early").await.expect("send");

    let page = alice.client.get_room(&room).unwrap().messages(MessagesOptions::backward()).await.expect("history");
    let early = page.chunk.iter().find(|e| e.event_type() == "m.room.encrypted").expect("the encrypted event");
    assert!(
        matches!(early.unable_to_decrypt, Some(hush_crypto_core::MegolmError::MissingRoomKey { .. })),
        "{:?}",
        early.unable_to_decrypt
    );
    // Bob's first Olm message to Alice (the room key) waits on the server.
    assert_eq!(early.utd_cause, Some(hush_crypto_core::UtdCause::NoSessionWithSender));
    assert!(alice.texts(&room).is_empty());

    alice.sync_until("the late decryption", |c| c.texts(&room).contains(&"read early".to_owned())).await;
    let events = alice.events.lock().unwrap();
    let late: Vec<_> = events.iter().filter(|e| e.text_body() == Some("read early")).collect();
    assert_eq!(late.len(), 1, "delivered once: {late:?}");
    assert!(late[0].late_decryption, "delivered as a late decryption: {late:?}");
}

/// As above, but Alice's client restarts between reading the history and
/// the sync that brings the key: the events waiting for their keys are
/// saved (the newest 500) and restored, so the late decryption still comes
/// (before, the waiting list lived in memory only and the event stayed
/// unreadable after a restart; the network simulator's driver showed what
/// a client must do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn an_event_waiting_for_its_key_is_decrypted_late_after_a_restart() {
    let alice = TestClient::new_user("alice", "ALICE", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB", StoreKind::Redb).await;
    let room = shared_room(&bob, &alice, CreateRoomOptions::default()).await;
    alice.sync().await;
    bob.client.get_room(&room).unwrap().send_text("waited across a restart").await.expect("send");
    let page = alice.client.get_room(&room).unwrap().messages(MessagesOptions::backward()).await.expect("history");
    assert!(page.chunk.iter().any(|e| e.unable_to_decrypt.is_some()), "the key has not come yet");

    let alice = alice.restart().await;
    alice
        .sync_until("the late decryption after the restart", |c| {
            c.texts(&room).contains(&"waited across a restart".to_owned())
        })
        .await;
    let events = alice.events.lock().unwrap();
    let late: Vec<_> = events.iter().filter(|e| e.text_body() == Some("waited across a restart")).collect();
    assert_eq!(late.len(), 1, "delivered once: {late:?}");
    assert!(late[0].late_decryption, "delivered as a late decryption");
}

/// A 6 MB file, encrypted and uploaded as a stream, is downloaded and
/// decrypted by the other member. Attack: the server (here a proxy in front
/// of it) changes one byte of the stored ciphertext; or the event names a
/// wrong hash. Either download is refused before a byte is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn an_attachment_of_several_megabytes_round_trips_and_a_tampered_one_is_refused() {
    // Bob talks to Synapse through a proxy that can change what he downloads.
    let proxy = FaultProxy::start(&homeserver_url()).await;
    let alice = TestClient::new_user("alice", "ALICE", StoreKind::Redb).await;
    let bob = TestClient::new_user_via("bob", "BOB", StoreKind::Redb, &proxy.url()).await;
    let room = shared_room(&alice, &bob, CreateRoomOptions::default()).await;
    let file: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let sent = alice
        .client
        .get_room(&room)
        .unwrap()
        .send_attachment("data.bin", "application/octet-stream", AttachmentData::Bytes(file.clone()))
        .await
        .expect("send the attachment");
    assert!(sent.encryption.is_some());

    bob.sync_until("the file event", |c| c.events.lock().unwrap().iter().any(|e| e.encrypted_file().is_some())).await;
    let event = bob.events.lock().unwrap().iter().find(|e| e.encrypted_file().is_some()).cloned().unwrap();
    assert_eq!(event.event["content"]["msgtype"], "m.file");
    assert_eq!(event.event["content"]["info"]["size"], file.len());
    let encrypted = event.encrypted_file().unwrap();
    let downloaded = bob.client.download(&encrypted).await.expect("download");
    assert!(downloaded == file, "the file round-trips");

    // The same download, with one byte changed on the way.
    let flip = proxy.add(Rule::path("/media/download/").fault(Fault::FlipByte(3 * 1024 * 1024)));
    let refused = bob.client.download(&encrypted).await;
    assert!(matches!(refused, Err(ClientError::Attachment(AttachmentError::HashMismatch))), "{refused:?}");
    assert_eq!(flip.caught(), 1, "the proxy changed the download");
    proxy.clear();

    // A wrong hash in the event.
    let mut json = serde_json::to_value(&encrypted).unwrap();
    json["hashes"]["sha256"] = serde_json::json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let wrong: hush_client::EncryptedFile = serde_json::from_value(json).unwrap();
    let refused = bob.client.download(&wrong).await;
    assert!(matches!(refused, Err(ClientError::Attachment(AttachmentError::HashMismatch))), "{refused:?}");
}
