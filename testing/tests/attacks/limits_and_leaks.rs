//! Points 6, 7 and 10a: bounded work for hostile files and stores, no
//! decrypted payload in `Debug` output or error messages, and a refused
//! store open that leaves the file untouched.

use hush_crypto_core::{
    OlmError, StoreError, ToDeviceOutcome,
    export::{KeyExportError, MAX_ROUNDS, decrypt_room_key_export, encrypt_room_key_export},
};
use hush_store_cipher::{MAX_KDF_ROUNDS, StoreCipher, StoreSecret, WrappedStoreKey};
use hush_store_redb::StoreOptions;
use hush_testing::TestDevice;
use ruma_common::{owned_room_id, user_id};
use serde_json::{Value, json};

use super::Victim;

/// A key file's header with its PBKDF2 round count replaced.
fn with_rounds(file: &str, rounds: u32) -> String {
    let body: String = file.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut bytes = vodozemac::base64_decode(body.trim_end_matches('=')).unwrap();
    bytes[33..37].copy_from_slice(&rounds.to_be_bytes());
    format!(
        "-----BEGIN MEGOLM SESSION DATA-----\n{}\n-----END MEGOLM SESSION DATA-----\n",
        vodozemac::base64_encode(bytes)
    )
}

/// Attack (6): a key file asks for 10,000,000 PBKDF2 rounds (7.5 s of CPU
/// per attempt here, before its MAC refuses it). It is refused before any
/// round is computed.
#[test]
fn a_key_file_asking_for_too_many_rounds_is_refused_unread() {
    let file = encrypt_room_key_export(&[], "p", 1).unwrap();
    assert!(decrypt_room_key_export(&file, "p").is_ok());
    for rounds in [0, MAX_ROUNDS + 1, 10_000_000, u32::MAX] {
        assert_eq!(
            decrypt_room_key_export(&with_rounds(&file, rounds), "p"),
            Err(KeyExportError::InvalidRounds(rounds))
        );
    }
}

/// Attack (6): a store file whose wrapped key asks for u32::MAX PBKDF2
/// rounds (about 13 minutes per open). The count is checked before the KDF.
#[test]
fn a_store_asking_for_too_many_rounds_is_refused_unread() {
    let cipher = StoreCipher::new().unwrap();
    let secret = StoreSecret::Passphrase("p".into());
    let wrapped = cipher.wrap(&secret, 10_000).unwrap();
    assert!(StoreCipher::unwrap(&wrapped, &secret).is_ok());
    let mut value = serde_json::to_value(&wrapped).unwrap();
    for rounds in [0, MAX_KDF_ROUNDS + 1, u32::MAX] {
        value["kdf"]["Pbkdf2"]["rounds"] = json!(rounds);
        let hostile: WrappedStoreKey = serde_json::from_value(value.clone()).unwrap();
        let error = StoreCipher::unwrap(&hostile, &secret).err();
        assert_eq!(error, Some(hush_store_cipher::CipherError::KdfRounds(rounds)));
    }
}

/// Attack (6): creating a store with `kdf_rounds: 0` (a passphrase that is
/// not stretched at all) is an error, not a silently weak store.
#[test]
fn a_store_cannot_be_created_with_zero_rounds() {
    let dir = tempfile::TempDir::new().unwrap();
    let options = StoreOptions { kdf_rounds: 0, ..StoreOptions::passphrase("p") };
    let result = hush_store_redb::open(dir.path().join("s.redb"), user_id!("@a:e.org"), "DEV".into(), options);
    assert!(matches!(result, Err(StoreError::InvalidKdfRounds { rounds: 0, .. })), "{result:?}");
    // The failed first open left redb's empty file; a correct open creates the store.
    let options = StoreOptions { kdf_rounds: 10_000, ..StoreOptions::passphrase("p") };
    let again = hush_store_redb::open(dir.path().join("s.redb"), user_id!("@a:e.org"), "DEV".into(), options);
    assert!(again.is_ok(), "{again:?}");
}

/// Attack (10a): opening someone's store with a wrong or missing passphrase
/// (or as another device) must not change a byte of the file.
#[test]
fn a_refused_store_open_leaves_the_file_byte_identical() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("s.redb");
    let user = user_id!("@a:e.org");
    let options = || StoreOptions { kdf_rounds: 10_000, ..StoreOptions::passphrase("right") };
    drop(hush_store_redb::open(&path, user, "DEV".into(), options()).unwrap());
    let before = std::fs::read(&path).unwrap();
    let attempts = [
        hush_store_redb::open(
            &path,
            user,
            "DEV".into(),
            StoreOptions { kdf_rounds: 10_000, ..StoreOptions::passphrase("wrong") },
        ),
        hush_store_redb::open(&path, user, "DEV".into(), StoreOptions::default()),
        hush_store_redb::open(&path, user, "OTHER".into(), options()),
    ];
    for attempt in attempts {
        assert!(attempt.is_err());
        assert!(std::fs::read(&path).unwrap() == before, "a refused open changed the file");
    }
    assert!(hush_store_redb::open(&path, user, "DEV".into(), options()).is_ok(), "the store still opens");
}

/// Attack (7): Mallory sends Bob secrets over Olm (a forwarded room key, a
/// secret-storage secret); an application logs Bob's `SyncOutput` with
/// `{:?}`. The decrypted contents must not appear.
#[tokio::test]
async fn decrypted_to_device_payloads_are_not_in_debug_output() {
    let mut v = Victim::new().await;
    for (event_type, content) in [
        ("m.forwarded_room_key", json!({"session_key": "FORWARDED-SECRET", "room_id": "!r:e.org"})),
        ("m.secret.send", json!({"secret": "STORED-SECRET", "request_id": "1"})),
        ("org.example.note", json!({"body": "PRIVATE-NOTE"})),
    ] {
        let plaintext = v.plaintext(event_type, content);
        v.deliver(&plaintext);
    }
    let output = v.bob.sync().await;
    // The malformed forwarded key is decrypted, then rejected by the gossip rules.
    let decrypted =
        |o: &&ToDeviceOutcome| matches!(o, ToDeviceOutcome::Decrypted { .. } | ToDeviceOutcome::PayloadRejected { .. });
    assert_eq!(output.to_device.iter().filter(decrypted).count(), 3);
    let debug = format!("{output:?}");
    for secret in ["FORWARDED-SECRET", "STORED-SECRET", "PRIVATE-NOTE"] {
        assert!(!debug.contains(secret), "Debug of SyncOutput shows {secret}");
    }
    assert!(debug.contains("m.secret.send"), "the summary should still name the event type");
}

/// Attack (7): a plaintext whose field has the wrong type used to come back
/// as a serde error quoting the plaintext, logged at WARN.
#[tokio::test]
async fn errors_about_decrypted_payloads_do_not_quote_them() {
    let mut v = Victim::new().await;
    let mut plaintext = v.plaintext("org.example.note", json!({}));
    plaintext["recipient"] = json!({"leak": "PLAINTEXT-SECRET"});
    plaintext["content"] = json!("PLAINTEXT-SECRET");
    v.deliver(&plaintext);
    let output = v.bob.sync().await;
    let [ToDeviceOutcome::Failed { error: error @ OlmError::Malformed(_), .. }] = output.to_device.as_slice() else {
        panic!("{:?}", output.to_device)
    };
    assert!(!error.to_string().contains("PLAINTEXT-SECRET") && !format!("{error:?}").contains("PLAINTEXT-SECRET"));
    assert!(!format!("{output:?}").contains("PLAINTEXT-SECRET"));
}

/// Attack (7): the same for room events: `Debug` of a decrypted room event
/// (engine and client types) and of a payload error holds no plaintext.
#[tokio::test]
async fn decrypted_room_events_are_not_in_debug_output() {
    let v = Victim::new().await;
    let room = owned_room_id!("!room:example.org");
    let alice = TestDevice::new(&v.server, &v.clock, user_id!("@alice:example.org"), "ALICE1").await;
    alice.share_room_key(&room, &[&v.bob.user_id], &Default::default()).await;
    let mut bob = v.bob;
    bob.sync().await;
    let event = alice.encrypt_text(&room, "ROOM-SECRET").await;
    let raw: ruma_common::serde::Raw<Value> = ruma_common::serde::Raw::new(&event).unwrap();
    let decrypted = bob.machine.decrypt_room_event(&raw, &room, &Default::default()).await.unwrap();
    assert!(decrypted.event.json().get().contains("ROOM-SECRET"));
    assert!(!format!("{decrypted:?}").contains("ROOM-SECRET"));
    let client_event = hush_client::RoomEvent {
        room_id: room.clone(),
        event: decrypted.event.deserialize_as_unchecked().unwrap(),
        encryption: Some(decrypted.info.clone()),
        unable_to_decrypt: None,
        utd_cause: None,
        late_decryption: false,
    };
    assert!(!format!("{client_event:?}").contains("ROOM-SECRET"));
}
