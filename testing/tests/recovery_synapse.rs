//! Recovery and key backup through the client against a real Synapse
//! (ignored by a plain `cargo test`; `cargo xtask test` starts Synapse and
//! runs them). Named after complement-crypto's scenarios where they match.

use std::sync::Arc;

use hush_client::{
    ClientError, RecoveryOptions,
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
    let recovery_key = alice1
        .client
        .encryption()
        .enable_recovery(RecoveryOptions::new().account_password(&password))
        .await
        .expect("recovery on");
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
        .enable_recovery(RecoveryOptions::new().passphrase("the right passphrase").account_password(&password))
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
    alice1
        .client
        .encryption()
        .enable_recovery(RecoveryOptions::new().account_password(&password))
        .await
        .expect("recovery on");
    let room = alice1.client.create_room("lazy", true, &[]).await.unwrap();
    alice1.sync().await;
    alice1.client.get_room(&room).unwrap().send_text("only in the backup").await.unwrap();
    alice1.client.send_outgoing_requests().await.unwrap();
    let backup_key = alice1.client.olm_machine().unwrap().backup_decryption_key().await.unwrap().expect("key");

    let alice2 =
        TestClient::login(&name, &password, "A2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let machine = alice2.client.olm_machine().unwrap();
    machine.save_backup_decryption_key(&backup_key).await.unwrap();
    let info = alice2.client.encryption().latest_backup().await.unwrap().expect("a backup").info;
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
    alice1
        .client
        .encryption()
        .enable_recovery(RecoveryOptions::new().account_password(&password))
        .await
        .expect("recovery on");
    assert_eq!(machine.import_room_keys(keys, |_, _| {}).await.unwrap().imported_count, 250);
    assert_eq!(alice1.client.encryption().backup_keys_pending().await.unwrap(), 250);
    let mut reports = Vec::new();
    alice1.client.encryption().upload_backup(|done, total| reports.push((done, total))).await.unwrap();
    assert_eq!(alice1.client.encryption().backup_keys_pending().await.unwrap(), 0);
    assert_eq!(reports, vec![(0, 250), (100, 250), (200, 250), (250, 250)]);
    let latest = alice1.client.encryption().latest_backup().await.unwrap().expect("a backup");
    assert_eq!(latest.count, 250, "the server counts every key");
    assert!(!latest.etag.is_empty());
    let on_server = alice1.client.encryption().restore_backup(|_, _| {}).await.unwrap();
    assert_eq!(on_server.total_count, 250, "the server holds every key");
}

/// The backup versions the server holds for `client`'s user (Synapse
/// numbers them from 1 per user; a deleted one answers 404).
async fn backup_versions(client: &TestClient) -> Vec<String> {
    use ruma_client_api::backup::get_backup_info;
    let api = hush_client::http::HttpClient::new(&hush_testing::synapse::homeserver_url(), Default::default()).unwrap();
    let mut versions = Vec::new();
    for n in 1..=10 {
        let request = get_backup_info::v3::Request::new(n.to_string());
        let token = Some(client.session.access_token.as_str());
        if api.send(request, token, std::time::Duration::ZERO).await.is_ok() {
            versions.push(n.to_string());
        }
    }
    versions
}

/// Whether the server lists `device` of `client`'s user signed by the
/// user's self-signing key.
async fn signed_on_server(client: &TestClient, device: &str) -> bool {
    use ruma_client_api::keys::get_keys;
    let api = hush_client::http::HttpClient::new(&hush_testing::synapse::homeserver_url(), Default::default()).unwrap();
    let user_id = client.session.user_id.clone();
    let mut request = get_keys::v3::Request::new();
    request.device_keys.insert(user_id.clone(), Vec::new());
    let answer = api.send(request, Some(&client.session.access_token), std::time::Duration::ZERO).await.unwrap();
    let Some(self_signing) = answer.self_signing_keys.get(&user_id) else { return false };
    let self_signing: serde_json::Value = self_signing.deserialize_as_unchecked().unwrap();
    let Some(key_id) = self_signing["keys"].as_object().and_then(|k| k.keys().next().cloned()) else { return false };
    let keys = answer.device_keys.get(&user_id).and_then(|d| d.get(<&ruma_common::DeviceId>::from(device)));
    let keys: serde_json::Value = keys.map(|k| k.deserialize_as_unchecked().unwrap()).unwrap_or_default();
    keys["signatures"][user_id.as_str()][key_id.as_str()].is_string()
}

/// The master key the server lists for `client`'s user, as base64.
async fn server_master_key(client: &TestClient) -> Option<String> {
    let user_id = client.session.user_id.clone();
    client.client.encryption().refresh_user_keys(&[&user_id]).await.unwrap();
    let identity = client.client.encryption().get_user_identity(&user_id).await.unwrap()?;
    Some(identity.inner().data().master_key().key().to_base64())
}

/// Issue 31: `ensure_identity` on a fresh account creates everything and
/// returns the recovery key, again on every call until the application
/// says it is saved; then a call finds it done; a second
/// device with the recovery key recovers, is cross-signed, reads the
/// history; a third device with a wrong key gets a typed error and nothing
/// changes; a device with no key is told what it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn ensure_identity_creates_recovers_and_refuses_a_wrong_key() {
    use hush_client::{IdentityNeed, IdentityOutcome, IdentitySetup};
    let alice1 = TestClient::new_user("alice", "A1", StoreKind::Redb).await;
    let (name, password) = alice1.credentials.clone();
    let alice = alice1.session.user_id.clone();
    let outcome = alice1.client.encryption().ensure_identity(IdentitySetup::new().password(&password)).await;
    let IdentityOutcome::Created { recovery_key, backup: true } = outcome.expect("set up") else {
        panic!("a fresh account gets an identity and a backup")
    };
    let unsaved = alice1.client.encryption().ensure_identity(IdentitySetup::new()).await.expect("kept");
    assert!(
        matches!(&unsaved, IdentityOutcome::Created { recovery_key: again, .. } if again == &recovery_key),
        "until the application says the user has it, the same key comes back: {unsaved:?}"
    );
    alice1.client.encryption().recovery_key_saved().await.unwrap();
    let again = alice1.client.encryption().ensure_identity(IdentitySetup::new()).await.expect("idempotent");
    assert_eq!(again, IdentityOutcome::Ready { backup: true });
    assert_eq!(alice1.client.encryption().key_backup_preference().await.unwrap(), Some(true), "m.key_backup set");
    assert!(signed_on_server(&alice1, "A1").await, "this device is signed");
    let room = alice1.client.create_room("history", true, &[]).await.unwrap();
    alice1.sync().await;
    alice1.client.get_room(&room).unwrap().send_text("before the second device").await.unwrap();
    alice1.client.send_outgoing_requests().await.unwrap();

    let fresh_dir = || Arc::new(tempfile::TempDir::new().unwrap());
    let nothing = TestClient::login(&name, &password, "A0", StoreKind::Redb, fresh_dir()).await;
    let needs = nothing.client.encryption().ensure_identity(IdentitySetup::new()).await.unwrap_err();
    assert!(matches!(needs, ClientError::IdentityNeeds(IdentityNeed::RecoveryKey)), "{needs:?}");

    let wrong = TestClient::login(&name, &password, "A3", StoreKind::Redb, fresh_dir()).await;
    let bad_key = SecretStorageKey::generate().unwrap().recovery_key();
    let refused = wrong.client.encryption().ensure_identity(IdentitySetup::new().recovery_key(&bad_key)).await;
    assert!(matches!(refused, Err(ClientError::SecretStorage(_))), "{refused:?}");
    let machine = wrong.client.olm_machine().unwrap();
    assert!(!machine.cross_signing_status().has_master, "nothing was imported");
    assert!(machine.backup_version().is_none(), "no backup enabled");

    let alice2 = TestClient::login(&name, &password, "A2", StoreKind::Redb, fresh_dir()).await;
    let recovered = alice2.client.encryption().ensure_identity(IdentitySetup::new().recovery_key(&recovery_key)).await;
    assert!(
        matches!(recovered, Ok(IdentityOutcome::Recovered { restored_keys }) if restored_keys >= 1),
        "{recovered:?}"
    );
    alice2
        .sync_with_history_until(&room, "the old message", |c| {
            c.texts(&room).contains(&"before the second device".to_owned())
        })
        .await;
    let a2 = alice1.client.encryption();
    a2.refresh_user_keys(&[&alice]).await.unwrap();
    assert!(a2.get_device(&alice, "A2".into()).await.unwrap().expect("A2").is_verified(), "A2 cross-signed");
    assert_eq!(backup_versions(&alice1).await, vec!["1".to_owned()], "one backup version");
}

/// Issue 31: `ensure_identity` killed at each step. For each request it
/// makes, the server acts on it and the client never sees the answer (the
/// proxy cuts it: what a kill right after sending looks like to the
/// server); the process then starts again from its store and calls it
/// again. Every run ends with one identity (the key first uploaded), one
/// backup version, this device signed, and a recovery key that opens
/// secret storage on a new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn ensure_identity_killed_at_each_step_is_finished_by_the_next_call() {
    use hush_client::{IdentityOutcome, IdentitySetup};
    use hush_testing::proxy::{Calls, Fault, FaultProxy, Rule};
    let steps = [
        ("/keys/device_signing/upload", "POST"),
        ("/keys/signatures/upload", "POST"),
        ("/room_keys/version", "POST"),
        ("/account_data/m.secret_storage.key.", "PUT"),
        ("/account_data/m.cross_signing.master", "PUT"),
        ("/account_data/m.megolm_backup.v1", "PUT"),
        ("/account_data/m.secret_storage.default_key", "PUT"),
        ("/account_data/m.key_backup", "PUT"),
    ];
    for (path, method) in steps {
        let proxy = FaultProxy::start(&hush_testing::synapse::homeserver_url()).await;
        // No HTTP retries: a cut answer fails the call at once.
        let mut options = hush_testing::synapse::ClientOptions::at(&proxy.url());
        options.http.retries = 0;
        let name = hush_testing::synapse::unique_name("alice");
        hush_testing::synapse::register(&name, "password").await.unwrap();
        let dir = Arc::new(tempfile::TempDir::new().unwrap());
        let alice = TestClient::login_with(&name, "password", "A1", StoreKind::Redb, dir, options).await;
        // The step's answer is cut: the process never gets past it, as if
        // it had been killed there.
        let cut = proxy.add(Rule::path(path).method(method).calls(Calls::First(1)).fault(Fault::CutResponse));
        let interrupted = alice.client.encryption().ensure_identity(IdentitySetup::new()).await;
        assert!(cut.caught() >= 1, "step {path}: the kill did not land");
        assert!(interrupted.is_err(), "step {path}: the cut answer went unnoticed: {interrupted:?}");
        cut.remove();
        let first_master = server_master_key(&alice).await;

        let alice = alice.restart().await;
        let finished = alice.client.encryption().ensure_identity(IdentitySetup::new()).await;
        let Ok(IdentityOutcome::Created { recovery_key, backup: true }) = finished else {
            panic!("step {path}: the next call did not finish the setup: {finished:?}")
        };
        let master = server_master_key(&alice).await.expect("an identity");
        if let Some(first) = first_master {
            assert_eq!(master, first, "step {path}: a second identity replaced the first");
        }
        assert_eq!(backup_versions(&alice).await, vec!["1".to_owned()], "step {path}: one backup version");
        assert!(signed_on_server(&alice, "A1").await, "step {path}: this device is signed");

        let (name, password) = alice.credentials.clone();
        let other =
            TestClient::login(&name, &password, "A2", StoreKind::Redb, Arc::new(tempfile::TempDir::new().unwrap()))
                .await;
        let recovered = other.client.encryption().recover(&recovery_key).await;
        assert!(
            recovered.is_ok_and(|s| s.secrets.cross_signing.is_complete()),
            "step {path}: the recovery key opens it"
        );
    }
}
