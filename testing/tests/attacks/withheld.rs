//! Issue 30, finding 4: withheld notices come in the clear, so anyone in
//! the room can send one naming any session and any sender key. Only the
//! event's sender's own notice may explain why its key is missing.

use hush_crypto_core::{EncryptionSettings, MegolmError, MembershipAtEvent, UtdCause, megolm::WithheldCode};
use hush_testing::TestDevice;
use ruma_common::{UserId, owned_room_id, serde::Raw, user_id};
use serde_json::{Value, json};

use super::Victim;

/// A withheld notice in the clear, as the server delivers it from `sender`.
fn notice(sender: &UserId, sender_key: &str, code: &str, room_and_session: Option<(&str, &str)>) -> Value {
    let mut content = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": sender_key,
        "code": code,
        "reason": "spoofed",
    });
    if let Some((room, session)) = room_and_session {
        content["room_id"] = json!(room);
        content["session_id"] = json!(session);
    }
    json!({"type": "m.room_key.withheld", "sender": sender, "content": content})
}

/// Attack: Alice sends a message whose key Bob never got (she did not
/// share it with him). Mallory, a co-member, sends Bob in the clear an
/// `m.room_key.withheld` for Alice's session with Alice's sender key
/// (`m.blacklisted`), and an `m.no_olm` notice with Alice's key. Before,
/// Bob's error and unable-to-decrypt cause said Alice withheld her key
/// from him. Now Mallory's notices explain nothing of Alice's (the key is
/// simply missing), and Alice's own notice, when it comes, is the one
/// shown, whichever arrives after it.
#[tokio::test]
async fn a_co_members_withheld_notice_does_not_explain_anothers_missing_key() {
    let mut victim = Victim::new().await;
    let alice = TestDevice::new(&victim.server, &victim.clock, user_id!("@alice:example.org"), "ALICE1").await;
    let room = owned_room_id!("!room:example.org");
    let nobody: [&UserId; 0] = [];
    alice.share_room_key(&room, &nobody, &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(&room, "not for bob").await;
    let session = event["content"]["session_id"].as_str().expect("session id").to_owned();
    let alice_key = alice.machine.identity_keys().1.to_base64();
    victim.bob.refresh_keys(&[&alice.user_id]).await;

    let (bob, bob_device, mallory) =
        (victim.bob.user_id.clone(), victim.bob.device_id.clone(), victim.mallory.user_id.clone());
    for code in ["m.blacklisted", "m.unverified"] {
        let spoof = notice(&mallory, &alice_key, code, Some((room.as_str(), &session)));
        victim.server.inject_to_device(&bob, &bob_device, spoof);
    }
    victim.server.inject_to_device(&bob, &bob_device, notice(&mallory, &alice_key, "m.no_olm", None));
    victim.bob.sync().await;

    let raw: Raw<Value> = Raw::new(&event).expect("event");
    let machine = victim.bob.machine.clone();
    let decrypt = || {
        let (machine, raw, room) = (machine.clone(), raw.clone(), room.clone());
        async move { machine.decrypt_room_event(&raw, &room, &Default::default()).await.expect_err("no key") }
    };
    let error = decrypt().await;
    assert_eq!(error, MegolmError::MissingRoomKey { session_id: session.clone(), withheld: None });
    let cause = machine.utd_cause(&raw, &room, &error, MembershipAtEvent::Member).await;
    assert!(!matches!(cause, UtdCause::Withheld { .. }), "mallory's notice explained alice's key: {cause:?}");

    // Alice's own notice counts, and a spoof after it does not replace it.
    let genuine = notice(&alice.user_id, &alice_key, "m.unverified", Some((room.as_str(), &session)));
    victim.server.inject_to_device(&bob, &bob_device, genuine);
    let spoof = notice(&mallory, &alice_key, "m.blacklisted", Some((room.as_str(), &session)));
    victim.server.inject_to_device(&bob, &bob_device, spoof);
    victim.bob.sync().await;
    let error = decrypt().await;
    assert_eq!(error, MegolmError::MissingRoomKey { session_id: session, withheld: Some(WithheldCode::Unverified) });
    let cause = machine.utd_cause(&raw, &room, &error, MembershipAtEvent::Member).await;
    assert_eq!(cause, UtdCause::Withheld { code: WithheldCode::Unverified });
}

/// Attack: a notice from the event's sender, but naming a sender key that
/// is not the one the event carries (another device's, or made up), is
/// not that event's explanation either.
#[tokio::test]
async fn a_session_notice_with_another_sender_key_does_not_explain_the_event() {
    let mut victim = Victim::new().await;
    let alice = TestDevice::new(&victim.server, &victim.clock, user_id!("@alice:example.org"), "ALICE1").await;
    let room = owned_room_id!("!room:example.org");
    let nobody: [&UserId; 0] = [];
    alice.share_room_key(&room, &nobody, &EncryptionSettings::default()).await;
    let event = alice.encrypt_text(&room, "not for bob").await;
    let session = event["content"]["session_id"].as_str().expect("session id").to_owned();
    let other_key = vodozemac::Curve25519PublicKey::from_bytes([9; 32]).to_base64();
    let (bob, bob_device) = (victim.bob.user_id.clone(), victim.bob.device_id.clone());
    let wrong = notice(&alice.user_id, &other_key, "m.blacklisted", Some((room.as_str(), &session)));
    victim.server.inject_to_device(&bob, &bob_device, wrong);
    victim.bob.sync().await;
    let raw: Raw<Value> = Raw::new(&event).expect("event");
    let error = victim.bob.machine.decrypt_room_event(&raw, &room, &Default::default()).await.expect_err("no key");
    assert_eq!(error, MegolmError::MissingRoomKey { session_id: session, withheld: None });
}
