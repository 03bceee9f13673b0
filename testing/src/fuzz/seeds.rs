//! Seed inputs for each target, made from what hush and its peers really
//! produce (valid files, events, answers), so the fuzzer starts from deep
//! inside each decoder. `cargo xtask fuzz --seeds` writes them into
//! `fuzz/corpus/<target>/`; the corpus replay runs them too.

use std::collections::BTreeMap;

use futures_executor::block_on;
use hush_crypto_core::{
    backup::BackedUpRoomKey,
    export::encrypt_room_key_export,
    secret_storage::{SecretStorageKey, encrypt_secret},
    store::{StoredSecret, TrackedUser},
};
use ruma_client_api::keys::claim_keys;
use ruma_common::OneTimeKeyAlgorithm;
use serde_json::{Value, json};

use super::engines::{Engines, alice_id, bob_id, room};
use super::parsers::{EXPORT_PASSPHRASE, backup_key};
use crate::conformance::{account_fixture, device_fixture, inbound_fixture, olm_session_fixture, outbound_fixture};

/// (target, seed name, bytes) for every target.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut engines = block_on(Engines::new());
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| seeds.push((target, name.to_owned(), bytes));
    let text = |v: &Value| v.to_string().into_bytes();

    let alice_keys = engines.alice.machine.identity_keys();
    let plaintexts = [
        (
            "room_key",
            "m.room_key",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "room_id": room(), "session_id": engines.group.session_id(), "session_key": engines.group.session_key().to_base64()}),
        ),
        ("dummy", "m.dummy", json!({})),
        ("secret_send", "m.secret.send", json!({"request_id": "r1", "secret": "c2VjcmV0"})),
        ("forwarded", "m.forwarded_room_key", forwarded(&engines)),
        (
            "withheld",
            "m.room_key.withheld",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "room_id": room(), "session_id": "s", "sender_key": engines.bob.curve25519_key().to_base64(), "code": "m.unverified", "reason": "no"}),
        ),
    ];
    for (name, event_type, content) in plaintexts {
        let plaintext = engines.bob.valid_plaintext(&alice_id(), &alice_keys.0, event_type, content);
        add("olm_plaintext", name, text(&plaintext));
    }

    let encrypted = {
        let plaintext = engines.bob.valid_plaintext(&alice_id(), &alice_keys.0, "m.dummy", json!({}));
        engines.bob.encrypt_raw(&alice_keys.1, &plaintext)
    };
    add("to_device", "olm_encrypted", text(&encrypted));
    let plain = |event_type: &str, content: Value| json!({"sender": bob_id(), "type": event_type, "content": content});
    add(
        "to_device",
        "verification_request",
        text(&plain(
            "m.key.verification.request",
            json!({"from_device": "BOB1", "methods": ["m.sas.v1"], "transaction_id": "t1", "timestamp": 1}),
        )),
    );
    add(
        "to_device",
        "verification_start",
        text(&plain(
            "m.key.verification.start",
            json!({"from_device": "BOB1", "method": "m.sas.v1", "transaction_id": "t1", "key_agreement_protocols": ["curve25519-hkdf-sha256"], "hashes": ["sha256"], "message_authentication_codes": ["hkdf-hmac-sha256.v2"], "short_authentication_string": ["decimal", "emoji"]}),
        )),
    );
    add(
        "to_device",
        "room_key_request",
        text(&plain(
            "m.room_key_request",
            json!({"action": "request", "requesting_device_id": "BOB1", "request_id": "r", "body": {"algorithm": "m.megolm.v1.aes-sha2", "room_id": room(), "session_id": "s", "sender_key": "k"}}),
        )),
    );
    add(
        "to_device",
        "secret_request",
        text(&plain(
            "m.secret.request",
            json!({"action": "request", "name": "m.megolm_backup.v1", "requesting_device_id": "BOB1", "request_id": "r"}),
        )),
    );

    let megolm_plaintext =
        json!({"type": "m.room.message", "room_id": room(), "content": {"msgtype": "m.text", "body": "hello"}});
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    add("megolm_event", "plaintext", with_mode(1, text(&megolm_plaintext)));
    let message = engines.group.encrypt(megolm_plaintext.to_string());
    let event = json!({"type": "m.room.encrypted", "sender": bob_id(), "event_id": "$e", "origin_server_ts": 1, "room_id": room(), "content": {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": engines.bob.curve25519_key().to_base64(), "device_id": "BOB1", "session_id": engines.group.session_id(), "ciphertext": message.to_base64()}});
    add("megolm_event", "event", with_mode(0, text(&event)));

    let carol = &engines.carol;
    let bob_keys = engines.server.device_keys(&bob_id(), &"BOB1".into()).expect("bob's keys");
    let carol_keys = engines.server.device_keys(&carol.user_id, &carol.device_id).expect("carol's keys");
    let query = json!({"device_keys": {bob_id().as_str(): {"BOB1": bob_keys}, carol.user_id.as_str(): {carol.device_id.as_str(): carol_keys}}, "failures": {}});
    add("keys_query", "two_users", text(&query));
    let devices = BTreeMap::from([(carol.device_id.clone(), OneTimeKeyAlgorithm::SignedCurve25519)]);
    let claimed =
        engines.server.claim_keys(&claim_keys::v3::Request::new(BTreeMap::from([(carol.user_id.clone(), devices)])));
    let claim = json!({"one_time_keys": serde_json::to_value(&claimed.one_time_keys).expect("json"), "failures": {}});
    add("keys_claim", "carol", text(&claim));

    let keys = block_on(engines.alice.machine.export_room_keys(|_| true)).expect("export");
    let file = encrypt_room_key_export(&keys, EXPORT_PASSPHRASE, 1).expect("export file");
    add("key_export", "one_key", file.into_bytes());

    let typed = |kind: u8, bytes: Vec<u8>| [vec![kind], bytes].concat();
    let rmp = |value: &dyn erased::Rmp| value.bytes();
    add("store_values", "account", typed(0, rmp(&account_fixture())));
    add("store_values", "session", typed(1, rmp(&olm_session_fixture(alice_keys.1, 1))));
    add("store_values", "inbound", typed(2, rmp(&inbound_fixture(&room()))));
    add("store_values", "outbound", typed(3, rmp(&outbound_fixture(&room(), 3))));
    add("store_values", "device", typed(4, rmp(&device_fixture(&bob_id(), "BOB9"))));
    add("store_values", "tracked", typed(5, rmp(&TrackedUser { user_id: bob_id(), dirty: true })));
    let secret = StoredSecret { name: "m.megolm_backup.v1".into(), value: Some(zeroize::Zeroizing::new("s".into())) };
    add("store_values", "secret", typed(7, rmp(&secret)));

    for (name, content) in [
        (
            "secret_request",
            json!({"action": "request", "name": "m.cross_signing.master", "requesting_device_id": "D", "request_id": "r"}),
        ),
        (
            "key_request",
            json!({"action": "request", "requesting_device_id": "D", "request_id": "r", "body": {"algorithm": "m.megolm.v1.aes-sha2", "room_id": room(), "session_id": "s", "sender_key": "k"}}),
        ),
        ("secret_send", json!({"request_id": "r", "secret": "c2VjcmV0"})),
        ("forwarded", forwarded(&engines)),
    ] {
        add("gossip_content", name, text(&content));
    }

    let exported = keys.first().expect("alice holds bob's key");
    let backed_up = BackedUpRoomKey {
        algorithm: exported.algorithm.clone(),
        forwarding_curve25519_key_chain: Vec::new(),
        sender_claimed_keys: exported.sender_claimed_keys.clone(),
        sender_key: exported.sender_key.clone(),
        session_key: zeroize::Zeroizing::new(exported.session_key.clone()),
        shared_history: false,
    };
    let session_data = backup_key().public_key().encrypt(&backed_up).expect("encrypt for the backup");
    add("backup_data", "session_data", text(&serde_json::to_value(&session_data).expect("json")));
    let info = json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "version": "1", "auth_data": {"public_key": backup_key().public_key().to_base64(), "signatures": {}}});
    add("backup_data", "info", text(&info));

    let key = SecretStorageKey::generate().expect("a key");
    let secret = encrypt_secret(&key, "m.cross_signing.master", "c2VjcmV0").expect("encrypt");
    let storage = json!({"key_id": key.key_id(), "description": key.description(), "recovery_key": key.recovery_key().as_str(), "name": "m.cross_signing.master", "secret": {"encrypted": {key.key_id(): secret}}});
    add("secret_storage", "secret", text(&storage));
    add("secret_storage", "recovery_key", key.recovery_key().as_bytes().to_vec());
    seeds
}

/// An `m.forwarded_room_key` content for Bob's session.
fn forwarded(engines: &Engines) -> Value {
    json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": room(),
        "sender_key": engines.bob.curve25519_key().to_base64(),
        "session_id": engines.group.session_id(),
        "session_key": vodozemac::megolm::InboundGroupSession::new(&engines.group.session_key(), Default::default()).export_at_first_known_index().to_base64(),
        "sender_claimed_ed25519_key": engines.bob.ed25519_key().to_base64(),
        "forwarding_curve25519_key_chain": [],
    })
}

/// Record types serialized as the stores do (MessagePack, named fields).
mod erased {
    pub(super) trait Rmp {
        fn bytes(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Rmp for T {
        fn bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec_named(self).expect("records serialize")
        }
    }
}
