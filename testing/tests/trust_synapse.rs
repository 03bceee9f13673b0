//! Issue 31: hush-client's trust settings against a real Synapse, with
//! users set up as today's Matrix expects (`ensure_identity`) and the
//! default settings (spec v1.18: room keys only for devices their owner
//! cross-signed). Ignored by a plain `cargo test`; `cargo xtask test` runs
//! them.

use std::sync::Arc;

use hush_client::hush_crypto_core::{MegolmError, megolm::WithheldCode};
use hush_client::{ClientError, IdentityOutcome, IdentitySetup, TrustSettings};
use hush_testing::synapse::{ClientOptions, StoreKind, TestClient, homeserver_url, register, unique_name};
use ruma_common::OwnedRoomId;

/// A client with the default (recommended) trust settings.
fn options() -> ClientOptions {
    let mut options = ClientOptions::at(&homeserver_url());
    options.trust = TrustSettings::default();
    options
}

async fn login(name: &str, device: &str) -> TestClient {
    let dir = Arc::new(tempfile::TempDir::new().unwrap());
    TestClient::login_with(name, "password", device, StoreKind::Redb, dir, options()).await
}

/// A new user whose first device set up an identity; and its recovery key.
async fn set_up_user(prefix: &str, device: &str) -> (TestClient, String) {
    let name = unique_name(prefix);
    register(&name, "password").await.unwrap();
    let client = login(&name, device).await;
    let setup = IdentitySetup::new().password("password");
    let IdentityOutcome::Created { recovery_key, .. } =
        client.client.encryption().ensure_identity(setup).await.unwrap()
    else {
        panic!("a fresh account gets an identity")
    };
    client.client.encryption().recovery_key_saved().await.unwrap();
    (client, recovery_key.to_string())
}

async fn room_with(alice: &TestClient, bob: &TestClient) -> OwnedRoomId {
    let room = alice.client.create_room("trust", true, &[bob.session.user_id.as_ref()]).await.unwrap();
    bob.join(&room).await;
    alice.sync_until("bob's join", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;
    room
}

/// What `client` got for the event with `body`'s id: its text, or its error.
fn outcome(
    client: &TestClient,
    room: &OwnedRoomId,
    id: &ruma_common::OwnedEventId,
) -> Option<Result<String, MegolmError>> {
    let events = client.events.lock().unwrap();
    let copies: Vec<_> =
        events.iter().filter(|e| &e.room_id == room && e.event["event_id"].as_str() == Some(id.as_str())).collect();
    if let Some(text) = copies.iter().find_map(|e| e.text_body()) {
        return Some(Ok(text.to_owned()));
    }
    copies.iter().find_map(|e| e.unable_to_decrypt.clone()).map(Err)
}

/// Bob's second device logged in without an identity (not cross-signed)
/// gets `m.unverified` and no key from Alice, while his first device reads
/// her message; once the second device recovers with Bob's recovery key
/// (cross-signed), Alice's next message reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_device_its_owner_did_not_cross_sign_gets_m_unverified_and_no_key() {
    let (alice, _) = set_up_user("alice", "A1").await;
    let (bob1, bob_recovery) = set_up_user("bob", "B1").await;
    let (bob_name, _) = bob1.credentials.clone();
    let bob2 = login(&bob_name, "B2").await;
    bob2.sync().await;
    let room = room_with(&alice, &bob1).await;
    alice.client.encryption().refresh_user_keys(&[&bob1.session.user_id]).await.unwrap();

    let first = alice.client.get_room(&room).unwrap().send_text("for cross-signed devices").await.unwrap().event_id;
    bob1.sync_until("the message", |c| outcome(c, &room, &first).is_some()).await;
    assert_eq!(outcome(&bob1, &room, &first), Some(Ok("for cross-signed devices".to_owned())));
    bob2.sync_with_history_until(&room, "the message", |c| outcome(c, &room, &first).is_some()).await;
    let withheld = outcome(&bob2, &room, &first).expect("seen");
    assert!(
        matches!(withheld, Err(MegolmError::MissingRoomKey { withheld: Some(WithheldCode::Unverified), .. })),
        "B2: {withheld:?}"
    );

    let setup = IdentitySetup::new().recovery_key(&bob_recovery);
    assert!(matches!(bob2.client.encryption().ensure_identity(setup).await, Ok(IdentityOutcome::Recovered { .. })));
    alice.client.encryption().refresh_user_keys(&[&bob1.session.user_id]).await.unwrap();
    let second = alice.client.get_room(&room).unwrap().send_text("B2 is signed now").await.unwrap().event_id;
    bob2.sync_until("the second message", |c| matches!(outcome(c, &room, &second), Some(Ok(_)))).await;
}

/// Attack: a device Bob never cross-signed (one the server could have
/// added to his account) sends Alice a message. Under the recommended
/// decryption requirement Alice's client does not show it; it keeps the
/// event, and once Bob cross-signs that device (it recovers with his
/// recovery key) the device list change makes the client try it again and
/// show it, without Alice asking for the history again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_message_from_a_device_its_owner_did_not_cross_sign_is_shown_once_it_is() {
    let (alice, _) = set_up_user("alice", "A1").await;
    let (bob1, bob_recovery) = set_up_user("bob", "B1").await;
    let (bob_name, _) = bob1.credentials.clone();
    let bob2 = login(&bob_name, "B2").await;
    let room = room_with(&alice, &bob1).await;
    bob2.sync_until("the room", |c| c.client.get_room(&room).is_some_and(|r| r.key_recipients().len() == 2)).await;

    let sent = bob2.client.get_room(&room).unwrap().send_text("from an unsigned device").await.unwrap().event_id;
    alice.sync_until("the message", |c| outcome(c, &room, &sent).is_some()).await;
    let refused = outcome(&alice, &room, &sent).expect("seen");
    assert!(
        matches!(refused, Err(MegolmError::InsufficientSenderTrust { .. } | MegolmError::UnverifiedSenderDevice)),
        "shown from a device Bob never cross-signed: {refused:?}"
    );

    let setup = IdentitySetup::new().recovery_key(&bob_recovery);
    assert!(matches!(bob2.client.encryption().ensure_identity(setup).await, Ok(IdentityOutcome::Recovered { .. })));
    alice.sync_until("the held message", |c| matches!(outcome(c, &room, &sent), Some(Ok(_)))).await;
    assert_eq!(outcome(&alice, &room, &sent), Some(Ok("from an unsigned device".to_owned())));
}

/// Alice verified Bob; Bob resets his identity. Alice's send is refused
/// with a typed error naming Bob until she withdraws the verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_verified_users_new_identity_blocks_sending_until_the_verification_is_withdrawn() {
    let (alice, _) = set_up_user("alice", "A1").await;
    let (bob, _) = set_up_user("bob", "B1").await;
    let room = room_with(&alice, &bob).await;
    let bob_id = bob.session.user_id.clone();
    let encryption = alice.client.encryption();
    encryption.refresh_user_keys(&[&bob_id]).await.unwrap();
    encryption.get_user_identity(&bob_id).await.unwrap().expect("bob's identity").verify().await.unwrap();
    alice.client.get_room(&room).unwrap().send_text("bob is verified").await.expect("sent");

    bob.client.encryption().bootstrap_cross_signing_with_password(true, "password").await.expect("bob resets");
    encryption.refresh_user_keys(&[&bob_id]).await.unwrap();
    let refused = alice.client.get_room(&room).unwrap().send_text("to bob's new identity?").await;
    let Err(ClientError::VerifiedUserProblem { changed, room_id, .. }) = refused else {
        panic!("sending was not blocked: {refused:?}")
    };
    assert_eq!((changed, room_id), (vec![bob_id.clone()], room.to_string()));
    let again = alice.client.get_room(&room).unwrap().send_text("still blocked").await;
    assert!(matches!(again, Err(ClientError::VerifiedUserProblem { .. })), "{again:?}");

    encryption.get_user_identity(&bob_id).await.unwrap().expect("identity").withdraw_verification().await.unwrap();
    alice.client.get_room(&room).unwrap().send_text("after withdrawing").await.expect("sending works again");
}

/// A room's own settings are saved: after a restart the room keeps its
/// override (legacy: every device gets keys) and the client its default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_rooms_trust_override_holds_across_a_restart() {
    let (alice, _) = set_up_user("alice", "A1").await;
    let (bob1, _) = set_up_user("bob", "B1").await;
    let (bob_name, _) = bob1.credentials.clone();
    let bob2 = login(&bob_name, "B2").await;
    bob2.sync().await;
    let room = room_with(&alice, &bob1).await;
    let handle = alice.client.get_room(&room).unwrap();
    assert_eq!(handle.trust_settings(), TrustSettings::recommended());
    handle.set_trust_settings(Some(TrustSettings::legacy())).await.unwrap();
    drop(handle);

    let alice = alice.restart().await;
    let handle = alice.client.get_room(&room).unwrap();
    assert_eq!(handle.trust_override(), Some(TrustSettings::legacy()), "the override was saved");
    assert_eq!(alice.client.trust_settings(), TrustSettings::recommended(), "the client default stays");
    alice.client.encryption().refresh_user_keys(&[&bob1.session.user_id]).await.unwrap();
    let id = handle.send_text("legacy room: every device").await.unwrap().event_id;
    bob2.sync_with_history_until(&room, "the message", |c| matches!(outcome(c, &room, &id), Some(Ok(_)))).await;
}
