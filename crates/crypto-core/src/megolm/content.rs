//! The Megolm wire formats: `m.room_key` contents and `m.room.encrypted`
//! room-event contents.

use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde::Deserialize;
use serde_json::{Value, json};
use vodozemac::megolm::MegolmMessage;

use super::{MEGOLM_ALGORITHM, MegolmError};

/// An `m.room_key` content carrying `session_key` for `room_id`.
pub(crate) fn room_key_content(room_id: &RoomId, session_id: &str, session_key: &str, shared_history: bool) -> Value {
    json!({
        "algorithm": MEGOLM_ALGORITHM,
        "room_id": room_id,
        "session_id": session_id,
        "session_key": session_key,
        "shared_history": shared_history,
    })
}

/// A received `m.room_key` content.
#[derive(Deserialize)]
pub(crate) struct RoomKeyContent {
    pub(crate) algorithm: String,
    pub(crate) room_id: OwnedRoomId,
    pub(crate) session_id: String,
    pub(crate) session_key: String,
    #[serde(default, alias = "org.matrix.msc3061.shared_history", alias = "m.shared_history")]
    pub(crate) shared_history: bool,
}

#[derive(Deserialize)]
struct RawEncryptedEvent {
    sender: OwnedUserId,
    event_id: OwnedEventId,
    origin_server_ts: js_int::UInt,
    content: RawEncryptedContent,
    #[serde(default)]
    unsigned: Option<Value>,
}

#[derive(Deserialize)]
struct RawEncryptedContent {
    algorithm: String,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
}

/// An incoming Megolm-encrypted room event.
pub(crate) struct IncomingRoomEvent {
    pub(crate) sender: OwnedUserId,
    pub(crate) event_id: OwnedEventId,
    pub(crate) origin_server_ts: js_int::UInt,
    pub(crate) unsigned: Option<Value>,
    pub(crate) session_id: String,
    pub(crate) message: MegolmMessage,
}

pub(crate) fn parse_encrypted_event(event: Value) -> Result<IncomingRoomEvent, MegolmError> {
    let raw: RawEncryptedEvent = serde_json::from_value(event).map_err(|e| MegolmError::Malformed(e.to_string()))?;
    if raw.content.algorithm != MEGOLM_ALGORITHM {
        return Err(MegolmError::UnsupportedAlgorithm(raw.content.algorithm));
    }
    let ciphertext = raw.content.ciphertext.ok_or_else(|| MegolmError::Malformed("missing ciphertext".into()))?;
    let session_id = raw.content.session_id.ok_or_else(|| MegolmError::Malformed("missing session_id".into()))?;
    let message = MegolmMessage::from_base64(&ciphertext).map_err(|e| MegolmError::Malformed(e.to_string()))?;
    Ok(IncomingRoomEvent {
        sender: raw.sender,
        event_id: raw.event_id,
        origin_server_ts: raw.origin_server_ts,
        unsigned: raw.unsigned,
        session_id,
        message,
    })
}

#[derive(Deserialize)]
pub(crate) struct RoomPlaintext {
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) content: serde_json::Map<String, Value>,
    pub(crate) room_id: String,
}
