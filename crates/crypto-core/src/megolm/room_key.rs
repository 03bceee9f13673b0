//! Checking an `m.room_key` that arrived over Olm: its content, its
//! algorithm, its session key and that the session id matches the key.
//! Pure work, so it runs on the decryption workers.

use serde::Deserialize;
use serde_json::Value;
use vodozemac::megolm::SessionKey;

use super::{InboundGroupSession, MEGOLM_ALGORITHM, Origin, RoomKeyContent};
use crate::{OlmError, events::RoomKeyInfo, olm::OlmDecryptionInfo};

/// An `m.room_key` whose content was parsed and whose session key (and its
/// signature) was checked, ready to be stored.
pub(crate) struct PreparedRoomKey {
    pub(crate) info: RoomKeyInfo,
    pub(crate) session: InboundGroupSession,
}

/// Checks an `m.room_key` content that arrived over Olm and builds the
/// inbound session. Pure CPU work, so it runs on the decryption workers.
pub(crate) fn prepare_room_key(info: &OlmDecryptionInfo, content: &Value) -> Result<Box<PreparedRoomKey>, OlmError> {
    let invalid = OlmError::InvalidPayload;
    let content: RoomKeyContent = RoomKeyContent::deserialize(content)
        .map_err(|e| invalid(format!("malformed m.room_key: {}", crate::contain::secret_json_error(&e))))?;
    if content.algorithm != MEGOLM_ALGORITHM {
        return Err(invalid(format!("unsupported room key algorithm {}", content.algorithm)));
    }
    let key = SessionKey::from_base64(&content.session_key).map_err(|_| invalid("invalid session key".to_owned()))?;
    let origin = Origin {
        sender_key: info.sender_curve25519_key,
        sender_ed25519: Some(info.sender_ed25519_key),
        sender_user: Some(info.sender.clone()),
        source: crate::megolm::KeySource::Olm,
        shared_history: content.shared_history,
    };
    let session = InboundGroupSession::from_session_key(&content.room_id, &key, origin);
    if session.session_id != content.session_id {
        return Err(invalid(format!(
            "session id {} does not match the key ({})",
            content.session_id, session.session_id
        )));
    }
    let info = RoomKeyInfo {
        room_id: content.room_id,
        session_id: content.session_id,
        sender_key: info.sender_curve25519_key,
        sender: info.sender.clone(),
        source: super::KeySource::Olm,
    };
    Ok(Box::new(PreparedRoomKey { info, session }))
}
