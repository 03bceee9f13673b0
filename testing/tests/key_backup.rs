//! Server-side key backup through the engine, on the in-process server:
//! keys are queued in the batch that stores them and uploaded as they
//! arrive, a crash between the two loses nothing, a new device restores
//! history, and only a trusted backup is uploaded to. Restored keys are
//! never taken as authenticated, and never replace a better key.

use std::sync::Arc;

use hush_crypto_core::{
    BackupError, EncryptionSettings, KeySource, MegolmError,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey, BackupInfo, BackupTrust},
};
use hush_testing::{TestDevice, TestServer, VirtualClock, stores::Encryption};
use ruma_common::{OwnedRoomId, room_id, user_id};
use serde_json::json;

/// Creates a backup on the server signed by `device`, with its private key
/// saved on `device`.
async fn create_backup(device: &TestDevice) -> (BackupDecryptionKey, BackupInfo) {
    let key = BackupDecryptionKey::generate().unwrap();
    let auth_data = device.machine.backup_auth_data(&key.public_key()).await.unwrap();
    device.server().create_backup_version(&device.user_id, BACKUP_ALGORITHM, auth_data);
    (key, device.server().latest_backup(&device.user_id).unwrap())
}

fn backed_up_count(server: &TestServer, user: &ruma_common::UserId, version: &str) -> usize {
    server.backup_keys(user, version).values().map(|r| r.sessions.len()).sum()
}

/// A backup entry the server writes itself (it knows the public key): a
/// session key claiming to be from `sender` (curve25519, ed25519 base64).
fn forged_entry(
    key: &BackupDecryptionKey,
    algorithm: &str,
    session_key: String,
    (sender_key, ed25519): (String, String),
) -> serde_json::Value {
    let plaintext = hush_crypto_core::backup::BackedUpRoomKey {
        algorithm: algorithm.to_owned(),
        forwarding_curve25519_key_chain: Vec::new(),
        sender_claimed_keys: [("ed25519".to_owned(), ed25519)].into(),
        sender_key,
        session_key: session_key.into(),
        shared_history: false,
    };
    let entry = hush_crypto_core::backup::KeyBackupData {
        first_message_index: 0,
        forwarded_count: 0,
        is_verified: true,
        session_data: key.public_key().encrypt(&plaintext).unwrap(),
    };
    serde_json::to_value(&entry).unwrap()
}

async fn alice_and_bob() -> (Arc<TestServer>, VirtualClock, TestDevice, TestDevice) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    bob.sync().await;
    (server, clock, alice, bob)
}

#[tokio::test]
async fn received_room_keys_are_uploaded_and_a_new_device_restores_them() {
    let (server, clock, mut alice, bob) = alice_and_bob().await;
    let (key, info) = create_backup(&alice).await;
    assert_eq!(alice.machine.enable_backup(&info).await.unwrap(), BackupTrust::SignedByThisDevice);
    let room = room_id!("!history:example.org");
    bob.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    let old = bob.encrypt_text(room, "before the new login").await;
    alice.sync().await;
    alice.drain().await;
    assert_eq!(backed_up_count(&server, &alice.user_id, &info.version), 1);
    assert_eq!(alice.machine.backup_pending_count().await.unwrap(), 0);

    // A new device of Alice's with the backup key (as recovery gives it).
    let fresh = TestDevice::new(&server, &clock, &alice.user_id, "ALICE2").await;
    assert!(matches!(fresh.decrypt_text(room, &old).await, Err(MegolmError::MissingRoomKey { .. })));
    assert_eq!(fresh.machine.backup_trust(&info).await.unwrap(), BackupTrust::Untrusted);
    fresh
        .machine
        .save_backup_decryption_key(&BackupDecryptionKey::from_base64(&key.to_base64()).unwrap())
        .await
        .unwrap();
    assert_eq!(fresh.machine.backup_trust(&info).await.unwrap(), BackupTrust::PrivateKeyHeld);
    let mut progress = Vec::new();
    let rooms = server.backup_keys(&alice.user_id, &info.version);
    let result = fresh.machine.import_backed_up_room_keys(&key, &rooms, |d, t| progress.push((d, t))).await.unwrap();
    assert_eq!((result.imported_count, result.total_count, result.invalid_count), (1, 1, 0));
    assert_eq!(progress.last(), Some(&(1, 1)));
    assert_eq!(fresh.decrypt_text(room, &old).await.unwrap(), "before the new login");
    let raw = ruma_common::serde::Raw::new(&old).unwrap();
    let info = fresh.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Backup);
    assert!(!info.key_source.is_authenticated());
}

#[tokio::test]
async fn our_own_room_keys_are_backed_up_too() {
    let (server, _clock, alice, bob) = alice_and_bob().await;
    let (_key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    let room = room_id!("!own:example.org");
    alice.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    alice.drain().await;
    assert_eq!(backed_up_count(&server, &alice.user_id, &info.version), 1);
}

#[tokio::test]
async fn enabling_a_backup_queues_every_key_already_held_and_uploads_in_batches() {
    let (server, _clock, alice, _bob) = alice_and_bob().await;
    let rooms: Vec<OwnedRoomId> = (0..250).map(|i| format!("!r{i}:example.org").try_into().unwrap()).collect();
    for room in &rooms {
        alice.share_room_key(room, &[&alice.user_id], &EncryptionSettings::default()).await;
    }
    let (_key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    assert_eq!(alice.machine.backup_pending_count().await.unwrap(), 250);
    // One upload at a time, 100 keys each.
    let listed = alice.machine.outgoing_requests(Default::default()).await.unwrap();
    let uploads: Vec<_> = listed
        .iter()
        .filter_map(|r| match r.request() {
            hush_crypto_core::AnyOutgoingRequest::KeysBackup(upload) => Some(upload),
            _ => None,
        })
        .collect();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].rooms.values().map(|r| r.sessions.len()).sum::<usize>(), 100);
    alice.drain().await;
    assert_eq!(backed_up_count(&server, &alice.user_id, &info.version), 250);
    assert_eq!(alice.machine.backup_pending_count().await.unwrap(), 0);
}

/// A key received just before a crash (the sync saved, the upload never
/// sent) is uploaded after the restart: the queue entry was saved in the
/// same batch as the key.
#[tokio::test]
async fn a_key_received_before_a_crash_is_uploaded_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice_id = user_id!("@alice:example.org");
    let open =
        || Arc::new(hush_store_redb::open(&path, alice_id, "ALICE1".into(), Encryption::Passphrase.options()).unwrap());
    let alice = TestDevice::with_store(&server, &clock, alice_id, "ALICE1", open()).await;
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    let (_key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    let room = room_id!("!crash:example.org");
    bob.share_room_key(room, &[alice_id], &EncryptionSettings::default()).await;
    // The sync is processed and saved; the device "dies" before sending
    // anything (the test never drains it).
    let mut sync = server.sync(alice_id, &alice.device_id, "s1".into());
    sync.next_batch_token = Some("s1".into());
    alice.machine.receive_sync_changes(sync, clock.now()).await.unwrap();
    assert_eq!(backed_up_count(&server, alice_id, &info.version), 0, "nothing was uploaded before the crash");
    drop(alice);

    let alice = TestDevice::with_store(&server, &clock, alice_id, "ALICE1", open()).await;
    assert_eq!(alice.machine.backup_version().as_deref(), Some(info.version.as_str()));
    alice.drain().await;
    assert_eq!(backed_up_count(&server, alice_id, &info.version), 1);
}

/// Attack: the homeserver publishes a backup version of its own (its
/// public key, no signature we trust), hoping the client uploads every room
/// key encrypted to a key the server holds.
#[tokio::test]
async fn a_backup_the_server_made_is_not_uploaded_to() {
    let (server, _clock, alice, _bob) = alice_and_bob().await;
    let rogue = BackupDecryptionKey::generate().unwrap();
    let version = server.create_backup_version(
        &alice.user_id,
        BACKUP_ALGORITHM,
        json!({ "public_key": rogue.public_key().to_base64() }),
    );
    let info = server.latest_backup(&alice.user_id).unwrap();
    assert_eq!(alice.machine.backup_trust(&info).await.unwrap(), BackupTrust::Untrusted);
    assert_eq!(alice.machine.enable_backup(&info).await.unwrap_err(), BackupError::Untrusted(version));
    assert_eq!(alice.machine.backup_version(), None);
    assert_eq!(alice.machine.backup_pending_count().await.unwrap(), 0);
}

/// Attack: the server copies a signature of ours from another object, or
/// signs with a key of another user's or of an unverified device of ours.
#[tokio::test]
async fn signatures_that_do_not_cover_the_backup_or_come_from_untrusted_keys_do_not_count() {
    let (server, clock, alice, bob) = alice_and_bob().await;
    let (_key, genuine) = create_backup(&alice).await;
    // Alice's signature, moved onto another public key.
    let other = BackupDecryptionKey::generate().unwrap();
    let mut moved = genuine.auth_data.clone();
    moved["public_key"] = json!(other.public_key().to_base64());
    server.create_backup_version(&alice.user_id, BACKUP_ALGORITHM, moved);
    let info = server.latest_backup(&alice.user_id).unwrap();
    assert_eq!(alice.machine.backup_trust(&info).await.unwrap(), BackupTrust::Untrusted);
    // Signed by Bob's device (another user) for Alice's backup.
    let by_bob = bob.machine.backup_auth_data(&other.public_key()).await.unwrap();
    server.create_backup_version(&alice.user_id, BACKUP_ALGORITHM, by_bob);
    let info = server.latest_backup(&alice.user_id).unwrap();
    assert_eq!(alice.machine.backup_trust(&info).await.unwrap(), BackupTrust::Untrusted);
    // Signed by another device of Alice's that she has not verified.
    let second = TestDevice::new(&server, &clock, &alice.user_id, "ALICE2").await;
    alice.refresh_keys(&[&alice.user_id]).await;
    let by_unverified = second.machine.backup_auth_data(&other.public_key()).await.unwrap();
    server.create_backup_version(&alice.user_id, BACKUP_ALGORITHM, by_unverified);
    let info = server.latest_backup(&alice.user_id).unwrap();
    assert_eq!(alice.machine.backup_trust(&info).await.unwrap(), BackupTrust::Untrusted);
}

#[tokio::test]
async fn a_backup_signed_by_our_trusted_master_key_or_a_verified_device_is_trusted() {
    let (server, clock, alice, _bob) = alice_and_bob().await;
    alice.bootstrap_cross_signing(false).await;
    let second = TestDevice::new(&server, &clock, &alice.user_id, "ALICE2").await;
    // A backup made on ALICE1 carries her master key's signature: ALICE2
    // trusts it once it trusts the master key (here: by importing it).
    let (_key, info) = create_backup(&alice).await;
    second.refresh_keys(&[&alice.user_id]).await;
    assert_eq!(second.machine.backup_trust(&info).await.unwrap(), BackupTrust::Untrusted);
    let keys = alice.machine.export_cross_signing_keys().unwrap();
    second.machine.import_cross_signing_keys(&keys).await.unwrap();
    assert_eq!(second.machine.backup_trust(&info).await.unwrap(), BackupTrust::SignedByMasterKey);

    // A backup signed by ALICE2 only: trusted by ALICE1 once ALICE1 sees
    // ALICE2 cross-signed by her (trusted) identity.
    let other = BackupDecryptionKey::generate().unwrap();
    // ALICE2 holds the master key now too: keep its device signature only.
    let mut unsigned_by_master = second.machine.backup_auth_data(&other.public_key()).await.unwrap();
    if let Some(signatures) = unsigned_by_master["signatures"][alice.user_id.as_str()].as_object_mut() {
        signatures.retain(|key_id, _| key_id == "ed25519:ALICE2");
    }
    assert_eq!(unsigned_by_master["signatures"][alice.user_id.as_str()].as_object().map(|s| s.len()), Some(1));
    server.create_backup_version(&alice.user_id, BACKUP_ALGORITHM, unsigned_by_master);
    let info = server.latest_backup(&alice.user_id).unwrap();
    second.drain().await;
    alice.refresh_keys(&[&alice.user_id]).await;
    assert_eq!(alice.machine.backup_trust(&info).await.unwrap(), BackupTrust::SignedByVerifiedDevice("ALICE2".into()));
}

/// Attack: the server, which knows the backup's public key, adds an entry
/// of its own (a room key it made, claiming to be Bob's device) to the
/// user's trusted backup. Restored, it decrypts what the server wrote but
/// is never reported as authenticated; and it cannot replace Bob's real
/// key received over Olm.
#[tokio::test]
async fn a_key_the_server_adds_to_a_trusted_backup_is_never_authenticated_nor_replaces_a_real_key() {
    let (server, _clock, mut alice, bob) = alice_and_bob().await;
    let (key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    let room = room_id!("!target:example.org");
    bob.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    let genuine = bob.encrypt_text(room, "genuine").await;
    alice.sync().await;
    alice.drain().await;

    // Here the server forges a new session claiming Bob's device keys (a
    // forgery under Bob's real session id is the next test).
    let forger = TestDevice::new(&server, &VirtualClock::default(), user_id!("@mallory:example.org"), "M").await;
    forger.share_room_key(room, &[&forger.user_id], &EncryptionSettings::default()).await;
    let forged_event = forger.encrypt_text(room, "forged").await;
    let mut forged_key = forger.machine.export_room_keys(|_| true).await.unwrap().remove(0);
    let (bob_ed, bob_curve) = bob.machine.identity_keys();
    forged_key.sender_key = bob_curve.to_base64();
    forged_key.sender_claimed_keys.insert("ed25519".into(), bob_ed.to_base64());
    let entry = forged_entry(
        &key,
        &forged_key.algorithm,
        forged_key.session_key.clone(),
        (forged_key.sender_key.clone(), bob_ed.to_base64()),
    );
    server.overwrite_backup_key(&alice.user_id, &info.version, &room.to_owned(), &forged_key.session_id, entry.clone());

    // Alice knows Bob's device, so the claimed keys name a real device.
    alice.refresh_keys(&[&bob.user_id]).await;
    let rooms = server.backup_keys(&alice.user_id, &info.version);
    let result = alice.machine.import_backed_up_room_keys(&key, &rooms, |_, _| {}).await.unwrap();
    assert_eq!(result.total_count, 2);
    // Bob's real key is held from Olm: the backup copy does not replace it.
    let raw = ruma_common::serde::Raw::new(&genuine).unwrap();
    let genuine_info = alice.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap().info;
    assert_eq!(genuine_info.key_source, KeySource::Olm);
    // The forged event decrypts, but as unauthenticated backup content.
    let mut forged_as_bob = forged_event.clone();
    forged_as_bob["sender"] = json!(bob.user_id);
    let raw = ruma_common::serde::Raw::new(&forged_as_bob).unwrap();
    let decrypted = alice.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap();
    assert_eq!(decrypted.info.key_source, KeySource::Backup);
    assert!(!decrypted.info.key_source.is_authenticated());
    assert_eq!(decrypted.info.verification_state, hush_crypto_core::VerificationState::UnauthenticatedSource);
}

/// Attack: session ids are public (the session's signing key), so the
/// server, which knows the backup's public key, files an entry of its own
/// under the id of Bob's real session before Bob's key reaches Alice's new
/// device: the right signing key with a ratchet of its own, claiming Bob's
/// device. Restored first, it must not make Bob's real key over Olm look
/// "unconnected" and be refused: the real key displaces the forgery and the
/// message decrypts, authenticated.
#[tokio::test]
async fn a_forged_backup_entry_under_a_real_session_id_does_not_block_the_real_key() {
    let (server, _clock, mut alice, bob) = alice_and_bob().await;
    let (key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    let room = room_id!("!target:example.org");
    // Bob's session exists, but Alice has not been given it yet.
    bob.share_room_key(room, &[&bob.user_id], &EncryptionSettings::default()).await;
    let genuine = bob.encrypt_text(room, "genuine").await;
    let session_id = genuine["content"]["session_id"].as_str().unwrap().to_owned();

    // An exported key is version(1) | index(4) | ratchet(128) | signing key(32).
    let forger = TestDevice::new(&server, &VirtualClock::default(), user_id!("@mallory:example.org"), "M").await;
    forger.share_room_key(room, &[&forger.user_id], &EncryptionSettings::default()).await;
    let own = forger.machine.export_room_keys(|_| true).await.unwrap().remove(0);
    let mut bytes = vodozemac::base64_decode(&own.session_key).unwrap();
    let signing_key = vodozemac::base64_decode(&session_id).unwrap();
    assert_eq!((bytes.len(), signing_key.len()), (165, 32));
    bytes[133..].copy_from_slice(&signing_key);
    let (bob_ed, bob_curve) = bob.machine.identity_keys();
    let entry = forged_entry(
        &key,
        &own.algorithm,
        vodozemac::base64_encode(&bytes),
        (bob_curve.to_base64(), bob_ed.to_base64()),
    );
    server.overwrite_backup_key(&alice.user_id, &info.version, &room.to_owned(), &session_id, entry.clone());
    let rooms = server.backup_keys(&alice.user_id, &info.version);
    let result = alice.machine.import_backed_up_room_keys(&key, &rooms, |_, _| {}).await.unwrap();
    assert_eq!(result.imported_count, 1, "the forgery is taken while nothing better is known");
    // Its ratchet is not Bob's: the real event does not decrypt with it.
    assert!(alice.decrypt_text(room, &genuine).await.is_err());

    // Bob's real key arrives over Olm and displaces the forgery.
    bob.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    let later = bob.encrypt_text(room, "after the share").await;
    assert_eq!(later["content"]["session_id"], genuine["content"]["session_id"]);
    alice.sync().await;
    assert_eq!(alice.decrypt_text(room, &later).await.unwrap(), "after the share");
    let raw = ruma_common::serde::Raw::new(&later).unwrap();
    let decrypted = alice.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap();
    assert_eq!(decrypted.info.key_source, KeySource::Olm);
}

/// An entry that is not for our backup key (another key encrypted it, or
/// its bytes were changed) fails its check, is counted, and stores nothing.
#[tokio::test]
async fn an_entry_that_fails_its_check_is_counted_and_stores_nothing() {
    let (server, clock, alice, bob) = alice_and_bob().await;
    let (key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    let room = room_id!("!tamper:example.org");
    alice.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    alice.drain().await;
    let mut rooms = server.backup_keys(&alice.user_id, &info.version);
    let session_id = rooms[room].sessions.keys().next().unwrap().clone();
    let mut entry: serde_json::Value = rooms[room].sessions[&session_id].deserialize_as_unchecked().unwrap();
    entry["session_data"]["mac"] = json!("AAAAAAAAAAA");
    rooms
        .get_mut(room)
        .unwrap()
        .sessions
        .insert(session_id, ruma_common::serde::Raw::new(&entry).unwrap().cast_unchecked());
    let fresh = TestDevice::new(&server, &clock, &alice.user_id, "ALICE3").await;
    let result = fresh.machine.import_backed_up_room_keys(&key, &rooms, |_, _| {}).await.unwrap();
    assert_eq!((result.imported_count, result.invalid_count), (0, 1));
    assert_eq!(fresh.machine.store().inbound_group_session_count().await.unwrap(), 0);
    // Decrypting with the wrong backup key: every entry fails.
    let wrong = BackupDecryptionKey::generate().unwrap();
    let rooms = server.backup_keys(&alice.user_id, &info.version);
    let result = fresh.machine.import_backed_up_room_keys(&wrong, &rooms, |_, _| {}).await.unwrap();
    assert_eq!((result.imported_count, result.invalid_count), (0, 1));
}

/// The server replaced the backup version: the upload is refused with
/// `M_WRONG_ROOM_KEYS_VERSION`, the backup is disabled, and nothing more
/// is sent to the old version.
#[tokio::test]
async fn a_replaced_backup_version_disables_the_backup() {
    let (server, _clock, alice, bob) = alice_and_bob().await;
    let (_key, info) = create_backup(&alice).await;
    alice.machine.enable_backup(&info).await.unwrap();
    let (_other, _newer) = create_backup(&alice).await;
    let room = room_id!("!replaced:example.org");
    alice.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    alice.drain().await;
    assert_eq!(alice.machine.backup_version(), None);
    assert_eq!(alice.machine.backup_pending_count().await.unwrap(), 0);
    assert_eq!(backed_up_count(&server, &alice.user_id, &info.version), 0);
    assert_eq!(backed_up_count(&server, &alice.user_id, &_newer.version), 0, "an untrusted new version gets nothing");
}
