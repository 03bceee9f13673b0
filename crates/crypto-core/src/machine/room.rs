//! The room-level command: [`OlmMachine::prepare_room`] owns the whole
//! choreography of getting a room ready to encrypt. Each call moves it one
//! step and says what it waits for; the caller only loops over the request
//! queue between calls. The rules it applies live in `megolm/`: who gets
//! keys (`recipients`), that encryption never goes off or weakens
//! (`room_encryption`), when the key rotates (`rotation`).

use ruma_common::{OwnedRoomId, OwnedUserId, RoomId};
use ruma_events::room::history_visibility::HistoryVisibility;

use super::{OlmMachine, lock, rooms::encryption_record_name};
use crate::{
    StoreError, Timestamp,
    megolm::{EncryptionMerge, Membership, RoomEncryption, ShareError, SharingStrategy, key_recipients},
    store::Changes,
};

/// What the caller knows of a room, for [`OlmMachine::prepare_room`].
#[derive(Clone, Debug)]
pub struct RoomInfo {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Every member the caller knows, with their membership (ourselves
    /// included: our other devices receive the key too).
    pub members: Vec<(OwnedUserId, Membership)>,
    /// The room's `m.room.history_visibility` (`shared` if unset).
    pub history_visibility: HistoryVisibility,
    /// The room's `m.room.encryption` content as the caller knows it; `None`
    /// if it does not know. The engine keeps the strongest settings it has
    /// seen for the room (persisted): a later `None`, another algorithm or
    /// looser rotation limits never switch encryption off or weaken it.
    pub encryption: Option<RoomEncryption>,
    /// Which devices receive the key.
    pub sharing_strategy: SharingStrategy,
}

impl RoomInfo {
    /// A room with `members`, the given encryption, `shared` history and
    /// every device receiving the key.
    pub fn new(
        room_id: OwnedRoomId,
        members: Vec<(OwnedUserId, Membership)>,
        encryption: Option<RoomEncryption>,
    ) -> Self {
        Self {
            room_id,
            members,
            history_visibility: HistoryVisibility::Shared,
            encryption,
            sharing_strategy: SharingStrategy::LegacyAllDevices,
        }
    }
}

/// Where a room stands after [`OlmMachine::prepare_room`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomReadiness {
    /// Every recipient device holds the current room key (or was told why
    /// not): `encrypt_room_event` may run now.
    Ready {
        /// The room key's session id.
        session_id: String,
        /// The users who receive it.
        recipients: Vec<OwnedUserId>,
    },
    /// Requests are queued: send what `outgoing_requests` lists, answer
    /// them, then call `prepare_room` again.
    Waiting {
        /// Keys queries still unanswered for recipients.
        keys_queries: usize,
        /// Recipient devices whose one-time keys are being claimed.
        claims: usize,
        /// Share requests of the room key still unanswered.
        shares: usize,
    },
}

impl OlmMachine {
    /// Moves the room one step toward being ready to encrypt, and says
    /// where it stands. From the members and the history visibility it
    /// picks the recipients (`megolm::recipients`), tracks them and queues
    /// their keys queries; once their device lists are known it queues a
    /// claim for devices without an Olm session; once those are answered
    /// it shares the room key (rotating it first when the rules say so).
    /// Devices whose claim is in back-off get `m.no_olm`; users whose keys
    /// query failed are served from their known devices. Call it before
    /// each message: a room that is ready stays ready at no cost.
    ///
    /// A driver's loop: `prepare_room`; while `Waiting`, send and answer
    /// every request `outgoing_requests` lists and call it again.
    pub async fn prepare_room(&self, room: &RoomInfo, now: Timestamp) -> Result<RoomReadiness, ShareError> {
        let encryption = self.room_encryption(&room.room_id, room.encryption.clone()).await?;
        let Some(encryption) = encryption else { return Err(ShareError::RoomNotEncrypted(room.room_id.clone())) };
        let members = room.members.iter().map(|(user_id, membership)| (user_id.as_ref(), *membership));
        let recipients = key_recipients(members, &room.history_visibility);
        self.update_tracked_users(recipients.iter().map(AsRef::as_ref)).await?;

        // 1. Device lists: queried unless a failed query is backing off.
        self.ensure_keys_queries_listed(now);
        let querying = {
            let tracker = lock(&self.inner.tracker);
            let in_flight = lock(&self.inner.requests).users_being_queried();
            recipients
                .iter()
                .filter(|u| tracker.is_dirty(u) && (in_flight.contains(*u) || !tracker.is_waiting_to_retry(u, now)))
                .count()
        };
        if querying > 0 {
            return Ok(RoomReadiness::Waiting { keys_queries: querying, claims: 0, shares: 0 });
        }

        // 2. Olm sessions: claimed unless a failed claim is backing off.
        let missing = self.devices_without_session(recipients.iter().map(AsRef::as_ref)).await?;
        self.claim_request(missing.clone(), now);
        let in_flight = lock(&self.inner.requests).devices_being_claimed();
        let claiming = missing.iter().filter(|d| in_flight.contains(*d)).count();
        if claiming > 0 {
            return Ok(RoomReadiness::Waiting { keys_queries: 0, claims: claiming, shares: 0 });
        }

        // 3. The room key.
        let settings = encryption.settings(room.history_visibility.clone(), room.sharing_strategy);
        let shares = self.share_room_key(&room.room_id, recipients.iter().map(AsRef::as_ref), &settings, now).await?;
        if !shares.is_empty() {
            return Ok(RoomReadiness::Waiting { keys_queries: 0, claims: 0, shares: shares.len() });
        }
        let session_id = lock(&self.inner.groups).outbound.get(&room.room_id).map(|s| s.session_id.clone());
        match session_id {
            Some(session_id) => Ok(RoomReadiness::Ready { session_id, recipients }),
            None => Err(ShareError::Store(StoreError::Backend("the room key vanished after sharing".into()))),
        }
    }

    /// The room's encryption settings after merging what the caller says
    /// into what the engine knows (loaded from the store on first use, and
    /// saved when the merge changed them).
    pub async fn room_encryption(
        &self,
        room_id: &RoomId,
        said: Option<RoomEncryption>,
    ) -> Result<Option<RoomEncryption>, StoreError> {
        let cached = lock(&self.inner.rooms).encryption(room_id);
        let known = match cached {
            Some(known) => known,
            None => {
                let bytes = self.inner.store.get_custom_value(&encryption_record_name(room_id)).await?;
                // A damaged record reads as unknown; the caller's state then decides.
                bytes.and_then(|b| serde_json::from_slice::<RoomEncryption>(&b).ok())
            }
        };
        let merge = RoomEncryption::merge(known.as_ref(), said);
        let changed = matches!(merge, EncryptionMerge::SwitchedOn(_) | EncryptionMerge::Kept(_));
        let current = merge.into_current();
        if changed && let Some(current) = &current {
            let bytes = serde_json::to_vec(current).map_err(|e| StoreError::serialization("room encryption", e))?;
            let changes =
                Changes { custom_values: vec![(encryption_record_name(room_id), bytes)], ..Default::default() };
            self.save(None, None, changes).await?;
        }
        lock(&self.inner.rooms).set_encryption(room_id, current.clone());
        Ok(current)
    }
}
