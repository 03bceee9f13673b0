//! Recovery and key backup through the client against a real Synapse
//! (ignored by a plain `cargo test`; `cargo xtask test` starts Synapse and
//! runs them). Named after complement-crypto's scenarios where they match.

use std::sync::Arc;

use hush_client::{
    ClientError,
    hush_crypto_core::secret_storage::{SecretStorageError, SecretStorageKey},
};
use hush_testing::synapse::{StoreKind, TestClient};

/// complement-crypto's `TestCanBackupKeys`: Alice enables recovery and
/// talks in an encrypted room; a new device of hers, logged in later,
/// cannot read the history until it recovers with the recovery key; then
/// it reads it from the backup, and her first device sees the new one
/// verified (recovery gave it the self-signing key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_new_device_recovers_with_the_recovery_key_and_reads_history() {
    let alice1 = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let (name, password) = alice1.credentials.clone();
    let alice = alice1.session.user_id.clone();
    let recovery_key = alice1.client.encryption().enable_recovery(None, Some(&password)).await.expect("recovery on");
    let room = alice1.client.create_room("history", true, &[]).await.unwrap();
    alice1.sync().await;
    alice1.client.get_room(&room).unwrap().send_text("written before the new login").await.unwrap();
    alice1.client.send_outgoing_requests().await.unwrap();
    assert_eq!(alice1.client.olm_machine().unwrap().backup_pending_count().await.unwrap(), 0, "all keys backed up");

    let alice2 =
        TestClient::login(&name, &password, "A2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap())).await;
    alice2.sync_with_history_until(&room, "the old message, undecryptable", |c| c.undecryptable(&room) >= 1).await;
    assert!(!alice2.texts(&room).contains(&"written before the new login".to_owned()));

    let summary = alice2.client.encryption().recover(&recovery_key).await.expect("recover");
    assert!(summary.secrets.cross_signing.is_complete());
    assert!(summary.secrets.backup_key);
    assert!(summary.restored_keys >= 1, "{summary:?}");
    alice2
        .sync_with_history_until(&room, "the old message, decrypted", |c| {
            c.texts(&room).contains(&"written before the new login".to_owned())
        })
        .await;

    let a1 = alice1.client.encryption();
    a1.refresh_user_keys(&[&alice]).await.unwrap();
    let seen = a1.get_device(&alice, "A2".into()).await.unwrap().expect("A1 knows A2");
    assert!(seen.is_verified(), "A2 is cross-signed after recovery");
    // A2 uploads to the same backup from now on.
    assert!(alice2.client.olm_machine().unwrap().backup_version().is_some());
}

/// complement-crypto's `TestBackupWrongRecoveryKeyFails`: a new device
/// given a wrong recovery key, or a wrong passphrase, gets a clear error
/// and nothing changes: no cross-signing keys, no backup key, no backup
/// enabled, history still unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_wrong_recovery_key_fails_cleanly_and_changes_nothing() {
    let alice1 = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let (name, password) = alice1.credentials.clone();
    alice1
        .client
        .encryption()
        .enable_recovery(Some("the right passphrase"), Some(&password))
        .await
        .expect("recovery on");

    let alice2 =
        TestClient::login(&name, &password, "A2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let encryption = alice2.client.encryption();
    let wrong_key = SecretStorageKey::generate().unwrap().recovery_key();
    for wrong in [wrong_key.as_str(), "not the passphrase"] {
        let error = encryption.recover(wrong).await.unwrap_err();
        assert!(matches!(error, ClientError::SecretStorage(SecretStorageError::WrongKey(_))), "{error}");
    }
    let machine = alice2.client.olm_machine().unwrap();
    assert!(!machine.cross_signing_status().has_master);
    assert!(machine.backup_decryption_key().await.unwrap().is_none());
    assert_eq!(machine.backup_version(), None);
    // The right passphrase still works afterwards.
    let summary = encryption.recover("the right passphrase").await.expect("recover");
    assert!(summary.secrets.cross_signing.is_complete() && summary.secrets.backup_key);
}
