//! Receiving room keys (`m.room_key` over Olm) and withheld notices.

use ruma_common::RoomId;
use serde::Deserialize;
use serde_json::Value;
use vodozemac::megolm::SessionKey;

use super::{OlmMachine, lock, sync::OlmDecryptionInfo};
use crate::{
    OlmError, StoreError,
    events::RoomKeyInfo,
    megolm::{
        InboundGroupSession, MEGOLM_ALGORITHM, Origin, OwnerMismatch, RoomKeyContent, WithheldInfo, parse_withheld,
    },
    store::Changes,
};

/// An `m.room_key` whose content was parsed and whose session key (and its
/// signature) was checked, ready to be stored.
pub(super) struct PreparedRoomKey {
    info: RoomKeyInfo,
    session: InboundGroupSession,
}

/// Checks an `m.room_key` content that arrived over Olm and builds the
/// inbound session. Pure CPU work, so it runs on the decryption workers.
pub(super) fn prepare_room_key(info: &OlmDecryptionInfo, content: &Value) -> Result<Box<PreparedRoomKey>, OlmError> {
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
    };
    Ok(Box::new(PreparedRoomKey { info, session }))
}

/// What became of a room key offered to the store.
#[derive(Debug)]
pub(super) enum KeyOffer {
    /// Stored: new, or a better copy of the same owner's key.
    Stored,
    /// A copy at least as good is already held.
    KeptExisting,
    /// A key with this session id is held for another owner: the newcomer
    /// is a different key and was refused.
    Conflict(OwnerMismatch),
}

impl OlmMachine {
    /// Stores an `m.room_key` that arrived over Olm (checked by
    /// [`prepare_room_key`]), unless a better copy of the same session is
    /// known. A key whose session id is held for another owner is refused.
    pub(super) async fn receive_room_key(
        &self,
        prepared: Box<PreparedRoomKey>,
        changes: &mut Changes,
    ) -> Result<Result<Option<RoomKeyInfo>, OwnerMismatch>, StoreError> {
        let PreparedRoomKey { info, session } = *prepared;
        Ok(match self.offer_inbound(session, changes).await? {
            KeyOffer::Stored => Ok(Some(info)),
            KeyOffer::KeptExisting => Ok(None),
            KeyOffer::Conflict(mismatch) => Err(mismatch),
        })
    }

    /// Keeps `session` if no better copy of the same owner's key is known
    /// and no other owner holds its session id; adds it to `changes`.
    pub(super) async fn offer_inbound(
        &self,
        mut session: InboundGroupSession,
        changes: &mut Changes,
    ) -> Result<KeyOffer, StoreError> {
        // A copy already in this batch counts as known.
        let pending = changes
            .inbound_group_sessions
            .iter()
            .rposition(|s| s.room_id == session.room_id && s.session_id == session.session_id);
        let existing = match pending {
            Some(i) => Some(InboundGroupSession::from_stored(changes.inbound_group_sessions.remove(i))),
            None => self.load_inbound(&session.room_id, &session.session_id).await?,
        };
        let offer = match existing {
            None => KeyOffer::Stored,
            Some(mut existing) => {
                let offer = match OwnerMismatch::between(&existing, &session) {
                    Some(mismatch) => {
                        tracing::warn!(
                            room_id = %session.room_id,
                            session_id = %session.session_id,
                            ?mismatch,
                            "refused a room key whose session id is held for another owner"
                        );
                        KeyOffer::Conflict(mismatch)
                    }
                    None if session.is_better_than(&mut existing) => KeyOffer::Stored,
                    None => KeyOffer::KeptExisting,
                };
                if !matches!(offer, KeyOffer::Stored) && pending.is_some() {
                    changes.inbound_group_sessions.push(existing.to_stored());
                }
                offer
            }
        };
        if matches!(offer, KeyOffer::Stored) {
            changes.inbound_group_sessions.push(session.to_stored());
            lock(&self.inner.groups).insert_inbound(session);
        }
        Ok(offer)
    }

    /// An inbound session from the cache or the store (not cached by this call).
    pub(super) async fn load_inbound(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<InboundGroupSession>, StoreError> {
        Ok(self.inner.store.get_inbound_group_session(room_id, session_id).await?.map(InboundGroupSession::from_stored))
    }

    /// Records an `m.room_key.withheld` notice.
    pub(super) fn receive_withheld(
        &self,
        sender: &ruma_common::UserId,
        content: &Value,
        changes: &mut Changes,
    ) -> Result<WithheldInfo, String> {
        let info = parse_withheld(sender.to_owned(), content)?;
        changes.withheld.push(info.clone());
        Ok(info)
    }
}
