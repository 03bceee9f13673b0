//! The contents of gossip events: parsed with every field checked and
//! bounded, and built for sending. Secrets are zeroized and never shown.

use std::fmt;

use ruma_common::{OwnedDeviceId, OwnedRoomId, RoomId};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{FORWARDED_ROOM_KEY, GossipError, ROOM_KEY_REQUEST, SECRET_REQUEST, SECRET_SEND};
use crate::megolm::{BadExportedKey, ExportedParts, InboundGroupSession, KeySource, MEGOLM_ALGORITHM};

/// The longest request id, secret name or device id we accept.
const MAX_ID: usize = 255;
/// The longest forwarding chain we accept.
const MAX_CHAIN: usize = 32;
/// The longest secret we accept (the known secrets are 43-character seeds).
const MAX_SECRET: usize = 4096;

/// Whether a request asks or withdraws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GossipAction {
    /// `request`.
    Request,
    /// `request_cancellation`.
    Cancel,
}

/// An `m.secret.request` from one of our devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingSecretRequest {
    /// Request or cancellation.
    pub action: GossipAction,
    /// The secret asked for (`None` for a cancellation).
    pub name: Option<String>,
    /// The device that asks (claimed; only ever answered over Olm to it).
    pub requesting_device_id: OwnedDeviceId,
    /// The request's id.
    pub request_id: String,
}

/// An `m.room_key_request` from one of our devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingKeyRequest {
    /// Request or cancellation.
    pub action: GossipAction,
    /// The room and session asked for (`None` for a cancellation).
    pub key: Option<(OwnedRoomId, String)>,
    /// The device that asks.
    pub requesting_device_id: OwnedDeviceId,
    /// The request's id.
    pub request_id: String,
}

/// An `m.secret.send`: the answer to one of our secret requests.
pub struct SecretSend {
    /// The request it answers.
    pub request_id: String,
    /// The secret (zeroized on drop).
    pub secret: Zeroizing<String>,
}

impl fmt::Debug for SecretSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSend").field("request_id", &self.request_id).finish_non_exhaustive()
    }
}

/// An `m.forwarded_room_key`, checked: the session key decodes and its
/// session id matches.
pub struct ForwardedRoomKey {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The session id.
    pub session_id: String,
    pub(crate) session: InboundGroupSession,
}

impl fmt::Debug for ForwardedRoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardedRoomKey")
            .field("room_id", &self.room_id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

fn malformed(event_type: &'static str, reason: impl Into<String>) -> GossipError {
    GossipError::Malformed { event_type, reason: reason.into() }
}

fn bounded(event_type: &'static str, field: &str, value: String) -> Result<String, GossipError> {
    match value.is_empty() || value.len() > MAX_ID {
        true => Err(malformed(event_type, format!("{field} is empty or longer than {MAX_ID} bytes"))),
        false => Ok(value),
    }
}

fn action(event_type: &'static str, action: &str) -> Result<GossipAction, GossipError> {
    match action {
        "request" => Ok(GossipAction::Request),
        "request_cancellation" => Ok(GossipAction::Cancel),
        _ => Err(malformed(event_type, "unknown action")),
    }
}

#[derive(Deserialize)]
struct RawRequest {
    action: String,
    name: Option<String>,
    body: Option<RawKeyBody>,
    requesting_device_id: String,
    request_id: String,
}

#[derive(Deserialize)]
struct RawKeyBody {
    algorithm: String,
    room_id: OwnedRoomId,
    session_id: String,
}

fn raw_request(event_type: &'static str, content: &Value) -> Result<RawRequest, GossipError> {
    RawRequest::deserialize(content).map_err(|e| malformed(event_type, e.to_string()))
}

impl IncomingSecretRequest {
    /// Parses an `m.secret.request` content.
    pub fn parse(content: &Value) -> Result<Self, GossipError> {
        let raw = raw_request(SECRET_REQUEST, content)?;
        let action = action(SECRET_REQUEST, &raw.action)?;
        let name = match (action, raw.name) {
            (GossipAction::Request, Some(name)) => Some(bounded(SECRET_REQUEST, "name", name)?),
            (GossipAction::Request, None) => return Err(malformed(SECRET_REQUEST, "a request without a name")),
            (GossipAction::Cancel, _) => None,
        };
        Ok(Self {
            action,
            name,
            requesting_device_id: bounded(SECRET_REQUEST, "requesting_device_id", raw.requesting_device_id)?.into(),
            request_id: bounded(SECRET_REQUEST, "request_id", raw.request_id)?,
        })
    }
}

impl IncomingKeyRequest {
    /// Parses an `m.room_key_request` content. Only Megolm keys are asked for.
    pub fn parse(content: &Value) -> Result<Self, GossipError> {
        let raw = raw_request(ROOM_KEY_REQUEST, content)?;
        let action = action(ROOM_KEY_REQUEST, &raw.action)?;
        let key = match (action, raw.body) {
            (GossipAction::Request, Some(body)) if body.algorithm == MEGOLM_ALGORITHM => {
                Some((body.room_id, bounded(ROOM_KEY_REQUEST, "session_id", body.session_id)?))
            }
            (GossipAction::Request, Some(_)) => return Err(malformed(ROOM_KEY_REQUEST, "unsupported algorithm")),
            (GossipAction::Request, None) => return Err(malformed(ROOM_KEY_REQUEST, "a request without a body")),
            (GossipAction::Cancel, _) => None,
        };
        Ok(Self {
            action,
            key,
            requesting_device_id: bounded(ROOM_KEY_REQUEST, "requesting_device_id", raw.requesting_device_id)?.into(),
            request_id: bounded(ROOM_KEY_REQUEST, "request_id", raw.request_id)?,
        })
    }
}

impl SecretSend {
    /// Parses an `m.secret.send` content.
    pub fn parse(content: &Value) -> Result<Self, GossipError> {
        let request_id = content.get("request_id").and_then(Value::as_str).map(str::to_owned);
        let secret = content.get("secret").and_then(Value::as_str);
        match (request_id, secret) {
            (Some(request_id), Some(secret)) if secret.len() <= MAX_SECRET && !secret.is_empty() => Ok(Self {
                request_id: bounded(SECRET_SEND, "request_id", request_id)?,
                secret: secret.to_owned().into(),
            }),
            _ => Err(malformed(SECRET_SEND, "request_id and a secret of at most 4096 bytes are required")),
        }
    }
}

#[derive(Deserialize)]
struct RawForwarded {
    algorithm: String,
    room_id: OwnedRoomId,
    sender_key: String,
    session_id: String,
    session_key: Zeroizing<String>,
    sender_claimed_ed25519_key: String,
    #[serde(default)]
    forwarding_curve25519_key_chain: Vec<String>,
    #[serde(default, rename = "org.matrix.msc3061.shared_history")]
    shared_history: bool,
}

impl ForwardedRoomKey {
    /// Parses and checks an `m.forwarded_room_key` content.
    pub fn parse(content: &Value) -> Result<Self, GossipError> {
        let bad_key = |reason: &str| malformed(FORWARDED_ROOM_KEY, reason);
        // The error may quote the session key: only its position is kept.
        let raw = RawForwarded::deserialize(content)
            .map_err(|e| malformed(FORWARDED_ROOM_KEY, crate::contain::secret_json_error(&e)))?;
        if raw.algorithm != MEGOLM_ALGORITHM {
            return Err(bad_key("unsupported algorithm"));
        }
        if raw.forwarding_curve25519_key_chain.len() > MAX_CHAIN {
            return Err(bad_key("forwarding chain too long"));
        }
        let session = InboundGroupSession::from_exported_parts(ExportedParts {
            room_id: &raw.room_id,
            session_id: &raw.session_id,
            session_key: &raw.session_key,
            sender_key: &raw.sender_key,
            claimed_ed25519: Some(&raw.sender_claimed_ed25519_key),
            shared_history: raw.shared_history,
            source: KeySource::Forwarded,
        })
        .map_err(|bad| match bad {
            BadExportedKey::SessionKey => bad_key("invalid session key"),
            BadExportedKey::SenderKey => bad_key("invalid sender_key"),
            BadExportedKey::ClaimedKey => bad_key("invalid sender_claimed_ed25519_key"),
            BadExportedKey::SessionId => bad_key("the session id does not match the key"),
        })?;
        Ok(Self { room_id: raw.room_id, session_id: raw.session_id, session })
    }
}

/// An `m.secret.request` content (a request, or with `name: None` its cancellation).
pub(crate) fn secret_request_content(name: Option<&str>, request_id: &str, our_device: &str) -> Value {
    match name {
        Some(name) => json!({
            "action": "request", "name": name, "request_id": request_id, "requesting_device_id": our_device,
        }),
        None => {
            json!({ "action": "request_cancellation", "request_id": request_id, "requesting_device_id": our_device })
        }
    }
}

/// An `m.room_key_request` content (a request, or with `key: None` its cancellation).
pub(crate) fn key_request_content(key: Option<(&RoomId, &str)>, request_id: &str, our_device: &str) -> Value {
    match key {
        Some((room_id, session_id)) => json!({
            "action": "request",
            "body": { "algorithm": MEGOLM_ALGORITHM, "room_id": room_id, "session_id": session_id },
            "request_id": request_id,
            "requesting_device_id": our_device,
        }),
        None => {
            json!({ "action": "request_cancellation", "request_id": request_id, "requesting_device_id": our_device })
        }
    }
}

/// An `m.secret.send` content. Secret: send it only over Olm.
pub(crate) fn secret_send_content(request_id: &str, secret: &str) -> Value {
    json!({ "request_id": request_id, "secret": secret })
}

/// An `m.forwarded_room_key` content for `session` at its first known
/// index. Secret: send it only over Olm.
pub(crate) fn forwarded_key_content(session: &InboundGroupSession) -> Option<Value> {
    // Without the sender's claimed key the receiver cannot use it.
    let ed25519 = session.sender_ed25519?;
    Some(json!({
        "algorithm": MEGOLM_ALGORITHM,
        "room_id": session.room_id,
        "sender_key": session.sender_key.to_base64(),
        "session_id": session.session_id,
        "session_key": session.export().to_base64(),
        "sender_claimed_ed25519_key": ed25519.to_base64(),
        "forwarding_curve25519_key_chain": [],
        "org.matrix.msc3061.shared_history": session.shared_history,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use ruma_common::room_id;
    use vodozemac::megolm::{GroupSession, SessionConfig};

    use super::*;
    use crate::megolm::{InboundGroupSession, Origin};

    #[test]
    fn built_requests_parse_back_and_cancellations_carry_no_name() {
        let request = IncomingSecretRequest::parse(&secret_request_content(Some("m.megolm_backup.v1"), "r1", "DEV"))
            .expect("parses");
        assert_eq!(request.action, GossipAction::Request);
        assert_eq!(request.name.as_deref(), Some("m.megolm_backup.v1"));
        assert_eq!(request.requesting_device_id.as_str(), "DEV");
        let cancel = IncomingSecretRequest::parse(&secret_request_content(None, "r1", "DEV")).expect("parses");
        assert_eq!((cancel.action, cancel.name), (GossipAction::Cancel, None));

        let room = room_id!("!r:e.org");
        let key = IncomingKeyRequest::parse(&key_request_content(Some((room, "S")), "r2", "DEV")).expect("parses");
        assert_eq!(key.key, Some((room.to_owned(), "S".to_owned())));
        assert_eq!(key.request_id, "r2");
    }

    #[test]
    fn a_forwarded_key_round_trips_and_a_mismatched_session_id_is_refused() {
        let room = room_id!("!r:e.org");
        let outbound = GroupSession::new(SessionConfig::version_1());
        let origin = Origin {
            sender_key: vodozemac::Curve25519PublicKey::from_bytes([3; 32]),
            sender_ed25519: Some(vodozemac::Ed25519SecretKey::new().public_key()),
            sender_user: None,
            source: KeySource::Olm,
            shared_history: true,
        };
        let session = InboundGroupSession::from_session_key(room, &outbound.session_key(), origin);
        let content = forwarded_key_content(&session).expect("has a claimed key");
        let parsed = ForwardedRoomKey::parse(&content).expect("parses");
        assert_eq!(parsed.session_id, session.session_id);
        assert_eq!(parsed.session.source, KeySource::Forwarded);
        assert!(parsed.session.shared_history);
        assert!(!format!("{parsed:?}").contains(content["session_key"].as_str().unwrap_or("-")));

        let mut wrong = content.clone();
        wrong["session_id"] = json!("another");
        assert!(matches!(ForwardedRoomKey::parse(&wrong), Err(GossipError::Malformed { .. })));
        let mut chain = content;
        chain["forwarding_curve25519_key_chain"] = json!(vec!["k"; MAX_CHAIN + 1]);
        assert!(ForwardedRoomKey::parse(&chain).is_err());
    }

    #[test]
    fn oversized_or_empty_fields_are_refused() {
        let long = "x".repeat(MAX_ID + 1);
        assert!(IncomingSecretRequest::parse(&secret_request_content(Some(&long), "r", "D")).is_err());
        assert!(IncomingSecretRequest::parse(&secret_request_content(Some("n"), "", "D")).is_err());
        assert!(SecretSend::parse(&json!({ "request_id": "r", "secret": "s".repeat(MAX_SECRET + 1) })).is_err());
        assert!(SecretSend::parse(&json!({ "request_id": "r", "secret": "" })).is_err());
        let send = SecretSend::parse(&json!({ "request_id": "r", "secret": "hidden-value" })).expect("parses");
        assert!(!format!("{send:?}").contains("hidden-value"));
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z_.]{0,12}".prop_map(Value::String),
            Just(json!("request")),
            Just(json!("request_cancellation")),
            Just(json!(MEGOLM_ALGORITHM)),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("action".to_owned()),
                        Just("name".to_owned()),
                        Just("body".to_owned()),
                        Just("request_id".to_owned()),
                        Just("requesting_device_id".to_owned()),
                        Just("room_id".to_owned()),
                        Just("session_id".to_owned()),
                        Just("session_key".to_owned()),
                        Just("secret".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Every parser takes any JSON without panicking, and whatever it
        /// accepts is within the bounds.
        #[test]
        fn parsers_never_panic_and_bound_what_they_accept(content in arbitrary_json()) {
            if let Ok(request) = IncomingSecretRequest::parse(&content) {
                prop_assert!(request.request_id.len() <= MAX_ID && !request.request_id.is_empty());
                prop_assert_eq!(request.name.is_some(), request.action == GossipAction::Request);
            }
            if let Ok(request) = IncomingKeyRequest::parse(&content) {
                prop_assert_eq!(request.key.is_some(), request.action == GossipAction::Request);
            }
            if let Ok(send) = SecretSend::parse(&content) {
                prop_assert!(!send.secret.is_empty() && send.secret.len() <= MAX_SECRET);
            }
            prop_assert!(ForwardedRoomKey::parse(&content).is_err(), "random JSON carries no valid key");
        }
    }
}
