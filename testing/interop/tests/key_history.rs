//! Key history between hush and matrix-sdk-crypto, on the wire only: a
//! server-side backup made by either engine restores on the other, and a
//! secret written to secret storage by either is read by the other (with
//! the passphrase and with the recovery key).

use std::sync::Arc;

use hush_crypto_core::{
    EncryptionSettings, KeySource,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey as HushBackupKey},
    secret_storage::{KeyDescription, SecretContent, SecretStorageKey as HushSsssKey, decrypt_secret, encrypt_secret},
};
use hush_interop::SdkDevice;
use hush_testing::{TestDevice, TestServer, VirtualClock};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings as SdkSettings, TrustRequirement,
    backups::MegolmV1BackupKey,
    olm::{BackedUpRoomKey, ExportedRoomKey},
    secret_storage::{AesHmacSha2EncryptedData, SecretStorageKey as SdkSsssKey},
    store::types::BackupDecryptionKey as SdkBackupKey,
};
use ruma::{
    RoomId,
    events::{
        AnyMessageLikeEventContent, EventContentFromType, secret::request::SecretName,
        secret_storage::key::SecretStorageKeyEventContent,
    },
    room_id,
    serde::Raw,
    user_id,
};
use serde_json::{Value, json};

fn room() -> &'static RoomId {
    room_id!("!history:example.org")
}

/// A room event wrapping `content` sent by `sender`.
fn event(sender: &ruma::UserId, content: Value, event_id: &str) -> Value {
    json!({
        "type": "m.room.encrypted",
        "event_id": event_id,
        "sender": sender,
        "origin_server_ts": 1_700_000_000_000u64,
        "room_id": room(),
        "content": content,
    })
}

/// Sends the sdk's pending backup upload to the server and answers it.
async fn sdk_upload_backup(sdk: &SdkDevice, server: &TestServer) -> usize {
    let mut uploaded = 0;
    while let Some((id, request)) = sdk.machine.backup_machine().backup().await.unwrap() {
        let rooms = serde_json::from_value(serde_json::to_value(&request.rooms).unwrap()).unwrap();
        let ours = hush_crypto_core::deps::ruma_client_api::backup::add_backup_keys::v3::Request::new(
            request.version.clone(),
            rooms,
        );
        uploaded += request.rooms.values().map(|r| r.sessions.len()).sum::<usize>();
        let answer = server.add_backup_keys(&sdk.user_id, &ours).expect("the current version");
        let answer = ruma::api::client::backup::add_backup_keys::v3::Response::new(
            answer.etag,
            ruma::UInt::new(answer.count.into()).unwrap(),
        );
        sdk.machine.mark_request_as_sent(&id, &answer).await.unwrap();
    }
    uploaded
}

#[tokio::test]
async fn a_backup_made_by_matrix_sdk_crypto_restores_on_hush() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let user = user_id!("@carol:example.org");
    let mut sdk = SdkDevice::new(&server, user, "SDKDEV").await;
    sdk.sync().await;

    // The sdk creates and signs a backup version and enables it.
    let key = SdkBackupKey::new();
    let mut info = key.to_backup_info();
    sdk.machine.backup_machine().sign_backup(&mut info).await.unwrap();
    let info_json = serde_json::to_value(&info).unwrap();
    let version =
        server.create_backup_version(user, info_json["algorithm"].as_str().unwrap(), info_json["auth_data"].clone());
    let public: MegolmV1BackupKey = key.megolm_v1_public_key();
    public.set_version(version.clone());
    sdk.machine.backup_machine().enable_backup_v1(public).await.unwrap();

    // It sends a message in a room (its own room key) and backs the key up.
    sdk.establish_sessions(&[user]).await;
    for request in sdk.machine.share_room_key(room(), [user].into_iter(), SdkSettings::default()).await.unwrap() {
        sdk.send_to_device(&request).await;
    }
    let content: Raw<AnyMessageLikeEventContent> =
        Raw::new(&json!({"msgtype": "m.text", "body": "backed up by the sdk"})).unwrap().cast_unchecked();
    let encrypted = sdk.machine.encrypt_room_event_raw(room(), "m.room.message", &content).await.unwrap();
    let message = event(user, serde_json::to_value(&encrypted.content).unwrap(), "$sdk-history");
    assert_eq!(sdk_upload_backup(&sdk, &server).await, 1);

    // A new hush device of the same user restores it with the private key.
    let hush = TestDevice::new(&server, &clock, user, "HUSHNEW").await;
    let private = HushBackupKey::from_base64(&key.to_base64()).unwrap();
    let ours = server.latest_backup(user).unwrap();
    assert_eq!(ours.public_key().unwrap(), private.public_key(), "hush reads the sdk's auth_data");
    hush.machine.save_backup_decryption_key(&private).await.unwrap();
    assert!(hush.machine.backup_trust(&ours).await.unwrap().is_trusted());
    let rooms = server.backup_keys(user, &version);
    let result = hush.machine.import_backed_up_room_keys(&private, &rooms, |_, _| {}).await.unwrap();
    assert_eq!((result.imported_count, result.invalid_count), (1, 0));
    assert_eq!(hush.decrypt_text(room(), &message).await.unwrap(), "backed up by the sdk");
    let raw = hush_crypto_core::deps::ruma_common::serde::Raw::new(&message).unwrap();
    let info = hush.machine.decrypt_room_event(&raw, room(), &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Backup);
}

#[tokio::test]
async fn a_backup_made_by_hush_restores_on_matrix_sdk_crypto() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let user = user_id!("@dan:example.org");
    let hush = TestDevice::new(&server, &clock, user, "HUSHDEV").await;

    let key = HushBackupKey::generate().unwrap();
    let auth_data = hush.machine.backup_auth_data(&key.public_key()).await.unwrap();
    let version = server.create_backup_version(user, BACKUP_ALGORITHM, auth_data);
    hush.machine.enable_backup(&server.latest_backup(user).unwrap()).await.unwrap();
    hush.share_room_key(room(), &[user], &EncryptionSettings::default()).await;
    let message = hush.encrypt_text(room(), "backed up by hush").await;
    hush.drain().await;

    // A new sdk device of the same user: the sdk checks the backup's public
    // key against the private key, decrypts each entry and imports it.
    let sdk = SdkDevice::new(&server, user, "SDKNEW").await;
    let private = SdkBackupKey::from_base64(&key.to_base64()).unwrap();
    let latest = server.latest_backup(user).unwrap();
    let info: matrix_sdk_crypto::types::RoomKeyBackupInfo =
        serde_json::from_value(json!({ "algorithm": latest.algorithm, "auth_data": latest.auth_data })).unwrap();
    assert!(private.backup_key_matches(&info), "the sdk reads hush's auth_data");
    let mut exported = Vec::new();
    for (room_id, room_keys) in server.backup_keys(user, &version) {
        for (session_id, raw) in room_keys.sessions {
            let data: ruma::api::client::backup::KeyBackupData =
                serde_json::from_str(raw.json().get()).expect("the sdk parses hush's entry");
            let decrypted: BackedUpRoomKey = private.decrypt_session_data(data.session_data).expect("the sdk decrypts");
            let room_id: ruma::OwnedRoomId = room_id.as_str().try_into().unwrap();
            exported.push(ExportedRoomKey::from_backed_up_room_key(room_id, session_id, decrypted));
        }
    }
    assert_eq!(exported.len(), 1);
    let result = sdk.machine.store().import_room_keys(exported, Some(&version), |_, _| {}).await.unwrap();
    assert_eq!(result.imported_count, 1);
    let raw = Raw::new(&message).unwrap().cast_unchecked();
    let settings = DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted };
    let decrypted = sdk.machine.decrypt_room_event(&raw, room(), &settings).await.expect("the sdk decrypts");
    let value: Value = decrypted.event.deserialize_as_unchecked().unwrap();
    assert_eq!(value["content"]["body"], "backed up by hush");
}

/// Parses a key description the way the sdk reads it from account data.
fn sdk_description(key_id: &str, description: &Value) -> SecretStorageKeyEventContent {
    let raw = serde_json::value::to_raw_value(description).unwrap();
    SecretStorageKeyEventContent::from_parts(&format!("m.secret_storage.key.{key_id}"), &raw).unwrap()
}

#[tokio::test]
async fn secret_storage_written_by_matrix_sdk_crypto_is_read_by_hush() {
    let sdk_key = SdkSsssKey::new_from_passphrase("sdk passphrase");
    let description = serde_json::to_value(sdk_key.event_content()).unwrap();
    let encrypted = sdk_key.encrypt(b"the master key, in base64".to_vec(), &SecretName::CrossSigningMasterKey);
    let content: SecretContent =
        serde_json::from_value(json!({ "encrypted": { sdk_key.key_id(): serde_json::to_value(&encrypted).unwrap() } }))
            .unwrap();
    let description: KeyDescription = serde_json::from_value(description).unwrap();

    let by_passphrase = HushSsssKey::from_passphrase(sdk_key.key_id(), &description, "sdk passphrase").unwrap();
    let secret = decrypt_secret(&by_passphrase, "m.cross_signing.master", &content).unwrap();
    assert_eq!(secret.as_str(), "the master key, in base64");
    let by_recovery_key = HushSsssKey::from_recovery_key(sdk_key.key_id(), &description, &sdk_key.to_base58()).unwrap();
    assert_eq!(decrypt_secret(&by_recovery_key, "m.cross_signing.master", &content).unwrap().as_str(), secret.as_str());
    // The wrong passphrase is refused by the description's check.
    assert!(HushSsssKey::from_passphrase(sdk_key.key_id(), &description, "wrong").is_err());
}

#[tokio::test]
async fn secret_storage_written_by_hush_is_read_by_matrix_sdk_crypto() {
    let hush_key = HushSsssKey::generate_from_passphrase_with("hush passphrase", 10_000).unwrap();
    let encrypted = encrypt_secret(&hush_key, "m.megolm_backup.v1", "the backup key, in base64").unwrap();
    let description = serde_json::to_value(hush_key.description()).unwrap();

    let sdk_data: AesHmacSha2EncryptedData = serde_json::from_value(serde_json::to_value(&encrypted).unwrap()).unwrap();
    for secret in ["hush passphrase".to_owned(), hush_key.recovery_key().to_string()] {
        let sdk_key = SdkSsssKey::from_account_data(&secret, sdk_description(hush_key.key_id(), &description)).unwrap();
        let plain = sdk_key.decrypt(&sdk_data, &SecretName::RecoveryKey).unwrap();
        assert_eq!(plain, b"the backup key, in base64");
    }
    assert!(SdkSsssKey::from_account_data("wrong", sdk_description(hush_key.key_id(), &description)).is_err());
}
