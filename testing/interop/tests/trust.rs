//! Issue 31: hush beside matrix-sdk-crypto 0.19.1 configured as Element
//! configures it under "exclude insecure devices" (spec v1.18): room keys
//! only for devices their owner cross-signed
//! (`CollectStrategy::IdentityBasedStrategy`), and a cross-signed-or-legacy
//! decryption requirement. hush with its recommended settings
//! (`SharingStrategy::IdentityBased`, `TrustRequirement::ExcludeInsecureDevices`),
//! on the in-process server. A hush device set up with cross-signing (what
//! `ensure_identity` does on a real server) gets the sdk's keys and reads
//! them; one that was not set up is refused with `m.unverified`; and hush
//! refuses an unsigned sdk device the same way.

use std::sync::Arc;

use hush_crypto_core::{
    DecryptionSettings as HushDecryption, EncryptionSettings, MegolmError, SharingStrategy, TrustRequirement as HushTrust,
    megolm::WithheldCode as HushWithheld,
};
use hush_interop::SdkDevice;
use hush_testing::{TestDevice, TestServer, VirtualClock};
use matrix_sdk_crypto::{
    CollectStrategy, DecryptionSettings, EncryptionSettings as SdkSettings, MegolmError as SdkMegolmError,
    TrustRequirement,
};
use matrix_sdk_common::deserialized_responses::WithheldCode;
use ruma::{RoomId, UserId, room_id, serde::Raw, user_id};
use serde_json::Value;

fn room() -> &'static RoomId {
    room_id!("!trust:example.org")
}

fn sdk_settings() -> SdkSettings {
    SdkSettings { sharing_strategy: CollectStrategy::IdentityBasedStrategy, ..SdkSettings::default() }
}

fn hush_settings() -> EncryptionSettings {
    EncryptionSettings { sharing_strategy: SharingStrategy::recommended(), ..EncryptionSettings::default() }
}

/// Shares the sdk's room key with `users` under Element's strategy.
async fn sdk_share(sdk: &SdkDevice, users: &[&UserId]) {
    sdk.machine.update_tracked_users(users.iter().copied()).await.unwrap();
    sdk.drain().await;
    sdk.establish_sessions(users).await;
    let requests = sdk.machine.share_room_key(room(), users.iter().copied(), sdk_settings()).await.expect("sdk shares");
    for request in requests {
        sdk.send_to_device(&request).await;
    }
}

async fn sdk_decrypt(sdk: &SdkDevice, event: &Value) -> Result<String, SdkMegolmError> {
    let raw = Raw::new(event).unwrap().cast_unchecked();
    let settings = DecryptionSettings { sender_device_trust_requirement: TrustRequirement::CrossSignedOrLegacy };
    let decrypted = sdk.machine.decrypt_room_event(&raw, room(), &settings).await?;
    let value: Value = decrypted.event.deserialize_as_unchecked().unwrap();
    Ok(value["content"]["body"].as_str().unwrap_or_default().to_owned())
}

async fn hush_decrypt(hush: &TestDevice, event: &Value) -> Result<String, MegolmError> {
    let raw = Raw::new(event).unwrap();
    let settings = HushDecryption { sender_device_trust_requirement: HushTrust::recommended() };
    let decrypted = hush.machine.decrypt_room_event(&raw, room(), &settings).await?;
    let value: Value = decrypted.event.deserialize_as_unchecked().unwrap();
    Ok(value["content"]["body"].as_str().unwrap_or_default().to_owned())
}

/// The sdk (cross-signed) and two hush devices of one user: HUSH1
/// cross-signed by its owner, HUSH2 a login that was never set up.
async fn world() -> (Arc<TestServer>, TestDevice, TestDevice, SdkDevice) {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let hush_user = user_id!("@hush:example.org");
    let mut hush1 = TestDevice::new(&server, &clock, hush_user, "HUSH1").await;
    hush1.bootstrap_cross_signing(false).await;
    let mut hush2 = TestDevice::new(&server, &clock, hush_user, "HUSH2").await;
    let mut sdk = SdkDevice::new(&server, user_id!("@sdk:example.org"), "SDKDEV").await;
    sdk.bootstrap_cross_signing(false).await;
    hush1.sync().await;
    hush2.sync().await;
    sdk.sync().await;
    for hush in [&hush1, &hush2] {
        hush.refresh_keys(&[&hush.user_id, &sdk.user_id]).await;
    }
    (server, hush1, hush2, sdk)
}

#[tokio::test]
async fn element_configured_sdk_shares_with_a_set_up_hush_device_and_withholds_m_unverified_from_the_other() {
    let (_server, mut hush1, mut hush2, sdk) = world().await;
    sdk_share(&sdk, &[&sdk.user_id, &hush1.user_id]).await;
    let event = sdk.encrypt_text(room(), "exclude insecure devices", "$sdk1").await;
    hush1.sync().await;
    hush2.sync().await;
    assert_eq!(hush_decrypt(&hush1, &event).await.as_deref(), Ok("exclude insecure devices"), "HUSH1 reads it");
    let refused = hush_decrypt(&hush2, &event).await.unwrap_err();
    assert!(
        matches!(refused, MegolmError::MissingRoomKey { withheld: Some(HushWithheld::Unverified), .. }),
        "HUSH2: {refused:?}"
    );
}

#[tokio::test]
async fn hush_withholds_m_unverified_from_an_unsigned_sdk_device_and_the_sdk_reads_a_signed_hush_device() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let mut hush = TestDevice::new(&server, &clock, user_id!("@hush:example.org"), "HUSH1").await;
    hush.bootstrap_cross_signing(false).await;
    let mut unsigned = SdkDevice::new(&server, user_id!("@legacy:example.org"), "OLDSDK").await;
    let mut signed = SdkDevice::new(&server, user_id!("@sdk:example.org"), "SDKDEV").await;
    signed.bootstrap_cross_signing(false).await;
    hush.sync().await;
    unsigned.sync().await;
    signed.sync().await;
    let users: [&UserId; 3] = [&hush.user_id, &unsigned.user_id, &signed.user_id];
    hush.share_room_key(room(), &users, &hush_settings()).await;
    let event = hush.encrypt_text(room(), "only for cross-signed devices").await;
    unsigned.sync().await;
    signed.sync().await;
    signed.machine.update_tracked_users([hush.user_id.as_ref()]).await.unwrap();
    signed.drain().await;
    assert_eq!(sdk_decrypt(&signed, &event).await.ok().as_deref(), Some("only for cross-signed devices"));
    let refused = sdk_decrypt(&unsigned, &event).await.unwrap_err();
    assert!(
        matches!(refused, SdkMegolmError::MissingRoomKey(Some(WithheldCode::Unverified))),
        "the unsigned sdk device: {refused:?}"
    );
}
