//! Attacks on sharing secrets and room keys between one's own devices
//! (`m.secret.*`, `m.room_key_request`, `m.forwarded_room_key`), after
//! Albrecht, Celi, Dowling and Jones, "Practically-exploitable
//! cryptographic vulnerabilities in Matrix" (IEEE S&P 2023): a malicious
//! homeserver adding devices to the user's account, another user
//! forwarding keys of their own, and unrequested or mismatching answers.

use hush_crypto_core::{
    EncryptionSettings, EngineEvent, KeySource, OlmError, ToDeviceOutcome,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey},
    gossip::{GossipError, GossipKind},
    secret_storage::names,
};
use hush_testing::{
    TestDevice,
    own_devices::{alice, ask_for_all_secrets, first_device, second_device, two_devices},
};
use ruma_common::{room_id, user_id};
use serde_json::{Value, json};

fn rejections(outcomes: &[ToDeviceOutcome]) -> Vec<OlmError> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            ToDeviceOutcome::PayloadRejected { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

/// Attack: the server (or a thief with the password) adds a device to the
/// user's account and asks for the secrets. It is ours by user id, but not
/// verified, so nothing is sent to it.
#[tokio::test]
async fn secrets_are_not_sent_to_an_unverified_own_device() {
    let (server, _clock, mut first, mut second, _) = two_devices(false).await;
    ask_for_all_secrets(&server, &mut first, &mut second).await;
    assert!(!second.machine.cross_signing_status().has_master);
    assert!(second.machine.backup_decryption_key().await.unwrap().is_none());
    assert_eq!(second.machine.open_gossip_requests().len(), 4, "the requests stay open");
}

/// Attack: the server adds a device of its own to the user's account and
/// a backup version whose private key it knows; the client asks for that
/// backup's key and the server's device answers with the matching key, so
/// the check against the public part passes. The sender is not a device we
/// verified, so the key is refused and our keys never go to that backup.
/// A verified device's answer that does not match our published keys, or
/// that answers nothing we asked, is refused too.
#[tokio::test]
async fn a_secret_from_an_unverified_device_unrequested_or_not_matching_is_refused() {
    let (server, clock, first, mut second, _) = two_devices(true).await;
    let rogue = TestDevice::new(&server, &clock, alice(), "ROGUE").await;
    second.refresh_keys(&[alice()]).await;
    let servers_key = BackupDecryptionKey::generate().unwrap();
    server.create_backup_version(
        alice(),
        BACKUP_ALGORITHM,
        json!({ "public_key": servers_key.public_key().to_base64() }),
    );
    let servers_backup = server.latest_backup(alice()).unwrap();
    second.machine.request_backup_key(&servers_backup).await.unwrap();
    second.machine.request_secret(names::MASTER).await.unwrap();
    second.drain().await;
    let open = second.machine.open_gossip_requests();
    let id_of = |name: &str| {
        open.iter().find(|r| r.kind == GossipKind::Secret { name: name.into() }).unwrap().request_id.clone()
    };
    let (backup_request, master_request) = (id_of(names::BACKUP), id_of(names::MASTER));

    rogue.establish_sessions(&[alice()]).await;
    let matching = json!({ "request_id": backup_request, "secret": servers_key.to_base64().as_str() });
    rogue.send_to_device(alice(), "ALICE2".into(), "m.secret.send", &matching).await;
    first.establish_sessions(&[alice()]).await;
    // Verified, but not the master key we publish.
    let not_ours = json!({ "request_id": master_request, "secret": "a".repeat(43) });
    first.send_to_device(alice(), "ALICE2".into(), "m.secret.send", &not_ours).await;
    // Verified and real, but for no request of ours.
    let real = first.machine.export_cross_signing_keys().unwrap().master.unwrap();
    let unrequested = json!({ "request_id": "never-asked", "secret": real.as_str() });
    first.send_to_device(alice(), "ALICE2".into(), "m.secret.send", &unrequested).await;
    let output = second.sync().await;

    // The decrypted events never carry the secret.
    for outcome in &output.to_device {
        if let ToDeviceOutcome::Decrypted { event, .. } = outcome {
            let value: Value = event.deserialize_as_unchecked().unwrap();
            assert_eq!(value["content"]["secret"], "", "the secret is blanked");
        }
    }
    assert!(second.machine.backup_decryption_key().await.unwrap().is_none(), "the server's key is not taken");
    assert!(!second.machine.cross_signing_status().has_master, "nothing imported");
    assert_eq!(second.machine.open_gossip_requests().len(), 2, "both stay open");
    assert!(second.machine.drain_events().iter().all(|e| !matches!(e, EngineEvent::SecretReceived { .. })));
}

/// Attack: another user (or a device of ours we have not verified)
/// forwards a key of their own making for the session we asked about,
/// claiming Bob's device, so we would read their words as Bob's. Refused,
/// with the reason; the request stays open.
#[tokio::test]
async fn a_forwarded_key_from_another_user_or_an_unverified_device_is_refused() {
    let (server, clock, _first, mut second, _) = two_devices(true).await;
    let mallory = TestDevice::new(&server, &clock, user_id!("@mallory:example.org"), "M").await;
    let rogue = TestDevice::new(&server, &clock, alice(), "ROGUE").await;
    second.refresh_keys(&[alice(), &mallory.user_id]).await;
    let room = room_id!("!target:example.org");
    mallory.share_room_key(room, &[&mallory.user_id], &EncryptionSettings::default()).await;
    let forged_event = mallory.encrypt_text(room, "forged").await;
    let exported = mallory.machine.export_room_keys(|_| true).await.unwrap().remove(0);
    let session_id = exported.session_id.clone();
    second.machine.request_room_key(room, &session_id).await.unwrap();
    second.drain().await;
    let forwarded = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": room,
        "sender_key": exported.sender_key,
        "session_id": session_id,
        "session_key": exported.session_key,
        "sender_claimed_ed25519_key": exported.sender_claimed_keys["ed25519"],
        "forwarding_curve25519_key_chain": [],
    });
    for device in [&mallory, &rogue] {
        device.establish_sessions(&[alice()]).await;
        device.send_to_device(alice(), "ALICE2".into(), "m.forwarded_room_key", &forwarded).await;
    }
    let output = second.sync().await;
    let errors = rejections(&output.to_device);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| matches!(e, OlmError::Gossip(GossipError::NotOurUser { .. }))), "{errors:?}");
    assert!(errors.iter().any(|e| matches!(e, OlmError::Gossip(GossipError::UnverifiedDevice { .. }))), "{errors:?}");
    assert!(output.room_keys.is_empty());
    assert!(second.decrypt_text(room, &forged_event).await.is_err(), "no key stored");
    assert_eq!(second.machine.open_gossip_requests().len(), 1);
    for outcome in &output.to_device {
        if let ToDeviceOutcome::PayloadRejected { event, .. } = outcome {
            let value: Value = event.deserialize_as_unchecked().unwrap();
            assert_eq!(value["content"]["session_key"], "", "the key is blanked");
        }
    }
}

/// Attack: our own verified device is asked for a key and forwards it
/// unasked, or forwards a different key under a session id we hold from
/// its sender over Olm. An unrequested forward is refused; a forward never
/// replaces the key we hold from the sender.
#[tokio::test]
async fn an_unrequested_forward_is_refused_and_a_forward_never_replaces_a_key_from_its_sender() {
    let (server, clock, first, mut second, _) = two_devices(true).await;
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    let room = room_id!("!r:example.org");
    bob.share_room_key(room, &[alice()], &EncryptionSettings::default()).await;
    let event = bob.encrypt_text(room, "from bob").await;
    second.sync().await;
    let session_id = event["content"]["session_id"].as_str().unwrap().to_owned();

    // The forger's ratchet, filed under Bob's session id and claiming Bob.
    let mallory = TestDevice::new(&server, &clock, user_id!("@mallory:example.org"), "M").await;
    mallory.share_room_key(room, &[&mallory.user_id], &EncryptionSettings::default()).await;
    let other = mallory.machine.export_room_keys(|_| true).await.unwrap().remove(0);
    let mut bytes = vodozemac::base64_decode(&other.session_key).unwrap();
    bytes[133..].copy_from_slice(&vodozemac::base64_decode(&session_id).unwrap());
    let (bob_ed, bob_curve) = bob.machine.identity_keys();
    let forwarded = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": room,
        "sender_key": bob_curve.to_base64(),
        "session_id": session_id,
        "session_key": vodozemac::base64_encode(&bytes),
        "sender_claimed_ed25519_key": bob_ed.to_base64(),
        "forwarding_curve25519_key_chain": [],
    });
    first.establish_sessions(&[alice()]).await;
    first.send_to_device(alice(), "ALICE2".into(), "m.forwarded_room_key", &forwarded).await;
    let output = second.sync().await;
    assert!(matches!(rejections(&output.to_device).as_slice(), [OlmError::Gossip(GossipError::Unrequested { .. })]));

    // Asked this time: taken as an answer, but Bob's key stays.
    second.machine.request_room_key(room, &session_id).await.unwrap();
    second.drain().await;
    first.send_to_device(alice(), "ALICE2".into(), "m.forwarded_room_key", &forwarded).await;
    let output = second.sync().await;
    assert!(output.room_keys.is_empty(), "not stored");
    assert_eq!(second.decrypt_text(room, &event).await.unwrap(), "from bob");
    let raw = ruma_common::serde::Raw::new(&event).unwrap();
    let info = second.machine.decrypt_room_event(&raw, room, &Default::default()).await.unwrap().info;
    assert_eq!(info.key_source, KeySource::Olm);
}

/// Attack: the server adds a device to the user's account (it controls the
/// device list) and asks for the room keys of the user's history. The
/// device is ours by user id but not verified: no key is forwarded to it.
#[tokio::test]
async fn room_keys_are_not_forwarded_to_an_unverified_own_device() {
    let (server, clock, mut first, _) = first_device().await;
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    let room = room_id!("!history:example.org");
    bob.share_room_key(room, &[alice()], &EncryptionSettings::default()).await;
    let event = bob.encrypt_text(room, "private history").await;
    first.sync().await;
    let mut second = second_device(&server, &clock, &first, false).await;
    let session_id = event["content"]["session_id"].as_str().unwrap();
    second.machine.request_room_key(room, session_id).await.unwrap();
    second.drain().await;
    first.sync().await;
    first.drain().await;
    let output = second.sync().await;
    assert!(output.room_keys.is_empty());
    assert!(second.decrypt_text(room, &event).await.is_err(), "the history stays unreadable to it");
    assert_eq!(second.machine.open_gossip_requests().len(), 1);
}

/// Attack: the server knows our secret-request ids (requests go in the
/// clear) and lists a backup of its own, which the client asks the key for.
/// It then opens an Olm session to our new device from a key pair of its
/// making and answers with that backup's private key, claiming in
/// `sender_device_keys` to be our verified device ALICE1. The message is
/// genuinely Olm-encrypted and the secret matches the backup, but the keys
/// the session authenticates are not ALICE1's: refused, nothing stored.
#[tokio::test]
async fn a_secret_from_a_device_that_only_claims_the_id_of_our_verified_device_is_refused() {
    let (server, _clock, _first, mut second, _) = two_devices(true).await;
    let servers_key = BackupDecryptionKey::generate().unwrap();
    server.create_backup_version(
        alice(),
        BACKUP_ALGORITHM,
        json!({ "public_key": servers_key.public_key().to_base64() }),
    );
    second.machine.request_backup_key(&server.latest_backup(alice()).unwrap()).await.unwrap();
    second.drain().await;
    let request_id = second.machine.open_gossip_requests()[0].request_id.clone();

    shadow_of_alice1(
        &server,
        &second,
        "m.secret.send",
        json!({ "request_id": request_id, "secret": servers_key.to_base64().as_str() }),
    );
    let output = second.sync().await;

    let claimed: Vec<_> = output
        .to_device
        .iter()
        .filter_map(|o| match o {
            ToDeviceOutcome::Decrypted { info, .. } => info.sender_device.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(claimed, vec!["ALICE1"], "the message was decrypted, naming ALICE1");
    assert!(second.machine.backup_decryption_key().await.unwrap().is_none(), "the server's key is not taken");
    assert!(second.machine.drain_events().iter().all(|e| !matches!(e, EngineEvent::SecretReceived { .. })));
    assert_eq!(second.machine.open_gossip_requests().len(), 1, "still open");
}

/// An Olm message to ALICE2 from a device of the server's making that names
/// itself ALICE1 of @alice in `sender_device_keys` (registered under another
/// user so its keys exist for the one-time-key claim).
fn shadow_of_alice1(
    server: &std::sync::Arc<hush_testing::TestServer>,
    second: &TestDevice,
    event_type: &str,
    content: Value,
) {
    let mut shadow = hush_testing::RogueDevice::register(server, user_id!("@shadow:example.org"), "ALICE1");
    shadow.open_session(server, alice(), &second.device_id);
    let (second_ed, second_curve) = second.machine.identity_keys();
    let plaintext = json!({
        "sender": alice(),
        "recipient": alice(),
        "recipient_keys": { "ed25519": second_ed.to_base64() },
        "keys": { "ed25519": shadow.ed25519_key().to_base64() },
        "type": event_type,
        "content": content,
        "sender_device_keys": shadow.device_keys_for(alice()),
    });
    let mut event = shadow.encrypt_raw(&second_curve, &plaintext);
    event["sender"] = json!(alice());
    server.inject_to_device(alice(), &second.device_id, event);
}

/// Attack (trusted impersonation): the server makes a Megolm session of its
/// own claiming to be Bob's, and "forwards" it to our new device, which
/// asked for that session, over an Olm session that names our verified
/// device ALICE1. Taken, it would show the server's words as Bob's, vouched
/// for by our own device. The Olm keys are not ALICE1's: refused.
#[tokio::test]
async fn a_forward_from_a_device_that_only_claims_the_id_of_our_verified_device_is_refused() {
    let (server, clock, _first, mut second, _) = two_devices(true).await;
    let bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    second.refresh_keys(&[&bob.user_id]).await;
    let room = room_id!("!target:example.org");
    let forger = TestDevice::new(&server, &clock, user_id!("@forger:example.org"), "F").await;
    forger.share_room_key(room, &[&forger.user_id], &EncryptionSettings::default()).await;
    let mut forged_event = forger.encrypt_text(room, "words put in bob's mouth").await;
    forged_event["sender"] = json!(bob.user_id);
    let key = forger.machine.export_room_keys(|_| true).await.unwrap().remove(0);
    second.machine.request_room_key(room, &key.session_id).await.unwrap();
    second.drain().await;
    let (bob_ed, bob_curve) = bob.machine.identity_keys();
    let forwarded = json!({
        "algorithm": key.algorithm,
        "room_id": room,
        "sender_key": bob_curve.to_base64(),
        "session_id": key.session_id,
        "session_key": key.session_key,
        "sender_claimed_ed25519_key": bob_ed.to_base64(),
        "forwarding_curve25519_key_chain": [],
    });
    shadow_of_alice1(&server, &second, "m.forwarded_room_key", forwarded);
    let output = second.sync().await;
    assert!(
        matches!(rejections(&output.to_device).as_slice(), [OlmError::Gossip(GossipError::UnknownDevice(_))]),
        "{:?}",
        rejections(&output.to_device)
    );
    assert!(output.room_keys.is_empty());
    assert!(second.decrypt_text(room, &forged_event).await.is_err(), "nothing stored");
    assert_eq!(second.machine.open_gossip_requests().len(), 1);
}
