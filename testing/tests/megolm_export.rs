//! Key export and import through the machine: a fresh device reads history
//! from a file; imports never downgrade a key; bad files import nothing.

use std::io::Cursor;
use std::sync::Arc;

use hush_crypto_core::{
    EncryptionSettings, ImportError, KeySource, MegolmError, MemoryStore, OlmMachine,
    export::{KeyExportError, decrypt_room_key_export, encrypt_room_key_export},
};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{OwnedRoomId, room_id, user_id};

async fn alice_and_bob() -> (Arc<TestServer>, VirtualClock, TestDevice, TestDevice) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "ALICE1").await;
    let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    bob.sync().await;
    (server, clock, alice, bob)
}

#[tokio::test]
async fn a_fresh_device_reads_history_from_an_export() {
    let (server, clock, alice, mut bob) = alice_and_bob().await;
    let room = room_id!("!history:example.org");
    alice.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    let old = alice.encrypt_text(room, "old message").await;
    bob.sync().await;

    let mut file = Vec::new();
    let count = bob.machine.export_room_keys_to(&mut file, "bob's passphrase", 1000, |_| true).await.unwrap();
    assert_eq!(count, 1);

    let fresh = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB2").await;
    assert!(matches!(fresh.decrypt_text(room, &old).await, Err(MegolmError::MissingRoomKey { .. })));
    let mut progress = Vec::new();
    let result = fresh
        .machine
        .import_room_key_export(&mut Cursor::new(&file), "bob's passphrase", |done, total| progress.push((done, total)))
        .await
        .unwrap();
    assert_eq!((result.imported_count, result.total_count), (1, 1));
    assert_eq!(progress, vec![(1, 1)]);
    assert_eq!(fresh.decrypt_text(room, &old).await.unwrap(), "old message");
    let raw = ruma_common::serde::Raw::new(&old).unwrap();
    let info = fresh.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Imported);
}

#[tokio::test]
async fn imports_never_downgrade_a_key() {
    let (_server, _clock, alice, mut bob) = alice_and_bob().await;
    let room = room_id!("!r:example.org");
    alice.share_room_key(room, &[&alice.user_id, &bob.user_id], &EncryptionSettings::default()).await;
    let first = alice.encrypt_text(room, "first").await;
    bob.sync().await;
    // Alice's own copy starts at index 0; export it after one message from index 0.
    let full = alice.machine.export_room_keys(|_| true).await.unwrap();
    // A copy that starts later: Bob's copy, exported after he advanced? Build it from Alice
    // sharing again to a new device: it starts at index 1.
    let later = {
        let server = Arc::new(TestServer::new());
        let clock = VirtualClock::default();
        let carol = TestDevice::new(&server, &clock, user_id!("@carol:example.org"), "C").await;
        let keys = full.clone();
        carol.machine.import_room_keys(keys, |_, _| {}).await.unwrap();
        carol.machine.export_room_keys(|_| true).await.unwrap()
    };
    // Bob's key came over Olm: an imported copy (even an equal one) does not replace it.
    let result = bob.machine.import_room_keys(later.clone(), |_, _| {}).await.unwrap();
    assert_eq!(result.imported_count, 0);
    let raw = ruma_common::serde::Raw::new(&first).unwrap();
    let info = bob.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Olm);

    // On a device that has nothing, the import counts; importing again changes nothing.
    let fresh = OlmMachine::open(
        user_id!("@dave:example.org"),
        "DAVE".into(),
        Arc::new(MemoryStore::new()),
        hush_crypto_core::Timestamp::EPOCH,
    )
    .await
    .unwrap();
    assert_eq!(fresh.import_room_keys(full.clone(), |_, _| {}).await.unwrap().imported_count, 1);
    assert_eq!(fresh.import_room_keys(full, |_, _| {}).await.unwrap().imported_count, 0);
}

#[tokio::test]
async fn a_bad_file_imports_nothing() {
    let (_server, _clock, alice, _bob) = alice_and_bob().await;
    let room = room_id!("!r:example.org");
    alice.share_room_key(room, &[&alice.user_id], &EncryptionSettings::default()).await;
    let keys = alice.machine.export_room_keys(|_| true).await.unwrap();
    let file = encrypt_room_key_export(&keys, "pass", 100).unwrap();
    let target = OlmMachine::open(
        user_id!("@alice:example.org"),
        "NEW".into(),
        Arc::new(MemoryStore::new()),
        hush_crypto_core::Timestamp::EPOCH,
    )
    .await
    .unwrap();
    let wrong = target.import_room_key_export(&mut Cursor::new(file.as_bytes()), "nope", |_, _| {}).await;
    assert_eq!(wrong.unwrap_err(), ImportError::File(KeyExportError::WrongPassphraseOrCorrupt));
    let truncated = &file[..file.len() / 2];
    let result = target.import_room_key_export(&mut Cursor::new(truncated.as_bytes()), "pass", |_, _| {}).await;
    assert!(matches!(result, Err(ImportError::File(KeyExportError::Truncated))));
    assert_eq!(target.store().inbound_group_session_count().await.unwrap(), 0);
    assert_eq!(decrypt_room_key_export(&file, "pass").unwrap().len(), 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    /// Export -> import round trip for arbitrary sets of real sessions and
    /// arbitrary passphrases: every message stays readable on the importer.
    #[test]
    fn export_import_round_trip(rooms in proptest::collection::vec(0u8..6, 1..8), passphrase in "\\PC{0,20}") {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let server = Arc::new(TestServer::new());
            let clock = VirtualClock::default();
            let alice = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "A").await;
            let mut events = Vec::new();
            for (i, room) in rooms.iter().enumerate() {
                let room_id: OwnedRoomId = format!("!room{room}:example.org").try_into().unwrap();
                // Force a new session per entry, so rooms hold several.
                alice.machine.discard_room_key(&room_id).await.unwrap();
                alice.share_room_key(&room_id, &[&alice.user_id], &EncryptionSettings::default()).await;
                events.push((room_id.clone(), format!("m{i}"), alice.encrypt_text(&room_id, &format!("m{i}")).await));
            }
            let mut file = Vec::new();
            let exported = alice.machine.export_room_keys_to(&mut file, &passphrase, 3, |_| true).await.unwrap();
            assert_eq!(exported, rooms.len());
            let importer = TestDevice::new(&server, &clock, user_id!("@alice:example.org"), "B").await;
            let result = importer.machine.import_room_key_export(&mut Cursor::new(&file), &passphrase, |_, _| {}).await.unwrap();
            assert_eq!(result.imported_count, rooms.len());
            for (room_id, body, event) in &events {
                assert_eq!(&importer.decrypt_text(room_id, event).await.unwrap(), body);
            }
        });
    }
}
