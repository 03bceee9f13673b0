//! How many requests of our own devices (`m.secret.request`,
//! `m.room_key_request`, and their cancellations) one sync handles.
//! Requests come in the clear, so the sender is checked first (only our
//! own user's known devices count, see `machine/gossip.rs`); then each
//! device has a budget of its own inside the sync's: one device asking a
//! lot, or a flood under its name, never crowds out another device's
//! request. A request repeated in one sync is handled once.

use std::collections::{BTreeMap, BTreeSet};

use ruma_common::{DeviceId, OwnedDeviceId};

/// The most requests handled per sync, all devices together.
pub const REQUESTS_PER_SYNC: usize = 64;
/// The most requests handled per sync from one device (a new login asks
/// for the keys of a whole page of history at once).
pub const REQUESTS_PER_DEVICE: usize = 32;

/// One sync's budget.
#[derive(Debug, Default)]
pub struct RequestBudget {
    seen: BTreeSet<(OwnedDeviceId, String, bool)>,
    per_device: BTreeMap<OwnedDeviceId, usize>,
}

/// Why a request was not handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The same device sent the same request id before in this sync.
    Repeated,
    /// The device used its share of this sync.
    DeviceBudget,
    /// The sync's budget is used up.
    SyncBudget,
}

impl RequestBudget {
    /// Counts a request (or, with `cancellation`, its withdrawal) from
    /// `device` (already checked to be one of ours), or says why it is
    /// skipped. A request and its cancellation in one sync are both
    /// handled, in order.
    pub fn admit(&mut self, device: &DeviceId, request_id: &str, cancellation: bool) -> Result<(), Skipped> {
        let key = (device.to_owned(), request_id.to_owned(), cancellation);
        if self.seen.contains(&key) {
            return Err(Skipped::Repeated);
        }
        if self.seen.len() >= REQUESTS_PER_SYNC {
            return Err(Skipped::SyncBudget);
        }
        let used = self.per_device.entry(device.to_owned()).or_default();
        if *used >= REQUESTS_PER_DEVICE {
            return Err(Skipped::DeviceBudget);
        }
        *used += 1;
        self.seen.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_cannot_use_up_another_devices_share() {
        let mut budget = RequestBudget::default();
        let (loud, quiet) = (<&DeviceId>::from("LOUD"), <&DeviceId>::from("QUIET"));
        for n in 0..1000 {
            let admitted = budget.admit(loud, &format!("r{n}"), false);
            assert_eq!(admitted.is_ok(), n < REQUESTS_PER_DEVICE, "request {n}");
        }
        assert_eq!(budget.admit(quiet, "genuine", false), Ok(()));
        assert_eq!(budget.admit(quiet, "genuine", false), Err(Skipped::Repeated));
        assert_eq!(budget.admit(quiet, "genuine", true), Ok(()), "its cancellation is not a repeat");
    }

    #[test]
    fn the_sync_budget_bounds_all_devices_together() {
        let mut budget = RequestBudget::default();
        let devices: Vec<OwnedDeviceId> = (0..10).map(|n| format!("D{n}").into()).collect();
        let mut admitted = 0;
        for device in &devices {
            for n in 0..REQUESTS_PER_DEVICE {
                admitted += usize::from(budget.admit(device, &format!("r{n}"), false).is_ok());
            }
        }
        assert_eq!(admitted, REQUESTS_PER_SYNC);
        assert_eq!(budget.admit(&devices[9], "late", false), Err(Skipped::SyncBudget));
    }
}
