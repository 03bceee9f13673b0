//! Routing for healing undecryptable events: gathers the facts the rules in
//! `utd/pending` need (open key requests, our other devices, whether the
//! backup can be read), runs them from `handle_timeout`, and announces
//! the events that decrypt late. The registry itself is fed by every
//! room-event decryption (`machine/room_decrypt`) and saved with its
//! batch; stored keys and changed senders mark events to retry (`save`,
//! `announce`).

use std::collections::{BTreeMap, BTreeSet};

use ruma_common::{OwnedRoomId, RoomId, serde::Raw};
use serde_json::Value;

use super::{OlmMachine, lock, room_decrypt::LateTo};
use crate::{
    DecryptionSettings, StoreError, Timestamp,
    events::{EngineEvent, LateDecryption},
    gossip::GossipKind,
    store::Changes,
    utd::PendingEvent,
};

impl OlmMachine {
    /// How many undecryptable events wait for their keys (or for their
    /// sender to be trusted enough). Every failed decryption that may heal
    /// is kept (at most 10,000 events and 16 MiB, the oldest dropped
    /// first); a decryption that succeeds removes it. The engine heals
    /// them itself from [`handle_timeout`](Self::handle_timeout): each
    /// that decrypts later is announced once as
    /// [`EngineEvent::LateDecryption`].
    pub fn pending_decryption_count(&self) -> usize {
        lock(&self.inner.pending).len()
    }

    /// The (room, session) keys our open room-key requests ask for.
    fn open_room_key_requests(&self) -> BTreeSet<(OwnedRoomId, String)> {
        self.open_gossip_requests()
            .into_iter()
            .filter_map(|r| match r.kind {
                GossipKind::RoomKey { room_id, session_id } => Some((room_id, session_id)),
                _ => None,
            })
            .collect()
    }

    /// When healing has something to do: events to decrypt again or a
    /// drained record to save (at once), a round of key requests, a read of
    /// the backup.
    pub(super) fn healing_deadline(&self) -> Option<Timestamp> {
        let open = self.open_room_key_requests();
        let backup_readable = self.backup_read_possible();
        let backup_first = self.backup_readable();
        let pending = lock(&self.inner.pending);
        let retry = (pending.retry_due() || pending.save_due()).then_some(Timestamp::EPOCH);
        let ask = pending.key_requests_deadline(|r, s| open.contains(&(r.to_owned(), s.to_owned())), backup_first);
        let backup = if backup_readable { pending.backup_read_deadline() } else { None };
        [retry, ask, backup].into_iter().flatten().min()
    }

    /// Runs the healing that is due at `now`: decrypts again the events
    /// whose key arrived or whose sender changed (announcing the late
    /// decryptions at once), saves a record the drain changed, asks our
    /// other devices for missing keys, and reads the backup's version when
    /// keys are to be looked up in it.
    pub(super) async fn handle_healing(&self, now: Timestamp) -> Result<(), StoreError> {
        let late = self.retry_waiting_events().await;
        self.announce(late);
        let record = {
            let mut pending = lock(&self.inner.pending);
            if pending.save_due() { pending.take_record() } else { None }
        };
        if let Some(record) = record {
            let saved = self.save(None, None, Changes { custom_values: vec![record], ..Default::default() }).await;
            if saved.is_err() {
                lock(&self.inner.pending).mark_unsaved();
            }
            saved?;
        }
        self.ask_own_devices(now).await?;
        let backup_due = self.backup_read_possible() && lock(&self.inner.pending).backup_read_due(now).is_some();
        if backup_due {
            self.queue_backup_read();
        }
        Ok(())
    }

    /// Whether the backup can be read for waiting keys now: it is readable
    /// and no read is queued.
    fn backup_read_possible(&self) -> bool {
        self.backup_readable() && !lock(&self.inner.requests).has_backup_read()
    }

    /// Decrypts again, one batch per room and settings, the waiting events
    /// that are due; those that decrypt are late decryptions.
    async fn retry_waiting_events(&self) -> Vec<EngineEvent> {
        let retries = lock(&self.inner.pending).take_retries();
        let mut batches: BTreeMap<OwnedRoomId, Vec<(DecryptionSettings, Vec<PendingEvent>)>> = BTreeMap::new();
        for event in retries {
            let room = batches.entry(event.room_id.clone()).or_default();
            match room.iter_mut().find(|(settings, _)| *settings == event.settings) {
                Some((_, events)) => events.push(event),
                None => room.push((event.settings, vec![event])),
            }
        }
        let mut late = Vec::new();
        for (room_id, (settings, events)) in
            batches.into_iter().flat_map(|(room_id, batches)| batches.into_iter().map(move |b| (room_id.clone(), b)))
        {
            let raws: Vec<Raw<Value>> = events.iter().map(|e| e.event.clone()).collect();
            let results = self.decrypt_group(&raws, &room_id, &settings, LateTo::EventQueue).await;
            for (event, result) in events.into_iter().zip(results) {
                if let Err(crate::MegolmError::Store(_)) = &result {
                    // Not saved: the event waits, and is tried again.
                    lock(&self.inner.pending).retry_later(&event.session_id);
                }
                // Only the decryption that took it out of the registry is
                // late: the event is announced once.
                if let Ok(decrypted) = result
                    && decrypted.was_waiting
                {
                    late.push(EngineEvent::LateDecryption(LateDecryption {
                        room_id: room_id.clone(),
                        event_id: event.event_id,
                        decrypted,
                    }));
                }
            }
        }
        late
    }

    /// A round of room-key requests to our other devices for the missing
    /// keys the registry says are due (at most 20 per round, so a flood of
    /// undecryptable events cannot make one round send hundreds). Only a
    /// device of ours that verified this one answers, and an answer is
    /// taken only from a device we verified.
    async fn ask_own_devices(&self, now: Timestamp) -> Result<(), StoreError> {
        let open = self.open_room_key_requests();
        // A key the backup holds needs no device: the backup is searched first.
        let backup_first = self.backup_readable();
        let is_open = |room_id: &RoomId, session_id: &str| open.contains(&(room_id.to_owned(), session_id.to_owned()));
        let due = lock(&self.inner.pending).take_key_requests(now, is_open, backup_first);
        if due.is_empty() {
            return Ok(());
        }
        let own = self.inner.own.user_id.clone();
        let devices = self.get_user_devices(&own).await?;
        if !devices.keys().any(|id| *id != self.inner.own.device_id) {
            // Asked again after the wait, or when a device of ours appears.
            return Ok(());
        }
        for (room_id, session_id) in due {
            self.request_room_key(&room_id, &session_id).await?;
        }
        Ok(())
    }

    /// The sessions of the room keys `changes` stores (remembered a while
    /// even when no event waits: a decryption may be failing right now).
    pub(super) fn waited_for_keys(&self, changes: &Changes) -> Vec<String> {
        changes.inbound_group_sessions.iter().map(|s| s.session_id.clone()).collect()
    }

    /// After a save: the waiting events of the room keys it stored are due
    /// to be decrypted again.
    pub(super) fn note_keys_stored(&self, sessions: Vec<String>) {
        if !sessions.is_empty() {
            lock(&self.inner.pending).keys_arrived(sessions.iter().map(String::as_str));
        }
    }

    /// Late decryptions were drained: the registry's next saved record no
    /// longer holds them (until then, a restart announces them again).
    pub(super) fn note_drained(&self, events: &[EngineEvent]) {
        let mut pending = lock(&self.inner.pending);
        for event in events {
            if let EngineEvent::LateDecryption(late) = event {
                pending.drained(&late.room_id, &late.event_id);
            }
        }
    }

    /// Before events are announced: a sender whose devices or identity
    /// changed has its waiting events decrypted again; a new device of ours
    /// may be asked for missing keys at once, and our open requests go to
    /// it (it never saw them); a backup key that arrived makes the engine
    /// read the backup (to enable it); once we and another device of ours
    /// verified each other, our open requests go to it again (a device that
    /// saw a request before it trusted us did not answer it).
    pub(super) fn note_announced(&self, events: &[EngineEvent]) {
        let mut backup_key_arrived = false;
        let mut own_verification_done = false;
        let mut own_device_added = false;
        {
            let mut pending = lock(&self.inner.pending);
            for event in events {
                match event {
                    EngineEvent::IdentityChanged { user_id, .. } => pending.sender_changed(user_id),
                    EngineEvent::DevicesChanged(changes) => {
                        pending.sender_changed(&changes.user_id);
                        if changes.user_id == self.inner.own.user_id && !changes.added.is_empty() {
                            pending.own_devices_changed();
                            own_device_added = true;
                        }
                    }
                    EngineEvent::SecretReceived { name } => {
                        backup_key_arrived |= name == crate::secret_storage::names::BACKUP;
                    }
                    EngineEvent::VerificationChanged { user_id, state, .. } => {
                        own_verification_done |=
                            *user_id == self.inner.own.user_id && state.is_finished() && state.cancellation().is_none();
                    }
                    _ => {}
                }
            }
        }
        if backup_key_arrived {
            self.read_backup_to_enable();
        }
        if own_verification_done || own_device_added {
            self.resend_open_gossip_requests();
        }
    }
}
