//! Point 2: a room key is tied to its owner. Two keys with the same session
//! id but another sender key, claimed ed25519 key or owner are different
//! keys: the newcomer is rejected and reported, never merged.

use hush_crypto_core::{EncryptionSettings, MegolmError, OlmError, ToDeviceOutcome};
use hush_testing::{RogueDevice, TestDevice};
use ruma_common::{owned_room_id, user_id};
use serde_json::json;

use super::Victim;

/// Attack: Mallory, a member of the room, received Alice's room key at
/// index 0. Bob joined later and holds the same session from index 1. Mallory
/// re-sends Alice's session (same id, earlier index) to Bob over her own Olm
/// session, hoping Bob replaces Alice's copy with hers: Alice's next message
/// would then fail on Bob's device, and Mallory could re-post Alice's first
/// ciphertext as her own event and have it decrypt as hers.
#[tokio::test]
async fn a_co_member_cannot_take_over_anothers_room_key() {
    let mut v = Victim::new().await;
    let room = owned_room_id!("!room:example.org");
    let alice = TestDevice::new(&v.server, &v.clock, user_id!("@alice:example.org"), "ALICE1").await;
    // Mallory's second device is the one Alice shares with (a rogue device
    // that can read what Alice sends it).
    let mut mallory_member = RogueDevice::register(&v.server, &v.mallory.user_id, "MALLORY2");
    let settings = EncryptionSettings::default();
    alice.share_room_key(&room, &[&v.mallory.user_id], &settings).await;
    let to_mallory = v.server.sync(&v.mallory.user_id, &mallory_member.device_id, "m1".into());
    let shared: Vec<_> = to_mallory
        .to_device_events
        .iter()
        .map(|e| mallory_member.decrypt(&e.deserialize_as_unchecked().unwrap()))
        .filter(|p| p["type"] == "m.room_key")
        .collect();
    let stolen = shared.first().expect("Mallory got the room key")["content"].clone();
    let first = alice.encrypt_text(&room, "first, before Bob").await;

    // Bob is invited: he gets the key from index 1.
    alice.share_room_key(&room, &[&v.mallory.user_id, &v.bob.user_id], &settings).await;
    v.bob.sync().await;
    let second = alice.encrypt_text(&room, "second").await;
    assert_eq!(v.bob.decrypt_text(&room, &second).await.unwrap(), "second");

    // Mallory forwards Alice's session key (index 0) as her own m.room_key.
    let forged = v.plaintext("m.room_key", stolen);
    v.deliver(&forged);
    let output = v.bob.sync().await;
    let [ToDeviceOutcome::PayloadRejected { error, .. }] = output.to_device.as_slice() else {
        panic!("the forged room key was not rejected: {:?}", output.to_device)
    };
    assert!(matches!(error, OlmError::RoomKeyConflict { .. }), "not reported as a conflict: {error:?}");
    assert!(output.room_keys.is_empty(), "the forged key was stored");

    // Alice's key is intact: her next message decrypts, as hers.
    let third = alice.encrypt_text(&room, "third").await;
    assert_eq!(v.bob.decrypt_text(&room, &third).await.unwrap(), "third");
    // Alice's first ciphertext re-posted by Mallory does not decrypt as hers.
    let mut reposted = first.clone();
    reposted["sender"] = json!(v.mallory.user_id);
    reposted["event_id"] = json!("$reposted");
    let result = v.bob.decrypt_text(&room, &reposted).await;
    assert!(
        matches!(result, Err(MegolmError::SenderMismatch { .. } | MegolmError::UnknownMessageIndex { .. })),
        "Mallory's re-post of Alice's ciphertext decrypted: {result:?}"
    );
}

/// Attack (2, files): a key file carries a session id Bob holds from Alice
/// over Olm, but claims Mallory's device keys. It is a different key: not
/// imported, and counted as a conflict.
#[tokio::test]
async fn a_key_file_cannot_take_over_a_room_key_either() {
    let mut v = Victim::new().await;
    let room = owned_room_id!("!room:example.org");
    let alice = TestDevice::new(&v.server, &v.clock, user_id!("@alice:example.org"), "ALICE1").await;
    alice.share_room_key(&room, &[&v.bob.user_id], &EncryptionSettings::default()).await;
    v.bob.sync().await;
    let mut keys = alice.machine.export_room_keys(|_| true).await.unwrap();
    assert_eq!(keys.len(), 1);
    keys[0].sender_key = v.mallory.curve25519_key().to_base64();
    keys[0].sender_claimed_keys.insert("ed25519".into(), v.mallory.ed25519_key().to_base64());
    let result = v.bob.machine.import_room_keys(keys, |_, _| {}).await.unwrap();
    assert_eq!((result.imported_count, result.conflicting_count), (0, 1));
    let message = alice.encrypt_text(&room, "still alice's").await;
    assert_eq!(v.bob.decrypt_text(&room, &message).await.unwrap(), "still alice's");
}
