//! Routing for healing undecryptable events: gathers the facts the rules in
//! `utd/pending` need (our other devices, the open key requests, whether a
//! usable backup is enabled) and hands out the events to decrypt again.
//! The registry itself is fed by every room-event decryption
//! (`machine/room_decrypt`) and saved with its batch.

use std::collections::BTreeSet;

use ruma_common::{OwnedRoomId, OwnedUserId};

use super::{OlmMachine, lock};
use crate::{
    StoreError, Timestamp,
    gossip::GossipKind,
    utd::{BackupReadDue, PendingEvent},
};

impl OlmMachine {
    /// How many undecryptable events wait for their keys (or for their
    /// sender to be trusted enough). Every failed decryption that may heal
    /// is kept (at most 10,000 events and 16 MiB, the oldest dropped
    /// first); a decryption that succeeds removes it.
    pub fn pending_decryption_count(&self) -> usize {
        lock(&self.inner.pending).len()
    }

    /// The waiting events whose keys are in `sessions` (e.g. the sessions
    /// of [`EngineEvent::RoomKeyReceived`](crate::EngineEvent) events, or of
    /// a restore's result), oldest first: decrypt them again and deliver
    /// them as late decryptions. An event stays listed until it decrypts.
    pub fn pending_events_for_sessions(&self, sessions: &BTreeSet<String>) -> Vec<PendingEvent> {
        lock(&self.inner.pending).select(|e| sessions.contains(&e.session_id))
    }

    /// The waiting events sent by one of `senders`, whose devices or
    /// identity changed (a sender refused as not trusted enough may be
    /// now), oldest first.
    pub fn pending_events_from_senders(&self, senders: &BTreeSet<OwnedUserId>) -> Vec<PendingEvent> {
        lock(&self.inner.pending).select(|e| senders.contains(&e.sender))
    }

    /// Every waiting event, oldest first (e.g. once after a restart: a key
    /// may have arrived just before the engine stopped).
    pub fn pending_events(&self) -> Vec<PendingEvent> {
        lock(&self.inner.pending).select(|_| true)
    }

    /// Asks our other devices for the missing keys of waiting events that
    /// have no request open yet (at most 20 new requests per call, so a
    /// flood of undecryptable events cannot make one round send hundreds),
    /// if we have another device. The requests join the request queue;
    /// returns how many were opened. Only a device of ours that verified
    /// this one answers, and an answer is taken only from a device we
    /// verified.
    pub async fn request_missing_room_keys(&self) -> Result<usize, StoreError> {
        let own = self.inner.own.user_id.clone();
        let devices = self.get_user_devices(&own).await?;
        if !devices.keys().any(|id| *id != self.inner.own.device_id) {
            return Ok(0);
        }
        let open: BTreeSet<(OwnedRoomId, String)> = self
            .open_gossip_requests()
            .into_iter()
            .filter_map(|r| match r.kind {
                GossipKind::RoomKey { room_id, session_id } => Some((room_id, session_id)),
                _ => None,
            })
            .collect();
        let due = lock(&self.inner.pending)
            .key_requests_due(|room_id, session_id| open.contains(&(room_id.to_owned(), session_id.to_owned())));
        let mut opened = 0;
        for (room_id, session_id) in due {
            opened += usize::from(self.request_room_key(&room_id, &session_id).await?.is_some());
        }
        Ok(opened)
    }

    /// Whether the key backup should be read at `now` to look up the keys
    /// of waiting events: a backup is enabled, we hold its key, and a key
    /// was never looked up or the ten-minute recheck of those that were is
    /// due. If so, read the backup's current version and `etag` and call
    /// [`take_backup_lookups`](Self::take_backup_lookups).
    pub async fn backup_read_due(&self, now: Timestamp) -> Result<Option<BackupReadDue>, StoreError> {
        if self.backup_version().is_none() || self.backup_decryption_key().await?.is_none() {
            return Ok(None);
        }
        Ok(lock(&self.inner.pending).backup_read_due(now))
    }

    /// The (room, session) keys to look up in the backup `version`, whose
    /// `etag` the server just gave (at most 20): never looked up, looked up
    /// in another version, or, on a recheck, looked up when the backup was
    /// different. Each is remembered with the version and etag, so it is
    /// looked up again only after the backup changed. Import what the
    /// server returns with
    /// [`import_backed_up_room_keys`](Self::import_backed_up_room_keys),
    /// then decrypt again the events of the sessions it brought.
    pub fn take_backup_lookups(
        &self,
        version: &str,
        etag: &str,
        due: BackupReadDue,
        now: Timestamp,
    ) -> Vec<(OwnedRoomId, String)> {
        lock(&self.inner.pending).take_backup_lookups((version, etag), due, now)
    }
}
