//! [`RogueDevice`]: a device driven by bare vodozemac, so tests can send Olm
//! messages whose plaintext breaks the rules (wrong recipient, spoofed sender,
//! foreign `sender_device_keys` ...). Its keys are real and correctly signed.

use std::collections::BTreeMap;
use std::sync::Arc;

use ruma_client_api::keys::{claim_keys, upload_keys};
use ruma_common::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, UserId, serde::Raw};
use serde_json::{Value, json};
use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey,
    olm::{Account, OlmMessage, Session, SessionConfig, SessionPickle},
};

use crate::TestServer;

/// A device with a bare vodozemac account, registered on a [`TestServer`].
pub struct RogueDevice {
    /// The device's user.
    pub user_id: OwnedUserId,
    /// The device id.
    pub device_id: OwnedDeviceId,
    account: Account,
    sessions: BTreeMap<String, Session>,
}

impl std::fmt::Debug for RogueDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RogueDevice").field("user_id", &self.user_id).field("device_id", &self.device_id).finish()
    }
}

impl RogueDevice {
    /// A new device whose correctly signed keys (and a few one-time keys) are on the server.
    pub fn register(server: &Arc<TestServer>, user_id: &UserId, device_id: &str) -> Self {
        Self::register_with_keys(server, user_id, device_id, 5, false)
    }

    /// A new device with `one_time_keys` signed one-time keys (at most 100,
    /// vodozemac's limit) and, if `fallback`, a signed fallback key on the server.
    pub fn register_with_keys(
        server: &TestServer,
        user_id: &UserId,
        device_id: &str,
        one_time_keys: usize,
        fallback: bool,
    ) -> Self {
        let mut device = Self::new(user_id, device_id);
        let request = device.keys_upload(one_time_keys, fallback);
        server.upload_keys(user_id, &device.device_id, &request).expect("upload");
        device
    }

    /// A device with a fresh account and nothing on any server yet.
    pub fn new(user_id: &UserId, device_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            device_id: device_id.into(),
            account: Account::new(),
            sessions: BTreeMap::new(),
        }
    }

    /// A keys upload of this device's signed device keys, `one_time_keys`
    /// new signed one-time keys (at most 100) and, if `fallback`, a signed
    /// fallback key; the keys count as published.
    pub fn keys_upload(&mut self, one_time_keys: usize, fallback: bool) -> upload_keys::v3::Request {
        self.account.generate_one_time_keys(one_time_keys);
        let mut request = upload_keys::v3::Request::new();
        if fallback {
            self.account.generate_fallback_key();
            for (id, key) in self.account.fallback_key() {
                let signed = self.sign(json!({ "key": key.to_base64(), "fallback": true }));
                let id = format!("signed_curve25519:{}", id.to_base64());
                request
                    .fallback_keys
                    .insert(id.try_into().expect("key id"), Raw::new(&signed).expect("json").cast_unchecked());
            }
        }
        request.device_keys =
            Some(Raw::new(&self.device_keys_for(&self.user_id.clone())).expect("json").cast_unchecked());
        for (id, key) in self.account.one_time_keys() {
            let signed = self.sign(json!({ "key": key.to_base64() }));
            let id = format!("signed_curve25519:{}", id.to_base64());
            request
                .one_time_keys
                .insert(id.try_into().expect("key id"), Raw::new(&signed).expect("json").cast_unchecked());
        }
        self.account.mark_keys_as_published();
        request
    }

    /// This device's keys, self-signed, but claiming to belong to `user_id`.
    pub fn device_keys_for(&self, user_id: &UserId) -> Value {
        let id = &self.device_id;
        let keys = json!({
            "user_id": user_id,
            "device_id": id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{id}"): self.account.curve25519_key().to_base64(),
                format!("ed25519:{id}"): self.account.ed25519_key().to_base64(),
            },
        });
        self.sign_as(keys, user_id)
    }

    /// Signs a JSON object as this device (canonical JSON, `signatures` added).
    pub fn sign(&self, value: Value) -> Value {
        self.sign_as(value, &self.user_id.clone())
    }

    fn sign_as(&self, mut value: Value, user_id: &UserId) -> Value {
        let mut unsigned = value.clone();
        if let Some(object) = unsigned.as_object_mut() {
            object.remove("signatures");
            object.remove("unsigned");
        }
        let canonical = ruma_common::canonical_json::to_canonical_value(&unsigned).expect("canonical").to_string();
        let signature = self.account.sign(canonical.as_bytes()).to_base64();
        value["signatures"] = json!({ user_id.as_str(): { format!("ed25519:{}", self.device_id): signature } });
        value
    }

    /// The bare vodozemac account, for benchmarks that measure vodozemac itself.
    pub fn account_mut(&mut self) -> &mut Account {
        &mut self.account
    }

    /// The device's curve25519 identity key.
    pub fn curve25519_key(&self) -> Curve25519PublicKey {
        self.account.curve25519_key()
    }

    /// The device's ed25519 key.
    pub fn ed25519_key(&self) -> Ed25519PublicKey {
        self.account.ed25519_key()
    }

    /// Claims a one-time key of a target device and opens an outbound session.
    pub fn open_session(&mut self, server: &TestServer, user_id: &UserId, device_id: &OwnedDeviceId) {
        let request = claim_keys::v3::Request::new(BTreeMap::from([(
            user_id.to_owned(),
            BTreeMap::from([(device_id.clone(), OneTimeKeyAlgorithm::SignedCurve25519)]),
        )]));
        let response = server.claim_keys(&request);
        let (_, key) = response.one_time_keys[user_id][device_id].iter().next().expect("a one-time key");
        let key: Value = key.deserialize_as_unchecked().expect("json");
        let key = Curve25519PublicKey::from_base64(key["key"].as_str().expect("key")).expect("curve key");
        let identity = server.device_keys(user_id, device_id).expect("device keys");
        let identity = identity["keys"][format!("curve25519:{device_id}")].as_str().expect("identity key");
        let identity = Curve25519PublicKey::from_base64(identity).expect("curve key");
        let session = self.account.create_outbound_session(SessionConfig::version_1(), identity, key).expect("session");
        self.sessions.insert(identity.to_base64(), session);
    }

    /// Opens an outbound session with a device's identity key and a one-time
    /// key chosen by the test (e.g. one another device already used).
    pub fn open_session_with(&mut self, identity: Curve25519PublicKey, one_time_key: Curve25519PublicKey) {
        let session =
            self.account.create_outbound_session(SessionConfig::version_1(), identity, one_time_key).expect("session");
        self.sessions.insert(identity.to_base64(), session);
    }

    /// A copy of the session with the device whose identity key is
    /// `recipient_key`, for [`RogueDevice::restore_session`].
    pub fn session_pickle(&self, recipient_key: &Curve25519PublicKey) -> Option<SessionPickle> {
        self.sessions.get(&recipient_key.to_base64()).map(Session::pickle)
    }

    /// Puts back a session saved by [`RogueDevice::session_pickle`] (e.g.
    /// after the recipient refused a message, so its ratchet did not move).
    pub fn restore_session(&mut self, recipient_key: &Curve25519PublicKey, pickle: SessionPickle) {
        self.sessions.insert(recipient_key.to_base64(), Session::from_pickle(pickle));
    }

    /// Encrypts arbitrary bytes (not necessarily JSON) for the device with
    /// `recipient_key`, as [`RogueDevice::encrypt_raw`] does a plaintext.
    pub fn encrypt_bytes(&mut self, recipient_key: &Curve25519PublicKey, plaintext: &[u8]) -> Value {
        let session = self.sessions.get_mut(&recipient_key.to_base64()).expect("a session");
        let message = session.encrypt(plaintext).expect("encrypt");
        self.to_device_event(recipient_key, message)
    }

    fn to_device_event(&self, recipient_key: &Curve25519PublicKey, message: OlmMessage) -> Value {
        let (message_type, body) = match message {
            OlmMessage::PreKey(m) => (0, m.to_base64()),
            OlmMessage::Normal(m) => (1, m.to_base64()),
        };
        json!({
            "sender": self.user_id,
            "type": "m.room.encrypted",
            "content": {
                "algorithm": "m.olm.v1.curve25519-aes-sha2",
                "sender_key": self.curve25519_key().to_base64(),
                "ciphertext": { recipient_key.to_base64(): { "type": message_type, "body": body } },
            },
        })
    }

    /// Encrypts an arbitrary plaintext for the device with `recipient_key`,
    /// returning the `m.room.encrypted` to-device event as the server delivers it.
    pub fn encrypt_raw(&mut self, recipient_key: &Curve25519PublicKey, plaintext: &Value) -> Value {
        let session = self.sessions.get_mut(&recipient_key.to_base64()).expect("a session");
        let message = session.encrypt(plaintext.to_string()).expect("encrypt");
        self.to_device_event(recipient_key, message)
    }

    /// Decrypts an Olm to-device event addressed to this device (creating
    /// the inbound session from a pre-key message), returning the plaintext:
    /// lets a test see what an honest device sent to an attacker's device.
    pub fn decrypt(&mut self, event: &Value) -> Value {
        let content = &event["content"];
        let sender_key =
            Curve25519PublicKey::from_base64(content["sender_key"].as_str().expect("sender_key")).expect("sender key");
        let ours = &content["ciphertext"][self.curve25519_key().to_base64()];
        let body = vodozemac::base64_decode(ours["body"].as_str().expect("body")).expect("base64");
        let message_type = ours["type"].as_u64().expect("type") as usize;
        let message = OlmMessage::from_parts(message_type, &body).expect("olm message");
        let plaintext = match (&message, self.sessions.get_mut(&sender_key.to_base64())) {
            (OlmMessage::Normal(_), Some(session)) => session.decrypt(&message).expect("decrypt"),
            (OlmMessage::PreKey(pre_key), _) => {
                let created = self
                    .account
                    .create_inbound_session(SessionConfig::version_1(), sender_key, pre_key)
                    .expect("inbound session");
                self.sessions.insert(sender_key.to_base64(), created.session);
                created.plaintext
            }
            (OlmMessage::Normal(_), None) => panic!("no session with the sender"),
        };
        serde_json::from_slice(&plaintext).expect("json plaintext")
    }

    /// A plaintext that follows every rule, addressed to `recipient`.
    pub fn valid_plaintext(
        &self,
        recipient: &UserId,
        recipient_ed25519: &Ed25519PublicKey,
        event_type: &str,
        content: Value,
    ) -> Value {
        json!({
            "sender": self.user_id,
            "recipient": recipient,
            "recipient_keys": { "ed25519": recipient_ed25519.to_base64() },
            "keys": { "ed25519": self.ed25519_key().to_base64() },
            "type": event_type,
            "content": content,
            "sender_device_keys": self.device_keys_for(&self.user_id),
        })
    }
}
