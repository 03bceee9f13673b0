//! The client against a real Synapse (started by `cargo xtask test`, or
//! `cargo xtask homeserver start`). Ignored by a plain `cargo test`; run them
//! with `cargo xtask test`, which starts Synapse and runs ignored tests too.
//! Every scenario runs on the redb store and again on sled.

use std::collections::BTreeSet;
use std::sync::Arc;

use hush_testing::synapse::{StoreKind, TestClient};
use ruma_common::OwnedRoomId;

const NEEDS_SYNAPSE: &str = "needs a local Synapse: run `cargo xtask test`";

async fn room_with(alice: &TestClient, others: &[&TestClient]) -> OwnedRoomId {
    let invite: Vec<_> = others.iter().map(|c| c.session.user_id.as_ref()).collect();
    let room = alice.client.create_room("hush test", true, &invite).await.expect("create room");
    alice.sync_until("the new room", |c| c.client.get_room(&room).is_some_and(|r| r.is_encrypted())).await;
    room
}

async fn exchange(kind: StoreKind) {
    let alice = TestClient::new_user("alice", "ALICE1", kind).await;
    let bob1 = TestClient::new_user("bob", "BOB1", kind).await;
    let (bob_name, password) = bob1.credentials.clone();
    let bob2 = TestClient::login(&bob_name, &password, "BOB2", kind, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let room = room_with(&alice, &[&bob1]).await;
    bob1.join(&room).await;
    bob2.sync().await;

    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    let alice_room = alice.client.get_room(&room).unwrap();
    alice_room.send_text("hello bob").await.expect("alice sends");
    for bob in [&bob1, &bob2] {
        bob.sync_until("alice's message", |c| c.texts(&room).contains(&"hello bob".to_owned())).await;
    }
    bob1.client.get_room(&room).unwrap().send_text("hello alice").await.expect("bob sends");
    alice.sync_until("bob's reply", |c| c.texts(&room).contains(&"hello alice".to_owned())).await;
    bob2.sync_until("bob's own reply on his other device", |c| c.texts(&room).contains(&"hello alice".to_owned()))
        .await;
    assert_eq!(alice.undecryptable(&room), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn alice_and_bob_on_two_devices_talk_redb() {
    let _ = NEEDS_SYNAPSE;
    exchange(StoreKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn alice_and_bob_on_two_devices_talk_sled() {
    exchange(StoreKind::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse and the test PostgreSQL: run `cargo xtask test`"]
async fn alice_and_bob_on_two_devices_talk_postgres() {
    exchange(StoreKind::Postgres).await;
}

async fn restart_and_relogin(kind: StoreKind) {
    let alice = TestClient::new_user("alice", "ALICE1", kind).await;
    let bob = TestClient::new_user("bob", "BOB1", kind).await;
    let room = room_with(&alice, &[&bob]).await;
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    alice.client.get_room(&room).unwrap().send_text("before the restart").await.unwrap();
    bob.sync_until("the first message", |c| c.texts(&room).contains(&"before the restart".to_owned())).await;

    // Bob's process ends; a new one restores the session from the store.
    let restarted = bob.restart().await;
    alice.client.get_room(&room).unwrap().send_text("after the restart").await.unwrap();
    // It resumes with an incremental sync; the old message comes from the room's history.
    restarted
        .sync_with_history_until(&room, "old and new messages", |c| {
            let texts = c.texts(&room);
            texts.contains(&"before the restart".to_owned()) && texts.contains(&"after the restart".to_owned())
        })
        .await;

    // Logging in again with the password and the same device id keeps the device.
    let devices_before = device_ids(&alice, &restarted).await;
    let (dir, (name, password)) = restarted.close();
    let relogged = TestClient::login(&name, &password, "BOB1", kind, dir).await;
    alice.client.get_room(&room).unwrap().send_text("after the new login").await.unwrap();
    relogged
        .sync_with_history_until(&room, "everything", |c| {
            let texts = c.texts(&room);
            ["before the restart", "after the restart", "after the new login"]
                .iter()
                .all(|t| texts.contains(&(*t).to_owned()))
        })
        .await;
    assert_eq!(device_ids(&alice, &relogged).await, devices_before, "a new device was created");
}

async fn device_ids(observer: &TestClient, of: &TestClient) -> BTreeSet<String> {
    let devices = observer.client.encryption().get_user_devices(&of.session.user_id).await.unwrap();
    devices.iter().map(|d| d.data().device_id().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_restarted_or_relogged_client_keeps_decrypting_redb() {
    restart_and_relogin(StoreKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_restarted_or_relogged_client_keeps_decrypting_sled() {
    restart_and_relogin(StoreKind::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse and the test PostgreSQL: run `cargo xtask test`"]
async fn a_restarted_or_relogged_client_keeps_decrypting_postgres() {
    restart_and_relogin(StoreKind::Postgres).await;
}

async fn export_import(kind: StoreKind) {
    let alice = TestClient::new_user("alice", "ALICE1", kind).await;
    let bob = TestClient::new_user("bob", "BOB1", kind).await;
    let room = room_with(&alice, &[&bob]).await;
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    alice.client.get_room(&room).unwrap().send_text("history").await.unwrap();
    bob.client.get_room(&room).unwrap().send_text("more history").await.unwrap();
    alice.sync_until("bob's message", |c| c.texts(&room).contains(&"more history".to_owned())).await;

    let file = alice.dir.path().join("keys.txt");
    let count = alice.client.encryption().export_room_keys(&file, "export passphrase", |_| true).await.unwrap();
    assert!(count >= 2, "exported {count} keys");

    let (name, password) = alice.credentials.clone();
    let fresh = TestClient::login(&name, &password, "ALICE2", kind, Arc::new(tempfile::TempDir::new().unwrap())).await;
    fresh.sync().await;
    assert!(fresh.texts(&room).is_empty(), "a fresh device should not read history before the import");
    let mut progress = Vec::new();
    let result = fresh
        .client
        .encryption()
        .import_room_keys(&file, "export passphrase", |d, t| progress.push((d, t)))
        .await
        .unwrap();
    assert_eq!(result.imported_count, count);
    assert_eq!(progress.last(), Some(&(count, count)));
    // A new process of the fresh device reads the history with the imported keys.
    let restarted = fresh.restart().await;
    restarted
        .sync_with_history_until(&room, "the history", |c| {
            let texts = c.texts(&room);
            texts.contains(&"history".to_owned()) && texts.contains(&"more history".to_owned())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn an_exported_history_imports_on_a_fresh_device_redb() {
    export_import(StoreKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn an_exported_history_imports_on_a_fresh_device_sled() {
    export_import(StoreKind::Sled).await;
}

async fn membership_and_rotation(kind: StoreKind) {
    let alice = TestClient::new_user("alice", "ALICE1", kind).await;
    let bob = TestClient::new_user("bob", "BOB1", kind).await;
    let carol = TestClient::new_user("carol", "CAROL1", kind).await;
    let room = room_with(&alice, &[&bob]).await;
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    let alice_room = alice.client.get_room(&room).unwrap();
    alice_room.send_text("before carol").await.unwrap();

    // Carol is invited and joins: she reads from her join on.
    invite(&alice, &room, &carol).await;
    carol.join(&room).await;
    alice.sync_until("carol's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 3)).await;
    alice_room.send_text("after carol joined").await.unwrap();
    carol.sync_until("the message after her join", |c| c.texts(&room).contains(&"after carol joined".to_owned())).await;

    // Bob leaves: the key rotates and he cannot read what follows. (Synapse
    // does not send the leaver later events, so what shows it is the
    // rotation itself: a new session, and no key for it in Bob's store.)
    bob.client.leave_room(&room).await.unwrap();
    alice.sync_until("bob's leave", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    alice_room.send_text("after bob left").await.unwrap();
    carol.sync_until("the message after bob left", |c| c.texts(&room).contains(&"after bob left".to_owned())).await;
    bob.sync().await;
    let (before_leave, after_leave) =
        (session_of(&carol, &room, "after carol joined"), session_of(&carol, &room, "after bob left"));
    assert_ne!(before_leave, after_leave, "the room key did not rotate when bob left");
    let bob_store = bob.client.olm_machine().unwrap().store().clone();
    assert!(bob_store.get_inbound_group_session(&room, &before_leave).await.unwrap().is_some(), "bob had the old key");
    assert!(bob_store.get_inbound_group_session(&room, &after_leave).await.unwrap().is_none(), "bob got the new key");
    assert!(!bob.texts(&room).contains(&"after bob left".to_owned()));

    // 101 messages: the 101st uses a new key.
    let sessions_before = sessions(&carol, &room);
    for i in 0..101 {
        alice_room.send_text(&format!("burst {i}")).await.unwrap();
    }
    carol.sync_until("the burst", |c| c.texts(&room).contains(&"burst 100".to_owned())).await;
    let new_sessions: Vec<_> = sessions(&carol, &room).into_iter().filter(|s| !sessions_before.contains(s)).collect();
    assert!(!new_sessions.is_empty(), "101 messages did not rotate the key");
}

/// The Megolm session id of the decrypted message `text` as `client` received it.
fn session_of(client: &TestClient, room: &OwnedRoomId, text: &str) -> String {
    let events = client.events.lock().unwrap();
    let event = events.iter().find(|e| &e.room_id == room && e.text_body() == Some(text));
    event.and_then(|e| e.encryption.as_ref()).map(|i| i.session_id.clone()).expect("the message was decrypted")
}

fn sessions(client: &TestClient, room: &OwnedRoomId) -> BTreeSet<String> {
    let events = client.events.lock().unwrap();
    events
        .iter()
        .filter(|e| &e.room_id == room)
        .filter_map(|e| e.encryption.as_ref().map(|i| i.session_id.clone()))
        .collect()
}

async fn invite(by: &TestClient, room: &OwnedRoomId, who: &TestClient) {
    let request = ruma_client_api::membership::invite_user::v3::Request::new(
        room.clone(),
        ruma_client_api::membership::invite_user::v3::InvitationRecipient::UserId(
            ruma_client_api::membership::invite_user::v3::InviteUserId::new(who.session.user_id.clone()),
        ),
    );
    let http =
        hush_client::http::HttpClient::new(&hush_testing::synapse::homeserver_url(), Default::default()).unwrap();
    http.send(request, Some(&by.session.access_token), std::time::Duration::ZERO).await.expect("invite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn members_joining_and_leaving_and_101_messages_redb() {
    membership_and_rotation(StoreKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn members_joining_and_leaving_and_101_messages_sled() {
    membership_and_rotation(StoreKind::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_killed_client_loses_no_room_key_redb() {
    killed_client(StoreKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_killed_client_loses_no_room_key_sled() {
    killed_client(StoreKind::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse and the test PostgreSQL: run `cargo xtask test`"]
async fn a_killed_client_loses_no_room_key_postgres() {
    killed_client(StoreKind::Postgres).await;
}

async fn killed_client(kind: StoreKind) {
    use std::process::{Command, Stdio};

    let alice = TestClient::new_user("alice", "ALICE1", kind).await;
    let bob = TestClient::new_user("bob", "BOB1", kind).await;
    let room = room_with(&alice, &[&bob]).await;
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    let session = serde_json::to_string(&bob.session).unwrap();
    let store = TestClient::store_path(kind, &bob.dir);
    let kind_arg = match kind {
        StoreKind::Sled => "sled",
        StoreKind::Postgres => "postgres",
        StoreKind::Redb => "redb",
    };
    let (dir, credentials) = bob.close();

    // Bob's app syncs in a child process that is SIGKILLed at arbitrary
    // moments, while Alice keeps sending messages under fresh room keys.
    // Each kill comes after the child finished three syncs since the message
    // was sent (the first may have begun before the send): one that began
    // after the send brought the room key, the next acknowledged it, so the
    // server no longer holds it and only Bob's store can.
    let mut sent = Vec::new();
    for round in 0..6u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_client-child"))
            .args([kind_arg, store.to_str().unwrap(), &session])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the client");
        let lines = child_lines(child.stdout.take().unwrap());
        let alice_room = alice.client.get_room(&room).unwrap();
        alice.client.olm_machine().unwrap().discard_room_key(&room).await.unwrap();
        let text = format!("round {round}");
        alice_room.send_text(&text).await.unwrap();
        sent.push(text);
        while lines.try_recv().is_ok() {} // syncs that began before the send
        for _ in 0..3 {
            let line = lines.recv_timeout(std::time::Duration::from_secs(30));
            assert_eq!(line.as_deref(), Ok("synced"), "round {round}: the child did not sync before the kill");
        }
        tokio::time::sleep(std::time::Duration::from_millis(97 * round % 250)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    // A new process of Bob: every message decrypts, so no room key was lost.
    let bob = TestClient::login_restore(kind, &dir, &credentials, &session).await;
    bob.sync_with_history_until(&room, "every message", |c| sent.iter().all(|t| c.texts(&room).contains(t))).await;
}

/// The child's stdout lines, on a channel fed by a reader thread.
fn child_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn restoring_with_another_devices_token_is_a_clear_error() {
    let bob = TestClient::new_user("bob", "BOB1", StoreKind::Redb).await;
    let (name, password) = bob.credentials.clone();
    let other =
        TestClient::login(&name, &password, "BOB2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let other_session = other.session.clone();
    let (dir, _) = bob.close();

    // BOB2's token with BOB1's store.
    let client = hush_client::Client::builder()
        .homeserver_url(hush_testing::synapse::homeserver_url())
        .store_config(hush_client::StoreConfig::Redb {
            path: dir.path().join("crypto.redb"),
            passphrase: Some("store secret".into()),
        })
        .build()
        .unwrap();
    let error = client.restore_session(other_session.clone()).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, hush_client::ClientError::DeviceMismatch { .. }), "{error}");
    assert!(message.contains("BOB1") && message.contains("BOB2"), "{message}");

    // A session that claims BOB1 while its token belongs to BOB2.
    let mut lying = other_session;
    lying.device_id = "BOB1".into();
    let error = client.restore_session(lying).await.unwrap_err();
    assert!(matches!(error, hush_client::ClientError::DeviceMismatch { .. }), "{error}");
}

/// The client's own ids, and its rooms by our membership: an invite is
/// listed among the invited rooms, then, once joined, among the joined
/// ones, with the room's membership following.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn the_client_lists_its_ids_and_its_rooms_by_membership() {
    use hush_client::Membership;

    let alice = TestClient::new_user("alice", "ALICE1", StoreKind::Redb).await;
    let bob = TestClient::new_user("bob", "BOB1", StoreKind::Redb).await;
    assert_eq!(bob.client.user_id().as_ref(), Some(&bob.session.user_id));
    assert_eq!(bob.client.device_id().as_ref(), Some(&bob.session.device_id));
    let room = room_with(&alice, &[&bob]).await;
    let ids = |rooms: Vec<hush_client::Room>| rooms.into_iter().map(|r| r.room_id().clone()).collect::<Vec<_>>();

    bob.sync_until("the invite", |c| c.client.get_room(&room).is_some()).await;
    assert_eq!(ids(bob.client.invited_rooms()), vec![room.clone()]);
    assert!(bob.client.joined_rooms().is_empty());
    assert_eq!(bob.client.get_room(&room).and_then(|r| r.membership()), Some(Membership::Invite));

    bob.join(&room).await;
    assert_eq!(ids(bob.client.joined_rooms()), vec![room.clone()]);
    assert!(bob.client.invited_rooms().is_empty());
    assert_eq!(ids(bob.client.rooms()), vec![room.clone()]);
    assert_eq!(bob.client.get_room(&room).and_then(|r| r.membership()), Some(Membership::Join));
    assert_eq!(ids(alice.client.joined_rooms()), vec![room]);
}
