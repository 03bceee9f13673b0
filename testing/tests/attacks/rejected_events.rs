//! Points 4 and 5: a rejected event changes nothing stored (or, where the
//! Olm layer worked, says so exactly), and keys from a file are tied to the
//! device that made them and never reported plainly verified.

use hush_crypto_core::{
    DecryptionSettings, EncryptionSettings, LocalTrust, MegolmError, ToDeviceOutcome, TrustRequirement,
    VerificationState,
};
use hush_testing::{TestDevice, decrypted};
use ruma_common::{OwnedRoomId, owned_room_id, serde::Raw, user_id};
use serde_json::{Value, json};

use super::Victim;

fn verified_only() -> DecryptionSettings {
    DecryptionSettings { sender_device_trust_requirement: TrustRequirement::VerifiedDevice }
}

/// Alice, whose devices Bob knows, with a room key for `room`.
async fn alice_known_to_bob(v: &mut Victim, share_with_bob: bool) -> (TestDevice, OwnedRoomId) {
    let room = owned_room_id!("!room:example.org");
    let alice = TestDevice::new(&v.server, &v.clock, user_id!("@alice:example.org"), "ALICE1").await;
    v.bob.machine.update_tracked_users([alice.user_id.as_ref()]).await.unwrap();
    v.bob.sync().await;
    let users = if share_with_bob { vec![v.bob.user_id.as_ref()] } else { vec![] };
    alice.share_room_key(&room, &users, &EncryptionSettings::default()).await;
    v.bob.sync().await;
    (alice, room)
}

async fn decrypt_with(
    v: &Victim,
    room: &OwnedRoomId,
    event: &Value,
    settings: &DecryptionSettings,
) -> Result<VerificationState, MegolmError> {
    let raw: Raw<Value> = Raw::new(event).unwrap();
    v.bob.machine.decrypt_room_event(&raw, room, settings).await.map(|d| d.info.verification_state)
}

/// Attack (4a): Mallory's first Olm message (a pre-key message) carries an
/// invalid `m.room_key`. The outcome must say what happened: the Olm session
/// it established is kept (Mallory really holds it), the payload refused,
/// and Mallory's next message over that session still decrypts.
#[tokio::test]
async fn a_pre_key_message_with_an_invalid_room_key_keeps_the_session_and_says_so() {
    let mut v = Victim::new().await;
    let bad = v.plaintext(
        "m.room_key",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "room_id": "!r:example.org", "session_id": "not-the-key",
               "session_key": "AgAAAAA"}),
    );
    v.deliver(&bad);
    let output = v.bob.sync().await;
    let [ToDeviceOutcome::PayloadRejected { .. }] = output.to_device.as_slice() else {
        panic!("the outcome does not say the payload alone was refused: {:?}", output.to_device)
    };
    let sessions = v.bob.machine.store().get_sessions(&v.mallory.curve25519_key()).await.unwrap();
    assert_eq!(sessions.len(), 1, "the Olm session the message established was not kept");
    let good = v.plaintext("org.example.test", json!({"n": 2}));
    v.deliver(&good);
    let output = v.bob.sync().await;
    assert_eq!(decrypted(&output).len(), 1, "Mallory's next message over the same session failed");
    let sessions = v.bob.machine.store().get_sessions(&v.mallory.curve25519_key()).await.unwrap();
    assert_eq!(sessions.len(), 1, "a second session was made");
}

/// Attack (4b): the server delivers a copy of Alice's event under another
/// event id while Bob requires verified senders. The copy is refused as
/// unverified; it must not record the message index, or Alice's genuine
/// event is refused as a replay once Bob verifies her device.
#[tokio::test]
async fn an_event_refused_for_trust_writes_no_replay_record() {
    let mut v = Victim::new().await;
    let (alice, room) = alice_known_to_bob(&mut v, true).await;
    let genuine = alice.encrypt_text(&room, "hello").await;
    let mut copy = genuine.clone();
    copy["event_id"] = json!("$copy");
    assert!(matches!(decrypt_with(&v, &room, &copy, &verified_only()).await, Err(MegolmError::UnverifiedSenderDevice)));
    v.bob.machine.set_local_trust(&alice.user_id, &alice.device_id, LocalTrust::Verified).await.unwrap();
    let state = decrypt_with(&v, &room, &genuine, &verified_only()).await;
    assert_eq!(state, Ok(VerificationState::Verified), "the genuine event was refused");
}

/// Alice's event re-posted by Mallory as her own.
fn reposted_by_mallory(v: &Victim, genuine: &Value) -> Value {
    let mut spoof = genuine.clone();
    spoof["sender"] = json!(v.mallory.user_id);
    spoof["event_id"] = json!("$spoof");
    spoof
}

/// Keys Alice holds, as a key file would carry them, imported by Bob.
async fn bob_imports_alices_keys(v: &Victim, alice: &TestDevice) {
    let keys = alice.machine.export_room_keys(|_| true).await.unwrap();
    assert!(!keys.is_empty());
    let result = v.bob.machine.import_room_keys(keys, |_, _| {}).await.unwrap();
    assert_eq!(result.imported_count, result.total_count);
}

/// Attack (5, 4c): Bob imported Alice's room key from a file. Mallory
/// re-posts Alice's ciphertext as her own event, hoping it decrypts as hers
/// (the imported key names no owner) and that it claims the message index
/// before Alice's genuine event arrives. The key's curve25519 and ed25519
/// keys are those of Alice's known device, so it is Alice's key: Mallory's
/// event is a sender mismatch and Alice's genuine event still decrypts.
#[tokio::test]
async fn an_imported_key_is_tied_to_its_device_and_a_spoof_claims_nothing() {
    let mut v = Victim::new().await;
    let (alice, room) = alice_known_to_bob(&mut v, false).await;
    let genuine = alice.encrypt_text(&room, "hello").await;
    bob_imports_alices_keys(&v, &alice).await;
    let result = v.bob.decrypt_text(&room, &reposted_by_mallory(&v, &genuine)).await;
    assert!(matches!(result, Err(MegolmError::SenderMismatch { .. })), "the spoof decrypted: {result:?}");
    assert_eq!(v.bob.decrypt_text(&room, &genuine).await.unwrap(), "hello", "the genuine event was refused");
}

/// Attack (5): the same spoof when Bob learnt Alice's device only after the
/// import: the tie is made at decryption time too.
#[tokio::test]
async fn an_imported_key_is_tied_to_a_device_learnt_after_the_import() {
    let mut v = Victim::new().await;
    let room = owned_room_id!("!room:example.org");
    let alice = TestDevice::new(&v.server, &v.clock, user_id!("@alice:example.org"), "ALICE1").await;
    alice.share_room_key(&room, &[], &EncryptionSettings::default()).await;
    let genuine = alice.encrypt_text(&room, "hello").await;
    bob_imports_alices_keys(&v, &alice).await;
    v.bob.machine.update_tracked_users([alice.user_id.as_ref()]).await.unwrap();
    v.bob.sync().await;
    let result = v.bob.decrypt_text(&room, &reposted_by_mallory(&v, &genuine)).await;
    assert!(matches!(result, Err(MegolmError::SenderMismatch { .. })), "the spoof decrypted: {result:?}");
}

/// Attack (5): once Bob verified Alice's device, an event decrypted with a
/// key from a file would report `Verified` and pass a verified-sender
/// requirement, though the file could come from anyone. It must report an
/// unauthenticated source and be refused by that requirement.
#[tokio::test]
async fn an_imported_key_is_never_reported_verified() {
    let mut v = Victim::new().await;
    let (alice, room) = alice_known_to_bob(&mut v, false).await;
    let event = alice.encrypt_text(&room, "hello").await;
    bob_imports_alices_keys(&v, &alice).await;
    v.bob.machine.set_local_trust(&alice.user_id, &alice.device_id, LocalTrust::Verified).await.unwrap();
    let state = decrypt_with(&v, &room, &event, &DecryptionSettings::default()).await;
    assert_eq!(state, Ok(VerificationState::UnauthenticatedSource));
    let refused = decrypt_with(&v, &room, &event, &verified_only()).await;
    assert!(matches!(refused, Err(MegolmError::UnverifiedSenderDevice)), "{refused:?}");
}
