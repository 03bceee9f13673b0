//! `federation_connectivity_test.go`: two Synapses federating on loopback
//! (`testing/synapse/federation.sh`: hs1 and hs2, self-signed TLS on their
//! federation ports, certificates unchecked, only 127.0.0.0/8 reachable).
//! Bob's server goes offline by SIGSTOP, as complement pauses its
//! container, and comes back by SIGCONT. `cargo xtask test` starts both.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hush_crypto_core::MegolmError;
use hush_testing::synapse::{ClientOptions, StoreKind, TestClient};
use ruma_client_api::room::create_room::v3::RoomPreset;
use serde_json::json;

use super::*;

fn url(name: &str, port: u16) -> String {
    std::env::var(format!("HUSH_FEDERATION_{}_URL", name.to_uppercase()))
        .unwrap_or_else(|_| format!("http://127.0.0.1:{port}"))
}

/// `federation.sh pause|resume <server>`.
fn federation(action: &str, server: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/synapse/federation.sh");
    let status = Command::new("bash").args([script, action, server]).status().expect("run federation.sh");
    assert!(status.success(), "federation.sh {action} {server}: {status}");
}

/// One federation test at a time in a process (they pause hs2); nextest
/// runs them one at a time too (test group `federation`).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resumes hs2 when dropped, so a failing test leaves no server stopped.
struct Paused;

impl Paused {
    fn hs2() -> Self {
        federation("pause", "hs2");
        Self
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        federation("resume", "hs2");
    }
}

/// Alice and Charlie on hs1, Bob on hs2. Charlie's engine runs on a clock
/// the test can move forward (by the returned offset, in milliseconds).
async fn users() -> (TestClient, TestClient, TestClient, Arc<AtomicU64>) {
    let (hs1, hs2) = (url("hs1", 8128), url("hs2", 8138));
    let alice = TestClient::new_user_at("alice", "ALICE1", StoreKind::Redb, &hs1).await;
    let bob = TestClient::new_user_at("bob", "BOB1", StoreKind::Redb, &hs2).await;
    let (clock, offset) = movable_clock();
    let mut options = ClientOptions::at(&hs1);
    options.clock = Some(clock);
    let charlie = TestClient::new_user_with("charlie", "CHARLIE1", StoreKind::Redb, options).await;
    (alice, bob, charlie, offset)
}

/// Waits (at most 60 s) until `from`'s server reaches `of`'s server again:
/// a profile lookup of a remote user goes over federation each time.
async fn until_reachable(from: &TestClient, of: &TestClient) {
    use ruma_client_api::profile::get_profile::v3::Request;
    for _ in 0..120 {
        let request = Request::new(of.session.user_id.clone());
        if api(from).send(request, Some(&from.session.access_token), Duration::ZERO).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{}'s server never reached {}'s again", from.session.user_id, of.session.user_id);
}

/// Bob, back online, tells hs1 so (a typing notification travels to hs1,
/// which then retries what it held for hs2 at once instead of after its
/// back-off), as the original does.
async fn kick_hs1(bob: &TestClient, room: &OwnedRoomId) {
    use ruma_client_api::typing::create_typing_event::v3::{Request, Typing, TypingInfo};
    let typing = Typing::Yes(TypingInfo::new(Duration::from_secs(1)));
    let request = Request::new(bob.session.user_id.clone(), room.clone(), typing);
    api(bob).send(request, Some(&bob.session.access_token), Duration::ZERO).await.expect("typing");
}

/// Alice (hs1) and Bob (hs2) share a room; Bob's server goes offline;
/// Charlie (hs1) joins and sends: he cannot get an Olm session with Bob's
/// device (hs1 may still list it from its cache, but cannot claim a
/// one-time key), so Bob cannot decrypt that message (Alice can). Bob's
/// server comes back; once Charlie's back-off after the failed claim is
/// over (the original sleeps 33 s for its client's; Charlie's clock is
/// moved forward 10 minutes instead), Charlie's next message is
/// decryptable by Bob, and the first stays undecryptable: Charlie shared
/// his session with Bob from the next message on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs two federating Synapses: run `cargo xtask test`"]
async fn TestNewUserCannotGetKeysForOfflineServer() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (alice, bob, charlie, charlies_clock) = users().await;
    let room = create_room(&alice, RoomPreset::PrivateChat, json!({}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    let hello = send(&alice, &room, "Hello world").await;
    decrypts(&bob, &room, &hello, "Hello world").await;

    let paused = Paused::hs2();
    invite(&alice, &room, &charlie).await;
    charlie.join(&room).await;
    let unreadable_text = "Bob can't see this because his server is down";
    let unreadable = send(&charlie, &room, unreadable_text).await;
    decrypts(&alice, &room, &unreadable, unreadable_text).await;
    drop(paused);

    kick_hs1(&bob, &room).await;
    until_reachable(&charlie, &bob).await;
    charlies_clock.store(10 * 60 * 1000, Ordering::SeqCst);
    until_device_known(&charlie, &bob, "BOB1", true).await;
    let readable_text = "Bob can see this because his server is now back online";
    let readable = send(&charlie, &room, readable_text).await;
    decrypts(&bob, &room, &readable, readable_text).await;
    // Charlie kept his session and shared it with Bob from the next index
    // on: the earlier message is before what Bob holds, not readable.
    let event = wait_for(&bob, &room, &unreadable).await;
    assert!(event.text_body().is_none(), "bob decrypted the message sent while his server was down");
    assert!(
        matches!(
            event.unable_to_decrypt,
            Some(MegolmError::UnknownMessageIndex { message_index: 0, first_known_index: 1 })
        ),
        "{:?}",
        event.unable_to_decrypt
    );
}

/// Charlie (hs1) and Bob (hs2) already have an Olm session from another
/// room when Bob's server goes offline; Charlie joins Alice's room with
/// Bob and sends there. Olm sessions are per device, not per room, so the
/// room key reaches Bob's device once his server is back, and he decrypts
/// the message sent while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs two federating Synapses: run `cargo xtask test`"]
async fn TestExistingSessionCannotGetKeysForOfflineServer() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (alice, bob, charlie, _) = users().await;
    let room_bc = create_room(&charlie, RoomPreset::PrivateChat, json!({}), &[&bob]).await;
    let room_ab = create_room(&alice, RoomPreset::PrivateChat, json!({}), &[&bob]).await;
    bob.join(&room_ab).await;
    bob.join(&room_bc).await;
    until_recipients(&alice, &room_ab, 2).await;
    until_recipients(&charlie, &room_bc, 2).await;
    let hello_ab = send(&alice, &room_ab, "Hello world").await;
    decrypts(&bob, &room_ab, &hello_ab, "Hello world").await;
    let hello_bc = send(&charlie, &room_bc, "Hello world").await;
    decrypts(&bob, &room_bc, &hello_bc, "Hello world").await;

    let paused = Paused::hs2();
    invite(&alice, &room_ab, &charlie).await;
    charlie.join(&room_ab).await;
    until_recipients(&charlie, &room_ab, 3).await;
    let text = "Bob can see this even though his server is down as we had a session already";
    let sent = send(&charlie, &room_ab, text).await;
    decrypts(&alice, &room_ab, &sent, text).await;
    drop(paused);

    kick_hs1(&bob, &room_ab).await;
    decrypts(&bob, &room_ab, &sent, text).await;
}
