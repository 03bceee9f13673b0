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
//! gathers (open requests, the backup's version and etag, the time); the
//! engine runs them from `handle_timeout` when `poll_timeout` says so:
//! * an event is decrypted again once a key of its session was stored, or
//!   its sender's devices or identity changed, or once after a restart;
//! * a missing key is asked of our own devices once per open request, at
//!   most [`KEY_REQUESTS_PER_ROUND`] new requests per round, and only after
//!   the backup was searched for it when a backup can be read; a key asked
//!   before (or when we had no other device) is asked again after
//!   [`KEY_REASK_FIRST`], doubling up to [`KEY_REASK_MAX`], and at once
//!   when a device of ours appears;
//! * a missing key is looked up in the backup once per state of the backup
//!   (its version and etag): a key that was not there is looked up again
//!   after the backup changed (our other devices upload what they receive),
//!   the etag being read again at most every [`BACKUP_RECHECK`], at most
//!   [`BACKUP_LOOKUPS_PER_ROUND`] lookups per round.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, serde::Raw};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Timestamp,
    megolm::{DecryptionSettings, MegolmError},
};

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
/// When a key asked of our devices (or not asked: we had no other device)
/// is asked again, if its request is no longer open. An open request is
/// sent again by the gossip layer on its own schedule; this is for a
/// request that closed without healing (e.g. dropped when too many were
/// open). Short waits here made requests churn: a reopened request restarts
/// the gossip resend clock, and the network never went quiet (the
/// simulator's 10,000-run check found it).
pub const KEY_REASK_FIRST: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two rounds for one key.
pub const KEY_REASK_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// The wait after a round that reached its cap (of key requests or backup
/// lookups) before the next, so a flood of undecryptable events is worked
/// through at a bounded rate rather than in back-to-back rounds.
pub const ROUND_INTERVAL: Duration = Duration::from_secs(10);
/// How many stored sessions are remembered, so an event that fails while
/// its key is being stored (a decryption racing a sync) is still retried.
const RECENT_KEYS: usize = 4096;

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
    /// The settings it was decrypted with (and is decrypted again with).
    #[serde(default)]
    pub settings: DecryptionSettings,
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
    pub(crate) fn from_event(
        room_id: &RoomId,
        event: &serde_json::value::RawValue,
        settings: DecryptionSettings,
    ) -> Option<Self> {
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
            settings,
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
    /// Sessions a key of which was stored since the last retry.
    retry_sessions: BTreeSet<String>,
    /// Senders whose devices or identity changed since the last retry.
    retry_senders: BTreeSet<OwnedUserId>,
    /// Every event is tried again once (loaded after a restart).
    retry_all: bool,
    /// (room, session) → when it was last asked of our devices (or found
    /// no device to ask), and how many times.
    asked: BTreeMap<(OwnedRoomId, String), (Timestamp, u32)>,
    /// No read of the backup before this (its last answer was unreadable).
    read_held_until: Option<Timestamp>,
    /// Events that decrypted late, announced and not yet drained: saved as
    /// waiting, so a crash before the caller took them announces them again.
    undrained: VecDeque<PendingEvent>,
    /// A drain changed the record, and no save has carried it yet.
    drained_unsaved: bool,
    /// No round of key requests before this (the last one reached its cap).
    asks_held_until: Option<Timestamp>,
    /// The sessions stored lately, newest last, and how often each is in
    /// the list.
    recent_keys: VecDeque<String>,
    recent_counts: HashMap<String, usize>,
}

impl PendingDecryptions {
    /// Keeps `event` (once per room and event id), dropping the oldest over
    /// the bounds.
    pub(crate) fn record(&mut self, event: PendingEvent) {
        if !self.ids.insert(event.id()) {
            return;
        }
        if self.recent_counts.contains_key(&event.session_id) {
            // Its key was stored while this event was being decrypted.
            self.retry_sessions.insert(event.session_id.clone());
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

    /// [`resolved`](Self::resolved) for a late decryption announced in the
    /// event queue: it waits no more, but stays in the saved record until
    /// [`drained`](Self::drained).
    pub(crate) fn resolved_until_drained(&mut self, room_id: &RoomId, event_id: &str) -> bool {
        let Some(event) = self.events.iter().find(|e| e.event_id == event_id && e.room_id == room_id).cloned() else {
            return false;
        };
        if !self.resolved(room_id, event_id) {
            return false;
        }
        self.undrained.push_back(event);
        while self.undrained.len() > MAX_SAVED {
            self.undrained.pop_front();
        }
        true
    }

    /// The late decryption of `event_id` was drained: the next record no
    /// longer holds it.
    pub(crate) fn drained(&mut self, room_id: &RoomId, event_id: &str) {
        let before = self.undrained.len();
        self.undrained.retain(|e| !(e.event_id == event_id && e.room_id == room_id));
        if self.undrained.len() != before {
            self.dirty = true;
            self.drained_unsaved = true;
        }
    }

    /// Whether a drain changed the record and it should be saved on its own.
    pub(crate) fn save_due(&self) -> bool {
        self.drained_unsaved
    }

    /// The retry of an event of `session_id` failed to save: try again.
    pub(crate) fn retry_later(&mut self, session_id: &str) {
        self.retry_sessions.insert(session_id.to_owned());
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

    /// When the next round of key requests is due, given which keys have a
    /// request open (`is_open`): [`Timestamp::EPOCH`] (at once) for a key
    /// never asked, else the end of its wait; `None` if no key needs one.
    pub(crate) fn key_requests_deadline(
        &self,
        is_open: impl Fn(&RoomId, &str) -> bool,
        backup_first: bool,
    ) -> Option<Timestamp> {
        let held = self.asks_held_until.unwrap_or(Timestamp::EPOCH);
        self.wanted_keys()
            .into_iter()
            .filter(|(room_id, session_id)| !is_open(room_id, session_id))
            .filter(|key| !backup_first || self.looked.contains_key(key))
            .map(|key| self.asked.get(&key).map_or(Timestamp::EPOCH, |&(at, times)| reask_at(at, times)))
            .min()
            .map(|due| due.max(held))
    }

    /// The keys to ask our own devices for at `now`: those with no request
    /// open (`is_open`) that were never asked or whose wait ended, and, with
    /// `backup_first` (a backup can be read), that the backup was searched
    /// for already (a key the backup has needs no device to answer), at most
    /// [`KEY_REQUESTS_PER_ROUND`]. They count as asked from now (also when
    /// the caller finds no device to ask: they are due again after their
    /// wait, or when a device of ours appears).
    pub(crate) fn take_key_requests(
        &mut self,
        now: Timestamp,
        is_open: impl Fn(&RoomId, &str) -> bool,
        backup_first: bool,
    ) -> Vec<(OwnedRoomId, String)> {
        if self.asks_held_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        let wanted = self.wanted_keys();
        let live: BTreeSet<&(OwnedRoomId, String)> = wanted.iter().collect();
        self.asked.retain(|key, _| live.contains(key));
        let due: Vec<(OwnedRoomId, String)> = wanted
            .iter()
            .filter(|(room_id, session_id)| !is_open(room_id, session_id))
            .filter(|key| !backup_first || self.looked.contains_key(*key))
            .filter(|key| self.asked.get(*key).is_none_or(|&(at, times)| reask_at(at, times) <= now))
            .take(KEY_REQUESTS_PER_ROUND)
            .cloned()
            .collect();
        for key in &due {
            let times = self.asked.get(key).map_or(0, |&(_, times)| times);
            self.asked.insert(key.clone(), (now, times.saturating_add(1)));
        }
        if due.len() == KEY_REQUESTS_PER_ROUND {
            self.asks_held_until = Some(now.saturating_add(ROUND_INTERVAL));
        }
        due
    }

    /// A device of ours appeared: every missing key may be asked at once.
    pub(crate) fn own_devices_changed(&mut self) {
        self.asked.clear();
    }

    /// Keys of `sessions` were stored: their waiting events are due to be
    /// decrypted again.
    pub(crate) fn keys_arrived<'a>(&mut self, sessions: impl IntoIterator<Item = &'a str>) {
        let sessions: Vec<&str> = sessions.into_iter().collect();
        let waiting: HashSet<&str> = self.events.iter().map(|e| e.session_id.as_str()).collect();
        let due: Vec<String> = sessions.iter().filter(|s| waiting.contains(**s)).map(|s| (*s).to_owned()).collect();
        self.retry_sessions.extend(due);
        for session_id in sessions {
            self.remember_stored(session_id);
        }
    }

    fn remember_stored(&mut self, session_id: &str) {
        self.recent_keys.push_back(session_id.to_owned());
        *self.recent_counts.entry(session_id.to_owned()).or_default() += 1;
        while self.recent_keys.len() > RECENT_KEYS {
            let Some(oldest) = self.recent_keys.pop_front() else { break };
            if let Some(count) = self.recent_counts.get_mut(&oldest) {
                *count -= 1;
                if *count == 0 {
                    self.recent_counts.remove(&oldest);
                }
            }
        }
    }

    /// `sender`'s devices or identity changed: its waiting events are due
    /// to be decrypted again (a sender refused as not trusted enough may be
    /// now).
    pub(crate) fn sender_changed(&mut self, sender: &OwnedUserId) {
        if self.events.iter().any(|e| e.sender == *sender) {
            self.retry_senders.insert(sender.clone());
        }
    }

    /// Whether waiting events are due to be decrypted again.
    pub(crate) fn retry_due(&self) -> bool {
        self.retry_all || !self.retry_sessions.is_empty() || !self.retry_senders.is_empty()
    }

    /// The waiting events due to be decrypted again, oldest first; they stay
    /// waiting until a decryption succeeds.
    pub(crate) fn take_retries(&mut self) -> Vec<PendingEvent> {
        let all = std::mem::take(&mut self.retry_all);
        let sessions = std::mem::take(&mut self.retry_sessions);
        let senders = std::mem::take(&mut self.retry_senders);
        self.select(|e| all || sessions.contains(&e.session_id) || senders.contains(&e.sender))
    }

    /// Whether the backup must be read at `now` for the waiting keys: one
    /// was never looked up, or the recheck of those that were is due.
    pub(crate) fn backup_read_due(&self, now: Timestamp) -> Option<BackupReadDue> {
        if self.read_held_until.is_some_and(|until| now < until) {
            return None;
        }
        let (fresh, looked_before) = self.backup_wants();
        let recheck = looked_before && self.recheck_at() <= now;
        (fresh || recheck).then_some(BackupReadDue { recheck })
    }

    /// A read of the backup gave nothing usable: the next waits for the
    /// recheck interval.
    pub(crate) fn backup_read_fruitless(&mut self, now: Timestamp) {
        self.read_held_until = Some(now.saturating_add(BACKUP_RECHECK));
    }

    /// When the backup is next due to be read for the waiting keys
    /// ([`Timestamp::EPOCH`]: at once), if ever.
    pub(crate) fn backup_read_deadline(&self) -> Option<Timestamp> {
        let due = match self.backup_wants() {
            (true, _) => Timestamp::EPOCH,
            (false, true) => self.recheck_at(),
            (false, false) => return None,
        };
        Some(due.max(self.read_held_until.unwrap_or(Timestamp::EPOCH)))
    }

    /// Whether a waiting key was never looked up, and whether one was.
    fn backup_wants(&self) -> (bool, bool) {
        let wanted = self.wanted_keys();
        let fresh = wanted.iter().any(|k| !self.looked.contains_key(k));
        let looked_before = wanted.iter().any(|k| self.looked.contains_key(k));
        (fresh, looked_before)
    }

    fn recheck_at(&self) -> Timestamp {
        self.rechecked_at.map_or(Timestamp::EPOCH, |at| at.saturating_add(BACKUP_RECHECK))
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
        if wanted.len() == BACKUP_LOOKUPS_PER_ROUND {
            self.read_held_until = Some(now.saturating_add(ROUND_INTERVAL));
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
        self.drained_unsaved = false;
        let mut bytes = 0;
        // Announced but not drained first, then the newest waiting events.
        let mut newest: Vec<&PendingEvent> = self
            .events
            .iter()
            .chain(self.undrained.iter())
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
            if let Some(checked) = PendingEvent::from_event(&event.room_id, event.event.json(), event.settings) {
                pending.record(checked);
            }
        }
        pending.dirty = false;
        // A key may have arrived just before the engine stopped.
        pending.retry_all = pending.len() > 0;
        pending
    }
}

impl PendingDecryptions {
    /// Another process held the store meanwhile: the events it saved as
    /// waiting join ours (ours may not all be in its record, and its
    /// newest are not in ours), and all are decrypted again (it may have
    /// stored their keys). One it healed meanwhile is announced here too,
    /// once; an application replaces a late decryption by its event id.
    pub(crate) fn merge_stored(&mut self, record: Option<&[u8]>) {
        let stored = Self::from_record(record);
        for event in stored.events {
            self.record(event);
        }
        self.retry_all = self.len() > 0;
        self.dirty = true;
    }
}

/// When a key asked `times` times, last at `at`, is due to be asked again.
fn reask_at(at: Timestamp, times: u32) -> Timestamp {
    let doublings = times.saturating_sub(1).min(16);
    let wait = KEY_REASK_FIRST.saturating_mul(1 << doublings).min(KEY_REASK_MAX);
    at.saturating_add(wait)
}

#[cfg(test)]
mod tests;
