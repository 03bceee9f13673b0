//! The floor: the same cryptography on bare vodozemac, with no device
//! tracking, checks, storage or bookkeeping. An engine cannot do the work in
//! less time on one core.

use std::sync::Arc;

use hush_testing::{RogueDevice, TestServer};
use ruma::{OneTimeKeyAlgorithm, OwnedUserId, api::client::keys::claim_keys};
use serde_json::{Value, json};
use vodozemac::{
    Curve25519PublicKey,
    megolm::{GroupSession, InboundGroupSession, MegolmMessage, SessionConfig as MegolmConfig, SessionKey},
    olm::{Account, OlmMessage, PreKeyMessage, SessionConfig},
};

use super::{Phase, SharePeers, Stopwatch, message_content, room_id};

/// `olm-raw/N`: a 3DH outbound session per device (`keys_claim`), then one
/// Olm encryption of an `m.room_key`-sized plaintext per device (`share_room_key`).
pub fn olm(peers: &SharePeers, devices_per_user: usize) -> Vec<Phase> {
    let account = Account::new();
    let request = claim_keys::v3::Request::new(
        peers
            .users
            .iter()
            .map(|u| {
                let devices = (0..devices_per_user)
                    .map(|d| (format!("PEERDEV{d}").into(), OneTimeKeyAlgorithm::SignedCurve25519))
                    .collect();
                (u.clone(), devices)
            })
            .collect(),
    );
    let answer = peers.server.claim_keys(&request);
    let mut targets = Vec::new();
    for (user_id, devices) in &answer.one_time_keys {
        for (device_id, keys) in devices {
            let (_, key) = keys.iter().next().expect("a one-time key");
            let key: Value = key.deserialize_as_unchecked().expect("json");
            let key = Curve25519PublicKey::from_base64(key["key"].as_str().expect("key")).expect("curve key");
            let identity = peers.server.device_keys(user_id, device_id).expect("device keys");
            let identity = identity["keys"][format!("curve25519:{device_id}")].as_str().expect("identity key");
            targets.push((Curve25519PublicKey::from_base64(identity).expect("curve key"), key));
        }
    }
    let devices = targets.len();

    let timer = Stopwatch::start();
    let mut sessions: Vec<_> = targets
        .iter()
        .map(|(identity, key)| {
            account.create_outbound_session(SessionConfig::version_1(), *identity, *key).expect("session")
        })
        .collect();
    let keys_claim = timer.phase("keys_claim", devices);

    let group = GroupSession::new(MegolmConfig::version_1());
    let plaintext = room_key_plaintext(&group, &account).to_string();
    let timer = Stopwatch::start();
    let mut bytes = 0;
    for session in &mut sessions {
        match session.encrypt(&plaintext).expect("encrypt") {
            OlmMessage::PreKey(m) => bytes += m.to_base64().len(),
            OlmMessage::Normal(m) => bytes += m.to_base64().len(),
        }
    }
    let share_room_key = timer.phase("share_room_key", devices);
    assert!(bytes > 0);
    vec![keys_claim, share_room_key]
}

/// The plaintext an engine sends with an `m.room_key`: the spec's fields and,
/// as hush and matrix-sdk-crypto both send them, the sender's signed device
/// keys (MSC4147 `sender_device_keys`).
fn room_key_plaintext(group: &GroupSession, account: &Account) -> Value {
    let device_keys = json!({
        "user_id": "@floor:hush.example",
        "device_id": "FLOOR",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            "curve25519:FLOOR": account.curve25519_key().to_base64(),
            "ed25519:FLOOR": account.ed25519_key().to_base64(),
        },
        "signatures": { "@floor:hush.example": { "ed25519:FLOOR": account.sign("device keys").to_base64() } },
    });
    json!({
        "sender_device_keys": device_keys,
        "sender": "@floor:hush.example",
        "sender_device": "FLOOR",
        "keys": { "ed25519": account.ed25519_key().to_base64() },
        "recipient": "@peer0:hush.example",
        "recipient_keys": { "ed25519": account.ed25519_key().to_base64() },
        "type": "m.room_key",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room_id(),
            "session_id": group.session_id(),
            "session_key": group.session_key().to_base64(),
        },
    })
}

/// `megolm-raw/M`: Megolm encryption of the same plaintexts, then decryption
/// (from and to base64) with an inbound session.
pub fn megolm(messages: usize) -> Vec<Phase> {
    let mut group = GroupSession::new(MegolmConfig::version_1());
    let mut inbound = InboundGroupSession::new(&group.session_key(), MegolmConfig::version_1());
    let plaintexts: Vec<String> = (0..messages)
        .map(|n| json!({ "type": "m.room.message", "content": message_content(n), "room_id": room_id() }).to_string())
        .collect();
    let timer = Stopwatch::start();
    let ciphertexts: Vec<String> = plaintexts.iter().map(|p| group.encrypt(p).to_base64()).collect();
    let encrypt = timer.phase("encrypt", messages);

    let timer = Stopwatch::start();
    for ciphertext in &ciphertexts {
        let message = MegolmMessage::from_base64(ciphertext).expect("megolm message");
        inbound.decrypt(&message).expect("decrypt");
    }
    let decrypt = timer.phase("decrypt", messages);
    vec![encrypt, decrypt]
}

/// `olm-raw-receive/N`: per event, parse it, create the inbound session
/// (3DH) from the pre-key message, decrypt, parse the plaintext and make the
/// inbound Megolm session.
pub fn receive_keys(server: &Arc<TestServer>, senders: &mut [RogueDevice], run: usize) -> Vec<Phase> {
    let user_id: OwnedUserId = "@receiver:hush.example".try_into().expect("valid user id");
    let mut receiver = RogueDevice::register_with_keys(server, &user_id, &format!("FLOORRECV{run}"), 5, true);
    let our_key = receiver.curve25519_key();
    let our_key_b64 = our_key.to_base64();
    super::send_room_keys(server, senders, &user_id, &receiver.device_id, receiver.ed25519_key(), our_key);
    let changes = server.sync(&user_id, &receiver.device_id, "receive".to_owned());
    let account = receiver.account_mut();

    let timer = Stopwatch::start();
    let mut sessions = Vec::with_capacity(changes.to_device_events.len());
    for event in &changes.to_device_events {
        let event: Value = event.deserialize_as_unchecked().expect("json");
        let content = &event["content"];
        let sender_key =
            Curve25519PublicKey::from_base64(content["sender_key"].as_str().expect("sender key")).expect("curve key");
        let body = content["ciphertext"][&our_key_b64]["body"].as_str().expect("body");
        let message = PreKeyMessage::from_base64(body).expect("pre-key message");
        let created = account.create_inbound_session(SessionConfig::version_1(), sender_key, &message).expect("3DH");
        let plaintext: Value = serde_json::from_slice(&created.plaintext).expect("plaintext");
        let key = SessionKey::from_base64(plaintext["content"]["session_key"].as_str().expect("key")).expect("key");
        sessions.push((created.session, InboundGroupSession::new(&key, MegolmConfig::version_1())));
    }
    let phase = timer.phase("receive", sessions.len());
    vec![phase]
}
