//! [`DeviceTracker`]: whose device lists we follow, which are outdated, and
//! when a failed query is tried again.
//!
//! A tracked user is *dirty* when their list may have changed (new, marked
//! by a sync's `device_lists.changed`, or a message from an unknown device);
//! a keys query is listed for dirty users. Each mark bumps a generation, so
//! the answer to an older query never clears a newer mark. A user whose
//! server could not be reached stays dirty and is queried again after a
//! back-off (15 s doubling to 30 min), persisted so a restart keeps it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ruma_common::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use vodozemac::Curve25519PublicKey;

use crate::{Timestamp, store::TrackedUser};

/// The most users one `/keys/query` request names.
pub(crate) const KEYS_QUERY_BATCH: usize = 250;
/// The most unknown-device reports remembered before the set starts afresh.
const UNKNOWN_REPORTS_KEPT: usize = 10_000;
/// First retry delay after a failed query; doubles per failure.
const QUERY_BACKOFF_BASE: Duration = Duration::from_secs(15);
/// Longest retry delay after failed queries.
const QUERY_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// The named value the query back-off is persisted under.
pub(crate) const QUERY_RETRY_RECORD: &str = "hush.core.query_retry";

#[derive(Clone, Copy, Debug)]
struct UserState {
    dirty: bool,
    generation: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Retry {
    failures: u32,
    retry_at: Timestamp,
}

/// The tracked users, in memory; persisted as [`TrackedUser`] rows plus the
/// query back-off record.
#[derive(Debug, Default)]
pub(crate) struct DeviceTracker {
    users: HashMap<OwnedUserId, UserState>,
    /// Unknown devices (user, curve25519 key) that already triggered a query.
    unknown_reported: HashSet<(OwnedUserId, Curve25519PublicKey)>,
    retry: HashMap<OwnedUserId, Retry>,
}

impl DeviceTracker {
    /// The tracker as stored; a damaged back-off record is ignored.
    pub(crate) fn from_stored(users: Vec<TrackedUser>, retry_record: Option<&[u8]>) -> Self {
        let users = users.into_iter().map(|u| (u.user_id, UserState { dirty: u.dirty, generation: 0 })).collect();
        let retry: Vec<(OwnedUserId, Retry)> =
            retry_record.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
        Self { users, unknown_reported: HashSet::new(), retry: retry.into_iter().collect() }
    }

    /// Whether this is the first report of this unknown device (bounded memory).
    pub(crate) fn first_unknown_device_report(&mut self, user_id: &UserId, key: Curve25519PublicKey) -> bool {
        if self.unknown_reported.len() >= UNKNOWN_REPORTS_KEPT {
            self.unknown_reported.clear();
        }
        self.unknown_reported.insert((user_id.to_owned(), key))
    }

    pub(crate) fn row(user_id: &UserId, dirty: bool) -> TrackedUser {
        TrackedUser { user_id: user_id.to_owned(), dirty }
    }

    /// Marks every tracked user outdated. Returns the rows to save.
    pub(crate) fn mark_all_dirty(&mut self) -> Vec<TrackedUser> {
        let users: Vec<OwnedUserId> = self.users.keys().cloned().collect();
        users.iter().filter_map(|u| self.mark_dirty(u)).collect()
    }

    /// Starts tracking `user_id` (dirty). Returns the row to save if it is new.
    pub(crate) fn track(&mut self, user_id: &UserId) -> Option<TrackedUser> {
        if self.users.contains_key(user_id) {
            return None;
        }
        self.users.insert(user_id.to_owned(), UserState { dirty: true, generation: 1 });
        Some(Self::row(user_id, true))
    }

    /// Stops tracking `user_id`; whether it was tracked.
    pub(crate) fn untrack(&mut self, user_id: &UserId) -> bool {
        self.retry.remove(user_id);
        self.users.remove(user_id).is_some()
    }

    /// Marks a tracked user dirty. Returns the row to save.
    pub(crate) fn mark_dirty(&mut self, user_id: &UserId) -> Option<TrackedUser> {
        let state = self.users.get_mut(user_id)?;
        state.dirty = true;
        state.generation += 1;
        Some(Self::row(user_id, true))
    }

    pub(crate) fn is_tracked(&self, user_id: &UserId) -> bool {
        self.users.contains_key(user_id)
    }

    pub(crate) fn is_dirty(&self, user_id: &UserId) -> bool {
        self.users.get(user_id).is_some_and(|s| s.dirty)
    }

    /// Every tracked user.
    pub(crate) fn users(&self) -> Vec<OwnedUserId> {
        self.users.keys().cloned().collect()
    }

    /// Dirty users to query at `now` (not waiting out a back-off), sorted,
    /// with their generations.
    pub(crate) fn users_to_query(&self, now: Timestamp) -> Vec<(OwnedUserId, u64)> {
        let mut users: Vec<_> = self
            .users
            .iter()
            .filter(|(u, s)| s.dirty && self.retry.get(*u).is_none_or(|r| now >= r.retry_at))
            .map(|(u, s)| (u.clone(), s.generation))
            .collect();
        users.sort();
        users
    }

    /// Whether a dirty user is waiting out a query back-off at `now`.
    pub(crate) fn is_waiting_to_retry(&self, user_id: &UserId, now: Timestamp) -> bool {
        self.retry.get(user_id).is_some_and(|r| r.retry_at > now)
    }

    pub(crate) fn generation(&self, user_id: &UserId) -> Option<u64> {
        self.users.get(user_id).map(|s| s.generation)
    }

    /// An answer for `user_id` arrived: its back-off is over.
    pub(crate) fn clear_retry(&mut self, user_id: &UserId) {
        self.retry.remove(user_id);
    }

    /// The answer for `user_id` arrived: clean unless marked again since.
    pub(crate) fn mark_clean(&mut self, user_id: &UserId, generation: u64) {
        self.retry.remove(user_id);
        if let Some(state) = self.users.get_mut(user_id)
            && state.generation == generation
        {
            state.dirty = false;
        }
    }

    /// The user's server could not be reached: retry after a back-off.
    pub(crate) fn record_failure(&mut self, user_id: &UserId, now: Timestamp) {
        let failures = self.retry.get(user_id).map_or(1, |r| r.failures.saturating_add(1));
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        let delay = QUERY_BACKOFF_BASE.saturating_mul(factor).min(QUERY_BACKOFF_MAX);
        self.retry.insert(user_id.to_owned(), Retry { failures, retry_at: now.saturating_add(delay) });
    }

    /// The earliest retry after `handled_until`.
    pub(crate) fn next_deadline(&self, handled_until: Timestamp) -> Option<Timestamp> {
        self.retry.values().map(|r| r.retry_at).filter(|at| *at > handled_until).min()
    }

    /// The persisted back-off, as a named value.
    pub(crate) fn retry_record(&self) -> (String, Vec<u8>) {
        self.retry_record_excluding(&[])
    }

    /// The persisted back-off without the entries of `answered` (users whose
    /// answer is being saved: their back-off ends with it).
    pub(crate) fn retry_record_excluding(&self, answered: &[&OwnedUserId]) -> (String, Vec<u8>) {
        let mut rows: Vec<(&OwnedUserId, &Retry)> = self.retry.iter().filter(|(u, _)| !answered.contains(u)).collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        (QUERY_RETRY_RECORD.to_owned(), serde_json::to_vec(&rows).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::user_id;

    use super::*;

    #[test]
    fn an_older_answer_does_not_clear_a_newer_mark() {
        let mut tracker = DeviceTracker::default();
        let alice = user_id!("@alice:x.y");
        tracker.track(alice);
        let first = tracker.generation(alice).unwrap();
        tracker.mark_dirty(alice);
        tracker.mark_clean(alice, first);
        assert!(tracker.is_dirty(alice));
        tracker.mark_clean(alice, tracker.generation(alice).unwrap());
        assert!(!tracker.is_dirty(alice));
    }

    #[test]
    fn a_failed_query_waits_and_the_wait_survives_a_restart() {
        let mut tracker = DeviceTracker::default();
        let alice = user_id!("@alice:x.y");
        tracker.track(alice);
        let t0 = Timestamp::from_millis(1_000);
        tracker.record_failure(alice, t0);
        assert!(tracker.users_to_query(t0).is_empty());
        let at = t0.saturating_add(QUERY_BACKOFF_BASE);
        assert_eq!(tracker.next_deadline(t0), Some(at));
        let (_, bytes) = tracker.retry_record();
        let restored = DeviceTracker::from_stored(vec![DeviceTracker::row(alice, true)], Some(&bytes));
        assert!(restored.users_to_query(t0).is_empty());
        assert!(restored.is_waiting_to_retry(alice, t0));
        assert_eq!(restored.users_to_query(at).len(), 1);
    }
}
