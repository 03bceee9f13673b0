//! Converting between our room keys and the entries of a key export file.
//! An imported key is only as trustworthy as the file: its origin is
//! `Imported`, its owner unknown until a known device vouches for its keys.

use std::collections::BTreeMap;

use super::ExportedRoomKey;
use crate::megolm::{ExportedParts, InboundGroupSession, KeySource, MEGOLM_ALGORITHM};

impl From<&InboundGroupSession> for ExportedRoomKey {
    fn from(session: &InboundGroupSession) -> Self {
        let mut claimed = BTreeMap::new();
        if let Some(ed25519) = session.sender_ed25519 {
            claimed.insert("ed25519".to_owned(), ed25519.to_base64());
        }
        Self {
            algorithm: MEGOLM_ALGORITHM.to_owned(),
            room_id: session.room_id.clone(),
            sender_key: session.sender_key.to_base64(),
            session_id: session.session_id.clone(),
            session_key: session.export().to_base64(),
            sender_claimed_keys: claimed,
            forwarding_curve25519_key_chain: Vec::new(),
            shared_history: session.shared_history,
        }
    }
}

/// A session from an exported key, if the key is well-formed and its session
/// id matches its key material.
pub(crate) fn session_from_export(key: &ExportedRoomKey) -> Option<InboundGroupSession> {
    if key.algorithm != MEGOLM_ALGORITHM {
        return None;
    }
    InboundGroupSession::from_exported_parts(ExportedParts {
        room_id: &key.room_id,
        session_id: &key.session_id,
        session_key: &key.session_key,
        sender_key: &key.sender_key,
        claimed_ed25519: key.sender_claimed_keys.get("ed25519").map(String::as_str),
        shared_history: key.shared_history,
        source: KeySource::Imported,
    })
    .ok()
}
