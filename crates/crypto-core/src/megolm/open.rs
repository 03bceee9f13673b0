//! Opening one Megolm room event: parsing it and decrypting it with its
//! session, then checking the payload (the event's sender owns the key,
//! the payload is for this room). Pure work for the decryption workers; the
//! checks that need the store (sender device, replay) come after.

use std::collections::HashMap;

use ruma_common::{OwnedEventId, OwnedUserId, RoomId, serde::Raw};
use ruma_events::AnyTimelineEvent;
use serde_json::{Value, json};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, megolm::DecryptionError};

use super::{InboundGroupSession, IncomingRoomEvent, KeySource, MegolmError, RoomPlaintext, parse_encrypted_event};
use crate::contain::contain;

/// The inbound sessions one worker decrypts with, by session id.
pub(crate) type SessionMap = HashMap<String, InboundGroupSession>;

/// An event parsed on a worker.
pub(crate) struct Parsed {
    pub(crate) incoming: IncomingRoomEvent,
    pub(crate) outer_relation: Option<Value>,
    pub(crate) claimed_sender_key: Option<Curve25519PublicKey>,
}

/// An event decrypted and checked on a worker; what is left needs the store.
pub(crate) struct Opened {
    pub(crate) sender: OwnedUserId,
    pub(crate) event_id: OwnedEventId,
    pub(crate) origin_server_ts: u64,
    pub(crate) session_id: String,
    pub(crate) message_index: u32,
    pub(crate) key: KeyFacts,
    pub(crate) event: Raw<AnyTimelineEvent>,
}

pub(crate) fn parse(value: Result<Value, MegolmError>) -> Result<Parsed, MegolmError> {
    let value = value?;
    let outer_relation = value["content"].get("m.relates_to").cloned();
    let claimed_sender_key =
        value["content"]["sender_key"].as_str().and_then(|k| crate::keys::curve25519_from_base64(k).ok());
    let incoming = parse_encrypted_event(value)?;
    Ok(Parsed { incoming, outer_relation, claimed_sender_key })
}

/// [`open`] with a bug contained: the event fails alone, and its session
/// copy, which the bug may have left half-changed, is dropped from the map
/// (the cache reloads it from the store).
pub(crate) fn contain_open(
    local: &mut SessionMap,
    parsed: Parsed,
    room_id: &RoomId,
) -> Result<Result<Opened, Parsed>, MegolmError> {
    let session_id = parsed.incoming.session_id.clone();
    let Some(session) = local.get_mut(&session_id) else { return Ok(Err(parsed)) };
    match contain("a room event", || open(session, parsed, room_id)) {
        Ok(result) => result.map(Ok),
        Err(reason) => {
            local.remove(&session_id);
            Err(MegolmError::Internal(reason))
        }
    }
}

/// Decrypts and checks one event with its session: pure work for a worker.
pub(crate) fn open(session: &mut InboundGroupSession, parsed: Parsed, room_id: &RoomId) -> Result<Opened, MegolmError> {
    let Parsed { incoming, outer_relation, .. } = parsed;
    let decrypted = session.decrypt(&incoming.message).map_err(|e| match e {
        DecryptionError::UnknownMessageIndex(first_known_index, message_index) => {
            MegolmError::UnknownMessageIndex { first_known_index, message_index }
        }
        other => MegolmError::DecryptionFailed(other.to_string()),
    })?;
    let key = KeyFacts::of(session);
    if let Some(owner) = &key.sender_user
        && *owner != incoming.sender
    {
        return Err(MegolmError::SenderMismatch { event_sender: incoming.sender, key_owner: owner.clone() });
    }
    let plaintext: RoomPlaintext = serde_json::from_slice(&decrypted.plaintext)
        .map_err(|e| MegolmError::Malformed(format!("payload: {}", crate::contain::secret_json_error(&e))))?;
    if plaintext.room_id != room_id.as_str() {
        return Err(MegolmError::RoomMismatch { expected: room_id.to_owned(), found: plaintext.room_id });
    }
    let mut content = plaintext.content;
    if let Some(relation) = outer_relation {
        content.entry("m.relates_to").or_insert(relation);
    }
    let mut event = json!({
        "type": plaintext.event_type,
        "content": content,
        "room_id": room_id,
        "sender": incoming.sender,
        "event_id": incoming.event_id,
        "origin_server_ts": incoming.origin_server_ts,
    });
    if let Some(unsigned) = incoming.unsigned {
        event["unsigned"] = unsigned;
    }
    let event = Raw::new(&event).map(Raw::cast_unchecked).map_err(|e| MegolmError::Malformed(e.to_string()))?;
    Ok(Opened {
        sender: incoming.sender,
        event_id: incoming.event_id,
        origin_server_ts: u64::from(incoming.origin_server_ts),
        session_id: incoming.session_id,
        message_index: decrypted.message_index,
        key,
        event,
    })
}

/// What a decryption needs to know about the key, copied out of the cache.
#[derive(Clone)]
pub(crate) struct KeyFacts {
    pub(crate) sender_key: Curve25519PublicKey,
    pub(crate) sender_ed25519: Option<Ed25519PublicKey>,
    pub(crate) sender_user: Option<OwnedUserId>,
    pub(crate) source: KeySource,
}

impl KeyFacts {
    pub(crate) fn of(session: &InboundGroupSession) -> Self {
        Self {
            sender_key: session.sender_key,
            sender_ed25519: session.sender_ed25519,
            sender_user: session.sender_user.clone(),
            source: session.source,
        }
    }
}
