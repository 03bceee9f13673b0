//! Converting between our room keys and the entries of a key export file.
//! An imported key is only as trustworthy as the file: its origin is
//! `Imported`, its owner unknown until a known device vouches for its keys.

use std::collections::BTreeMap;

use ruma_common::RoomId;
use vodozemac::megolm::ExportedSessionKey;

use super::ExportedRoomKey;
use crate::megolm::{InboundGroupSession, KeySource, MEGOLM_ALGORITHM, Origin};

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
    let session_key = ExportedSessionKey::from_base64(&key.session_key).ok()?;
    let origin = Origin {
        sender_key: crate::keys::curve25519_from_base64(&key.sender_key).ok()?,
        // A claimed key that is present but invalid makes the whole key invalid.
        sender_ed25519: match key.sender_claimed_keys.get("ed25519") {
            Some(claimed) => Some(crate::keys::ed25519_from_base64(claimed).ok()?),
            None => None,
        },
        sender_user: None,
        source: KeySource::Imported,
        shared_history: key.shared_history,
    };
    let room_id: &RoomId = &key.room_id;
    let session = InboundGroupSession::from_export(room_id, &session_key, origin);
    (session.session_id == key.session_id).then_some(session)
}
