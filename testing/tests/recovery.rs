//! Recovery through secret storage, through the engine on the in-process
//! server: a new device opens secret storage with the recovery key or the
//! passphrase, gets the cross-signing keys (checked against the server's)
//! and the backup key (checked against the backup), becomes verified and
//! reads history from the backup. A wrong key, or secrets that do not match
//! their public parts, change nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use hush_crypto_core::{
    BackupKeyRecovery, EncryptionSettings, RecoveryError,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey, BackupTrust},
    secret_storage::{
        DEFAULT_KEY_EVENT_TYPE, DefaultKeyContent, KeyDescription, SecretContent, SecretStorageError, SecretStorageKey,
        names,
    },
};
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma_common::{room_id, user_id};

/// What `enable_recovery` does, with the engine's calls: cross-signing, a
/// backup, secret storage holding both, under a key made from a passphrase.
async fn set_up_recovery(device: &TestDevice, passphrase: &str) -> SecretStorageKey {
    device.bootstrap_cross_signing(false).await;
    let backup_key = BackupDecryptionKey::generate().unwrap();
    let auth_data = device.machine.backup_auth_data(&backup_key.public_key()).await.unwrap();
    device.server().create_backup_version(&device.user_id, BACKUP_ALGORITHM, auth_data);
    device.machine.save_backup_decryption_key(&backup_key).await.unwrap();
    device.machine.enable_backup(&device.server().latest_backup(&device.user_id).unwrap()).await.unwrap();
    let key = SecretStorageKey::generate_from_passphrase_with(passphrase, 1000).unwrap();
    store_secrets(device, &key).await;
    key
}

async fn store_secrets(device: &TestDevice, key: &SecretStorageKey) {
    let server = device.server();
    server.set_account_data(&device.user_id, &key.event_type(), serde_json::to_value(key.description()).unwrap());
    let default = DefaultKeyContent { key: key.key_id().to_owned() };
    server.set_account_data(&device.user_id, DEFAULT_KEY_EVENT_TYPE, serde_json::to_value(default).unwrap());
    for (name, content) in device.machine.secrets_for_storage(key).await.unwrap() {
        server.set_account_data(&device.user_id, &name, serde_json::to_value(content).unwrap());
    }
}

/// What `recover` reads from account data: the default key's description
/// and every secret hush knows.
fn read_storage(
    server: &TestServer,
    user: &ruma_common::UserId,
) -> (String, KeyDescription, BTreeMap<String, SecretContent>) {
    let default: DefaultKeyContent =
        serde_json::from_value(server.account_data(user, DEFAULT_KEY_EVENT_TYPE).unwrap()).unwrap();
    let description = server.account_data(user, &format!("m.secret_storage.key.{}", default.key)).unwrap();
    let secrets = names::ALL
        .iter()
        .filter_map(|name| Some((name.to_string(), serde_json::from_value(server.account_data(user, name)?).ok()?)))
        .collect();
    (default.key, serde_json::from_value(description).unwrap(), secrets)
}

#[tokio::test]
async fn a_new_device_recovers_with_the_recovery_key_is_verified_and_reads_history() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user_id!("@alice:example.org");
    let first = TestDevice::new(&server, &clock, alice, "ALICE1").await;
    let key = set_up_recovery(&first, "a long passphrase").await;
    let room = room_id!("!history:example.org");
    first.share_room_key(room, &[alice], &EncryptionSettings::default()).await;
    let old = first.encrypt_text(room, "an old message").await;
    first.drain().await;

    let second = TestDevice::new(&server, &clock, alice, "ALICE2").await;
    second.refresh_keys(&[alice]).await;
    let (key_id, description, secrets) = read_storage(&server, alice);
    let opened = SecretStorageKey::from_recovery_key(&key_id, &description, &key.recovery_key()).unwrap();
    let backup = server.latest_backup(alice).unwrap();
    let recovered = second.machine.import_secrets_from_storage(&opened, &secrets, Some(&backup)).await.unwrap();
    assert!(recovered.cross_signing.is_complete());
    assert!(recovered.has_backup_key());
    second.drain().await; // uploads ALICE2's self-signing signature

    first.refresh_keys(&[alice]).await;
    let trust = first.machine.device_trust(alice, "ALICE2".into()).await.unwrap().unwrap();
    assert!(trust.is_verified(), "ALICE1 sees ALICE2 verified through cross-signing");
    assert!(second.machine.get_identity(alice).await.unwrap().unwrap().is_verified());

    assert_eq!(second.machine.backup_trust(&backup).await.unwrap(), BackupTrust::PrivateKeyHeld);
    let private = second.machine.backup_decryption_key().await.unwrap().unwrap();
    let rooms = server.backup_keys(alice, &backup.version);
    second.machine.import_backed_up_room_keys(&private, &rooms, |_, _| {}).await.unwrap();
    assert_eq!(second.decrypt_text(room, &old).await.unwrap(), "an old message");
}

#[tokio::test]
async fn the_passphrase_opens_secret_storage_too() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user_id!("@alice:example.org");
    let first = TestDevice::new(&server, &clock, alice, "ALICE1").await;
    set_up_recovery(&first, "a long passphrase").await;
    let second = TestDevice::new(&server, &clock, alice, "ALICE2").await;
    second.refresh_keys(&[alice]).await;
    let (key_id, description, secrets) = read_storage(&server, alice);
    let opened = SecretStorageKey::from_passphrase(&key_id, &description, "a long passphrase").unwrap();
    let backup = server.latest_backup(alice).unwrap();
    let recovered = second.machine.import_secrets_from_storage(&opened, &secrets, Some(&backup)).await.unwrap();
    assert!(recovered.cross_signing.is_complete() && recovered.has_backup_key());
}

/// complement-crypto's `TestBackupWrongRecoveryKeyFails`, at engine level:
/// a wrong recovery key or passphrase is refused by the key check, and a
/// key that passes no check (a forged description) fails each secret's MAC;
/// nothing is imported either way.
#[tokio::test]
async fn a_wrong_recovery_key_fails_cleanly_and_changes_nothing() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user_id!("@alice:example.org");
    let first = TestDevice::new(&server, &clock, alice, "ALICE1").await;
    set_up_recovery(&first, "a long passphrase").await;
    let second = TestDevice::new(&server, &clock, alice, "ALICE2").await;
    second.refresh_keys(&[alice]).await;
    let (key_id, description, secrets) = read_storage(&server, alice);

    let wrong = SecretStorageKey::generate().unwrap().recovery_key();
    assert_eq!(
        SecretStorageKey::from_recovery_key(&key_id, &description, &wrong).unwrap_err(),
        SecretStorageError::WrongKey(key_id.clone())
    );
    assert_eq!(
        SecretStorageKey::from_passphrase(&key_id, &description, "not the passphrase").unwrap_err(),
        SecretStorageError::WrongKey(key_id.clone())
    );
    // A description without a check accepts any key; the secrets' MACs do not.
    let unchecked = KeyDescription { iv: None, mac: None, ..description.clone() };
    let any_key = SecretStorageKey::from_recovery_key(&key_id, &unchecked, &wrong).unwrap();
    let backup = server.latest_backup(alice).unwrap();
    let error = second.machine.import_secrets_from_storage(&any_key, &secrets, Some(&backup)).await.unwrap_err();
    assert!(matches!(error, RecoveryError::SecretStorage(SecretStorageError::BadMac(_))), "{error:?}");
    assert!(!second.machine.cross_signing_status().has_master);
    assert!(second.machine.backup_decryption_key().await.unwrap().is_none());
}

/// Secrets stored before the cross-signing keys were reset no longer match
/// the public keys the server lists: they are refused, and the backup key
/// read with them is not kept either.
#[tokio::test]
async fn secrets_that_do_not_match_the_servers_keys_are_refused_whole() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user_id!("@alice:example.org");
    let first = TestDevice::new(&server, &clock, alice, "ALICE1").await;
    let key = set_up_recovery(&first, "a long passphrase").await;
    first.bootstrap_cross_signing(true).await; // a reset: the stored keys are stale
    let second = TestDevice::new(&server, &clock, alice, "ALICE2").await;
    second.refresh_keys(&[alice]).await;
    let (key_id, description, secrets) = read_storage(&server, alice);
    let opened = SecretStorageKey::from_recovery_key(&key_id, &description, &key.recovery_key()).unwrap();
    let backup = server.latest_backup(alice).unwrap();
    let error = second.machine.import_secrets_from_storage(&opened, &secrets, Some(&backup)).await.unwrap_err();
    assert!(matches!(error, RecoveryError::CrossSigning(_)), "{error:?}");
    assert!(!second.machine.cross_signing_status().has_master);
    assert!(second.machine.backup_decryption_key().await.unwrap().is_none());
}

/// Attack: the server publishes a new backup version of its own after the
/// secrets were stored. The stored backup key does not match it, so the
/// recovery reports the mismatch, keeps no backup key and trusts nothing
/// from that backup; the cross-signing keys, checked against ours, are
/// still recovered (a replaced backup must not cost the user the identity).
#[tokio::test]
async fn a_backup_key_that_does_not_match_the_current_backup_is_dropped_and_cross_signing_still_recovers() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let alice = user_id!("@alice:example.org");
    let first = TestDevice::new(&server, &clock, alice, "ALICE1").await;
    let key = set_up_recovery(&first, "a long passphrase").await;
    let rogue = BackupDecryptionKey::generate().unwrap();
    let version = server.create_backup_version(
        alice,
        BACKUP_ALGORITHM,
        serde_json::json!({ "public_key": rogue.public_key().to_base64() }),
    );
    let second = TestDevice::new(&server, &clock, alice, "ALICE2").await;
    second.refresh_keys(&[alice]).await;
    let (key_id, description, secrets) = read_storage(&server, alice);
    let opened = SecretStorageKey::from_recovery_key(&key_id, &description, &key.recovery_key()).unwrap();
    let backup = server.latest_backup(alice).unwrap();
    let recovered = second.machine.import_secrets_from_storage(&opened, &secrets, Some(&backup)).await.unwrap();
    assert_eq!(recovered.backup_key, BackupKeyRecovery::Mismatch { version });
    assert!(!recovered.has_backup_key());
    assert!(second.machine.backup_decryption_key().await.unwrap().is_none(), "the stale key is not kept");
    assert!(recovered.cross_signing.is_complete(), "the identity is recovered all the same");
    assert!(second.machine.cross_signing_status().has_master);
    assert_eq!(second.machine.backup_trust(&backup).await.unwrap(), BackupTrust::Untrusted);
}
