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

/// What an accepted `m.room_key` carried, checked on the worker.
pub(super) enum CarriedRoomKey {
    /// The event was no room key, or was itself rejected.
    None,
    /// A valid key, ready to be offered to the store.
    Checked(Box<PreparedRoomKey>),
    /// The key was refused.
    Refused(OlmError),
}

/// An event's outcome, and for an accepted `m.room_key` the checked key (or
/// why it is refused), to be stored by the caller.
pub(super) type BatchOutcome = (ToDeviceOutcome, CarriedRoomKey);

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
        room_key: CarriedRoomKey,
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

/// The gather phase's result: events sorted into per-sender jobs, and the
/// outcomes already known (plain, malformed, redelivered).
struct Gathered {
    outcomes: Vec<Option<BatchOutcome>>,
    raws: Vec<Option<Raw<AnyToDeviceEvent>>>,
    jobs: Vec<SenderJob>,
    devices_of: HashMap<OwnedUserId, Vec<DeviceData>>,
    hashes: Vec<Option<OlmMessageHash>>,
}

/// The merge phase's bookkeeping of one-time keys used in the batch.
#[derive(Default)]
struct KeyUse {
    used: HashSet<Curve25519PublicKey>,
    /// Sessions made from a key another session of the batch took first.
    dropped: HashSet<(Curve25519PublicKey, String)>,
    account_changed: bool,
}

impl OlmMachine {
    /// Decrypts every `m.room.encrypted` event of a sync; other events pass
    /// through. Phases: gather (parse, drop redeliveries, group by sender,
    /// load sessions), decrypt (per sender, on the workers), merge (in event
    /// order: one-time keys, wedges, unknown devices), apply (sessions and
    /// the account into `changes`). The outer `Result` is a store failure
    /// (the whole sync fails).
    pub(super) async fn receive_to_device_batch(
        &self,
        account: &mut Account,
        sessions: &mut SessionCache,
        events: Vec<Raw<AnyToDeviceEvent>>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let mut gathered = self.gather_olm_events(sessions, events).await?;
        if gathered.jobs.is_empty() {
            return Ok(gathered.outcomes.into_iter().flatten().collect());
        }
        let jobs = std::mem::take(&mut gathered.jobs);
        let needs_account =
            jobs.iter().flat_map(|j| &j.events).any(|e| matches!(e.incoming.message, OlmMessage::PreKey(_)));
        let source: Option<&Account> = needs_account.then_some(&*account);
        let own = &self.inner.own;
        let done: Vec<SenderDone> =
            run_split(jobs, self.workers(), |job| job.events.len(), |part| decrypt_part(part, own, source, now))
                .into_iter()
                .flatten()
                .collect();
        let (finished, keys) = self.merge_fates(account, &mut gathered, done, now, changes);
        apply_senders(sessions, finished, &keys, changes);
        if keys.account_changed {
            changes.account = Some(account.to_stored());
        }
        Ok(gathered.outcomes.into_iter().flatten().collect())
    }

    /// Gather: parses each event, settles the ones that need no session
    /// (plain, malformed, redelivered) and groups the others by sender key
    /// with that sender's sessions taken out of the cache.
    async fn gather_olm_events(
        &self,
        sessions: &mut SessionCache,
        events: Vec<Raw<AnyToDeviceEvent>>,
    ) -> Result<Gathered, StoreError> {
        let own = &self.inner.own;
        let mut gathered = Gathered {
            outcomes: (0..events.len()).map(|_| None).collect(),
            hashes: vec![None; events.len()],
            // Each raw event is kept (moved, not copied) until its outcome needs it.
            raws: events.into_iter().map(Some).collect(),
            jobs: Vec::new(),
            devices_of: HashMap::new(),
        };
        let mut job_of_key: HashMap<Curve25519PublicKey, usize> = HashMap::new();
        let mut hashes_in_batch: HashSet<OlmMessageHash> = HashSet::new();
        for index in 0..gathered.raws.len() {
            let settled = |outcome| Some((outcome, CarriedRoomKey::None));
            let incoming = match classify(gathered.raws[index].as_ref(), own) {
                Classified::Encrypted(incoming) => *incoming,
                Classified::Plain => {
                    gathered.outcomes[index] = settled(ToDeviceOutcome::PlainText(take(&mut gathered.raws[index])));
                    continue;
                }
                Classified::Failed(error) => {
                    let event = take(&mut gathered.raws[index]);
                    gathered.outcomes[index] = settled(ToDeviceOutcome::Failed { event, error });
                    continue;
                }
            };
            // A message we decrypted before (in this batch or earlier) is a
            // redelivery: dropped before any session sees it.
            if !hashes_in_batch.insert(incoming.hash.clone())
                || self.inner.store.is_olm_message_known(&incoming.hash).await?
            {
                tracing::debug!(sender = %incoming.sender, "dropped a redelivered Olm message");
                let event = take(&mut gathered.raws[index]);
                gathered.outcomes[index] = settled(ToDeviceOutcome::Failed { event, error: OlmError::Redelivered });
                continue;
            }
            gathered.hashes[index] = Some(incoming.hash.clone());
            if !gathered.devices_of.contains_key(&incoming.sender) {
                let devices = self.inner.store.get_user_devices(&incoming.sender).await?.into_values().collect();
                gathered.devices_of.insert(incoming.sender.clone(), devices);
            }
            let known_device = gathered
                .devices_of
                .get(&incoming.sender)
                .and_then(|d| d.iter().find(|d| d.curve25519_key() == incoming.sender_key))
                .cloned();
            let job = match job_of_key.get(&incoming.sender_key) {
                Some(&job) => job,
                None => {
                    let sender_key = incoming.sender_key;
                    let sessions = sessions.take(&*self.inner.store, sender_key).await?;
                    gathered.jobs.push(SenderJob { sender_key, sessions, events: Vec::new() });
                    job_of_key.insert(sender_key, gathered.jobs.len() - 1);
                    gathered.jobs.len() - 1
                }
            };
            gathered.jobs[job].events.push(Pending { index, incoming, known_device });
        }
        Ok(gathered)
    }

    /// Merge: the workers' fates in event order. One-time keys used by new
    /// sessions leave the real account (a second session from the same key
    /// is rejected, as sequential processing would); wedges and unknown
    /// devices are noted.
    fn merge_fates(
        &self,
        account: &mut Account,
        gathered: &mut Gathered,
        done: Vec<SenderDone>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> (Vec<SenderDone>, KeyUse) {
        let mut fates: Vec<(usize, Curve25519PublicKey, Fate)> =
            Vec::with_capacity(done.iter().map(|d| d.fates.len()).sum());
        let mut finished = Vec::with_capacity(done.len());
        for mut sender in done {
            fates.extend(sender.fates.drain(..).map(|(i, fate)| (i, sender.sender_key, fate)));
            finished.push(sender);
        }
        fates.sort_by_key(|(i, _, _)| *i);
        let mut keys = KeyUse::default();
        for (index, sender_key, fate) in fates {
            let raw = take(&mut gathered.raws[index]);
            let settled = match fate {
                Fate::Decrypted { info, .. } if keys.dropped.contains(&(sender_key, info.session_id.clone())) => {
                    Err(OlmError::SessionCreation("its session's one-time key was used twice".into()))
                }
                Fate::Decrypted { event, info, new_session_key, room_key } => {
                    match new_session_key.map(|key| keys.take(account, key, sender_key, &info.session_id)) {
                        Some(false) => Err(OlmError::SessionCreation("the one-time key was already used".into())),
                        _ => Ok((event, info, room_key)),
                    }
                }
                Fate::Rejected(error) => Err(error),
                Fate::Wedged { sender, known_device, tried } => {
                    self.note_wedged(&sender, sender_key, known_device.as_deref(), now, changes);
                    Err(OlmError::NoMatchingSession { sender_key: sender_key.to_base64(), sessions_tried: tried })
                }
            };
            gathered.outcomes[index] = Some(match settled {
                Ok((Ok(event), info, room_key)) => {
                    changes.olm_message_hashes.extend(gathered.hashes[index].take());
                    let known = gathered
                        .devices_of
                        .get(&info.sender)
                        .is_some_and(|devices| devices.iter().any(|d| d.curve25519_key() == sender_key));
                    if !known {
                        // A device we do not know: its owner's list is outdated.
                        self.note_unknown_device(&info.sender, sender_key, changes);
                    }
                    (ToDeviceOutcome::Decrypted { event, info }, room_key)
                }
                Ok((Err(e), _, _)) => {
                    (ToDeviceOutcome::Failed { event: raw, error: OlmError::Malformed(e) }, CarriedRoomKey::None)
                }
                Err(error) => {
                    tracing::warn!(%error, "rejected an encrypted to-device event");
                    (ToDeviceOutcome::Failed { event: raw, error }, CarriedRoomKey::None)
                }
            });
        }
        (finished, keys)
    }
}

impl KeyUse {
    /// Removes a new session's one-time key from the account; `false` if
    /// another session of the batch took it first (the session is dropped).
    fn take(
        &mut self,
        account: &mut Account,
        key: Curve25519PublicKey,
        sender_key: Curve25519PublicKey,
        session_id: &str,
    ) -> bool {
        if account.remove_one_time_key(key) {
            self.used.insert(key);
            self.account_changed = true;
            true
        } else if self.used.contains(&key) {
            self.dropped.insert((sender_key, session_id.to_owned()));
            false
        } else {
            // A fallback key (kept for reuse), or one removed before the batch.
            true
        }
    }
}

/// Apply: the senders' sessions go back to the cache and, where they
/// advanced or were created, into `changes`; a poisoned sender's are dropped.
fn apply_senders(sessions: &mut SessionCache, finished: Vec<SenderDone>, keys: &KeyUse, changes: &mut Changes) {
    for mut sender in finished {
        if sender.poisoned {
            // Reloaded from the store on next use; nothing of it is saved.
            continue;
        }
        sender.sessions.retain(|s| !keys.dropped.contains(&(sender.sender_key, s.session_id().to_owned())));
        for session in &sender.sessions {
            if sender.touched.contains(session.session_id()) {
                changes.sessions.push(session.to_stored());
            }
        }
        sessions.put_back(sender.sender_key, sender.sessions);
    }
}

/// How the gather phase sorts an event.
enum Classified {
    Encrypted(Box<IncomingOlm>),
    Plain,
    Failed(OlmError),
}

fn classify(raw: Option<&Raw<AnyToDeviceEvent>>, own: &OwnIdentity) -> Classified {
    let Some(raw) = raw else { return Classified::Failed(OlmError::Malformed("missing event".into())) };
    let value: Value = match raw.deserialize_as_unchecked() {
        Ok(value) => value,
        Err(e) => return Classified::Failed(OlmError::Malformed(e.to_string())),
    };
    let Some(event_type) = value.get("type").and_then(Value::as_str) else {
        return Classified::Failed(OlmError::Malformed(
            "a to-device event must be an object with a string type".into(),
        ));
    };
    if event_type != "m.room.encrypted" {
        return Classified::Plain;
    }
    match parse_incoming(&value, &own.curve25519) {
        Ok(incoming) => Classified::Encrypted(Box::new(incoming)),
        Err(error) => {
            tracing::warn!(%error, "rejected an encrypted to-device event");
            Classified::Failed(error)
        }
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
    let room_key = match info.event_type.as_str() {
        "m.room_key" => match prepare_room_key(&info, &event["content"]) {
            Ok(key) => CarriedRoomKey::Checked(key),
            Err(error) => CarriedRoomKey::Refused(error),
        },
        _ => CarriedRoomKey::None,
    };
    if !matches!(room_key, CarriedRoomKey::None)
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
