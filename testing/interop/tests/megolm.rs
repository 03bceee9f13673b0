//! Megolm at the wire level between hush and matrix-sdk-crypto: room keys
//! shared both ways, events decrypted both ways, and key export files read
//! by the other engine.

use std::sync::Arc;

use hush_crypto_core::EncryptionSettings;
use hush_interop::SdkDevice;
use hush_testing::{TestDevice, TestServer, VirtualClock};
use matrix_sdk_crypto::{DecryptionSettings, EncryptionSettings as SdkSettings, TrustRequirement};
use ruma::{RoomId, room_id, serde::Raw, user_id};
use serde_json::{Value, json};

fn room() -> &'static RoomId {
    room_id!("!interop:example.org")
}

async fn pair() -> (Arc<TestServer>, VirtualClock, TestDevice, SdkDevice) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let mut hush = TestDevice::new(&server, &clock, user_id!("@hush:example.org"), "HUSHDEV").await;
    let mut sdk = SdkDevice::new(&server, user_id!("@sdk:example.org"), "SDKDEV").await;
    hush.sync().await;
    sdk.sync().await;
    (server, clock, hush, sdk)
}

async fn sdk_decrypt(sdk: &SdkDevice, event: &Value) -> Result<String, String> {
    let raw = Raw::new(event).unwrap().cast_unchecked();
    let settings = DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted };
    match sdk.machine.decrypt_room_event(&raw, room(), &settings).await {
        Ok(decrypted) => {
            let value: Value = decrypted.event.deserialize_as_unchecked().unwrap();
            Ok(value["content"]["body"].as_str().unwrap_or_default().to_owned())
        }
        Err(error) => Err(error.to_string()),
    }
}

async fn sdk_share(sdk: &SdkDevice, users: &[&ruma::UserId]) {
    sdk.establish_sessions(users).await;
    let requests =
        sdk.machine.share_room_key(room(), users.iter().copied(), SdkSettings::default()).await.expect("sdk shares");
    for request in requests {
        sdk.send_to_device(&request).await;
    }
}

#[tokio::test]
async fn hush_room_key_decrypts_on_matrix_sdk_crypto() {
    let (_server, _clock, hush, mut sdk) = pair().await;
    hush.share_room_key(room(), &[&hush.user_id, &sdk.user_id], &EncryptionSettings::default()).await;
    let events = [hush.encrypt_text(room(), "from hush 1").await, hush.encrypt_text(room(), "from hush 2").await];
    sdk.sync().await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(sdk_decrypt(&sdk, event).await.unwrap(), format!("from hush {}", i + 1));
    }
}

#[tokio::test]
async fn matrix_sdk_crypto_room_key_decrypts_on_hush() {
    let (_server, _clock, mut hush, sdk) = pair().await;
    sdk_share(&sdk, &[&sdk.user_id, &hush.user_id]).await;
    let event = sdk.encrypt_text(room(), "from the sdk", "$sdk1").await;
    let output = hush.sync().await;
    assert_eq!(output.room_keys.len(), 1, "hush stored no room key: {:?}", output.to_device);
    hush.machine.update_tracked_users([sdk.user_id.as_ref()]).await.unwrap();
    hush.drain().await;
    assert_eq!(hush.decrypt_text(room(), &event).await.unwrap(), "from the sdk");
    let raw = ruma::serde::Raw::new(&event).unwrap();
    let info = hush.machine.decrypt_room_event(&raw, room(), &Default::default()).await.unwrap().info;
    assert_eq!(info.sender_device.as_deref(), Some(sdk.device_id.as_ref()));
}

#[tokio::test]
async fn a_matrix_sdk_crypto_export_imports_into_hush() {
    let (server, clock, hush, mut sdk) = pair().await;
    sdk_share(&sdk, &[&sdk.user_id]).await;
    let event = sdk.encrypt_text(room(), "exported by the sdk", "$sdk2").await;
    sdk.sync().await;
    let keys = sdk.machine.store().export_room_keys(|_| true).await.unwrap();
    assert!(!keys.is_empty());
    let file = matrix_sdk_crypto::encrypt_room_key_export(&keys, "shared secret", 1000).unwrap();

    let reader = TestDevice::new(&server, &clock, user_id!("@hush:example.org"), "HUSH2").await;
    let result = reader
        .machine
        .import_room_key_export(&mut std::io::Cursor::new(file.as_bytes()), "shared secret", |_, _| {})
        .await
        .expect("hush reads the sdk's file");
    assert_eq!(result.imported_count, keys.len());
    assert_eq!(reader.decrypt_text(room(), &event).await.unwrap(), "exported by the sdk");
    drop(hush);
}

#[tokio::test]
async fn a_hush_export_imports_into_matrix_sdk_crypto() {
    let (server, _clock, hush, _sdk) = pair().await;
    hush.share_room_key(room(), &[&hush.user_id], &EncryptionSettings::default()).await;
    let event = hush.encrypt_text(room(), "exported by hush").await;
    let mut file = Vec::new();
    hush.machine.export_room_keys_to(&mut file, "shared secret", 1000, |_| true).await.unwrap();

    let fresh = SdkDevice::new(&server, user_id!("@hush:example.org"), "SDK2").await;
    let keys =
        matrix_sdk_crypto::decrypt_room_key_export(file.as_slice(), "shared secret").expect("sdk reads hush's file");
    let result = fresh.machine.store().import_exported_room_keys(keys, |_, _| {}).await.unwrap();
    assert_eq!(result.imported_count, 1);
    let mut event = event;
    event["room_id"] = json!(room());
    assert_eq!(sdk_decrypt(&fresh, &event).await.unwrap(), "exported by hush");
}
