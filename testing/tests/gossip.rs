//! Sharing secrets and room keys between one's own devices, through the
//! engine on the in-process server: `m.secret.request` / `m.secret.send` and
//! `m.room_key_request` / `m.forwarded_room_key`. Answers go only to our
//! own verified devices; answers are taken only from them, over Olm, for a
//! request we have open, and only if they match their public part. The
//! attacks on these rules are in the attacks suite (`attacks/key_sharing.rs`).

use std::sync::Arc;

use hush_crypto_core::{EncryptionSettings, EngineEvent, KeySource, VerificationState, gossip::GossipKind};
use hush_testing::{
    TestDevice, TestServer, VirtualClock,
    own_devices::{alice, ask_for_all_secrets, first_device, second_device, two_devices},
    stores::Encryption,
};
use ruma_common::{room_id, user_id};

#[tokio::test]
async fn a_verified_own_device_gets_the_cross_signing_keys_and_the_backup_key_by_gossip() {
    let (server, _clock, mut first, mut second, backup_key) = two_devices(true).await;
    assert!(!second.machine.cross_signing_status().has_master);
    ask_for_all_secrets(&server, &mut first, &mut second).await;

    assert!(second.machine.cross_signing_status().is_complete(), "{:?}", second.machine.cross_signing_status());
    let held = second.machine.backup_decryption_key().await.unwrap().expect("backup key received");
    assert_eq!(held.public_key(), backup_key.public_key());
    let received: Vec<String> = second
        .machine
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::SecretReceived { name } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(second.machine.open_gossip_requests().is_empty(), "every request closed");
    // Our identity is now trusted here, so our contacts' view follows.
    let identity = second.machine.get_identity(alice()).await.unwrap().expect("identity");
    assert!(identity.is_verified());
}

/// Bob's room key reached only ALICE1. ALICE2, verified, asks for it and
/// gets it forwarded; the message decrypts, marked as forwarded and not
/// authenticated (the sender's keys are only claimed by the forwarder).
#[tokio::test]
async fn a_room_key_is_forwarded_to_our_verified_device_that_asks_and_marked_forwarded() {
    let (server, clock, mut first, _) = first_device().await;
    let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    bob.sync().await;
    let room = room_id!("!history:example.org");
    // Shared before ALICE2 existed.
    bob.share_room_key(room, &[alice()], &EncryptionSettings::default()).await;
    let event = bob.encrypt_text(room, "before ALICE2 had the key").await;
    first.sync().await;
    assert_eq!(first.decrypt_text(room, &event).await.unwrap(), "before ALICE2 had the key");
    let mut second = second_device(&server, &clock, &first, true).await;
    second.sync().await;
    assert!(second.decrypt_text(room, &event).await.is_err());

    let session_id = event["content"]["session_id"].as_str().unwrap();
    second.machine.request_room_key(room, session_id).await.unwrap().expect("a request");
    assert!(second.machine.request_room_key(room, session_id).await.unwrap().is_none(), "one open request per key");
    second.drain().await;
    first.sync().await;
    first.drain().await;
    let output = second.sync().await;
    assert_eq!(output.room_keys.len(), 1);
    assert_eq!(second.decrypt_text(room, &event).await.unwrap(), "before ALICE2 had the key");
    second.refresh_keys(&[&bob.user_id]).await;
    let raw = ruma_common::serde::Raw::new(&event).unwrap();
    let info = second.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Forwarded);
    assert_eq!(info.verification_state, VerificationState::UnauthenticatedSource);
    assert!(second.machine.open_gossip_requests().is_empty());
}

/// Requests stay open across a restart and are all sent again after it: one
/// opened just before a crash was never sent, and an answer to one that was
/// sent may have been lost with the crash.
#[tokio::test]
async fn open_requests_survive_a_restart_and_are_sent_again_then() {
    use hush_testing::conformance::StoreFactory;
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let owner = user_id!("@owner:example.org");
    let mut stores = hush_testing::stores::RedbFactory::new(Encryption::RawKey);
    let device = TestDevice::with_store(&server, &clock, owner, "OWNER", Arc::new(stores.create())).await;
    let room = room_id!("!r:example.org");
    device.machine.request_room_key(room, "sent-session").await.unwrap();
    device.drain().await;
    device.machine.request_room_key(room, "unsent-session").await.unwrap();
    drop(device);

    let store = Arc::new(stores.reopen().unwrap());
    let machine = hush_crypto_core::OlmMachine::open(owner, "OWNER".into(), store, clock.now()).await.unwrap();
    let open = machine.open_gossip_requests();
    assert_eq!(open.len(), 2);
    assert!(open.iter().any(|r| r.sent && r.kind == kind(room, "sent-session")));
    assert!(open.iter().any(|r| !r.sent && r.kind == kind(room, "unsent-session")));
    let requests = machine.outgoing_requests(clock.now()).await.unwrap();
    let bodies: Vec<String> = requests
        .iter()
        .filter_map(|r| match r.request() {
            hush_crypto_core::AnyOutgoingRequest::ToDevice(to_device) => {
                Some(serde_json::to_string(&to_device.messages).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), 2, "both requests are sent again");
    assert!(bodies.iter().any(|b| b.contains("unsent-session")) && bodies.iter().any(|b| b.contains("sent-session\"")));
    assert!(machine.outgoing_requests(clock.now()).await.unwrap().len() == 2, "once per start, not per call");
}

fn kind(room: &ruma_common::RoomId, session_id: &str) -> GossipKind {
    GossipKind::RoomKey { room_id: room.to_owned(), session_id: session_id.to_owned() }
}

/// A backup-key request pins the backup public key its answer must match;
/// asking for another backup's key replaces it (a stale or server-made
/// backup must not block the request for the real one forever).
#[tokio::test]
async fn a_backup_key_request_for_another_backup_replaces_the_open_one() {
    let (server, _clock, _first, second, _) = two_devices(true).await;
    let stale = server.latest_backup(alice()).unwrap();
    second.machine.request_backup_key(&stale).await.unwrap().expect("opened");
    assert!(second.machine.request_backup_key(&stale).await.unwrap().is_none(), "the same backup: already open");
    let other = hush_crypto_core::backup::BackupDecryptionKey::generate().unwrap();
    server.create_backup_version(
        alice(),
        hush_crypto_core::backup::BACKUP_ALGORITHM,
        serde_json::json!({ "public_key": other.public_key().to_base64() }),
    );
    let current = server.latest_backup(alice()).unwrap();
    second.machine.request_backup_key(&current).await.unwrap().expect("replaced");
    let open = second.machine.open_gossip_requests();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].expected_public_key, Some(other.public_key().to_base64()));
}

/// Requests come in the clear and name their device: a flood of them in one
/// sync (here 40) from one device gets at most 32 answers (its share of the
/// sync's budget, see `gossip::budget`).
#[tokio::test]
async fn a_flood_of_requests_in_one_sync_gets_a_bounded_number_of_answers() {
    let (_server, _clock, mut first, mut second, _) = two_devices(true).await;
    // 40 sessions of ALICE1's own in 40 rooms, each asked for by ALICE2
    // (which has them too: ALICE1 answers all the same).
    for n in 0..40 {
        let room = ruma_common::RoomId::parse(format!("!r{n}:example.org")).unwrap();
        first.share_room_key(&room, &[alice()], &EncryptionSettings::default()).await;
        second.machine.request_room_key(&room, &own_session_id(&first, &room).await).await.unwrap();
    }
    second.drain().await;
    second.sync().await;
    first.sync().await;
    first.drain().await;
    let output = second.sync().await;
    let forwarded = hush_testing::decrypted(&output).iter().filter(|(_, t, _)| t == "m.forwarded_room_key").count();
    assert_eq!(forwarded, 32, "at most 32 answers per sync");
}

async fn own_session_id(device: &TestDevice, room: &ruma_common::RoomId) -> String {
    let keys = device.machine.export_room_keys(|k| k.room_id == *room).await.unwrap();
    keys[0].session_id.clone()
}
