//! Routing for explaining a decryption failure: gathers the engine's facts
//! (our device's age, our Olm sessions with the sender, open key requests,
//! the backup) and applies the rule in `utd::classify`.

use ruma_common::{RoomId, serde::Raw};
use serde_json::Value;

use super::OlmMachine;
use crate::{
    MegolmError,
    gossip::GossipKind,
    utd::{BackupAvailability, MembershipAtEvent, UtdCause, UtdFacts, classify},
};

impl OlmMachine {
    /// Why `event` (an `m.room.encrypted` event of `room_id` that failed
    /// with `error`) is unreadable, as data an application can show and
    /// count. `membership` is whether our user was a member the event was
    /// meant for when it was sent (the caller knows the room's history).
    /// Reads the store only for a key that never came (nothing else needs
    /// the facts); changes nothing. A store failure while gathering the
    /// facts gives [`UtdCause::StoreFailure`].
    ///
    /// The cause is advice for display and counting, not a security
    /// decision: it rests on the event's `origin_server_ts` and claimed
    /// `sender_key`, which the server and the sender choose.
    pub async fn utd_cause<T>(
        &self,
        event: &Raw<T>,
        room_id: &RoomId,
        error: &MegolmError,
        membership: MembershipAtEvent,
    ) -> UtdCause {
        if !matches!(error, MegolmError::MissingRoomKey { withheld: None, .. }) {
            return classify(error, &UtdFacts::from_membership(membership));
        }
        let value: Value = serde_json::from_str(event.json().get()).unwrap_or(Value::Null);
        let content = &value["content"];
        let session_id = content["session_id"].as_str().unwrap_or_default();
        let Ok(session_with_sender) = self.has_session_with_sender(&value).await else {
            return UtdCause::StoreFailure;
        };
        let Ok(backup) = self.backup_availability().await else { return UtdCause::StoreFailure };
        let requested = GossipKind::RoomKey { room_id: room_id.to_owned(), session_id: session_id.to_owned() };
        let facts = UtdFacts {
            membership,
            event_ts: value["origin_server_ts"].as_u64(),
            device_created: self.inner.account.lock().await.created_at().as_millis(),
            session_with_sender,
            requested_from_own_devices: self.open_gossip_requests().iter().any(|r| r.kind == requested),
            backup,
        };
        classify(error, &facts)
    }

    /// Whether we hold an Olm session with the event's sending device,
    /// found by the content's `sender_key`, else by its `device_id`.
    async fn has_session_with_sender(&self, event: &Value) -> Result<bool, crate::StoreError> {
        let content = &event["content"];
        let claimed = content["sender_key"].as_str().and_then(|k| crate::keys::curve25519_from_base64(k).ok());
        let key = match claimed {
            Some(key) => Some(key),
            None => {
                let sender = event["sender"].as_str().and_then(|s| ruma_common::UserId::parse(s).ok());
                let device = content["device_id"].as_str();
                match (sender, device) {
                    (Some(sender), Some(device)) => {
                        self.get_device(&sender, device.into()).await?.map(|d| d.curve25519_key())
                    }
                    _ => None,
                }
            }
        };
        let Some(key) = key else { return Ok(false) };
        Ok(!self.inner.store.get_sessions(&key).await?.is_empty())
    }

    /// Whether a backup could give us a missing key.
    async fn backup_availability(&self) -> Result<BackupAvailability, crate::StoreError> {
        if self.backup_version().is_none() {
            return Ok(BackupAvailability::NotEnabled);
        }
        Ok(match self.inner.store.get_secret(crate::secret_storage::names::BACKUP).await? {
            Some(_) => BackupAvailability::Usable,
            None => BackupAvailability::NoDecryptionKey,
        })
    }
}
