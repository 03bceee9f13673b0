//! Receiving room keys (`m.room_key` over Olm) and withheld notices.

use ruma_common::RoomId;
use serde_json::Value;

use super::{OlmMachine, lock};
use crate::{
    StoreError,
    events::RoomKeyInfo,
    megolm::{InboundGroupSession, Judgement, OwnerMismatch, PreparedRoomKey, WithheldInfo, parse_withheld},
    store::Changes,
};

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
                let offer = match session.judge(&mut existing) {
                    Judgement::Take => KeyOffer::Stored,
                    Judgement::Keep => KeyOffer::KeptExisting,
                    Judgement::Upgrade => {
                        existing.adopt_provenance(&session);
                        std::mem::swap(&mut session, &mut existing);
                        KeyOffer::Stored
                    }
                    Judgement::Extend => {
                        session.adopt_provenance(&existing);
                        KeyOffer::Stored
                    }
                    Judgement::Displace(why) => {
                        tracing::warn!(
                            room_id = %session.room_id,
                            session_id = %session.session_id,
                            ?why,
                            held_source = ?existing.source,
                            "an authenticated room key replaced an unauthenticated copy that was not the sender's"
                        );
                        KeyOffer::Stored
                    }
                    Judgement::Conflict(mismatch) => {
                        tracing::warn!(
                            room_id = %session.room_id,
                            session_id = %session.session_id,
                            ?mismatch,
                            "refused a room key whose session id is held for another owner"
                        );
                        KeyOffer::Conflict(mismatch)
                    }
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
