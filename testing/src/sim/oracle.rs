//! What the simulator knows and the devices do not: who was a member of
//! each room when each event was sent (so who may read it), what each
//! device made of each event, and which faults could have kept a key from
//! a device. [`legitimate`] judges a device's unable-to-decrypt cause
//! against that truth.

use std::collections::{BTreeMap, BTreeSet};

use hush_crypto_core::{Membership, UtdCause, WithheldCode};
use ruma_common::OwnedRoomId;
use ruma_events::room::history_visibility::HistoryVisibility;
use serde_json::Value;

use super::schedule::USERS;

/// A room: its history visibility and each user's membership.
#[derive(Debug)]
pub(super) struct SimRoom {
    pub(super) room_id: OwnedRoomId,
    pub(super) visibility: HistoryVisibility,
    pub(super) membership: [Membership; USERS],
    /// Whether the user was ever joined: the (hostile) server serves such
    /// users the whole timeline, readable or not.
    pub(super) ever_joined: [bool; USERS],
}

impl SimRoom {
    /// Who may read an event sent now: joined members, and invited ones
    /// unless the history is visible to joined members only (the spec's
    /// `m.room.history_visibility`, written from the spec, not from hush).
    pub(super) fn entitled_now(&self) -> BTreeSet<usize> {
        (0..USERS)
            .filter(|&u| match self.membership[u] {
                Membership::Join => true,
                Membership::Invite => self.visibility != HistoryVisibility::Joined,
                Membership::Leave => false,
            })
            .collect()
    }
}

/// An event sent in the run.
#[derive(Debug)]
pub(super) struct SimEvent {
    pub(super) room: usize,
    pub(super) raw: Value,
    pub(super) event_id: String,
    pub(super) body: String,
    pub(super) sender_device: usize,
    pub(super) session_id: String,
    /// When it was sent (op number).
    pub(super) step: usize,
    /// The op from which its Megolm session may have existed (a lower
    /// bound: faults on the sender's messages before it cannot have
    /// carried its key).
    pub(super) session_start: usize,
    /// Its Megolm message index.
    pub(super) index: u32,
    pub(super) entitled: BTreeSet<usize>,
}

/// How a key that was missing arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum HealPath {
    /// The room key arrived late over Olm (a held-back message, a re-share).
    LateKey,
    /// Our key backup.
    Backup,
    /// Forwarded by one of our own devices in answer to our request.
    OwnDevice,
}

/// How an event that was unreadable became readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Healed {
    /// How its key came.
    pub(super) path: HealPath,
    /// The cause it had when first read.
    pub(super) first: UtdCause,
}

/// What a device made of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// Decrypted; `healed` says how, if it was unreadable first.
    Decrypted { healed: Option<Healed> },
    /// Unreadable, for this cause (the first cause it got is kept in `first`).
    Utd { cause: UtdCause, first: UtdCause },
}

/// A fault that could keep a room key from a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Blame {
    /// A to-device message from the sender to the device was lost.
    Lost,
    /// A to-device message from the sender to the device was replaced by
    /// one no session decrypts.
    Corrupted,
    /// The sender did not know the device when it sent (it had not synced
    /// since the device appeared).
    UnknownToSender,
}

impl Blame {
    /// Its name in tallies.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Lost => "to-device lost",
            Self::Corrupted => "to-device corrupted",
            Self::UnknownToSender => "sender's device list out of date",
        }
    }
}

/// Faults per (device, sender device), with the op they happened at, and
/// per (device, event).
#[derive(Debug, Default)]
pub(super) struct Blames {
    pub(super) pairs: BTreeMap<(usize, usize), Vec<(usize, Blame)>>,
    pub(super) events: BTreeMap<(usize, usize), BTreeSet<Blame>>,
}

impl Blames {
    /// Everything that could have kept `event`'s key from `device`: faults
    /// on its own path, and faults on the sender's messages to the device
    /// from the op its session began on (a message lost before the room
    /// key existed cannot have carried it; Olm decrypts past a gap).
    pub(super) fn of(&self, device: usize, event: usize, ev: &SimEvent) -> BTreeSet<Blame> {
        let faults = self.pairs.get(&(device, ev.sender_device)).into_iter().flatten();
        let mut all: BTreeSet<Blame> =
            faults.filter(|(step, _)| *step >= ev.session_start).map(|(_, blame)| *blame).collect();
        all.extend(self.events.get(&(device, event)).into_iter().flatten());
        all
    }
}

/// What the truth says about a device and an event.
#[derive(Clone, Debug)]
pub(super) struct Truth {
    /// The device's user could read the event when it was sent.
    pub(super) entitled: bool,
    /// The device was created after the event was sent.
    pub(super) newer_than_event: bool,
    /// Faults that could have kept the key away.
    pub(super) blame: BTreeSet<Blame>,
}

/// Whether `cause` explains the event for this device. With `settled`
/// (faults paused, every device synced until quiet) a key that merely has
/// not arrived yet is no longer an excuse: only a recorded fault is.
pub(super) fn legitimate(cause: &UtdCause, truth: &Truth, settled: bool) -> Result<(), String> {
    if !truth.entitled {
        return match cause {
            UtdCause::SentBeforeWeJoined => Ok(()),
            other => Err(format!("not a member when it was sent, but the cause says {other:?}")),
        };
    }
    let faulted = !truth.blame.is_empty();
    let in_transit_ok = !settled || faulted;
    match cause {
        UtdCause::SentBeforeWeJoined => Err("a member when it was sent, but the cause says not".into()),
        UtdCause::HistoricalMessage { .. } if truth.newer_than_event => Ok(()),
        UtdCause::HistoricalMessage { .. } => Err("the device is older than the event, cause says historical".into()),
        UtdCause::PartialKey { .. } if truth.newer_than_event || in_transit_ok => Ok(()),
        UtdCause::NoSessionWithSender | UtdCause::KeyNotReceived { .. } if truth.newer_than_event || in_transit_ok => {
            Ok(())
        }
        UtdCause::Withheld { code: WithheldCode::NoOlm } if faulted || truth.newer_than_event => Ok(()),
        other => Err(format!("no fault explains {other:?} (settled: {settled})")),
    }
}

#[cfg(test)]
mod tests {
    use hush_crypto_core::{BackupAvailability, TrustRequirement};

    use super::*;

    fn truth(entitled: bool, newer: bool, blame: &[Blame]) -> Truth {
        Truth { entitled, newer_than_event: newer, blame: blame.iter().copied().collect() }
    }

    fn not_received() -> UtdCause {
        UtdCause::KeyNotReceived { requested_from_own_devices: false, backup: BackupAvailability::NotEnabled }
    }

    #[test]
    fn a_key_that_never_came_is_excused_by_a_fault_once_settled_and_by_nothing_else() {
        assert!(legitimate(&not_received(), &truth(true, false, &[]), false).is_ok(), "still in transit");
        assert!(legitimate(&not_received(), &truth(true, false, &[]), true).is_err(), "settled, no fault");
        assert!(legitimate(&not_received(), &truth(true, false, &[Blame::Lost]), true).is_ok());
        let no_session = UtdCause::NoSessionWithSender;
        assert!(legitimate(&no_session, &truth(true, false, &[Blame::UnknownToSender]), true).is_ok());
        assert!(legitimate(&no_session, &truth(true, false, &[]), true).is_err());
    }

    #[test]
    fn causes_must_match_membership_and_age() {
        let joined = UtdCause::SentBeforeWeJoined;
        assert!(legitimate(&joined, &truth(false, false, &[]), true).is_ok());
        assert!(legitimate(&joined, &truth(true, false, &[]), false).is_err(), "a member is told it was not");
        assert!(legitimate(&not_received(), &truth(false, false, &[]), false).is_err(), "a non-member is told to wait");
        let historical = UtdCause::HistoricalMessage { backup: BackupAvailability::Usable };
        assert!(legitimate(&historical, &truth(true, true, &[]), true).is_ok());
        assert!(legitimate(&historical, &truth(true, false, &[]), false).is_err(), "the device is older");
    }

    #[test]
    fn refusals_and_untrusted_senders_are_never_legitimate_here() {
        for cause in [
            UtdCause::Rejected,
            UtdCause::StoreFailure,
            UtdCause::SenderNotTrusted { requirement: TrustRequirement::CrossSigned },
            UtdCause::Withheld { code: WithheldCode::Unverified },
        ] {
            assert!(legitimate(&cause, &truth(true, false, &[Blame::Lost]), false).is_err(), "{cause:?}");
        }
    }
}
