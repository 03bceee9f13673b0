//! Decrypting a sync's Olm to-device events as one batch: events are grouped
//! by sending device (their order matters only within a device's stream),
//! the groups are decrypted in parallel, and the results are merged back in
//! event order.
//!
//! Creating an inbound session consumes a one-time key of the account. Each
//! worker creates sessions on its own copy of the account; the merge then
//! removes the used one-time keys from the real account, in event order, and
//! rejects a second session made with the same one-time key in the batch.
//! A rejected event never changes the real account or a stored session.

use std::collections::{HashMap, HashSet};

use ruma_common::{OwnedUserId, serde::Raw};
use ruma_events::AnyToDeviceEvent;
use serde_json::Value;
use vodozemac::{Curve25519PublicKey, olm::OlmMessage};

use super::{
    OlmMachine,
    room_keys::{PreparedRoomKey, prepare_room_key},
    session_cache::SessionCache,
    sync::OlmDecryptionInfo,
};
use crate::{
    StoreError, Timestamp, ToDeviceOutcome,
    contain::contain,
    devices::DeviceData,
    olm::{Account, IncomingOlm, OlmError, OwnIdentity, Session, SessionOwner, check_plaintext, parse_incoming},
    parallel::run_split,
    store::{Changes, OlmMessageHash},
};

/// An event's outcome, and for an accepted `m.room_key` the checked key (or
/// why it is refused), to be stored by the caller.
pub(super) type BatchOutcome = (ToDeviceOutcome, Option<Result<Box<PreparedRoomKey>, String>>);

/// One event of a sending device, with what is known of the device it claims.
struct Pending {
    index: usize,
    incoming: IncomingOlm,
    known_device: Option<DeviceData>,
}

/// The events of one sending device (curve25519 key) and its sessions.
struct SenderJob {
    sender_key: Curve25519PublicKey,
    sessions: Vec<Session>,
    events: Vec<Pending>,
}

/// What happened to one event inside a worker.
enum Fate {
    Decrypted {
        /// The decrypted event; an `m.room_key`'s secret key is blanked.
        event: Result<Raw<AnyToDeviceEvent>, String>,
        info: Box<OlmDecryptionInfo>,
        /// The key a new inbound session was created from (one-time or fallback).
        new_session_key: Option<Curve25519PublicKey>,
        /// For an `m.room_key`: the checked key, or why it is refused.
        room_key: Option<Result<Box<PreparedRoomKey>, String>>,
    },
    Rejected(OlmError),
    /// A normal message no session decrypts.
    Wedged {
        sender: OwnedUserId,
        known_device: Option<Box<DeviceData>>,
        tried: usize,
    },
}

struct SenderDone {
    sender_key: Curve25519PublicKey,
    sessions: Vec<Session>,
    /// Ids of the sessions that advanced or were created.
    touched: HashSet<String>,
    fates: Vec<(usize, Fate)>,
    /// A bug was contained while processing this sender: its sessions in
    /// memory may be half-changed, so they are dropped, never saved.
    poisoned: bool,
}

impl OlmMachine {
    /// Decrypts every `m.room.encrypted` event of a sync; other events pass
    /// through. The outer `Result` is a store failure (the whole sync fails).
    pub(super) async fn receive_to_device_batch(
        &self,
        account: &mut Account,
        sessions: &mut SessionCache,
        events: Vec<Raw<AnyToDeviceEvent>>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let own = &self.inner.own;
        let mut outcomes: Vec<Option<BatchOutcome>> = (0..events.len()).map(|_| None).collect();
        let mut jobs: Vec<SenderJob> = Vec::new();
        let mut job_of_key: HashMap<Curve25519PublicKey, usize> = HashMap::new();
        let mut devices_of: HashMap<OwnedUserId, Vec<DeviceData>> = HashMap::new();
        let mut hashes: Vec<Option<OlmMessageHash>> = vec![None; events.len()];
        let mut hashes_in_batch: HashSet<OlmMessageHash> = HashSet::new();
        // Each raw event is kept (moved, not copied) until its outcome needs it.
        let mut raws: Vec<Option<Raw<AnyToDeviceEvent>>> = events.into_iter().map(Some).collect();
        for (index, slot) in raws.iter_mut().enumerate() {
            let Some(raw) = slot.as_ref() else { continue };
            let value: Value = match raw.deserialize_as_unchecked() {
                Ok(value) => value,
                Err(e) => {
                    let error = OlmError::Malformed(e.to_string());
                    outcomes[index] = Some((ToDeviceOutcome::Failed { event: take(slot), error }, None));
                    continue;
                }
            };
            let Some(event_type) = value.get("type").and_then(Value::as_str) else {
                let error = OlmError::Malformed("a to-device event must be an object with a string type".into());
                outcomes[index] = Some((ToDeviceOutcome::Failed { event: take(slot), error }, None));
                continue;
            };
            if event_type != "m.room.encrypted" {
                outcomes[index] = Some((ToDeviceOutcome::PlainText(take(slot)), None));
                continue;
            }
            let incoming = match parse_incoming(&value, &own.curve25519) {
                Ok(incoming) => incoming,
                Err(error) => {
                    tracing::warn!(%error, "rejected an encrypted to-device event");
                    outcomes[index] = Some((ToDeviceOutcome::Failed { event: take(slot), error }, None));
                    continue;
                }
            };
            // A message we decrypted before (in this batch or earlier) is a
            // redelivery: dropped before any session sees it.
            if !hashes_in_batch.insert(incoming.hash.clone())
                || self.inner.store.is_olm_message_known(&incoming.hash).await?
            {
                tracing::debug!(sender = %incoming.sender, "dropped a redelivered Olm message");
                outcomes[index] =
                    Some((ToDeviceOutcome::Failed { event: take(slot), error: OlmError::Redelivered }, None));
                continue;
            }
            hashes[index] = Some(incoming.hash.clone());
            if !devices_of.contains_key(&incoming.sender) {
                let devices = self.inner.store.get_user_devices(&incoming.sender).await?.into_values().collect();
                devices_of.insert(incoming.sender.clone(), devices);
            }
            let known_device = devices_of
                .get(&incoming.sender)
                .and_then(|d| d.iter().find(|d| d.curve25519_key() == incoming.sender_key))
                .cloned();
            let job = match job_of_key.get(&incoming.sender_key) {
                Some(&job) => job,
                None => {
                    let sender_key = incoming.sender_key;
                    let sessions = sessions.take(&*self.inner.store, sender_key).await?;
                    jobs.push(SenderJob { sender_key, sessions, events: Vec::new() });
                    job_of_key.insert(sender_key, jobs.len() - 1);
                    jobs.len() - 1
                }
            };
            jobs[job].events.push(Pending { index, incoming, known_device });
        }
        if jobs.is_empty() {
            return Ok(outcomes.into_iter().flatten().collect());
        }

        let needs_account =
            jobs.iter().flat_map(|j| &j.events).any(|e| matches!(e.incoming.message, OlmMessage::PreKey(_)));
        let source: Option<&Account> = needs_account.then_some(&*account);
        let done: Vec<SenderDone> =
            run_split(jobs, self.workers(), |job| job.events.len(), |part| decrypt_part(part, own, source, now))
                .into_iter()
                .flatten()
                .collect();

        // Merge in event order.
        let mut fates: Vec<(usize, Curve25519PublicKey, Fate)> =
            Vec::with_capacity(done.iter().map(|d| d.fates.len()).sum());
        let mut finished = Vec::with_capacity(done.len());
        for mut sender in done {
            fates.extend(sender.fates.drain(..).map(|(i, fate)| (i, sender.sender_key, fate)));
            finished.push(sender);
        }
        fates.sort_by_key(|(i, _, _)| *i);
        let mut used_keys: HashSet<Curve25519PublicKey> = HashSet::new();
        let mut dropped: HashSet<(Curve25519PublicKey, String)> = HashSet::new();
        let mut account_changed = false;
        for (index, sender_key, fate) in fates {
            let raw = take(&mut raws[index]);
            let mut room_key = None;
            let outcome = match fate {
                Fate::Decrypted { info, .. } if dropped.contains(&(sender_key, info.session_id.clone())) => {
                    Err(OlmError::SessionCreation("its session's one-time key was used twice".into()))
                }
                Fate::Decrypted { event, info, new_session_key, room_key: prepared } => {
                    room_key = prepared;
                    let mut reused = false;
                    if let Some(key) = new_session_key {
                        if account.remove_one_time_key(key) {
                            used_keys.insert(key);
                            account_changed = true;
                        } else if used_keys.contains(&key) {
                            // Another device's session in this batch took the key first.
                            dropped.insert((sender_key, info.session_id.clone()));
                            reused = true;
                        }
                    }
                    if reused {
                        Err(OlmError::SessionCreation("the one-time key was already used".into()))
                    } else {
                        Ok((event, info))
                    }
                }
                Fate::Rejected(error) => Err(error),
                Fate::Wedged { sender, known_device, tried } => {
                    self.note_wedged(&sender, sender_key, known_device.as_deref(), now, changes);
                    Err(OlmError::NoMatchingSession { sender_key: sender_key.to_base64(), sessions_tried: tried })
                }
            };
            let outcome = match outcome {
                Ok((Ok(event), info)) => {
                    changes.olm_message_hashes.extend(hashes[index].take());
                    let known = devices_of
                        .get(&info.sender)
                        .is_some_and(|devices| devices.iter().any(|d| d.curve25519_key() == sender_key));
                    if !known {
                        // A device we do not know: its owner's list is outdated.
                        self.note_unknown_device(&info.sender, sender_key, changes);
                    }
                    ToDeviceOutcome::Decrypted { event, info }
                }
                Ok((Err(e), _)) => {
                    room_key = None;
                    ToDeviceOutcome::Failed { event: raw, error: OlmError::Malformed(e) }
                }
                Err(error) => {
                    tracing::warn!(%error, "rejected an encrypted to-device event");
                    room_key = None;
                    ToDeviceOutcome::Failed { event: raw, error }
                }
            };
            outcomes[index] = Some((outcome, room_key));
        }
        for mut sender in finished {
            if sender.poisoned {
                // Reloaded from the store on next use; nothing of it is saved.
                continue;
            }
            sender.sessions.retain(|s| !dropped.contains(&(sender.sender_key, s.session_id().to_owned())));
            for session in &sender.sessions {
                if sender.touched.contains(session.session_id()) {
                    changes.sessions.push(session.to_stored());
                }
            }
            sessions.put_back(sender.sender_key, sender.sessions);
        }
        if account_changed {
            changes.account = Some(account.to_stored());
        }
        Ok(outcomes.into_iter().flatten().collect())
    }
}

/// The raw event of a slot (each slot is taken exactly once).
fn take(slot: &mut Option<Raw<AnyToDeviceEvent>>) -> Raw<AnyToDeviceEvent> {
    slot.take().unwrap_or_else(|| Raw::from_json(serde_json::value::RawValue::NULL.to_owned()))
}

/// One worker's share of the senders. The account copy is made on first need.
fn decrypt_part(jobs: Vec<SenderJob>, own: &OwnIdentity, source: Option<&Account>, now: Timestamp) -> Vec<SenderDone> {
    let mut account = AccountCopy { source, copy: None, used: Vec::new() };
    jobs.into_iter().map(|job| decrypt_sender(job, own, &mut account, now)).collect()
}

/// A worker's copy of the account, and the keys its accepted sessions used.
struct AccountCopy<'a> {
    source: Option<&'a Account>,
    copy: Option<Account>,
    used: Vec<Curve25519PublicKey>,
}

impl AccountCopy<'_> {
    fn get(&mut self) -> Option<&mut Account> {
        if self.copy.is_none() {
            self.copy = self.source.map(Account::snapshot);
        }
        self.copy.as_mut()
    }

    /// Undoes a session creation whose plaintext was rejected: a fresh copy
    /// without the keys of the sessions accepted so far.
    fn roll_back(&mut self) {
        self.copy = self.source.map(|s| {
            let mut copy = s.snapshot();
            for key in &self.used {
                copy.remove_one_time_key(*key);
            }
            copy
        });
    }
}

/// Decrypts one sending device's events in order. A bug hit while
/// processing one of them (see [`contain`]) fails every event of this sender
/// in the batch and leaves its sessions unsaved, as if they never arrived.
fn decrypt_sender(job: SenderJob, own: &OwnIdentity, account: &mut AccountCopy<'_>, now: Timestamp) -> SenderDone {
    let SenderJob { sender_key, mut sessions, events } = job;
    let mut touched = HashSet::new();
    let mut fates = Vec::with_capacity(events.len());
    let mut poisoned = None;
    for event in events {
        let index = event.index;
        if let Some(reason) = &poisoned {
            fates.push((
                index,
                Fate::Rejected(OlmError::Internal(format!("{reason} (an earlier event of this sender)"))),
            ));
            continue;
        }
        match contain("an Olm to-device event", || {
            decrypt_event(event, sender_key, &mut sessions, &mut touched, own, account, now)
        }) {
            Ok(fate) => fates.push((index, fate)),
            Err(reason) => {
                account.roll_back();
                for (_, fate) in &mut fates {
                    *fate = Fate::Rejected(OlmError::Internal(reason.clone()));
                }
                fates.push((index, Fate::Rejected(OlmError::Internal(reason.clone()))));
                poisoned = Some(reason);
            }
        }
    }
    SenderDone { sender_key, sessions, touched, fates, poisoned: poisoned.is_some() }
}

/// Decrypts one event of a sender: existing sessions first (newest first),
/// then, for a pre-key message, a new inbound session.
fn decrypt_event(
    event: Pending,
    sender_key: Curve25519PublicKey,
    sessions: &mut Vec<Session>,
    touched: &mut HashSet<String>,
    own: &OwnIdentity,
    account: &mut AccountCopy<'_>,
    now: Timestamp,
) -> Fate {
    let Pending { incoming, known_device, .. } = event;
    let check = |plaintext: &[u8]| check_plaintext(plaintext, &incoming.sender, sender_key, own, known_device.as_ref());
    let mut order: Vec<usize> = (0..sessions.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sessions[i].recency()));
    let mut tried = 0;
    for i in order {
        let session = &mut sessions[i];
        if let OlmMessage::PreKey(m) = &incoming.message
            && m.session_id() != session.session_id()
        {
            continue;
        }
        tried += 1;
        let before = session.snapshot();
        let Ok(plaintext) = session.decrypt(&incoming.message, now) else { continue };
        return match check(&plaintext) {
            Ok(checked) => {
                touched.insert(session.session_id().to_owned());
                let (event, info) = decrypted(&incoming.sender, sender_key, session.session_id(), checked);
                decrypted_fate(event, info, None)
            }
            Err(error) => {
                *session = before;
                Fate::Rejected(error)
            }
        };
    }
    let OlmMessage::PreKey(pre_key) = &incoming.message else {
        return Fate::Wedged { sender: incoming.sender.clone(), known_device: known_device.map(Box::new), tried };
    };
    let Some(copy) = account.get() else {
        return Fate::Rejected(OlmError::SessionCreation("no account to create a session with".into()));
    };
    let created = match copy.create_inbound_session(sender_key, pre_key) {
        Ok(created) => created,
        Err(error) => return Fate::Rejected(OlmError::SessionCreation(error.to_string())),
    };
    match check(&created.plaintext) {
        Ok(checked) => {
            let key = pre_key.one_time_key();
            account.used.push(key);
            let owner = match &checked.sender_device {
                Some(device) => SessionOwner::of(device),
                None => SessionOwner { user: Some(incoming.sender.clone()), device: None },
            };
            let session = Session::new(created.session, sender_key, owner, now);
            let (event, info) = decrypted(&incoming.sender, sender_key, session.session_id(), checked);
            touched.insert(session.session_id().to_owned());
            sessions.push(session);
            decrypted_fate(event, info, Some(key))
        }
        Err(error) => {
            account.roll_back();
            Fate::Rejected(error)
        }
    }
}

fn decrypted_fate(mut event: Value, info: OlmDecryptionInfo, new_session_key: Option<Curve25519PublicKey>) -> Fate {
    let room_key = (info.event_type == "m.room_key").then(|| prepare_room_key(&info, &event["content"]));
    if room_key.is_some()
        && let Some(key) = event.get_mut("content").and_then(|c| c.get_mut("session_key"))
    {
        // The key is secret: the caller gets the event without it.
        *key = Value::String(String::new());
    }
    let event = Raw::new(&event).map(Raw::cast_unchecked).map_err(|e| e.to_string());
    Fate::Decrypted { event, info: Box::new(info), new_session_key, room_key }
}

fn decrypted(
    sender: &ruma_common::UserId,
    sender_key: Curve25519PublicKey,
    session_id: &str,
    checked: crate::olm::CheckedPlaintext,
) -> (Value, OlmDecryptionInfo) {
    let event = serde_json::json!({ "sender": sender, "type": checked.event_type, "content": checked.content });
    let info = OlmDecryptionInfo {
        sender: sender.to_owned(),
        sender_device: checked.sender_device.as_ref().map(|d| d.device_id().to_owned()),
        sender_curve25519_key: sender_key,
        sender_ed25519_key: checked.sender_ed25519,
        session_id: session_id.to_owned(),
        event_type: checked.event_type,
    };
    (event, info)
}
