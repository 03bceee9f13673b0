//! Events waiting for their keys, and the rules that heal them: which
//! missing keys to ask our other devices for, which to look up in the key
//! backup and when to look again.
//!
//! Every room-event decryption feeds the registry: an event that failed in
//! a way that may change (its key missing or known only from a later index,
//! its sender not trusted enough yet) is kept, once per event id; an event
//! that decrypted is dropped. The registry is bounded (count and bytes, the
//! oldest dropped first) and its newest events are saved with the
//! decryption's own batch, so a restarted engine still knows what waits.
//!
//! The rules are plain functions of the registry and the facts the engine
//! gathers (open requests, the backup's version and etag, the time):
//! * a missing key is asked of our own devices once per open request, at
//!   most [`KEY_REQUESTS_PER_ROUND`] new requests per round;
//! * a missing key is looked up in the backup once per state of the backup
//!   (its version and etag): a key that was not there is looked up again
//!   after the backup changed (our other devices upload what they receive),
//!   the etag being read again at most every [`BACKUP_RECHECK`], at most
//!   [`BACKUP_LOOKUPS_PER_ROUND`] lookups per round.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, serde::Raw};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Timestamp, megolm::MegolmError};

/// The custom value holding the newest waiting events across restarts.
pub(crate) const PENDING_RECORD: &str = "hush.engine.pending_decryptions";
/// The most waiting events held in memory.
pub const MAX_PENDING: usize = 10_000;
/// The most bytes of waiting events held in memory (a hostile server can
/// send large events; the oldest are dropped first).
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;
/// The largest event kept (the Matrix limit for an event is 65,536 bytes).
const MAX_EVENT_BYTES: usize = 65_536;
/// The most waiting events saved (the newest).
pub const MAX_SAVED: usize = 500;
/// The most bytes of events saved (the newest first), so that healing one
/// event never rewrites more than this.
pub const MAX_SAVED_BYTES: usize = 1024 * 1024;
/// New room-key requests to our own devices per round, so a flood of
/// undecryptable events cannot make one sync send hundreds of requests.
pub const KEY_REQUESTS_PER_ROUND: usize = 20;
/// Backup lookups per round, for the same reason.
pub const BACKUP_LOOKUPS_PER_ROUND: usize = 20;
/// How many looked-up keys are remembered (each is looked up once per
/// state of the backup; forgotten ones may be looked up once more).
const LOOKUPS_REMEMBERED: usize = 10_000;
/// How often the backup's etag is read again for keys it did not have.
pub const BACKUP_RECHECK: Duration = Duration::from_secs(600);

/// An encrypted room event waiting for its key (or for its sender to be
/// trusted enough), to be decrypted again and delivered as a late
/// decryption.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingEvent {
    /// The room it was received in.
    pub room_id: OwnedRoomId,
    /// Its event id.
    pub event_id: String,
    /// Its sender, as the server says.
    pub sender: OwnedUserId,
    /// The Megolm session whose key it needs.
    pub session_id: String,
    /// The encrypted event, as received.
    pub event: Raw<Value>,
}

/// The fields of an encrypted event the registry needs.
#[derive(Deserialize)]
struct Head {
    event_id: String,
    sender: OwnedUserId,
    content: HeadContent,
}

#[derive(Deserialize)]
struct HeadContent {
    session_id: String,
}

impl PendingEvent {
    /// The waiting entry for `event` of `room_id`, if the event names its
    /// id, sender and session and is not larger than an event can be.
    pub(crate) fn from_event(room_id: &RoomId, event: &serde_json::value::RawValue) -> Option<Self> {
        if event.get().len() > MAX_EVENT_BYTES {
            return None;
        }
        let head: Head = serde_json::from_str(event.get()).ok()?;
        let event = Raw::from_json(event.to_owned());
        Some(Self {
            room_id: room_id.to_owned(),
            event_id: head.event_id,
            sender: head.sender,
            session_id: head.content.session_id,
            event,
        })
    }

    fn bytes(&self) -> usize {
        self.event.json().get().len()
    }

    fn key(&self) -> (OwnedRoomId, String) {
        (self.room_id.clone(), self.session_id.clone())
    }

    fn id(&self) -> (OwnedRoomId, String) {
        (self.room_id.clone(), self.event_id.clone())
    }
}

/// Whether a decryption error may go away by itself (a key may still come,
/// a sender's device may be listed or cross-signed later).
pub(crate) fn may_heal(error: &MegolmError) -> bool {
    matches!(
        error,
        MegolmError::MissingRoomKey { .. }
            | MegolmError::UnknownMessageIndex { .. }
            | MegolmError::InsufficientSenderTrust { .. }
            | MegolmError::UnverifiedSenderDevice
    )
}

/// A read of the backup is due (`OlmMachine::backup_read_due`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct BackupReadDue {
    /// Keys looked up before are to be checked again if the backup changed.
    pub recheck: bool,
}

/// The events waiting for their keys and the healing schedule.
#[derive(Debug, Default)]
pub(crate) struct PendingDecryptions {
    events: VecDeque<PendingEvent>,
    /// (room, event id) of every waiting event.
    ids: HashSet<(OwnedRoomId, String)>,
    bytes: usize,
    /// Changed since it was last saved.
    dirty: bool,
    /// (room, session) → (backup version, etag) when it was looked up.
    looked: BTreeMap<(OwnedRoomId, String), (String, String)>,
    /// When keys looked up before were last checked again.
    rechecked_at: Option<Timestamp>,
}

impl PendingDecryptions {
    /// Keeps `event` (once per room and event id), dropping the oldest over
    /// the bounds.
    pub(crate) fn record(&mut self, event: PendingEvent) {
        if !self.ids.insert(event.id()) {
            return;
        }
        self.dirty = true;
        self.bytes += event.bytes();
        self.events.push_back(event);
        while self.events.len() > MAX_PENDING || self.bytes > MAX_PENDING_BYTES {
            let Some(oldest) = self.events.pop_front() else { break };
            self.forget(&oldest);
        }
    }

    /// `event_id` of `room_id` decrypted, or failed in a way that cannot
    /// heal: it waits no more. Returns whether it waited.
    pub(crate) fn resolved(&mut self, room_id: &RoomId, event_id: &str) -> bool {
        if !self.ids.contains(&(room_id.to_owned(), event_id.to_owned())) {
            return false;
        }
        let Some(at) = self.events.iter().position(|e| e.event_id == event_id && e.room_id == room_id) else {
            return false;
        };
        let Some(event) = self.events.remove(at) else { return false };
        self.forget(&event);
        self.dirty = true;
        true
    }

    /// The last record was not saved: the next one must be.
    pub(crate) fn mark_unsaved(&mut self) {
        self.dirty = true;
    }

    fn forget(&mut self, event: &PendingEvent) {
        self.ids.remove(&event.id());
        self.bytes = self.bytes.saturating_sub(event.bytes());
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The waiting events, oldest first, that `keep` selects.
    pub(crate) fn select(&self, keep: impl Fn(&PendingEvent) -> bool) -> Vec<PendingEvent> {
        self.events.iter().filter(|e| keep(e)).cloned().collect()
    }

    /// The distinct (room, session) keys the waiting events need, in the
    /// order their first event arrived.
    fn wanted_keys(&self) -> Vec<(OwnedRoomId, String)> {
        let mut seen = BTreeSet::new();
        self.events.iter().map(PendingEvent::key).filter(|key| seen.insert(key.clone())).collect()
    }

    /// The keys to ask our own devices for now: those with no request open
    /// (`is_open`), at most [`KEY_REQUESTS_PER_ROUND`].
    pub(crate) fn key_requests_due(&self, is_open: impl Fn(&RoomId, &str) -> bool) -> Vec<(OwnedRoomId, String)> {
        self.wanted_keys()
            .into_iter()
            .filter(|(room_id, session_id)| !is_open(room_id, session_id))
            .take(KEY_REQUESTS_PER_ROUND)
            .collect()
    }

    /// Whether the backup must be read at `now` for the waiting keys: one
    /// was never looked up, or the recheck of those that were is due.
    pub(crate) fn backup_read_due(&self, now: Timestamp) -> Option<BackupReadDue> {
        let wanted = self.wanted_keys();
        let fresh = wanted.iter().any(|k| !self.looked.contains_key(k));
        let looked_before = wanted.iter().any(|k| self.looked.contains_key(k));
        let due = self.rechecked_at.is_none_or(|at| now.saturating_duration_since(at) >= BACKUP_RECHECK);
        let recheck = looked_before && due;
        (fresh || recheck).then_some(BackupReadDue { recheck })
    }

    /// The keys to look up in the backup `version`, whose etag is now
    /// `etag` (at most [`BACKUP_LOOKUPS_PER_ROUND`]): never looked up,
    /// looked up in another version (etags count per version), or looked up
    /// when the backup was different and the read was a recheck. They are
    /// remembered with the version and etag.
    pub(crate) fn take_backup_lookups(
        &mut self,
        (version, etag): (&str, &str),
        due: BackupReadDue,
        now: Timestamp,
    ) -> Vec<(OwnedRoomId, String)> {
        if due.recheck {
            self.rechecked_at = Some(now);
        }
        if self.looked.len() > LOOKUPS_REMEMBERED {
            self.looked.clear();
        }
        let looked = &self.looked;
        let is_due = |key: &(OwnedRoomId, String)| match looked.get(key) {
            None => true,
            Some((seen_version, seen_etag)) => seen_version != version || (due.recheck && seen_etag != etag),
        };
        let wanted: Vec<_> = self.wanted_keys().into_iter().filter(is_due).take(BACKUP_LOOKUPS_PER_ROUND).collect();
        for key in &wanted {
            self.looked.insert(key.clone(), (version.to_owned(), etag.to_owned()));
        }
        wanted
    }

    /// The record of the newest events (at most [`MAX_SAVED`] and
    /// [`MAX_SAVED_BYTES`]), if they changed since the last one (which this
    /// marks saved).
    pub(crate) fn take_record(&mut self) -> Option<(String, Vec<u8>)> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let mut bytes = 0;
        let mut newest: Vec<&PendingEvent> = self
            .events
            .iter()
            .rev()
            .take(MAX_SAVED)
            .take_while(|e| {
                bytes += e.bytes();
                bytes <= MAX_SAVED_BYTES
            })
            .collect();
        newest.reverse();
        let bytes = serde_json::to_vec(&newest).ok()?;
        Some((PENDING_RECORD.to_owned(), bytes))
    }

    /// The saved events (a record that does not decode reads as none: the
    /// store is outside input, and the events only help late decryption).
    pub(crate) fn from_record(record: Option<&[u8]>) -> Self {
        let events: Vec<PendingEvent> = record.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default();
        let mut pending = Self::default();
        for event in events.into_iter().take(MAX_SAVED) {
            if let Some(checked) = PendingEvent::from_event(&event.room_id, event.event.json()) {
                pending.record(checked);
            }
        }
        pending.dirty = false;
        pending
    }
}

#[cfg(test)]
mod tests;
