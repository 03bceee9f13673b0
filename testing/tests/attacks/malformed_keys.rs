//! Point 1: keys that decode to the wrong length (vodozemac 0.11 panicked on
//! a 33-byte ed25519 key) are typed errors at every site that reads keys
//! from outside, and the rest of the sync goes on.

use hush_crypto_core::{OlmError, ToDeviceOutcome, export::ExportedRoomKey};
use hush_testing::decrypted;
use ruma_common::owned_room_id;
use serde_json::{Value, json};

use super::{Victim, key_of_33_bytes};

/// Delivers `bad` then a valid message; the bad one must fail with
/// `expected`, the good one must decrypt.
async fn rejected_then_rest_processed(v: &mut Victim, bad: Value, expected: impl Fn(&OlmError) -> bool) {
    v.deliver(&bad);
    let good = v.plaintext("org.example.test", json!({"body": "after"}));
    v.deliver(&good);
    let output = v.bob.sync().await;
    assert_eq!(output.to_device.len(), 2, "both events have an outcome");
    let ToDeviceOutcome::Failed { error, .. } = &output.to_device[0] else {
        panic!("the hostile event was accepted: {:?}", output.to_device[0])
    };
    assert!(expected(error), "unexpected error {error:?}");
    assert_eq!(decrypted(&output).len(), 1, "the valid event after the hostile one was not processed");
}

/// Attack: Mallory, who claimed one of Bob's one-time keys, sends an Olm
/// message whose plaintext `recipient_keys.ed25519` is 33 bytes long, to make
/// Bob's `receive_sync_changes` panic on every retry.
#[tokio::test]
async fn a_33_byte_recipient_key_is_an_error() {
    let mut v = Victim::new().await;
    let mut bad = v.plaintext("org.example.test", json!({}));
    bad["recipient_keys"]["ed25519"] = json!(key_of_33_bytes());
    rejected_then_rest_processed(&mut v, bad, |e| {
        matches!(e, OlmError::InvalidKey { what: "recipient_keys.ed25519", .. })
    })
    .await;
}

/// Attack: the same with the sender's claimed `keys.ed25519`.
#[tokio::test]
async fn a_33_byte_sender_key_is_an_error() {
    let mut v = Victim::new().await;
    let mut bad = v.plaintext("org.example.test", json!({}));
    bad["keys"]["ed25519"] = json!(key_of_33_bytes());
    rejected_then_rest_processed(&mut v, bad, |e| matches!(e, OlmError::InvalidKey { what: "keys.ed25519", .. })).await;
}

/// Attack: the same inside `sender_device_keys` (parsed as device keys).
#[tokio::test]
async fn a_33_byte_key_in_sender_device_keys_is_an_error() {
    let mut v = Victim::new().await;
    let mut bad = v.plaintext("org.example.test", json!({}));
    let id = format!("ed25519:{}", v.mallory.device_id);
    bad["sender_device_keys"]["keys"][id] = json!(key_of_33_bytes());
    rejected_then_rest_processed(&mut v, bad, |e| matches!(e, OlmError::InvalidSenderDeviceKeys(_))).await;
}

/// Attack: Mallory uploads device keys whose ed25519 key is 33 bytes (a
/// hostile server could serve them too); every user tracking Mallory parses
/// them in `/keys/query`, which made `mark_request_as_sent` panic.
#[tokio::test]
async fn a_33_byte_key_in_a_keys_query_answer_is_rejected() {
    let mut v = Victim::new().await;
    let before = v.bob.machine.get_device(&v.mallory.user_id, &v.mallory.device_id).await.unwrap().unwrap();
    let mut keys = v.mallory.device_keys_for(&v.mallory.user_id);
    keys["keys"][format!("ed25519:{}", v.mallory.device_id)] = json!(key_of_33_bytes());
    v.server.overwrite_device_keys(&v.mallory.user_id, &v.mallory.device_id, keys);
    // The sync marks Mallory outdated; the drain sends the query and hands
    // the answer back (TestDevice fails the test if that errors or panics).
    v.bob.sync().await;
    assert!(!v.bob.machine.is_user_dirty(&v.mallory.user_id), "the answer was processed");
    let after = v.bob.machine.get_device(&v.mallory.user_id, &v.mallory.device_id).await.unwrap().unwrap();
    assert_eq!(after.ed25519_key(), before.ed25519_key(), "the known device kept its keys");
}

/// Attack: a key file whose `sender_claimed_keys.ed25519` is 33 bytes.
#[tokio::test]
async fn a_33_byte_claimed_key_in_a_key_file_is_skipped() {
    let v = Victim::new().await;
    let mut outbound = vodozemac::megolm::GroupSession::new(Default::default());
    let inbound = vodozemac::megolm::InboundGroupSession::new(&outbound.session_key(), Default::default());
    outbound.encrypt("x");
    let key = ExportedRoomKey {
        algorithm: "m.megolm.v1.aes-sha2".into(),
        room_id: owned_room_id!("!room:example.org"),
        sender_key: v.mallory.curve25519_key().to_base64(),
        session_id: inbound.session_id(),
        session_key: inbound.export_at_first_known_index().to_base64(),
        sender_claimed_keys: [("ed25519".to_owned(), key_of_33_bytes())].into(),
        forwarding_curve25519_key_chain: vec![],
        shared_history: false,
    };
    let result = v.bob.machine.import_room_keys(vec![key], |_, _| {}).await.unwrap();
    assert_eq!((result.imported_count, result.total_count), (0, 1), "the key with a broken claimed key was skipped");
    assert_eq!(result.invalid_count, 1, "and counted as invalid, as a backup restore counts its bad entries");
}

/// Bytes from a small seeded generator (no clock, no global state).
fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) as u8
        })
        .collect()
}

/// Property: random base64 of every length 0–100 in every key field of an
/// Olm plaintext and of `sender_device_keys` is a typed error (or, at 32
/// bytes, possibly a valid key rejected for not matching): never a panic,
/// and the valid event after it is still processed.
#[tokio::test]
async fn random_keys_of_every_length_in_olm_payloads_never_panic() {
    let mut v = Victim::new().await;
    let mut seed = 10;
    let device_key = format!("ed25519:{}", v.mallory.device_id);
    let curve_key = format!("curve25519:{}", v.mallory.device_id);
    for len in 0..=100 {
        let key = vodozemac::base64_encode(bytes(&mut seed, len));
        let fields: [&dyn Fn(&mut Value); 4] = [
            &|p| p["recipient_keys"]["ed25519"] = json!(key),
            &|p| p["keys"]["ed25519"] = json!(key),
            &|p| p["sender_device_keys"]["keys"][&device_key] = json!(key),
            &|p| p["sender_device_keys"]["keys"][&curve_key] = json!(key),
        ];
        for field in fields {
            let mut bad = v.plaintext("org.example.test", json!({}));
            field(&mut bad);
            rejected_then_rest_processed(&mut v, bad, |_| true).await;
        }
    }
}

/// Property: random base64 of every length 0–100 as the outer `sender_key`
/// of an encrypted to-device event, of a withheld notice and of a room
/// event: typed errors, never a panic.
#[tokio::test]
async fn random_keys_of_every_length_in_outer_fields_never_panic() {
    let mut v = Victim::new().await;
    let room = owned_room_id!("!room:example.org");
    let mut seed = 20;
    for len in 0..=100 {
        let key = vodozemac::base64_encode(bytes(&mut seed, len));
        let to_device = json!({"sender": v.mallory.user_id, "type": "m.room.encrypted", "content": {
            "algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": key, "ciphertext": {}}});
        let withheld = json!({"sender": v.mallory.user_id, "type": "m.room_key.withheld", "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "room_id": room, "session_id": "abc", "sender_key": key,
            "code": "m.unverified", "reason": "x"}});
        v.server.inject_to_device(&v.bob.user_id, &v.bob.device_id, to_device);
        v.server.inject_to_device(&v.bob.user_id, &v.bob.device_id, withheld);
        let output = v.bob.sync().await;
        assert_eq!(output.to_device.len(), 2);
        assert!(matches!(output.to_device[0], ToDeviceOutcome::Failed { .. }));
        let event = json!({"type": "m.room.encrypted", "event_id": format!("$e{len}"), "sender": v.mallory.user_id,
            "origin_server_ts": 1, "room_id": room, "content": {"algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": key, "session_id": "abc", "ciphertext": "AwgA", "device_id": "X"}});
        assert!(v.bob.decrypt_text(&room, &event).await.is_err());
    }
}

/// Property: random base64 of every length 0–100 as a device's ed25519 or
/// curve25519 key in a keys-query answer, as a claimed one-time key, and as
/// a key file's `sender_key` or claimed ed25519 key: the item is refused
/// with a typed error, the answer or file is still processed, nothing panics.
#[tokio::test]
async fn random_keys_of_every_length_in_server_answers_and_files_never_panic() {
    let mut v = Victim::new().await;
    let mut seed = 30;
    let known = v.bob.machine.get_device(&v.mallory.user_id, &v.mallory.device_id).await.unwrap().unwrap();
    let victim_of_claims = hush_testing::RogueDevice::register(&v.server, &v.mallory.user_id, "CLAIMED");
    v.bob.sync().await;
    let (mut outbound, room) = (vodozemac::megolm::GroupSession::new(Default::default()), owned_room_id!("!r:e.org"));
    outbound.encrypt("x");
    let inbound = vodozemac::megolm::InboundGroupSession::new(&outbound.session_key(), Default::default());
    for len in 0..=100 {
        let key = vodozemac::base64_encode(bytes(&mut seed, len));
        for which in ["ed25519", "curve25519"] {
            let mut keys = v.mallory.device_keys_for(&v.mallory.user_id);
            keys["keys"][format!("{which}:{}", v.mallory.device_id)] = json!(key);
            keys.as_object_mut().unwrap().remove("signatures");
            v.server.overwrite_device_keys(&v.mallory.user_id, &v.mallory.device_id, v.mallory.sign(keys));
            v.bob.sync().await;
            assert!(!v.bob.machine.is_user_dirty(&v.mallory.user_id), "the answer was not processed");
            let after = v.bob.machine.get_device(&v.mallory.user_id, &v.mallory.device_id).await.unwrap().unwrap();
            assert_eq!(after.curve25519_key(), known.curve25519_key());
        }

        let signed = victim_of_claims.sign(json!({"key": key}));
        let id: ruma_common::OwnedOneTimeKeyId = format!("signed_curve25519:K{len}").try_into().unwrap();
        v.server.replace_one_time_keys(&v.mallory.user_id, &victim_of_claims.device_id, [(id, signed)].into());
        let claim = v.bob.machine.get_missing_sessions([v.mallory.user_id.as_ref()], v.clock.now()).await.unwrap();
        if let Some(claim) = claim {
            v.bob.send(&claim).await;
        }
        v.clock.advance(std::time::Duration::from_secs(3600));

        for field in ["sender_key", "ed25519"] {
            let mut exported = ExportedRoomKey {
                algorithm: "m.megolm.v1.aes-sha2".into(),
                room_id: room.clone(),
                sender_key: v.mallory.curve25519_key().to_base64(),
                session_id: inbound.session_id(),
                session_key: inbound.export_at_first_known_index().to_base64(),
                sender_claimed_keys: Default::default(),
                forwarding_curve25519_key_chain: vec![],
                shared_history: false,
            };
            match field {
                "sender_key" => exported.sender_key = key.clone(),
                _ => {
                    exported.sender_claimed_keys.insert("ed25519".into(), key.clone());
                }
            }
            let result = v.bob.machine.import_room_keys(vec![exported], |_, _| {}).await.unwrap();
            assert_eq!(result.total_count, 1);
        }
    }
}
