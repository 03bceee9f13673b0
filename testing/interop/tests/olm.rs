//! Olm at the wire level between hush and matrix-sdk-crypto: each side claims
//! the other's one-time key, sessions are made both ways, and to-device
//! messages decrypt both ways.

use std::sync::Arc;

use hush_crypto_core::ToDeviceOutcome;
use hush_interop::{SdkDevice, sdk_decrypted};
use hush_testing::{TestDevice, TestServer, VirtualClock, decrypted};
use matrix_sdk_crypto::CollectStrategy;
use ruma::user_id;
use serde_json::json;

#[tokio::test]
async fn olm_to_device_messages_flow_both_ways() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let mut hush = TestDevice::new(&server, &clock, user_id!("@hush:example.org"), "HUSHDEV").await;
    let mut sdk = SdkDevice::new(&server, user_id!("@sdk:example.org"), "SDKDEV").await;

    // Each side claims the other's one-time key before any message flows.
    let hush_keys = server.one_time_key_count(&hush.user_id, &hush.device_id);
    let sdk_keys = server.one_time_key_count(&sdk.user_id, &sdk.device_id);
    hush.establish_sessions(&[&sdk.user_id]).await;
    sdk.establish_sessions(&[&hush.user_id]).await;
    assert_eq!(server.one_time_key_count(&hush.user_id, &hush.device_id), hush_keys - 1, "sdk claimed no hush key");
    assert_eq!(server.one_time_key_count(&sdk.user_id, &sdk.device_id), sdk_keys - 1, "hush claimed no sdk key");

    // hush accepts the peer's device keys exactly as the peer uploaded them.
    let device = hush.machine.get_device(&sdk.user_id, &sdk.device_id).await.unwrap().expect("sdk device known");
    let ids = sdk.machine.identity_keys();
    assert_eq!(device.ed25519_key().to_base64(), ids.ed25519.to_base64());
    assert_eq!(device.curve25519_key().to_base64(), ids.curve25519.to_base64());

    // hush -> matrix-sdk-crypto, over a session made from the peer's one-time key.
    hush.send_to_device(&sdk.user_id, &sdk.device_id, "org.example.interop", &json!({"n": 1})).await;
    let got = sdk_decrypted(&sdk.sync().await);
    assert_eq!(got.len(), 1, "matrix-sdk-crypto did not decrypt hush's message");
    assert_eq!(got[0]["type"], "org.example.interop");
    assert_eq!(got[0]["content"]["n"], 1);
    assert_eq!(got[0]["sender"], "@hush:example.org");

    // matrix-sdk-crypto -> hush.
    let peer = sdk.machine.get_device(&hush.user_id, &hush.device_id, None).await.unwrap().expect("hush device known");
    let content = peer
        .encrypt_event_raw("org.example.reply", &json!({"ok": true}), CollectStrategy::AllDevices)
        .await
        .expect("sdk encrypts");
    let event = json!({"sender": sdk.user_id, "type": "m.room.encrypted", "content": content});
    server.inject_to_device(&hush.user_id, &hush.device_id, event);
    let output = hush.sync().await;
    assert_eq!(decrypted(&output), vec![(sdk.user_id.clone(), "org.example.reply".to_owned(), json!({"ok": true}))]);
    let ToDeviceOutcome::Decrypted { info, .. } = &output.to_device[0] else { panic!("not decrypted") };
    assert_eq!(info.sender_device.as_deref(), Some(sdk.device_id.as_ref()));

    // Further messages both ways: sessions keep working in both directions.
    for n in 2..5 {
        hush.send_to_device(&sdk.user_id, &sdk.device_id, "org.example.interop", &json!({"n": n})).await;
        let got = sdk_decrypted(&sdk.sync().await);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["content"]["n"], n);

        let content = peer
            .encrypt_event_raw("org.example.reply", &json!({"n": n}), CollectStrategy::AllDevices)
            .await
            .expect("sdk encrypts");
        let event = json!({"sender": sdk.user_id, "type": "m.room.encrypted", "content": content});
        server.inject_to_device(&hush.user_id, &hush.device_id, event);
        assert_eq!(decrypted(&hush.sync().await).len(), 1);
    }
}

#[tokio::test]
async fn matrix_sdk_crypto_first_contact_reaches_hush() {
    // The other direction first: matrix-sdk-crypto opens the first session.
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let mut hush = TestDevice::new(&server, &clock, user_id!("@hush:example.org"), "HUSHDEV").await;
    let sdk = SdkDevice::new(&server, user_id!("@sdk:example.org"), "SDKDEV").await;
    sdk.establish_sessions(&[&hush.user_id]).await;
    let peer = sdk.machine.get_device(&hush.user_id, &hush.device_id, None).await.unwrap().expect("known");
    let content =
        peer.encrypt_event_raw("m.dummy", &json!({}), CollectStrategy::AllDevices).await.expect("sdk encrypts");
    server.inject_to_device(
        &hush.user_id,
        &hush.device_id,
        json!({"sender": sdk.user_id, "type": "m.room.encrypted", "content": content}),
    );
    // hush does not know the sdk device yet: sender_device_keys proves it.
    let output = hush.sync().await;
    let ToDeviceOutcome::Decrypted { info, .. } = &output.to_device[0] else { panic!("{:?}", output.to_device) };
    assert_eq!(info.sender_device.as_deref(), Some(sdk.device_id.as_ref()));

    // hush replies over the session the pre-key message created (no claim needed).
    hush.machine.update_tracked_users([sdk.user_id.as_ref()]).await.unwrap();
    hush.drain().await;
    assert!(hush.machine.get_missing_sessions([sdk.user_id.as_ref()], clock.now()).await.unwrap().is_none());
    hush.send_to_device(&sdk.user_id, &sdk.device_id, "org.example.reply", &json!({"back": true})).await;
    let mut sdk = sdk;
    let got = sdk_decrypted(&sdk.sync().await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["content"]["back"], true);
}
