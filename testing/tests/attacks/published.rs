//! Regressions for vulnerabilities published against other Matrix
//! end-to-end-encryption implementations, each test named after its CVE
//! and stating the attack. The attacks of Albrecht, Celi, Dowling and
//! Jones (IEEE S&P 2023) are in `key_sharing.rs` (semi-trusted and trusted
//! impersonation, confidentiality through impersonation) and in
//! `cross_signing.rs` (key and identity confusion; device injection under
//! identity-based sharing); docs/reliability.md lists them all.

use hush_crypto_core::{EncryptionSettings, MegolmError, OlmError, ToDeviceOutcome};
use hush_testing::TestDevice;
use ruma_common::{owned_room_id, user_id};
use serde_json::json;

use super::Victim;

/// CVE-2026-45056 (matrix-sdk-crypto): an Olm message's plaintext carries
/// `sender_device_keys`, and an implementation that stores them as given
/// lets the sender plant device keys for any user. Attack: Mallory, who
/// holds a real Olm session with Bob, sends him a message whose
/// `sender_device_keys` name Alice's user (with Mallory's own keys, and
/// correctly self-signed: the signature is filed under Mallory, the event's
/// sender, so only the check that the keys name the sender can catch it).
/// Bob refuses the message because the keys name another user; Mallory's
/// next honest message still decrypts.
#[tokio::test]
async fn cve_2026_45056_sender_device_keys_naming_another_user_are_refused() {
    let mut v = Victim::new().await;
    let alice = user_id!("@alice:example.org");
    let mut keys = v.mallory.device_keys_for(alice);
    keys.as_object_mut().expect("an object").remove("signatures");
    let keys = v.mallory.sign(keys);
    let mut plaintext = v.plaintext("org.example.test", json!({"body": "hello"}));
    plaintext["sender_device_keys"] = keys;
    v.deliver(&plaintext);
    let output = v.bob.sync().await;
    let [ToDeviceOutcome::Failed { error, .. }] = output.to_device.as_slice() else {
        panic!("the message was not refused: {:?}", output.to_device)
    };
    let OlmError::InvalidSenderDeviceKeys(reason) = error else { panic!("{error:?}") };
    assert!(reason.contains("list user @alice:example.org, expected @mallory:example.org"), "{reason}");

    let honest = v.plaintext("org.example.test", json!({"body": "again"}));
    v.deliver(&honest);
    let output = v.bob.sync().await;
    assert_eq!(hush_testing::decrypted(&output).len(), 1, "Mallory's honest message after the refusal failed");
}

/// CVE-2025-48937 (matrix-sdk-crypto): a room event was shown as sent by
/// its `sender` field without checking that the sender owns the Megolm
/// session. Attack: Mallory, a member of the room, shares her own room key
/// with Bob over Olm (a genuine key of hers), then the server hands Bob an
/// event encrypted with it whose `sender` is Alice. Bob refuses it as a
/// sender mismatch naming both users, and Mallory's genuine event under
/// the same session and index still decrypts as hers.
#[tokio::test]
async fn cve_2025_48937_an_event_whose_sender_does_not_own_the_room_key_is_refused() {
    let v = Victim::new().await;
    let room = owned_room_id!("!room:example.org");
    let alice = user_id!("@alice:example.org");
    let mut mallory = TestDevice::new(&v.server, &v.clock, user_id!("@mallory:example.org"), "MALLORY2").await;
    let mut bob = v.bob;
    bob.machine.update_tracked_users([mallory.user_id.as_ref()]).await.unwrap();
    bob.sync().await;
    mallory.sync().await;
    mallory.share_room_key(&room, &[bob.user_id.as_ref()], &EncryptionSettings::default()).await;
    bob.sync().await;
    let genuine = mallory.encrypt_text(&room, "from mallory").await;
    let mut spoofed = genuine.clone();
    spoofed["sender"] = json!(alice);
    spoofed["event_id"] = json!("$spoofed");

    let result = bob.decrypt_text(&room, &spoofed).await;
    let Err(MegolmError::SenderMismatch { event_sender, key_owner }) = &result else {
        panic!("the spoof was not refused as a sender mismatch: {result:?}")
    };
    assert_eq!((event_sender.as_str(), key_owner.as_str()), (alice.as_str(), "@mallory:example.org"));
    assert_eq!(bob.decrypt_text(&room, &genuine).await.unwrap(), "from mallory", "the spoof burnt the index");
}
