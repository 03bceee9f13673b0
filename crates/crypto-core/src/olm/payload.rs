//! The Olm wire format: the encrypted to-device content and the plaintext
//! payload inside it, built for sending and checked field by field on receipt.

use std::collections::BTreeMap;

use ruma_common::{OwnedDeviceId, OwnedUserId, UserId, serde::Raw};
use ruma_events::AnyToDeviceEventContent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, olm::OlmMessage};

use super::OlmError;
use crate::devices::DeviceData;
use crate::store::OlmMessageHash;

/// The algorithm name of Olm to-device encryption.
pub const OLM_ALGORITHM: &str = "m.olm.v1.curve25519-aes-sha2";

/// Our own identity, fixed for the lifetime of the account.
#[derive(Clone, Debug)]
pub(crate) struct OwnIdentity {
    pub(crate) user_id: OwnedUserId,
    pub(crate) device_id: OwnedDeviceId,
    pub(crate) ed25519: Ed25519PublicKey,
    pub(crate) curve25519: Curve25519PublicKey,
    /// Our signed device keys, sent as `sender_device_keys` (MSC4147).
    pub(crate) signed_device_keys: Value,
}

/// An Olm plaintext as the spec describes it (with MSC4147's
/// `sender_device_keys`), serialized straight from borrowed parts.
#[derive(Serialize)]
pub(crate) struct OlmPlaintext<'a> {
    sender: &'a UserId,
    sender_device: &'a ruma_common::DeviceId,
    keys: Ed25519Only,
    recipient: &'a UserId,
    recipient_keys: Ed25519Only,
    #[serde(rename = "type")]
    event_type: &'a str,
    content: &'a Value,
    sender_device_keys: &'a Value,
}

#[derive(Serialize)]
struct Ed25519Only {
    ed25519: String,
}

/// The plaintext of `event_type` / `content` from us to `recipient`.
pub(crate) fn build_plaintext<'a>(
    own: &'a OwnIdentity,
    recipient: &'a DeviceData,
    event_type: &'a str,
    content: &'a Value,
) -> OlmPlaintext<'a> {
    OlmPlaintext {
        sender: &own.user_id,
        sender_device: &own.device_id,
        keys: Ed25519Only { ed25519: own.ed25519.to_base64() },
        recipient: recipient.user_id(),
        recipient_keys: Ed25519Only { ed25519: recipient.ed25519_key().to_base64() },
        event_type,
        content,
        sender_device_keys: &own.signed_device_keys,
    }
}

#[derive(Serialize)]
struct OlmContentOut<'a> {
    algorithm: &'a str,
    sender_key: String,
    ciphertext: BTreeMap<String, OlmCiphertextOut>,
}

#[derive(Serialize)]
struct OlmCiphertextOut {
    #[serde(rename = "type")]
    message_type: u8,
    body: String,
}

/// The `m.room.encrypted` to-device content carrying `message` for `recipient_key`.
pub(crate) fn encrypted_content(
    own: &OwnIdentity,
    recipient_key: Curve25519PublicKey,
    message: &OlmMessage,
) -> Result<Raw<AnyToDeviceEventContent>, serde_json::Error> {
    let (message_type, body) = match message {
        OlmMessage::PreKey(m) => (0, m.to_base64()),
        OlmMessage::Normal(m) => (1, m.to_base64()),
    };
    let content = OlmContentOut {
        algorithm: OLM_ALGORITHM,
        sender_key: own.curve25519.to_base64(),
        ciphertext: BTreeMap::from([(recipient_key.to_base64(), OlmCiphertextOut { message_type, body })]),
    };
    Ok(Raw::from_json(serde_json::value::to_raw_value(&content)?))
}

/// An incoming Olm message addressed to us.
pub(crate) struct IncomingOlm {
    pub(crate) sender: OwnedUserId,
    pub(crate) sender_key: Curve25519PublicKey,
    pub(crate) message: OlmMessage,
    /// Identifies the message, to recognise a redelivery.
    pub(crate) hash: OlmMessageHash,
}

/// SHA-256 of an Olm message's type and body, with its sender key.
fn message_hash(sender_key: &Curve25519PublicKey, message_type: u8, body: &str) -> OlmMessageHash {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update([message_type]);
    hasher.update(body.as_bytes());
    OlmMessageHash { sender_key: sender_key.to_base64(), hash: vodozemac::base64_encode(hasher.finalize()) }
}

#[derive(Deserialize)]
struct EncryptedEvent {
    sender: OwnedUserId,
    content: EncryptedContent,
}

#[derive(Deserialize)]
struct EncryptedContent {
    algorithm: String,
    #[serde(default)]
    sender_key: Option<String>,
    #[serde(default)]
    ciphertext: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct CiphertextInfo {
    #[serde(rename = "type")]
    message_type: u8,
    body: String,
}

/// Parses an `m.room.encrypted` to-device event and picks our ciphertext.
pub(crate) fn parse_incoming(event: &Value, our_key: &Curve25519PublicKey) -> Result<IncomingOlm, OlmError> {
    let event: EncryptedEvent =
        serde_json::from_value(event.clone()).map_err(|e| OlmError::Malformed(e.to_string()))?;
    let content = event.content;
    if content.algorithm != OLM_ALGORITHM {
        return Err(OlmError::UnsupportedAlgorithm(content.algorithm));
    }
    let sender_key = content.sender_key.ok_or_else(|| OlmError::Malformed("missing sender_key".into()))?;
    let sender_key = crate::keys::curve25519_from_base64(&sender_key)
        .map_err(|e| OlmError::InvalidKey { what: "sender_key", reason: e.to_string() })?;
    let ciphertext = content.ciphertext.ok_or_else(|| OlmError::Malformed("missing ciphertext".into()))?;
    let ours = ciphertext.get(&our_key.to_base64()).ok_or(OlmError::NotForThisDevice)?;
    let info: CiphertextInfo =
        serde_json::from_value(ours.clone()).map_err(|e| OlmError::Malformed(format!("ciphertext entry: {e}")))?;
    let bytes = vodozemac::base64_decode(&info.body).map_err(|e| OlmError::InvalidMessage(e.to_string()))?;
    let message = OlmMessage::from_parts(usize::from(info.message_type), &bytes)
        .map_err(|e| OlmError::InvalidMessage(e.to_string()))?;
    let hash = message_hash(&sender_key, info.message_type, &info.body);
    Ok(IncomingOlm { sender: event.sender, sender_key, message, hash })
}

#[derive(Deserialize)]
struct Ed25519Holder {
    ed25519: String,
}

#[derive(Deserialize)]
struct RawPlaintext {
    sender: OwnedUserId,
    recipient: OwnedUserId,
    recipient_keys: Ed25519Holder,
    keys: Ed25519Holder,
    #[serde(rename = "type")]
    event_type: String,
    content: serde_json::Map<String, Value>,
    #[serde(default)]
    sender_device_keys: Option<Value>,
}

/// A decrypted plaintext whose every field was checked.
#[derive(Debug)]
pub(crate) struct CheckedPlaintext {
    pub(crate) event_type: String,
    pub(crate) content: Value,
    pub(crate) sender_ed25519: Ed25519PublicKey,
    /// The sending device, as we know it or as its `sender_device_keys` proved it.
    pub(crate) sender_device: Option<DeviceData>,
}

/// Checks a decrypted plaintext against the event and what we know:
/// `known_sender_device` is the sender's device with the message's curve25519 key, if known.
pub(crate) fn check_plaintext(
    plaintext: &[u8],
    event_sender: &UserId,
    sender_key: Curve25519PublicKey,
    own: &OwnIdentity,
    known_sender_device: Option<&DeviceData>,
) -> Result<CheckedPlaintext, OlmError> {
    let raw: RawPlaintext = serde_json::from_slice(plaintext)
        .map_err(|e| OlmError::Malformed(format!("plaintext: {}", crate::contain::secret_json_error(&e))))?;
    if raw.sender != event_sender {
        return Err(OlmError::SenderMismatch { event_sender: event_sender.to_owned(), plaintext_sender: raw.sender });
    }
    if raw.recipient != own.user_id {
        return Err(OlmError::RecipientMismatch { expected: own.user_id.clone(), found: raw.recipient });
    }
    let recipient_key = crate::keys::ed25519_from_base64(&raw.recipient_keys.ed25519)
        .map_err(|e| OlmError::InvalidKey { what: "recipient_keys.ed25519", reason: e.to_string() })?;
    if recipient_key != own.ed25519 {
        return Err(OlmError::RecipientKeyMismatch);
    }
    let sender_ed25519 = crate::keys::ed25519_from_base64(&raw.keys.ed25519)
        .map_err(|e| OlmError::InvalidKey { what: "keys.ed25519", reason: e.to_string() })?;
    if let Some(device) = known_sender_device
        && device.ed25519_key() != sender_ed25519
    {
        return Err(OlmError::SenderKeyMismatch { device_id: device.device_id().to_owned() });
    }
    if raw.event_type == "m.room.encrypted" {
        return Err(OlmError::Malformed("an Olm payload may not itself be encrypted".into()));
    }
    let proven_device = match raw.sender_device_keys {
        None | Some(Value::Null) => None,
        Some(keys) => Some(check_sender_device_keys(keys, event_sender, sender_key, sender_ed25519)?),
    };
    Ok(CheckedPlaintext {
        event_type: raw.event_type,
        content: Value::Object(raw.content),
        sender_ed25519,
        sender_device: known_sender_device.cloned().or(proven_device),
    })
}

/// `sender_device_keys` must be self-signed, name the event's sender (not
/// some other user: CVE-2026-45056), and carry the keys the message used.
fn check_sender_device_keys(
    keys: Value,
    event_sender: &UserId,
    sender_key: Curve25519PublicKey,
    sender_ed25519: Ed25519PublicKey,
) -> Result<DeviceData, OlmError> {
    let device = DeviceData::from_signed_keys(keys, event_sender, None)
        .map_err(|e| OlmError::InvalidSenderDeviceKeys(e.to_string()))?;
    if device.curve25519_key() != sender_key {
        return Err(OlmError::InvalidSenderDeviceKeys("curve25519 key differs from the message's sender_key".into()));
    }
    if device.ed25519_key() != sender_ed25519 {
        return Err(OlmError::InvalidSenderDeviceKeys("ed25519 key differs from the plaintext's keys.ed25519".into()));
    }
    Ok(device)
}
