//! [`ClaimState`]: the rules and timers for making Olm sessions.
//!
//! * **Claim back-off.** A device whose one-time key could not be claimed
//!   (none left, a bad signature) waits 15 s before the next try, doubling
//!   per failure up to 30 min.
//! * **Unwedging.** A known device whose messages no session decrypts gets
//!   a new session (a claim, then an `m.dummy` over it), at most once an
//!   hour per device key. A wedge reported sooner is not forgotten: it is
//!   deferred until the hour is over, and `poll_timeout` names that time.
//!
//! All of it is persisted as one named value saved with the input that
//! changed it, so a restart neither forgets a back-off or a deferred
//! unwedge nor hands out a fresh budget.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use vodozemac::Curve25519PublicKey;

use crate::Timestamp;

/// First retry delay after a failed claim; doubles per failure.
pub(crate) const CLAIM_BACKOFF_BASE: Duration = Duration::from_secs(15);
/// Longest retry delay after failed claims.
pub(crate) const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// A wedged session with one device is replaced at most this often.
pub(crate) const UNWEDGE_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// A back-off entry this long past its retry time is forgotten.
const BACKOFF_FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The named value the state is persisted under.
pub(crate) const CLAIMS_RECORD: &str = "hush.core.olm_claims";
/// Where an older version kept the unwedging budget alone.
pub(crate) const LEGACY_UNWEDGE_RECORD: &str = "hush.core.unwedge";

/// A device, by user and device id.
pub(crate) type DeviceKey = (OwnedUserId, OwnedDeviceId);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Backoff {
    failures: u32,
    retry_at: Timestamp,
}

/// The persisted form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    backoff: Vec<(OwnedUserId, OwnedDeviceId, Backoff)>,
    wedged: Vec<(OwnedUserId, OwnedDeviceId)>,
    last_unwedge: Vec<(String, Timestamp)>,
    deferred: Vec<(OwnedUserId, OwnedDeviceId, String, Timestamp)>,
}

/// What became of a wedge report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WedgeDecision {
    /// A new session is to be claimed now.
    UnwedgeNow,
    /// The hourly budget is spent; the unwedge runs at this time.
    Deferred(Timestamp),
}

/// Claim back-off, wedged devices and the unwedging budget.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClaimState {
    backoff: HashMap<DeviceKey, Backoff>,
    /// Devices whose session no longer decrypts: a claim is listed for them.
    wedged: HashSet<DeviceKey>,
    /// When each device key last had its session replaced.
    last_unwedge: HashMap<Curve25519PublicKey, Timestamp>,
    /// Unwedges waiting for the budget, with the device key and the time.
    deferred: HashMap<DeviceKey, (Curve25519PublicKey, Timestamp)>,
}

impl ClaimState {
    /// Whether `device` may be claimed at `now` (not in back-off).
    pub(crate) fn may_claim(&self, device: &DeviceKey, now: Timestamp) -> bool {
        self.backoff.get(device).is_none_or(|b| now >= b.retry_at)
    }

    /// A claim for `device` failed at `now`.
    pub(crate) fn record_failure(&mut self, device: DeviceKey, now: Timestamp) {
        let failures = self.backoff.get(&device).map_or(1, |b| b.failures.saturating_add(1));
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        let delay = CLAIM_BACKOFF_BASE.saturating_mul(factor).min(CLAIM_BACKOFF_MAX);
        self.backoff.insert(device, Backoff { failures, retry_at: now.saturating_add(delay) });
    }

    /// A session with `device` was made: back-off and wedge are over, and
    /// a deferred unwedge (from the same burst of undecryptable messages)
    /// is moot.
    /// Returns whether anything changed.
    pub(crate) fn record_success(&mut self, device: &DeviceKey) -> bool {
        let backoff = self.backoff.remove(device).is_some();
        let wedged = self.wedged.remove(device);
        let deferred = self.deferred.remove(device).is_some();
        backoff || wedged || deferred
    }

    /// Whether no device is in back-off, wedged or waiting to be unwedged
    /// (the unwedging budget aside).
    pub(crate) fn is_idle(&self) -> bool {
        self.backoff.is_empty() && self.wedged.is_empty() && self.deferred.is_empty()
    }

    /// Forgets a user's devices (no longer tracked): no claim or unwedge
    /// is made for them any more.
    pub(crate) fn forget_user(&mut self, user_id: &ruma_common::UserId) {
        self.backoff.retain(|(u, _), _| u != user_id);
        self.wedged.retain(|(u, _)| u != user_id);
        self.deferred.retain(|(u, _), _| u != user_id);
    }

    pub(crate) fn is_wedged(&self, device: &DeviceKey) -> bool {
        self.wedged.contains(device)
    }

    /// Devices waiting for a new session.
    pub(crate) fn wedged(&self) -> Vec<DeviceKey> {
        let mut devices: Vec<_> = self.wedged.iter().cloned().collect();
        devices.sort();
        devices
    }

    /// A known device's message failed to decrypt with every session.
    pub(crate) fn report_wedged(
        &mut self,
        device: DeviceKey,
        sender_key: Curve25519PublicKey,
        now: Timestamp,
    ) -> WedgeDecision {
        let next_allowed = self.last_unwedge.get(&sender_key).map(|last| last.saturating_add(UNWEDGE_INTERVAL));
        match next_allowed {
            Some(at) if at > now => {
                self.deferred.insert(device, (sender_key, at));
                WedgeDecision::Deferred(at)
            }
            _ => {
                self.last_unwedge.insert(sender_key, now);
                self.deferred.remove(&device);
                self.wedged.insert(device);
                WedgeDecision::UnwedgeNow
            }
        }
    }

    /// The earliest time something here is due: a back-off ending or a
    /// deferred unwedge, after `now`... or at or before it if not handled.
    pub(crate) fn next_deadline(&self, handled_until: Timestamp) -> Option<Timestamp> {
        let backoffs = self.backoff.values().map(|b| b.retry_at);
        let deferred = self.deferred.values().map(|(_, at)| *at);
        backoffs.chain(deferred).filter(|at| *at > handled_until).min()
    }

    /// Runs what is due at `now`: deferred unwedges become claims. Returns
    /// whether the persisted state changed.
    pub(crate) fn handle_timeout(&mut self, now: Timestamp) -> bool {
        let due: Vec<DeviceKey> =
            self.deferred.iter().filter(|(_, (_, at))| *at <= now).map(|(device, _)| device.clone()).collect();
        for device in &due {
            if let Some((sender_key, _)) = self.deferred.remove(device) {
                tracing::info!(user_id = %device.0, device_id = %device.1, "deferred unwedge is due");
                self.last_unwedge.insert(sender_key, now);
                self.wedged.insert(device.clone());
            }
        }
        let before = self.backoff.len();
        self.backoff.retain(|_, b| now.saturating_duration_since(b.retry_at) < BACKOFF_FORGOTTEN_AFTER);
        !due.is_empty() || before != self.backoff.len()
    }

    /// The persisted form, as a named value; stale budget entries dropped.
    pub(crate) fn record(&mut self, now: Timestamp) -> (String, Vec<u8>) {
        self.last_unwedge.retain(|_, last| now.saturating_duration_since(*last) < UNWEDGE_INTERVAL);
        self.record_unpruned()
    }

    /// The persisted form, as a named value, without pruning.
    pub(crate) fn record_unpruned(&self) -> (String, Vec<u8>) {
        let mut record = Record {
            backoff: self.backoff.iter().map(|((u, d), b)| (u.clone(), d.clone(), *b)).collect(),
            wedged: self.wedged(),
            last_unwedge: self.last_unwedge.iter().map(|(key, at)| (key.to_base64(), *at)).collect(),
            deferred: self
                .deferred
                .iter()
                .map(|((u, d), (k, at))| (u.clone(), d.clone(), k.to_base64(), *at))
                .collect(),
        };
        record.backoff.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        record.last_unwedge.sort();
        record.deferred.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        (CLAIMS_RECORD.to_owned(), serde_json::to_vec(&record).unwrap_or_default())
    }

    /// The state read back from the store. A damaged record is ignored (it
    /// holds rate limits, not secrets); keys in it go through the checked
    /// decoder. An older store's budget-only record is read if no full
    /// record exists.
    pub(crate) fn from_records(record: Option<&[u8]>, legacy_unwedge: Option<&[u8]>) -> Self {
        let decode = |key: &str| crate::keys::curve25519_from_base64(key).ok();
        let record: Record = match record {
            Some(bytes) => serde_json::from_slice(bytes).unwrap_or_default(),
            None => Record {
                last_unwedge: legacy_unwedge.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default(),
                ..Record::default()
            },
        };
        Self {
            backoff: record.backoff.into_iter().map(|(u, d, b)| ((u, d), b)).collect(),
            wedged: record.wedged.into_iter().collect(),
            last_unwedge: record.last_unwedge.iter().filter_map(|(k, at)| Some((decode(k)?, *at))).collect(),
            deferred: record
                .deferred
                .into_iter()
                .filter_map(|(u, d, k, at)| Some(((u, d), (decode(&k)?, at))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::{owned_device_id, owned_user_id};

    use super::*;

    fn device() -> DeviceKey {
        (owned_user_id!("@bob:x.y"), owned_device_id!("BOB"))
    }

    fn key() -> Curve25519PublicKey {
        Curve25519PublicKey::from_bytes([7; 32])
    }

    #[test]
    fn back_off_doubles_and_survives_a_round_trip() {
        let mut state = ClaimState::default();
        let t0 = Timestamp::from_millis(1_000_000);
        state.record_failure(device(), t0);
        assert!(!state.may_claim(&device(), t0));
        assert_eq!(state.next_deadline(t0), Some(t0.saturating_add(CLAIM_BACKOFF_BASE)));
        let t1 = t0.saturating_add(CLAIM_BACKOFF_BASE);
        state.record_failure(device(), t1);
        assert_eq!(state.next_deadline(t1), Some(t1.saturating_add(CLAIM_BACKOFF_BASE * 2)));
        let (_, bytes) = state.record(t1);
        let restored = ClaimState::from_records(Some(&bytes), None);
        assert_eq!(restored.next_deadline(t1), Some(t1.saturating_add(CLAIM_BACKOFF_BASE * 2)));
        assert!(!restored.may_claim(&device(), t1));
        assert!(restored.may_claim(&device(), t1.saturating_add(CLAIM_BACKOFF_BASE * 2)));
    }

    #[test]
    fn a_second_wedge_within_the_hour_is_deferred_then_run() {
        let mut state = ClaimState::default();
        let t0 = Timestamp::from_millis(5_000_000);
        assert_eq!(state.report_wedged(device(), key(), t0), WedgeDecision::UnwedgeNow);
        // More messages of the same burst are deferred; the new session settles them.
        assert!(matches!(state.report_wedged(device(), key(), t0), WedgeDecision::Deferred(_)));
        state.record_success(&device());
        assert_eq!(state.next_deadline(t0), None, "the burst's deferral is moot once a session is made");
        let later = t0.saturating_add(Duration::from_secs(60));
        let due = t0.saturating_add(UNWEDGE_INTERVAL);
        assert_eq!(state.report_wedged(device(), key(), later), WedgeDecision::Deferred(due));
        assert!(!state.is_wedged(&device()));
        let (_, bytes) = state.record(later);
        let mut restored = ClaimState::from_records(Some(&bytes), None);
        assert_eq!(restored.next_deadline(later), Some(due));
        assert!(restored.handle_timeout(due));
        assert!(restored.is_wedged(&device()));
        assert_eq!(restored.next_deadline(due), None);
    }

    #[test]
    fn a_damaged_record_is_ignored_and_the_old_budget_is_read() {
        assert!(ClaimState::from_records(Some(b"not json"), None).wedged().is_empty());
        let legacy = serde_json::to_vec(&vec![(key().to_base64(), Timestamp::from_millis(10))]).unwrap();
        let mut state = ClaimState::from_records(None, Some(&legacy));
        let soon = Timestamp::from_millis(20);
        assert!(matches!(state.report_wedged(device(), key(), soon), WedgeDecision::Deferred(_)));
    }
}
