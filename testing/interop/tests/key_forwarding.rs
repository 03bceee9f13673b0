//! Room-key requests and forwarding between hush and matrix-sdk-crypto, on
//! the wire only: a key forwarded by either engine to the other's device
//! of the same (verified) user is accepted and decrypts the history, and a
//! key forwarded by another user is refused by either.

use std::sync::Arc;

use hush_crypto_core::{AnyOutgoingRequest, EncryptionSettings, KeySource, LocalTrust, OlmError, ToDeviceOutcome};
use hush_interop::SdkDevice;
use hush_testing::{TestDevice, TestServer, VirtualClock};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings as SdkSettings, LocalTrust as SdkTrust, TrustRequirement,
    types::events::room::encrypted::EncryptedEvent,
};
use ruma::{RoomId, UserId, room_id, serde::Raw, to_device::DeviceIdOrAllDevices, user_id};
use serde_json::{Value, json};

fn room() -> &'static RoomId {
    room_id!("!forwarding:example.org")
}

fn settings() -> DecryptionSettings {
    DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted }
}

async fn sdk_decrypts(sdk: &SdkDevice, event: &Value) -> Option<String> {
    let raw = Raw::new(event).unwrap().cast_unchecked();
    let decrypted = sdk.machine.decrypt_room_event(&raw, room(), &settings()).await.ok()?;
    let value: Value = decrypted.event.deserialize_as_unchecked().ok()?;
    value["content"]["body"].as_str().map(ToOwned::to_owned)
}

/// The sdk asks its own devices for the key of `event`.
async fn sdk_requests_key(sdk: &SdkDevice, event: &Value) {
    let raw: Raw<EncryptedEvent> = Raw::new(event).unwrap().cast_unchecked();
    let (_, request) = sdk.machine.request_room_key(&raw, room()).await.expect("a key request");
    if let matrix_sdk_crypto::types::requests::AnyOutgoingRequest::ToDeviceRequest(r) = request.request() {
        sdk.send_to_device(r).await;
    }
}

/// Both devices of `user` trust each other by hand (as after a SAS).
async fn trust_each_other(hush: &TestDevice, sdk: &SdkDevice, user: &UserId) {
    hush.refresh_keys(&[user]).await;
    sdk.machine.update_tracked_users([user]).await.unwrap();
    sdk.machine.mark_all_tracked_users_as_dirty().await.unwrap();
    sdk.drain().await;
    hush.machine.set_local_trust(user, &sdk.device_id, LocalTrust::Verified).await.unwrap();
    let device = sdk.machine.get_device(user, &hush.device_id, None).await.unwrap().expect("the sdk knows hush");
    device.set_local_trust(SdkTrust::Verified).await.unwrap();
}

#[tokio::test]
async fn a_key_hush_forwards_to_its_users_sdk_device_is_accepted() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let user = user_id!("@carol:example.org");
    let hush = TestDevice::new(&server, &clock, user, "HUSH").await;
    hush.share_room_key(room(), &[user], &EncryptionSettings::default()).await;
    let event = hush.encrypt_text(room(), "sent before the sdk login").await;

    let mut sdk = SdkDevice::new(&server, user, "SDK").await;
    sdk.sync().await;
    assert_eq!(sdk_decrypts(&sdk, &event).await, None, "the sdk device has no key yet");
    trust_each_other(&hush, &sdk, user).await;
    sdk_requests_key(&sdk, &event).await;
    let mut hush = hush;
    hush.sync().await;
    hush.drain().await;
    sdk.sync().await;
    assert_eq!(sdk_decrypts(&sdk, &event).await.as_deref(), Some("sent before the sdk login"));
}

#[tokio::test]
async fn a_key_matrix_sdk_crypto_forwards_to_its_users_hush_device_is_accepted() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let user = user_id!("@erin:example.org");
    let mut sdk = SdkDevice::new(&server, user, "SDK").await;
    sdk.establish_sessions(&[user]).await;
    for request in sdk.machine.share_room_key(room(), [user].into_iter(), SdkSettings::default()).await.unwrap() {
        sdk.send_to_device(&request).await;
    }
    let event = sdk.encrypt_text(room(), "sent before the hush login", "$sdk1").await;

    let mut hush = TestDevice::new(&server, &clock, user, "HUSH").await;
    hush.sync().await;
    assert!(hush.decrypt_text(room(), &event).await.is_err(), "hush has no key yet");
    trust_each_other(&hush, &sdk, user).await;
    hush.machine.request_room_key(room(), event["content"]["session_id"].as_str().unwrap()).await.unwrap();
    hush.drain().await;
    // The sdk claims a session with hush, then forwards.
    sdk.sync().await;
    sdk.sync().await;
    let output = hush.sync().await;
    assert_eq!(output.room_keys.len(), 1, "{:?}", output.to_device);
    assert_eq!(hush.decrypt_text(room(), &event).await.unwrap(), "sent before the hush login");
    let raw = hush_crypto_core::deps::ruma_common::serde::Raw::new(&event).unwrap();
    let info = hush.machine.decrypt_room_event(&raw, room(), &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Forwarded);
}

/// Attack: Mallory, another user who holds the room key, answers the sdk
/// device's request with it (over Olm, so it is really from her). The sdk
/// takes forwards only from its own verified devices: refused.
#[tokio::test]
async fn matrix_sdk_crypto_refuses_a_key_hush_forwards_from_another_user() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (user, mallory_id) = (user_id!("@frank:example.org"), user_id!("@mallory:example.org"));
    let mallory = TestDevice::new(&server, &clock, mallory_id, "MALLORY").await;
    mallory.share_room_key(room(), &[mallory_id], &EncryptionSettings::default()).await;
    let event = mallory.encrypt_text(room(), "mallory's words").await;
    let key = mallory.machine.export_room_keys(|_| true).await.unwrap().remove(0);

    let mut sdk = SdkDevice::new(&server, user, "SDK").await;
    sdk.sync().await;
    sdk_requests_key(&sdk, &event).await;
    let forwarded = json!({
        "algorithm": key.algorithm,
        "room_id": room(),
        "sender_key": key.sender_key,
        "session_id": key.session_id,
        "session_key": key.session_key,
        "sender_claimed_ed25519_key": key.sender_claimed_keys["ed25519"],
        "forwarding_curve25519_key_chain": [],
    });
    mallory.establish_sessions(&[user]).await;
    mallory.send_to_device(user, "SDK".into(), "m.forwarded_room_key", &forwarded).await;
    let processed = sdk.sync().await;
    let delivered = hush_interop::sdk_decrypted(&processed);
    assert!(
        delivered.iter().any(|e| e["type"] == "m.forwarded_room_key"),
        "the forward reached the sdk: {delivered:?}"
    );
    assert_eq!(sdk_decrypts(&sdk, &event).await, None, "the forward was refused");
}

/// Attack: Dave (matrix-sdk-crypto), who made the room key and shared it
/// with hush's device, forwards it again when asked: the key is genuine,
/// but it comes from another user, so hush refuses it. (hush addresses its
/// requests to its own devices only; the server hands this one to Dave.)
#[tokio::test]
async fn hush_refuses_a_key_matrix_sdk_crypto_forwards_from_another_user() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let (user, dave_id) = (user_id!("@grace:example.org"), user_id!("@dave:example.org"));
    let mut hush = TestDevice::new(&server, &clock, user, "HUSH").await;
    let mut dave = SdkDevice::new(&server, dave_id, "DAVE").await;
    dave.establish_sessions(&[user]).await;
    for request in dave.machine.share_room_key(room(), [user].into_iter(), SdkSettings::default()).await.unwrap() {
        dave.send_to_device(&request).await;
    }
    let event = dave.encrypt_text(room(), "dave's words", "$dave1").await;
    // The share never reaches hush (dropped by the server).
    let _ = server.sync(&hush.user_id, &hush.device_id, "dropped".into());
    hush.refresh_keys(&[dave_id]).await;

    hush.machine.request_room_key(room(), event["content"]["session_id"].as_str().unwrap()).await.unwrap();
    let requests = hush.machine.outgoing_requests(clock.now()).await.unwrap();
    let mut request = requests
        .iter()
        .find_map(|r| match r.request() {
            AnyOutgoingRequest::ToDevice(r) if r.event_type.to_string() == "m.room_key_request" => Some(r.clone()),
            _ => None,
        })
        .expect("the key request");
    let content = request.messages.values().next().unwrap().values().next().unwrap().clone();
    request.messages = [(dave_id.to_owned(), [(DeviceIdOrAllDevices::AllDevices, content)].into())].into();
    server.send_to_device(&hush.user_id, &request);
    dave.sync().await;
    dave.sync().await;
    let output = hush.sync().await;
    let refused: Vec<&OlmError> = output
        .to_device
        .iter()
        .filter_map(|o| match o {
            ToDeviceOutcome::PayloadRejected { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert!(
        matches!(refused.as_slice(), [OlmError::Gossip(hush_crypto_core::gossip::GossipError::NotOurUser { .. })]),
        "{refused:?} / {:?}",
        output.to_device
    );
    assert!(hush.decrypt_text(room(), &event).await.is_err(), "no key stored");
}
