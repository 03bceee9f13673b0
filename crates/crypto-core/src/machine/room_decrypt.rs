//! Decrypting room events, one or a batch: parsing and Megolm decryption are
//! spread over the cores (each worker on its own copy of the sessions it
//! needs), then replay records, sender devices and the save happen once for
//! the batch, in event order.

use std::collections::{HashMap, HashSet};

use ruma_common::{OwnedDeviceId, OwnedEventId, OwnedUserId, RoomId, serde::Raw};
use ruma_events::AnyTimelineEvent;
use serde_json::{Value, json};
use vodozemac::{Curve25519PublicKey, megolm::DecryptionError};

use super::{
    OlmMachine,
    group::{DecryptedRoomEvent, KeyFacts, MegolmDecryptionInfo, VerificationState},
    lock,
};
use crate::{
    contain::contain,
    megolm::{
        DecryptionSettings, InboundGroupSession, IncomingRoomEvent, MegolmError, RoomPlaintext, TrustRequirement,
        parse_encrypted_event,
    },
    parallel::run_split,
    store::{Changes, MessageIndexRecord},
};

/// The inbound sessions one worker decrypts with, by session id.
type SessionMap = HashMap<String, InboundGroupSession>;

/// What a sender device's state depends on: the sender and the key's facts.
type DeviceStateKey = (OwnedUserId, Curve25519PublicKey, crate::megolm::KeySource, Option<String>);

/// An event's position in the batch and how parsing it went.
type Indexed = (usize, Result<Parsed, MegolmError>);

/// An event parsed on a worker.
struct Parsed {
    incoming: IncomingRoomEvent,
    outer_relation: Option<Value>,
    claimed_sender_key: Option<Curve25519PublicKey>,
}

/// An event decrypted and checked on a worker; what is left needs the store.
struct Opened {
    sender: OwnedUserId,
    event_id: OwnedEventId,
    origin_server_ts: u64,
    session_id: String,
    message_index: u32,
    key: KeyFacts,
    event: Raw<AnyTimelineEvent>,
}

fn parse(value: Result<Value, MegolmError>) -> Result<Parsed, MegolmError> {
    let value = value?;
    let outer_relation = value["content"].get("m.relates_to").cloned();
    let claimed_sender_key =
        value["content"]["sender_key"].as_str().and_then(|k| crate::keys::curve25519_from_base64(k).ok());
    let incoming = parse_encrypted_event(value)?;
    Ok(Parsed { incoming, outer_relation, claimed_sender_key })
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
        let mut results = self.decrypt_room_events(std::slice::from_ref(event), room_id, settings).await;
        results.pop().unwrap_or_else(|| Err(MegolmError::Malformed("no result for the event".into())))
    }

    /// Decrypts a batch of `m.room.encrypted` events received in `room_id`
    /// (a timeline page, a backlog): one result per event, in order, each as
    /// [`decrypt_room_event`](Self::decrypt_room_event) would give it. Large
    /// batches are decrypted on several cores (see
    /// [`set_worker_threads`](Self::set_worker_threads)); the replay records
    /// of the whole batch are saved in one write.
    pub async fn decrypt_room_events<T>(
        &self,
        events: &[Raw<T>],
        room_id: &RoomId,
        settings: &DecryptionSettings,
    ) -> Vec<Result<DecryptedRoomEvent, MegolmError>> {
        let workers = self.workers();
        // Parse on the workers.
        let raws: Vec<&serde_json::value::RawValue> = events.iter().map(Raw::json).collect();
        let parsed: Vec<Result<Parsed, MegolmError>> = run_split(
            raws,
            workers,
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
        .collect();

        // The sessions the batch needs: from the cache (taken out while the
        // workers use them) or the store.
        let mut results: Vec<Option<Result<DecryptedRoomEvent, MegolmError>>> =
            (0..events.len()).map(|_| None).collect();
        let mut sessions: SessionMap = HashMap::new();
        let mut missing: HashSet<String> = HashSet::new();
        for item in &parsed {
            let Ok(parsed) = item else { continue };
            let session_id = &parsed.incoming.session_id;
            if sessions.contains_key(session_id) || missing.contains(session_id) {
                continue;
            }
            let cached = lock(&self.inner.groups).take_inbound(room_id, session_id);
            let session = match cached {
                Some(session) => Some(session),
                None => match self.load_inbound(room_id, session_id).await {
                    Ok(session) => session,
                    Err(error) => return events.iter().map(|_| Err(MegolmError::Store(error.clone()))).collect(),
                },
            };
            match session {
                Some(session) => {
                    sessions.insert(session_id.clone(), session);
                }
                None => {
                    missing.insert(session_id.clone());
                }
            }
        }

        // Decrypt on the workers: the events in contiguous chunks, one per
        // worker; the first chunk works on the sessions themselves, the
        // others on copies. Results come back in chunk order.
        let parts = crate::parallel::parts(events.len(), events.len(), workers);
        let mut jobs: Vec<(SessionMap, Vec<Indexed>)> = Vec::with_capacity(parts);
        let mut remaining = parsed.into_iter().enumerate().collect::<Vec<_>>();
        let chunk = remaining.len().div_ceil(parts).max(1);
        while !remaining.is_empty() {
            let rest = remaining.split_off(chunk.min(remaining.len()));
            let map = if jobs.is_empty() {
                std::mem::take(&mut sessions)
            } else {
                jobs[0].0.iter().map(|(id, s)| (id.clone(), InboundGroupSession::from_stored(s.to_stored()))).collect()
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
                                let result = parsed.and_then(|parsed| contain_open(&mut local, parsed, room_id));
                                (index, result)
                            })
                            .collect();
                        (local, outputs)
                    })
                    .collect::<Vec<_>>()
            },
        );
        let mut all = Vec::with_capacity(events.len());
        for (n, (local, outputs)) in opened.into_iter().flatten().enumerate() {
            if n == 0 {
                sessions = local;
            }
            all.extend(outputs);
        }
        {
            let mut groups = lock(&self.inner.groups);
            for (_, session) in sessions.drain() {
                groups.return_inbound(session);
            }
        }

        // Replay records, sender devices, trust: in event order, one save.
        let mut changes = Changes::default();
        let mut seen_in_batch: HashMap<(String, u32), (OwnedEventId, u64)> = HashMap::new();
        let mut devices: HashMap<DeviceStateKey, (Option<OwnedDeviceId>, VerificationState)> = HashMap::new();
        let mut accepted = Vec::new();
        for (index, result) in all {
            let opened = match result {
                Err(error) => {
                    results[index] = Some(Err(error));
                    continue;
                }
                Ok(Err(parsed)) => {
                    let withheld =
                        match self.withheld_code(room_id, &parsed.incoming.session_id, parsed.claimed_sender_key).await
                        {
                            Ok(withheld) => withheld,
                            Err(error) => {
                                results[index] = Some(Err(MegolmError::Store(error)));
                                continue;
                            }
                        };
                    results[index] =
                        Some(Err(MegolmError::MissingRoomKey { session_id: parsed.incoming.session_id, withheld }));
                    continue;
                }
                Ok(Ok(opened)) => opened,
            };
            // Sender and trust first: an event refused by either writes no
            // replay record, so it cannot claim the index of the genuine one.
            let device_key = (
                opened.sender.clone(),
                opened.key.sender_key,
                opened.key.source,
                opened.key.sender_ed25519.map(|k| k.to_base64()),
            );
            let state = match devices.get(&device_key) {
                Some(state) => state.clone(),
                None => match self.sender_device_state(&opened.sender, &opened.key).await {
                    Ok(state) => {
                        devices.insert(device_key, state.clone());
                        state
                    }
                    Err(error) => {
                        results[index] = Some(Err(error));
                        continue;
                    }
                },
            };
            let (sender_device, verification_state) = state;
            if verification_state == VerificationState::UnknownDevice {
                self.note_unknown_device(&opened.sender, opened.key.sender_key, &mut changes);
            }
            if settings.sender_device_trust_requirement == TrustRequirement::VerifiedDevice
                && verification_state != VerificationState::Verified
            {
                results[index] = Some(Err(MegolmError::UnverifiedSenderDevice));
                continue;
            }
            if let Err(error) = self.check_replay(room_id, &opened, &mut seen_in_batch, &mut changes).await {
                results[index] = Some(Err(error));
                continue;
            }
            accepted.push((index, opened, sender_device, verification_state));
        }
        if let Err(error) = self.save(None, None, changes).await {
            for (index, ..) in accepted {
                results[index] = Some(Err(MegolmError::Store(error.clone())));
            }
            return results.into_iter().flatten().collect();
        }
        for (index, opened, sender_device, verification_state) in accepted {
            let info = MegolmDecryptionInfo {
                sender: opened.sender,
                sender_device,
                sender_curve25519_key: opened.key.sender_key,
                sender_claimed_ed25519_key: opened.key.sender_ed25519,
                session_id: opened.session_id,
                message_index: opened.message_index,
                key_source: opened.key.source,
                verification_state,
            };
            results[index] = Some(Ok(DecryptedRoomEvent { event: opened.event, info }));
        }
        results.into_iter().flatten().collect()
    }

    /// Refuses a message index already used by another event (stored, or
    /// earlier in this batch); records its first use.
    async fn check_replay(
        &self,
        room_id: &RoomId,
        opened: &Opened,
        seen_in_batch: &mut HashMap<(String, u32), (OwnedEventId, u64)>,
        changes: &mut Changes,
    ) -> Result<(), MegolmError> {
        let key = (opened.session_id.clone(), opened.message_index);
        let first = match seen_in_batch.get(&key) {
            Some((event_id, ts)) => Some((event_id.clone(), *ts)),
            None => self
                .inner
                .store
                .get_message_index(room_id, &opened.session_id, opened.message_index)
                .await?
                .map(|r| (r.event_id, r.origin_server_ts)),
        };
        match first {
            Some((event_id, ts)) if event_id != opened.event_id || ts != opened.origin_server_ts => {
                Err(MegolmError::Replay { message_index: opened.message_index, first_event_id: event_id })
            }
            Some(_) => Ok(()),
            None => {
                seen_in_batch.insert(key, (opened.event_id.clone(), opened.origin_server_ts));
                changes.message_indices.push(MessageIndexRecord {
                    room_id: room_id.to_owned(),
                    session_id: opened.session_id.clone(),
                    message_index: opened.message_index,
                    event_id: opened.event_id.clone(),
                    origin_server_ts: opened.origin_server_ts,
                });
                Ok(())
            }
        }
    }
}

/// [`open`] with a bug contained: the event fails alone, and its session
/// copy, which the bug may have left half-changed, is dropped from the map
/// (the cache reloads it from the store).
fn contain_open(
    local: &mut SessionMap,
    parsed: Parsed,
    room_id: &RoomId,
) -> Result<Result<Opened, Parsed>, MegolmError> {
    let session_id = parsed.incoming.session_id.clone();
    let Some(session) = local.get_mut(&session_id) else { return Ok(Err(parsed)) };
    match contain("a room event", || open(session, parsed, room_id)) {
        Ok(result) => result.map(Ok),
        Err(reason) => {
            local.remove(&session_id);
            Err(MegolmError::Internal(reason))
        }
    }
}

/// Decrypts and checks one event with its session: pure work for a worker.
fn open(session: &mut InboundGroupSession, parsed: Parsed, room_id: &RoomId) -> Result<Opened, MegolmError> {
    let Parsed { incoming, outer_relation, .. } = parsed;
    let decrypted = session.decrypt(&incoming.message).map_err(|e| match e {
        DecryptionError::UnknownMessageIndex(first_known_index, message_index) => {
            MegolmError::UnknownMessageIndex { first_known_index, message_index }
        }
        other => MegolmError::DecryptionFailed(other.to_string()),
    })?;
    let key = KeyFacts::of(session);
    if let Some(owner) = &key.sender_user
        && *owner != incoming.sender
    {
        return Err(MegolmError::SenderMismatch { event_sender: incoming.sender, key_owner: owner.clone() });
    }
    let plaintext: RoomPlaintext = serde_json::from_slice(&decrypted.plaintext)
        .map_err(|e| MegolmError::Malformed(format!("payload: {}", crate::contain::secret_json_error(&e))))?;
    if plaintext.room_id != room_id.as_str() {
        return Err(MegolmError::RoomMismatch { expected: room_id.to_owned(), found: plaintext.room_id });
    }
    let mut content = plaintext.content;
    if let Some(relation) = outer_relation {
        content.entry("m.relates_to").or_insert(relation);
    }
    let mut event = json!({
        "type": plaintext.event_type,
        "content": content,
        "room_id": room_id,
        "sender": incoming.sender,
        "event_id": incoming.event_id,
        "origin_server_ts": incoming.origin_server_ts,
    });
    if let Some(unsigned) = incoming.unsigned {
        event["unsigned"] = unsigned;
    }
    let event = Raw::new(&event).map(Raw::cast_unchecked).map_err(|e| MegolmError::Malformed(e.to_string()))?;
    Ok(Opened {
        sender: incoming.sender,
        event_id: incoming.event_id,
        origin_server_ts: u64::from(incoming.origin_server_ts),
        session_id: incoming.session_id,
        message_index: decrypted.message_index,
        key,
        event,
    })
}
