//! Decrypting one sending device's Olm events, in order: the pure work a
//! decryption worker does for a sync's batch. Each worker creates inbound
//! sessions on its own copy of the account and reports, per event, its
//! [`Fate`]; the machine's merge then applies one-time-key use to the real
//! account in event order. A bug contained while processing a sender fails
//! that sender's events in the batch and leaves its sessions unsaved.

use std::collections::HashSet;

use ruma_common::{OwnedUserId, serde::Raw};
use ruma_events::AnyToDeviceEvent;
use serde_json::Value;
use vodozemac::{Curve25519PublicKey, olm::OlmMessage};

use super::{
    Account, IncomingOlm, OlmDecryptionInfo, OlmError, OwnIdentity, Session, SessionOwner, ToDeviceOutcome,
    check_plaintext, parse_incoming,
};
use crate::{
    Timestamp,
    contain::contain,
    devices::DeviceData,
    gossip::{FORWARDED_ROOM_KEY, ForwardedRoomKey, GossipError, SECRET_SEND, SecretSend},
    megolm::{PreparedRoomKey, prepare_room_key},
};

/// What an accepted `m.room_key` carried, checked on the worker.
pub(crate) enum CarriedRoomKey {
    /// The event was no room key, or was itself rejected.
    None,
    /// A valid key, ready to be offered to the store.
    Checked(Box<PreparedRoomKey>),
    /// The key was refused.
    Refused(OlmError),
    /// An `m.forwarded_room_key`, parsed and checked on the worker (or why not).
    Forwarded(Result<Box<ForwardedRoomKey>, GossipError>),
    /// An `m.secret.send` (or why it is malformed).
    Secret(Result<Box<SecretSend>, GossipError>),
}

/// An event's outcome, and for an accepted `m.room_key` the checked key (or
/// why it is refused), to be stored by the caller.
pub(crate) type BatchOutcome = (ToDeviceOutcome, CarriedRoomKey);

/// One event of a sending device, with what is known of the device it claims.
pub(crate) struct Pending {
    pub(crate) index: usize,
    pub(crate) incoming: IncomingOlm,
    pub(crate) known_device: Option<DeviceData>,
}

/// The events of one sending device (curve25519 key) and its sessions.
pub(crate) struct SenderJob {
    pub(crate) sender_key: Curve25519PublicKey,
    pub(crate) sessions: Vec<Session>,
    pub(crate) events: Vec<Pending>,
}

/// What happened to one event inside a worker.
pub(crate) enum Fate {
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

pub(crate) struct SenderDone {
    pub(crate) sender_key: Curve25519PublicKey,
    pub(crate) sessions: Vec<Session>,
    /// Ids of the sessions that advanced or were created.
    pub(crate) touched: HashSet<String>,
    pub(crate) fates: Vec<(usize, Fate)>,
    /// A bug was contained while processing this sender: its sessions in
    /// memory may be half-changed, so they are dropped, never saved.
    pub(crate) poisoned: bool,
}

/// How the gather phase sorts an event.
pub(crate) enum Classified {
    Encrypted(Box<IncomingOlm>),
    Plain,
    Failed(OlmError),
}

pub(crate) fn classify(raw: Option<&Raw<AnyToDeviceEvent>>, own: &OwnIdentity) -> Classified {
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
pub(crate) fn take(slot: &mut Option<Raw<AnyToDeviceEvent>>) -> Raw<AnyToDeviceEvent> {
    slot.take().unwrap_or_else(|| Raw::from_json(serde_json::value::RawValue::NULL.to_owned()))
}

/// One worker's share of the senders. The account copy is made on first need.
pub(crate) fn decrypt_part(
    jobs: Vec<SenderJob>,
    own: &OwnIdentity,
    source: Option<&Account>,
    now: Timestamp,
) -> Vec<SenderDone> {
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
    let (room_key, secret_field) = match info.event_type.as_str() {
        "m.room_key" => match prepare_room_key(&info, &event["content"]) {
            Ok(key) => (CarriedRoomKey::Checked(key), "session_key"),
            Err(error) => (CarriedRoomKey::Refused(error), "session_key"),
        },
        FORWARDED_ROOM_KEY => {
            (CarriedRoomKey::Forwarded(ForwardedRoomKey::parse(&event["content"]).map(Box::new)), "session_key")
        }
        SECRET_SEND => (CarriedRoomKey::Secret(SecretSend::parse(&event["content"]).map(Box::new)), "secret"),
        _ => (CarriedRoomKey::None, ""),
    };
    if !matches!(room_key, CarriedRoomKey::None)
        && let Some(key) = event.get_mut("content").and_then(|c| c.get_mut(secret_field))
    {
        // The key or secret is secret: the caller gets the event without it.
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
