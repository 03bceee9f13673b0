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
#[allow(non_snake_case)]
async fn TestCanBackupKeys() {
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
    assert!(summary.secrets.has_backup_key());
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
#[allow(non_snake_case)]
async fn TestBackupWrongRecoveryKeyFails() {
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
    assert!(summary.secrets.cross_signing.is_complete() && summary.secrets.has_backup_key());
}

/// A device that holds the backup key (here: handed over directly, as a
/// gossip or an earlier recovery would) but not a room's key looks the key
/// up in the backup when an event of that room cannot be decrypted, and
/// the event is delivered again, decrypted, without any call by the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn an_undecryptable_event_is_decrypted_lazily_from_the_backup() {
    let alice1 = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let (name, password) = alice1.credentials.clone();
    alice1.client.encryption().enable_recovery(None, Some(&password)).await.expect("recovery on");
    let room = alice1.client.create_room("lazy", true, &[]).await.unwrap();
    alice1.sync().await;
    alice1.client.get_room(&room).unwrap().send_text("only in the backup").await.unwrap();
    alice1.client.send_outgoing_requests().await.unwrap();
    let backup_key = alice1.client.olm_machine().unwrap().backup_decryption_key().await.unwrap().expect("key");

    let alice2 =
        TestClient::login(&name, &password, "A2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let machine = alice2.client.olm_machine().unwrap();
    machine.save_backup_decryption_key(&backup_key).await.unwrap();
    let info = alice2.client.encryption().latest_backup().await.unwrap().expect("a backup");
    machine.enable_backup(&info).await.unwrap();
    assert_eq!(machine.store().inbound_group_session_count().await.unwrap(), 0, "A2 holds no room key yet");
    alice2
        .sync_with_history_until(&room, "the message, decrypted from the backup", |c| {
            c.texts(&room).contains(&"only in the backup".to_owned())
        })
        .await;
    let late =
        alice2.events.lock().unwrap().iter().any(|e| e.late_decryption && e.text_body() == Some("only in the backup"));
    assert!(late, "delivered as a late decryption after the lookup");
}

/// A device with many room keys (250, imported from a file) enables a
/// backup and uploads them with progress: 100 keys per request, the
/// progress reported before and after each, and the server holds all 250.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn many_keys_are_uploaded_to_the_backup_with_progress() {
    use hush_client::hush_crypto_core::export::ExportedRoomKey;
    use vodozemac::megolm::{GroupSession, InboundGroupSession, SessionConfig};

    let alice1 = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let machine = alice1.client.olm_machine().unwrap();
    let sender = vodozemac::Curve25519SecretKey::new();
    let claimed = vodozemac::Ed25519SecretKey::new().public_key().to_base64();
    let keys: Vec<ExportedRoomKey> = (0..250)
        .map(|n| {
            let outbound = GroupSession::new(SessionConfig::version_1());
            let mut inbound = InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());
            let key = serde_json::json!({
                "algorithm": "m.megolm.v1.aes-sha2",
                "room_id": format!("!room{n}:example.org"),
                "sender_key": vodozemac::Curve25519PublicKey::from(&sender).to_base64(),
                "session_id": outbound.session_id(),
                "session_key": inbound.export_at(0).expect("index 0").to_base64(),
                "sender_claimed_keys": { "ed25519": claimed },
                "forwarding_curve25519_key_chain": [],
            });
            serde_json::from_value(key).expect("an exported key")
        })
        .collect();
    // The backup exists first; the imported keys are queued as they are stored.
    let (_, password) = alice1.credentials.clone();
    alice1.client.encryption().enable_recovery(None, Some(&password)).await.expect("recovery on");
    assert_eq!(machine.import_room_keys(keys, |_, _| {}).await.unwrap().imported_count, 250);
    assert_eq!(alice1.client.encryption().backup_keys_pending().await.unwrap(), 250);
    let mut reports = Vec::new();
    alice1.client.encryption().upload_backup(|done, total| reports.push((done, total))).await.unwrap();
    assert_eq!(alice1.client.encryption().backup_keys_pending().await.unwrap(), 0);
    assert_eq!(reports, vec![(0, 250), (100, 250), (200, 250), (250, 250)]);
    let on_server = alice1.client.encryption().restore_backup(|_, _| {}).await.unwrap();
    assert_eq!(on_server.total_count, 250, "the server holds every key");
}
