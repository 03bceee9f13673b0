//! Routing for decrypting room events, one or a batch, in chunks of 256:
//! parsing and Megolm decryption are spread over the cores (each worker on
//! its own copy of the sessions it needs), then the sender checks and the
//! replay rule (`megolm::replay`) run in event order; one save per batch
//! (per 512 events when streamed).

use std::collections::{HashMap, HashSet};

use ruma_common::{OwnedUserId, RoomId, serde::Raw};
use vodozemac::Curve25519PublicKey;

use super::{OlmMachine, lock};
use crate::{
    megolm::{
        DecryptedRoomEvent, DecryptionSettings, FirstUse, InboundGroupSession, IndexUse, MegolmDecryptionInfo,
        MegolmError, Opened, Parsed, ReplayGuard, SenderState, SessionMap, TrustRequirement, VerificationState,
        contain_open, parse,
    },
    parallel::run_split,
    store::{Changes, MessageIndexRecord},
};

/// What a sender device's state depends on: the sender and the key's facts.
type DeviceStateKey = (OwnedUserId, Curve25519PublicKey, crate::megolm::KeySource, Option<String>);

/// An event's position in the batch and how parsing it went.
type Indexed = (usize, Result<Parsed, MegolmError>);

/// How many events one pass of the workers parses and decrypts at once.
pub(crate) const DECRYPT_CHUNK: usize = 256;
/// How many events of a streamed batch (`decrypt_room_events_each`) share
/// one save of their replay records: results are handed out after their
/// save (persist before acknowledge), so this bounds what the engine holds
/// at once, whatever the batch's length; a durable store pays one commit per
/// this many events.
pub(crate) const DECRYPT_SAVE_GROUP: usize = 512;

/// Who receives the late decryptions of a batch: the caller, in the
/// results (the registry forgets them in the batch), or the event queue
/// (the registry's saved record keeps them until they are drained, so a
/// crash before that announces them again after the restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LateTo {
    /// The caller of a decryption.
    Caller,
    /// The engine's event queue (healing).
    EventQueue,
}

/// One event's result.
pub(crate) type RoomEventResult = Result<DecryptedRoomEvent, MegolmError>;

/// The workers' result for one event: decrypted, its key missing, or failed.
type WorkerResult = (usize, Result<Result<Opened, Parsed>, MegolmError>);

/// An event that passed every check, waiting for the save.
struct Accepted {
    index: usize,
    opened: Opened,
    sender: SenderState,
}

impl OlmMachine {
    /// Decrypts an `m.room.encrypted` room event received in `room_id`.
    /// Checks that the event's sender owns the room key, that the payload is
    /// for this room, and that the message index was not already used by
    /// another event (replay). Nothing stored changes unless it succeeds.
    pub async fn decrypt_room_event<T>(
        &self,
        event: &Raw<T>,
        room_id: &RoomId,
        settings: &DecryptionSettings,
    ) -> Result<DecryptedRoomEvent, MegolmError> {
        let mut results = self.decrypt_group(std::slice::from_ref(event), room_id, settings, LateTo::Caller).await;
        results.pop().unwrap_or_else(|| Err(MegolmError::Malformed("no result for the event".into())))
    }

    /// Decrypts a batch of `m.room.encrypted` events received in `room_id`
    /// (a timeline page, a backlog): one result per event, in order, each as
    /// [`decrypt_room_event`](Self::decrypt_room_event) would give it. Large
    /// batches are decrypted on several cores (see
    /// [`set_worker_threads`](Self::set_worker_threads)), 256 events at a
    /// time, with one save of replay records for the batch. To keep memory flat
    /// over a long backlog, use
    /// [`decrypt_room_events_each`](Self::decrypt_room_events_each).
    pub async fn decrypt_room_events<T>(
        &self,
        events: &[Raw<T>],
        room_id: &RoomId,
        settings: &DecryptionSettings,
    ) -> Vec<RoomEventResult> {
        // The caller holds every result anyway: one save for the batch.
        self.decrypt_group(events, room_id, settings, LateTo::Caller).await
    }

    /// [`decrypt_room_events`](Self::decrypt_room_events) that hands each
    /// result to `each` (with its position in `events`) as soon as its group
    /// of 512 events is decrypted and its replay records saved, instead of
    /// collecting them: the engine never holds more than one group's
    /// results, at the price of one save per 512 events.
    pub async fn decrypt_room_events_each<T>(
        &self,
        events: &[Raw<T>],
        room_id: &RoomId,
        settings: &DecryptionSettings,
        mut each: impl FnMut(usize, RoomEventResult),
    ) {
        for (n, group) in events.chunks(DECRYPT_SAVE_GROUP).enumerate() {
            let base = n * DECRYPT_SAVE_GROUP;
            for (i, result) in
                self.decrypt_group(group, room_id, settings, LateTo::Caller).await.into_iter().enumerate()
            {
                each(base + i, result);
            }
        }
    }

    /// One save group, in chunks of [`DECRYPT_CHUNK`], each in phases:
    /// parse (workers), take the sessions it needs, decrypt (workers), check
    /// in event order (sender, trust, replay: one guard for the group, since
    /// its records are saved together); then one save for the group.
    pub(super) async fn decrypt_group<T>(
        &self,
        events: &[Raw<T>],
        room_id: &RoomId,
        settings: &DecryptionSettings,
        late_to: LateTo,
    ) -> Vec<RoomEventResult> {
        let mut results: Vec<Option<RoomEventResult>> = (0..events.len()).map(|_| None).collect();
        let mut changes = Changes::default();
        let mut replay = ReplayGuard::default();
        let mut accepted = Vec::new();
        for (n, chunk) in events.chunks(DECRYPT_CHUNK).enumerate() {
            let base = n * DECRYPT_CHUNK;
            let parsed = self.parse_room_events(chunk);
            let sessions = match self.take_inbound_sessions(room_id, &parsed).await {
                Ok(sessions) => sessions,
                Err(error) => {
                    for slot in &mut results[base..base + chunk.len()] {
                        *slot = Some(Err(MegolmError::Store(error.clone())));
                    }
                    continue;
                }
            };
            let opened = self.open_room_events(sessions, parsed, room_id).into_iter().map(|(i, r)| (base + i, r));
            let checked =
                self.check_opened(room_id, settings, opened.collect(), &mut results, &mut changes, &mut replay);
            accepted.extend(checked.await);
        }
        let (record, was_waiting) = self.note_pending(room_id, settings, events, &results, &accepted, late_to);
        changes.custom_values.extend(record);
        if let Err(error) = self.save(None, None, changes).await {
            self.unnote_pending(room_id, settings, events, &was_waiting);
            for accepted in accepted {
                results[accepted.index] = Some(Err(MegolmError::Store(error.clone())));
            }
            return results.into_iter().flatten().collect();
        }
        for Accepted { index, opened, sender } in accepted {
            let info = MegolmDecryptionInfo {
                sender: opened.sender,
                sender_device: sender.device_id,
                sender_curve25519_key: opened.key.sender_key,
                sender_claimed_ed25519_key: opened.key.sender_ed25519,
                session_id: opened.session_id,
                message_index: opened.message_index,
                key_source: opened.key.source,
                verification_state: sender.verification,
                sender_cross_signed: sender.cross_signed,
                sender_identity: sender.identity,
            };
            let was_waiting = was_waiting.contains(&index);
            results[index] = Some(Ok(DecryptedRoomEvent { event: opened.event, info, was_waiting }));
        }
        results.into_iter().flatten().collect()
    }

    /// Feeds the pending-decryption registry (`utd/pending`): events that
    /// failed in a way that may heal wait; decrypted ones, and waiting ones
    /// that now fail in a way that cannot heal, wait no more.
    /// Returns its record to save with the batch, if it changed, and the
    /// positions of the decrypted events that were waiting.
    fn note_pending<T>(
        &self,
        room_id: &RoomId,
        settings: &DecryptionSettings,
        events: &[Raw<T>],
        results: &[Option<RoomEventResult>],
        accepted: &[Accepted],
        late_to: LateTo,
    ) -> (Option<(String, Vec<u8>)>, HashSet<usize>) {
        let mut pending = lock(&self.inner.pending);
        for (event, result) in events.iter().zip(results) {
            let Some(Err(error)) = result else { continue };
            let Some(waiting) = crate::utd::PendingEvent::from_event(room_id, event.json(), *settings) else {
                continue;
            };
            if crate::utd::pending::may_heal(error) {
                pending.record(waiting);
            } else if !matches!(error, MegolmError::Store(_)) {
                pending.resolved(room_id, &waiting.event_id);
            }
        }
        let was_waiting = accepted
            .iter()
            .filter(|a| match late_to {
                LateTo::Caller => pending.resolved(room_id, a.opened.event_id.as_str()),
                LateTo::EventQueue => pending.resolved_until_drained(room_id, a.opened.event_id.as_str()),
            })
            .map(|a| a.index)
            .collect();
        (pending.take_record(), was_waiting)
    }

    /// The batch was not saved: the events it took out of the registry wait
    /// again, and the registry is saved with the next batch.
    fn unnote_pending<T>(
        &self,
        room_id: &RoomId,
        settings: &DecryptionSettings,
        events: &[Raw<T>],
        was_waiting: &HashSet<usize>,
    ) {
        let mut pending = lock(&self.inner.pending);
        for &index in was_waiting {
            if let Some(waiting) =
                events.get(index).and_then(|e| crate::utd::PendingEvent::from_event(room_id, e.json(), *settings))
            {
                // Not announced after all: no copy waits for a drain.
                pending.drained(room_id, &waiting.event_id);
                pending.record(waiting);
            }
        }
        pending.mark_unsaved();
    }

    /// Parse phase, on the workers.
    fn parse_room_events<T>(&self, events: &[Raw<T>]) -> Vec<Result<Parsed, MegolmError>> {
        let raws: Vec<&serde_json::value::RawValue> = events.iter().map(Raw::json).collect();
        run_split(
            raws,
            self.workers(),
            |_| 1,
            |part| {
                part.into_iter()
                    .map(|raw| {
                        parse(serde_json::from_str(raw.get()).map_err(|e| MegolmError::Malformed(e.to_string())))
                    })
                    .collect::<Vec<_>>()
            },
        )
        .into_iter()
        .flatten()
        .collect()
    }

    /// The sessions the parsed events need: taken out of the cache (while the
    /// workers use them) or loaded from the store.
    async fn take_inbound_sessions(
        &self,
        room_id: &RoomId,
        parsed: &[Result<Parsed, MegolmError>],
    ) -> Result<SessionMap, crate::StoreError> {
        let mut sessions: SessionMap = HashMap::new();
        let mut missing: HashSet<&str> = HashSet::new();
        for parsed in parsed.iter().flatten() {
            let session_id = parsed.incoming.session_id.as_str();
            if sessions.contains_key(session_id) || missing.contains(session_id) {
                continue;
            }
            let cached = lock(&self.inner.groups).take_inbound(room_id, session_id);
            let session = match cached {
                Some(session) => Some(session),
                None => self.load_inbound(room_id, session_id).await?,
            };
            match session {
                Some(session) => {
                    sessions.insert(session_id.to_owned(), session);
                }
                None => {
                    missing.insert(session_id);
                }
            }
        }
        Ok(sessions)
    }

    /// Decrypt phase: contiguous runs of events, one per worker; the first
    /// works on the sessions themselves, the others on copies. The sessions
    /// go back to the cache afterwards.
    fn open_room_events(
        &self,
        sessions: SessionMap,
        parsed: Vec<Result<Parsed, MegolmError>>,
        room_id: &RoomId,
    ) -> Vec<WorkerResult> {
        let workers = self.workers();
        let total = parsed.len();
        let parts = crate::parallel::parts(total, total, workers);
        let chunk = total.div_ceil(parts).max(1);
        let mut jobs: Vec<(SessionMap, Vec<Indexed>)> = Vec::with_capacity(parts);
        let mut remaining = parsed.into_iter().enumerate().collect::<Vec<_>>();
        let mut sessions = Some(sessions);
        while !remaining.is_empty() {
            let rest = remaining.split_off(chunk.min(remaining.len()));
            let map = match sessions.take() {
                Some(own) => own,
                None => jobs[0]
                    .0
                    .iter()
                    .map(|(id, s)| (id.clone(), InboundGroupSession::from_stored(s.to_stored())))
                    .collect(),
            };
            jobs.push((map, std::mem::replace(&mut remaining, rest)));
        }
        let opened = run_split(
            jobs,
            workers,
            |(_, events)| events.len(),
            |part| {
                part.into_iter()
                    .map(|(mut local, events)| {
                        let outputs: Vec<_> = events
                            .into_iter()
                            .map(|(index, parsed)| {
                                // A missing key is explained after the workers, with the store.
                                (index, parsed.and_then(|parsed| contain_open(&mut local, parsed, room_id)))
                            })
                            .collect();
                        (local, outputs)
                    })
                    .collect::<Vec<_>>()
            },
        );
        let mut all = Vec::with_capacity(total);
        let mut groups = lock(&self.inner.groups);
        for (n, (local, outputs)) in opened.into_iter().flatten().enumerate() {
            if n == 0 {
                for (_, session) in local {
                    groups.return_inbound(session);
                }
            }
            all.extend(outputs);
        }
        all
    }

    /// Check phase, in event order: a missing key explained, the sender
    /// device and its trust, then the replay rule. An event refused by the
    /// sender or trust checks writes no replay record, so it cannot claim
    /// the index of the genuine one.
    async fn check_opened(
        &self,
        room_id: &RoomId,
        settings: &DecryptionSettings,
        opened: Vec<WorkerResult>,
        results: &mut [Option<RoomEventResult>],
        changes: &mut Changes,
        replay: &mut ReplayGuard,
    ) -> Vec<Accepted> {
        let mut devices: HashMap<DeviceStateKey, SenderState> = HashMap::new();
        let mut accepted = Vec::new();
        for (index, result) in opened {
            let opened = match result {
                Err(error) => {
                    results[index] = Some(Err(error));
                    continue;
                }
                Ok(Err(parsed)) => {
                    results[index] = Some(Err(self.explain_missing_key(room_id, parsed).await));
                    continue;
                }
                Ok(Ok(opened)) => opened,
            };
            let sender = match self.cached_sender_state(&mut devices, &opened).await {
                Ok(state) => state,
                Err(error) => {
                    results[index] = Some(Err(error));
                    continue;
                }
            };
            if sender.verification == VerificationState::UnknownDevice {
                self.note_unknown_device(&opened.sender, opened.key.sender_key, changes);
            }
            let requirement = settings.sender_device_trust_requirement;
            let own = opened.sender == self.inner.own.user_id && opened.key.sender_key == self.inner.own.curve25519;
            if !sender.meets(requirement, own) {
                results[index] = Some(Err(match requirement {
                    TrustRequirement::VerifiedDevice => MegolmError::UnverifiedSenderDevice,
                    requirement => MegolmError::InsufficientSenderTrust { requirement },
                }));
                continue;
            }
            match self.judge_replay(room_id, &opened, replay).await {
                Ok(record) => changes.message_indices.extend(record),
                Err(error) => {
                    results[index] = Some(Err(error));
                    continue;
                }
            }
            accepted.push(Accepted { index, opened, sender });
        }
        accepted
    }

    /// Why an event's key is missing: withheld (with the code) or unknown.
    async fn explain_missing_key(&self, room_id: &RoomId, parsed: Parsed) -> MegolmError {
        let session_id = parsed.incoming.session_id;
        match self.withheld_code(room_id, &session_id, &parsed.incoming.sender, parsed.claimed_sender_key).await {
            Ok(withheld) => MegolmError::MissingRoomKey { session_id, withheld },
            Err(error) => MegolmError::Store(error),
        }
    }

    /// The sender device's state, looked up once per (sender, key facts).
    async fn cached_sender_state(
        &self,
        cache: &mut HashMap<DeviceStateKey, SenderState>,
        opened: &Opened,
    ) -> Result<SenderState, MegolmError> {
        let key = (
            opened.sender.clone(),
            opened.key.sender_key,
            opened.key.source,
            opened.key.sender_ed25519.map(|k| k.to_base64()),
        );
        if let Some(state) = cache.get(&key) {
            return Ok(state.clone());
        }
        let state = self.sender_device_state(&opened.sender, &opened.key).await?;
        cache.insert(key, state.clone());
        Ok(state)
    }

    /// The replay rule (`megolm::replay`) with the store's first use of the
    /// index: the record to save for a first use, nothing for the same event
    /// again, an error for a replay.
    async fn judge_replay(
        &self,
        room_id: &RoomId,
        opened: &Opened,
        replay: &mut ReplayGuard,
    ) -> Result<Option<MessageIndexRecord>, MegolmError> {
        let stored = match replay.seen(&opened.session_id, opened.message_index) {
            Some(_) => None,
            None => self
                .inner
                .store
                .get_message_index(room_id, &opened.session_id, opened.message_index)
                .await?
                .map(|r| FirstUse { event_id: r.event_id, origin_server_ts: r.origin_server_ts }),
        };
        let claim = IndexUse {
            room_id,
            session_id: &opened.session_id,
            message_index: opened.message_index,
            event_id: &opened.event_id,
            origin_server_ts: opened.origin_server_ts,
        };
        replay.judge(claim, stored)
    }
}
