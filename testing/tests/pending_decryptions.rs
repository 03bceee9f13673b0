//! The engine heals undecryptable events by itself, driven as an embedder
//! of hush-crypto-core drives it (no hush-client): the drive loop of
//! [`TestDevice::drain`] only runs due timers (`poll_timeout` /
//! `handle_timeout`), sends each queued request to the in-process server
//! and hands the answer back (a refusal as `mark_request_as_refused`).
//! Nothing here tells the engine what to retry, ask or look up: the late
//! decryptions come out of its event queue.

use std::sync::Arc;

use hush_crypto_core::{
    AnyOutgoingRequest, CryptoStore, EncryptionSettings, EngineEvent, KeySource, LateDecryption, MegolmError,
    MemoryStore, RequestRefusal,
    backup::{BACKUP_ALGORITHM, BackupDisabledReason},
};
use hush_testing::{
    TestDevice, TestServer, VirtualClock,
    own_devices::{alice, first_device, second_device},
};
use ruma_common::{RoomId, room_id, user_id};
use serde_json::Value;

fn room() -> &'static RoomId {
    room_id!("!pending:e.org")
}

/// The late decryptions among the engine's events.
fn late_decryptions(device: &TestDevice) -> Vec<LateDecryption> {
    device
        .machine
        .drain_events()
        .into_iter()
        .filter_map(|event| match event {
            EngineEvent::LateDecryption(late) => Some(late),
            _ => None,
        })
        .collect()
}

fn body(late: &LateDecryption) -> String {
    let event: Value = late.decrypted.event.deserialize_as_unchecked().expect("a decrypted event");
    event["content"]["body"].as_str().unwrap_or_default().to_owned()
}

/// Bob reads Alice's message before its key reached him; his engine is
/// closed and opened again on the same store (a restart); the event still
/// waits, and once the key arrives the engine announces it once as a late
/// decryption, and it waits no more, also after the next restart.
#[tokio::test]
async fn an_undecryptable_event_waits_across_a_restart_and_is_announced_once_when_its_key_arrives() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:e.org"), "ALICE").await;
    let bob_store: Arc<dyn CryptoStore> = Arc::new(MemoryStore::new());
    let bob_id = user_id!("@bob:e.org");
    let bob = TestDevice::with_store(&server, &clock, bob_id, "BOB", bob_store.clone()).await;
    alice.share_room_key(room(), &[bob_id], &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(room(), "read before its key").await;

    let error = bob.decrypt_text(room(), &event).await.unwrap_err();
    assert!(matches!(error, MegolmError::MissingRoomKey { .. }), "{error}");
    assert_eq!(bob.machine.pending_decryption_count(), 1);
    drop(bob);

    let mut bob = TestDevice::with_store(&server, &clock, bob_id, "BOB", bob_store.clone()).await;
    assert_eq!(bob.machine.pending_decryption_count(), 1, "saved with the failed decryption's batch");
    bob.drain().await;
    assert!(late_decryptions(&bob).is_empty(), "retried after the restart, still without its key");

    bob.sync().await; // the room key arrives; the drive loop heals
    let late = late_decryptions(&bob);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!((late[0].room_id.as_ref(), late[0].event_id.as_str()), (room(), event["event_id"].as_str().unwrap()));
    assert_eq!(body(&late[0]), "read before its key");
    assert!(late[0].decrypted.was_waiting);
    assert_eq!(bob.machine.pending_decryption_count(), 0);
    bob.drain().await;
    assert!(late_decryptions(&bob).is_empty(), "announced once");
    drop(bob);

    let bob = TestDevice::with_store(&server, &clock, bob_id, "BOB", bob_store).await;
    assert_eq!(bob.machine.pending_decryption_count(), 0, "the healing was saved too");
}

/// A new device of Alice's that holds the backup key (as after recovery)
/// cannot read a message sent before it existed; its drive loop alone reads
/// the backup's version, looks the key up and announces the message as a
/// late decryption from a key marked as restored from the backup.
#[tokio::test]
async fn an_embedder_heals_a_message_from_the_backup_with_only_its_drive_loop() {
    let (server, clock, mut first, backup_key) = first_device().await;
    let backup = server.latest_backup(alice()).expect("a backup");
    first.machine.enable_backup(&backup).await.expect("backup enabled");
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:e.org"), "BOB").await;
    bob.share_room_key(room(), &[alice()], &EncryptionSettings::default()).await;
    let event = bob.encrypt_text(room(), "kept in the backup").await;
    first.sync().await; // the key arrives and is uploaded to the backup
    assert_eq!(server.backup_keys(alice(), &backup.version).len(), 1, "uploaded");

    let second = second_device(&server, &clock, &first, false).await;
    second.machine.save_backup_decryption_key(&backup_key).await.expect("key saved");
    second.machine.enable_backup(&backup).await.expect("backup enabled");
    second.decrypt_text(room(), &event).await.unwrap_err();
    assert_eq!(second.machine.pending_decryption_count(), 1);

    second.drain().await;
    let late = late_decryptions(&second);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(body(&late[0]), "kept in the backup");
    assert_eq!(late[0].decrypted.info.key_source, KeySource::Backup);
    assert_eq!(second.machine.pending_decryption_count(), 0);
}

/// A new device of Alice's, verified by her first device, cannot read a
/// message sent before it existed and no backup has it; its drive loop
/// alone asks the first device, whose drive loop answers, and the message
/// is announced as a late decryption from a forwarded key.
#[tokio::test]
async fn an_embedder_heals_a_message_from_another_own_device_with_only_its_drive_loop() {
    let (server, clock, mut first, _) = first_device().await;
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:e.org"), "BOB").await;
    bob.share_room_key(room(), &[alice()], &EncryptionSettings::default()).await;
    let event = bob.encrypt_text(room(), "forwarded by my first device").await;
    first.sync().await;

    let mut second = second_device(&server, &clock, &first, true).await;
    second.decrypt_text(room(), &event).await.unwrap_err();
    second.drain().await; // asks ALICE1
    assert_eq!(second.machine.open_gossip_requests().len(), 1, "one request for the missing key");
    first.sync().await; // ALICE1 answers
    second.sync().await; // the forwarded key arrives; the drive loop heals
    let late = late_decryptions(&second);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(body(&late[0]), "forwarded by my first device");
    assert_eq!(late[0].decrypted.info.key_source, KeySource::Forwarded);
}

/// The engine asks our other devices for a waiting event's key only when
/// we have another device (at once when one appears), once while the
/// request is open.
#[tokio::test]
async fn a_missing_key_is_asked_of_our_other_devices_once() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:e.org"), "ALICE").await;
    let bob_id = user_id!("@bob:e.org");
    let bob = TestDevice::new(&server, &clock, bob_id, "BOB").await;
    alice.share_room_key(room(), &[bob_id], &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(room(), "asked for").await;
    bob.decrypt_text(room(), &event).await.unwrap_err();
    bob.refresh_keys(&[bob_id]).await;
    assert!(bob.machine.open_gossip_requests().is_empty(), "no other device to ask");

    let _laptop = TestDevice::new(&server, &clock, bob_id, "BOBLAPTOP").await;
    bob.refresh_keys(&[bob_id]).await;
    assert_eq!(bob.machine.open_gossip_requests().len(), 1, "asked once a device of ours appeared");
    bob.drain().await;
    let open = bob.machine.open_gossip_requests();
    assert_eq!(open.len(), 1, "the request is open: {open:?}");
}

/// The server loses the backup version we upload to (deleted by another
/// client): the next upload is refused, the engine reads the current
/// version, finds none and stops uploading, announcing why.
#[tokio::test]
async fn a_deleted_backup_version_is_disabled_on_the_servers_word() {
    let (server, clock, mut first, _) = first_device().await;
    let backup = server.latest_backup(alice()).expect("a backup");
    first.machine.enable_backup(&backup).await.expect("backup enabled");
    first.drain().await;
    first.machine.drain_events();
    server.delete_backup_version(alice(), &backup.version);
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:e.org"), "BOB").await;
    bob.share_room_key(room(), &[alice()], &EncryptionSettings::default()).await;
    first.sync().await; // a key to upload; the upload is refused
    assert_eq!(first.machine.backup_version(), None, "the backup is disabled");
    let events = first.machine.drain_events();
    assert!(
        events.iter().any(|e| matches!(e, EngineEvent::BackupDisabled { version, .. } if *version == backup.version)),
        "{events:?}"
    );
}

/// The server refuses an upload with 404 `M_NOT_FOUND` while it still
/// lists our version (a proxy, a server bug): the engine reads the version
/// and keeps the backup, instead of disabling it on one refusal.
#[tokio::test]
async fn an_upload_refused_while_the_version_is_current_keeps_the_backup() {
    let (server, clock, first, _) = first_device().await;
    let backup = server.latest_backup(alice()).expect("a backup");
    first.machine.enable_backup(&backup).await.expect("backup enabled");
    first.drain().await;
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:e.org"), "BOB").await;
    bob.share_room_key(room(), &[alice()], &EncryptionSettings::default()).await;
    let changes = server.sync(&first.user_id, &first.device_id, "b1".to_owned());
    first.machine.receive_sync_changes(changes, clock.now()).await.expect("sync");
    let requests = first.machine.outgoing_requests(clock.now()).await.expect("requests");
    let upload = requests.iter().find(|r| matches!(r.request(), AnyOutgoingRequest::KeysBackup(_))).expect("an upload");
    first.machine.mark_request_as_refused(upload.request_id(), RequestRefusal::NotFound, clock.now()).await.unwrap();
    first.drain().await; // reads the version: still ours
    assert_eq!(first.machine.backup_version(), Some(backup.version.clone()), "kept");
    assert!(!first.machine.drain_events().iter().any(|e| matches!(e, EngineEvent::BackupDisabled { .. })));
    assert_eq!(first.machine.backup_pending_count().await.unwrap(), 1, "the key stays queued");
}

/// Another client replaced the backup: the next upload is refused as not
/// the current version, and the engine disables the backup, saying which
/// version replaced it.
#[tokio::test]
async fn a_replaced_backup_version_is_disabled_naming_the_new_one() {
    let (server, clock, mut first, _) = first_device().await;
    let backup = server.latest_backup(alice()).expect("a backup");
    first.machine.enable_backup(&backup).await.expect("backup enabled");
    first.drain().await;
    first.machine.drain_events();
    let newer = server.create_backup_version(alice(), BACKUP_ALGORITHM, serde_json::json!({"public_key": "x"}));
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:e.org"), "BOB").await;
    bob.share_room_key(room(), &[alice()], &EncryptionSettings::default()).await;
    first.sync().await;
    assert_eq!(first.machine.backup_version(), None);
    let reason = first.machine.drain_events().into_iter().find_map(|e| match e {
        EngineEvent::BackupDisabled { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(reason, Some(BackupDisabledReason::Replaced { current: newer }));
}
