//! Hostile and broken to-device input: each case is a typed error in that
//! event's outcome, the rest of the sync is still processed, nothing stored
//! changes because of the rejected event, and nothing panics.

use std::sync::Arc;

use hush_crypto_core::{OlmError, ToDeviceOutcome};
use hush_testing::{RogueDevice, TestDevice, TestServer, Victim, VirtualClock, decrypted};
use ruma_common::user_id;
use serde_json::{Value, json};

struct Setup {
    server: Arc<TestServer>,
    bob: TestDevice,
    mallory: RogueDevice,
}

async fn setup() -> Setup {
    let Victim { server, bob, mallory, .. } = Victim::new().await;
    Setup { server, bob, mallory }
}

impl Setup {
    fn plaintext(&self) -> Value {
        let (ed, _) = self.bob.machine.identity_keys();
        self.mallory.valid_plaintext(&self.bob.user_id, &ed, "org.example.test", json!({"body": "hello"}))
    }

    fn encrypt(&mut self, plaintext: &Value) -> Value {
        let (_, curve) = self.bob.machine.identity_keys();
        self.mallory.encrypt_raw(&curve, plaintext)
    }

    /// Serialized account and Mallory sessions as stored: must not move on rejection.
    async fn stored_state(&self) -> (String, usize) {
        let store = self.bob.machine.store();
        let account = store.load_account().await.unwrap().unwrap();
        let sessions = store.get_sessions(&self.mallory.curve25519_key()).await.unwrap();
        (serde_json::to_string(&account.pickle).unwrap(), sessions.len())
    }

    /// Delivers `bad` alone, checks the error and that the stored state did
    /// not move; then delivers `bad` again followed by a valid message, and
    /// checks the valid one still decrypts.
    async fn expect_rejected(&mut self, bad: Value, expected: impl Fn(&OlmError) -> bool) {
        let before = self.stored_state().await;
        self.server.inject_to_device(&self.bob.user_id, &self.bob.device_id, bad.clone());
        let output = self.bob.sync().await;
        let [ToDeviceOutcome::Failed { error, .. }] = output.to_device.as_slice() else {
            panic!("expected one failure, got {:?}", output.to_device)
        };
        assert!(expected(error), "unexpected error: {error:?}");
        // Compared without printing: the state holds secret keys.
        assert!(self.stored_state().await == before, "a rejected event changed the store");

        let good = self.encrypt(&self.plaintext());
        self.server.inject_to_device(&self.bob.user_id, &self.bob.device_id, bad);
        self.server.inject_to_device(&self.bob.user_id, &self.bob.device_id, good);
        let output = self.bob.sync().await;
        assert_eq!(output.to_device.len(), 2);
        assert!(matches!(output.to_device[0], ToDeviceOutcome::Failed { .. }));
        assert_eq!(decrypted(&output).len(), 1, "the valid event after the bad one was not processed");
    }
}

fn encrypted_event(sender: &str, content: Value) -> Value {
    json!({ "sender": sender, "type": "m.room.encrypted", "content": content })
}

#[tokio::test]
async fn malformed_content_is_rejected() {
    let mut s = setup().await;
    let bad = encrypted_event("@mallory:example.org", json!({"algorithm": "m.olm.v1.curve25519-aes-sha2"}));
    s.expect_rejected(bad, |e| matches!(e, OlmError::Malformed(_))).await;
    let bad = encrypted_event("@mallory:example.org", json!("not an object"));
    s.expect_rejected(bad, |e| matches!(e, OlmError::Malformed(_))).await;
    let bad = json!({"type": "m.room.encrypted", "content": {}});
    s.expect_rejected(bad, |e| matches!(e, OlmError::Malformed(_))).await;
}

#[tokio::test]
async fn unknown_algorithm_is_rejected() {
    let mut s = setup().await;
    let mut bad = s.encrypt(&s.plaintext());
    bad["content"]["algorithm"] = json!("m.megolm.v1.aes-sha2");
    s.expect_rejected(bad, |e| matches!(e, OlmError::UnsupportedAlgorithm(a) if a == "m.megolm.v1.aes-sha2")).await;
}

#[tokio::test]
async fn bad_base64_is_rejected() {
    let mut s = setup().await;
    let mut bad = s.encrypt(&s.plaintext());
    bad["content"]["sender_key"] = json!("!!not base64!!");
    s.expect_rejected(bad, |e| matches!(e, OlmError::InvalidKey { what: "sender_key", .. })).await;

    let mut bad = s.encrypt(&s.plaintext());
    let (_, curve) = s.bob.machine.identity_keys();
    bad["content"]["ciphertext"][curve.to_base64()]["body"] = json!("%%%");
    s.expect_rejected(bad, |e| matches!(e, OlmError::InvalidMessage(_))).await;
}

#[tokio::test]
async fn a_truncated_message_is_rejected() {
    let mut s = setup().await;
    let mut bad = s.encrypt(&s.plaintext());
    let (_, curve) = s.bob.machine.identity_keys();
    let body = bad["content"]["ciphertext"][curve.to_base64()]["body"].as_str().unwrap().to_owned();
    bad["content"]["ciphertext"][curve.to_base64()]["body"] = json!(&body[..body.len() / 2]);
    s.expect_rejected(bad, |e| matches!(e, OlmError::InvalidMessage(_) | OlmError::SessionCreation(_))).await;
}

#[tokio::test]
async fn a_message_for_another_device_is_rejected() {
    let mut s = setup().await;
    let mut bad = s.encrypt(&s.plaintext());
    let (_, curve) = s.bob.machine.identity_keys();
    let entry = bad["content"]["ciphertext"][curve.to_base64()].take();
    bad["content"]["ciphertext"] = json!({ s.mallory.curve25519_key().to_base64(): entry });
    s.expect_rejected(bad, |e| *e == OlmError::NotForThisDevice).await;
}

#[tokio::test]
async fn a_ciphertext_no_session_decrypts_is_rejected() {
    let mut s = setup().await;
    // A pre-key message whose one-time key Bob never had.
    let mut other = RogueDevice::register(&s.server, user_id!("@carol:example.org"), "CAROL");
    let mut carol_bob =
        TestDevice::new(&s.server, &VirtualClock::default(), user_id!("@bob:example.org"), "BOB2").await;
    other.open_session(&s.server, &carol_bob.user_id, &carol_bob.device_id);
    let (ed, curve) = carol_bob.machine.identity_keys();
    let plaintext = other.valid_plaintext(&carol_bob.user_id, &ed, "m.dummy", json!({}));
    let mut bad = other.encrypt_raw(&curve, &plaintext);
    let (_, bob_curve) = s.bob.machine.identity_keys();
    let entry = bad["content"]["ciphertext"][curve.to_base64()].take();
    bad["content"]["ciphertext"] = json!({ bob_curve.to_base64(): entry });
    s.expect_rejected(bad, |e| matches!(e, OlmError::SessionCreation(_))).await;
    carol_bob.sync().await;
}

#[tokio::test]
async fn a_wrong_recipient_is_rejected() {
    let mut s = setup().await;
    let mut plaintext = s.plaintext();
    plaintext["recipient"] = json!("@someone:example.org");
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| matches!(e, OlmError::RecipientMismatch { .. })).await;
}

#[tokio::test]
async fn a_wrong_recipient_key_is_rejected() {
    let mut s = setup().await;
    let mut plaintext = s.plaintext();
    plaintext["recipient_keys"]["ed25519"] = json!(s.mallory.ed25519_key().to_base64());
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| *e == OlmError::RecipientKeyMismatch).await;
}

#[tokio::test]
async fn a_wrong_sender_key_is_rejected() {
    let mut s = setup().await;
    let mut plaintext = s.plaintext();
    let (bob_ed, _) = s.bob.machine.identity_keys();
    plaintext["keys"]["ed25519"] = json!(bob_ed.to_base64());
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| matches!(e, OlmError::SenderKeyMismatch { .. })).await;
}

#[tokio::test]
async fn a_spoofed_sender_is_rejected() {
    let mut s = setup().await;
    let mut plaintext = s.plaintext();
    plaintext["sender"] = json!("@alice:example.org");
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| matches!(e, OlmError::SenderMismatch { .. })).await;
}

#[tokio::test]
async fn sender_device_keys_of_another_user_are_rejected() {
    // CVE-2026-45056 in matrix-sdk-crypto: the device keys in the plaintext
    // must belong to the event's sender.
    let mut s = setup().await;
    let mut plaintext = s.plaintext();
    plaintext["sender_device_keys"] = s.mallory.device_keys_for(user_id!("@alice:example.org"));
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| matches!(e, OlmError::InvalidSenderDeviceKeys(_))).await;

    let mut plaintext = s.plaintext();
    plaintext["sender_device_keys"]["keys"]["ed25519:MALLORY"] = json!(s.bob.machine.identity_keys().0.to_base64());
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| matches!(e, OlmError::InvalidSenderDeviceKeys(_))).await;
}

#[tokio::test]
async fn an_encrypted_payload_inside_olm_is_rejected() {
    let mut s = setup().await;
    let mut plaintext = s.plaintext();
    plaintext["type"] = json!("m.room.encrypted");
    let bad = s.encrypt(&plaintext);
    s.expect_rejected(bad, |e| matches!(e, OlmError::Malformed(_))).await;
}

#[tokio::test]
async fn a_replayed_pre_key_message_is_rejected() {
    let mut s = setup().await;
    let first = s.encrypt(&s.plaintext());
    s.server.inject_to_device(&s.bob.user_id, &s.bob.device_id, first.clone());
    assert_eq!(decrypted(&s.bob.sync().await).len(), 1);
    // Recognised by its hash before any session sees it.
    s.expect_rejected(first, |e| matches!(e, OlmError::Redelivered)).await;
}

#[tokio::test]
async fn unencrypted_to_device_events_pass_through() {
    let mut s = setup().await;
    let plain = json!({"sender": "@mallory:example.org", "type": "m.key.verification.request", "content": {}});
    s.server.inject_to_device(&s.bob.user_id, &s.bob.device_id, plain);
    let output = s.bob.sync().await;
    assert!(matches!(output.to_device.as_slice(), [ToDeviceOutcome::PlainText(_)]));
}

/// A sync with pre-key messages from many devices is decrypted on several
/// threads; a one-time key used by two devices serves only the first.
#[tokio::test]
async fn a_large_sync_is_decrypted_in_parallel_and_a_reused_one_time_key_serves_once() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let mut bob = TestDevice::new(&server, &clock, user_id!("@bob:example.org"), "BOB1").await;
    bob.machine.set_worker_threads(2);
    let (ed, curve) = bob.machine.identity_keys();
    let one_time_key = |server: &TestServer| {
        let request = ruma_client_api::keys::claim_keys::v3::Request::new(
            [(
                bob.user_id.clone(),
                [(bob.device_id.clone(), ruma_common::OneTimeKeyAlgorithm::SignedCurve25519)].into(),
            )]
            .into(),
        );
        let answer = server.claim_keys(&request);
        let (_, key) = answer.one_time_keys[&bob.user_id][&bob.device_id].iter().next().unwrap();
        let key: Value = key.deserialize_as_unchecked().unwrap();
        vodozemac::Curve25519PublicKey::from_base64(key["key"].as_str().unwrap()).unwrap()
    };
    // 40 devices; the last two share one one-time key.
    let mut senders: Vec<RogueDevice> = (0..40)
        .map(|n| {
            RogueDevice::register(
                &server,
                &ruma_common::OwnedUserId::try_from(format!("@s{n}:example.org")).unwrap(),
                "S",
            )
        })
        .collect();
    let shared_key = one_time_key(&server);
    for (n, sender) in senders.iter_mut().enumerate() {
        let key = if n >= 38 { shared_key } else { one_time_key(&server) };
        sender.open_session_with(curve, key);
        let plaintext = sender.valid_plaintext(&bob.user_id, &ed, "org.example.test", json!({ "n": n }));
        let event = sender.encrypt_raw(&curve, &plaintext);
        server.inject_to_device(&bob.user_id, &bob.device_id, event);
    }
    let output = bob.sync().await;
    assert_eq!(output.to_device.len(), 40);
    let got: Vec<u64> = decrypted(&output).iter().map(|(_, _, c)| c["n"].as_u64().unwrap()).collect();
    assert_eq!(got, (0..39).collect::<Vec<_>>(), "in order, all but the second user of the shared key");
    assert!(matches!(&output.to_device[39], ToDeviceOutcome::Failed { error: OlmError::SessionCreation(_), .. }));

    // The one-time keys are gone from the account for good (saved): the
    // sessions work on, and a new pre-key message on a used key fails.
    let mut late = RogueDevice::register(&server, user_id!("@late:example.org"), "LATE");
    late.open_session_with(curve, shared_key);
    let plaintext = late.valid_plaintext(&bob.user_id, &ed, "org.example.test", json!({ "n": 99 }));
    server.inject_to_device(&bob.user_id, &bob.device_id, late.encrypt_raw(&curve, &plaintext));
    let plaintext = senders[0].valid_plaintext(&bob.user_id, &ed, "org.example.test", json!({ "n": 0 }));
    server.inject_to_device(&bob.user_id, &bob.device_id, senders[0].encrypt_raw(&curve, &plaintext));
    let output = bob.sync().await;
    assert!(matches!(&output.to_device[0], ToDeviceOutcome::Failed { error: OlmError::SessionCreation(_), .. }));
    assert_eq!(decrypted(&output).len(), 1);
}
