//! When our room key must be replaced before it is shared further or used
//! again: the room's limits (message count, age), a changed setting, a
//! member who left, a device deleted or blocked, a device the sharing
//! strategy no longer allows (lost trust), or the user's discard.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ruma_common::{OwnedDeviceId, OwnedUserId};

use super::{EncryptionSettings, OutboundGroupSession};
use crate::{Timestamp, devices::DeviceData};

/// Why a room key is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationReason {
    /// The user discarded it.
    Discarded,
    /// It encrypted as many messages as the room allows.
    MessageLimit,
    /// It is as old as the room allows.
    AgeLimit,
    /// The room's encryption settings changed.
    SettingsChanged,
    /// A user it was shared with is no longer a recipient.
    MemberLeft,
    /// A device it was shared with was deleted or blocked.
    DeviceRemovedOrBlocked,
    /// A device it was shared with would not get it any more under the
    /// sharing strategy (it lost its trust, e.g. its owner's identity was
    /// reset).
    TrustLost,
}

impl fmt::Display for RotationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Discarded => "discarded",
            Self::MessageLimit => "message count reached",
            Self::AgeLimit => "rotation period reached",
            Self::SettingsChanged => "encryption settings changed",
            Self::MemberLeft => "a member it was shared with left",
            Self::DeviceRemovedOrBlocked => "a device it was shared with was deleted or blocked",
            Self::TrustLost => "a device it was shared with is no longer trusted enough to get it",
        })
    }
}

/// Why the key must be used no more for encryption, whoever the recipients
/// are: discarded or past one of the room's limits.
pub(crate) fn expiry_reason(session: &OutboundGroupSession, now: Timestamp) -> Option<RotationReason> {
    if session.invalidated {
        Some(RotationReason::Discarded)
    } else if session.message_count >= session.settings.rotation_period_msgs {
        Some(RotationReason::MessageLimit)
    } else if now.saturating_duration_since(session.created_at) >= session.settings.rotation_period {
        Some(RotationReason::AgeLimit)
    } else {
        None
    }
}

/// When the key reaches the room's age limit.
pub(crate) fn age_deadline(session: &OutboundGroupSession) -> Timestamp {
    session.created_at.saturating_add(session.settings.rotation_period)
}

/// Why the key must be replaced before it is shared with `users` (whose
/// known devices are `devices`) under `settings`, or `None` to keep it.
pub(crate) fn rotation_reason(
    session: &OutboundGroupSession,
    users: &BTreeSet<OwnedUserId>,
    devices: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceData>>,
    settings: &EncryptionSettings,
    now: Timestamp,
    allowed: &dyn Fn(&DeviceData) -> bool,
) -> Option<RotationReason> {
    if let Some(reason) = expiry_reason(session, now) {
        return Some(reason);
    }
    if session.settings != *settings {
        return Some(RotationReason::SettingsChanged);
    }
    // Shares sent but never acknowledged count too (`sent_to`): the
    // device may hold the key all the same.
    if session.shared_with.keys().chain(session.sent_to.keys()).any(|u| !users.contains(u)) {
        return Some(RotationReason::MemberLeft);
    }
    let gone = |user_id: &OwnedUserId, device_id: &OwnedDeviceId| {
        devices.get(user_id).and_then(|d| d.get(device_id)).is_none_or(|d| d.is_deleted() || d.is_blacklisted())
    };
    let sent = |user_id: &OwnedUserId| session.sent_to.get(user_id).into_iter().flatten();
    let all_sent = || {
        let acknowledged = session.shared_with.iter().flat_map(|(u, shared)| shared.keys().map(move |d| (u, d)));
        acknowledged.chain(session.sent_to.keys().flat_map(|u| sent(u).map(move |d| (u, d))))
    };
    if all_sent().any(|(user_id, device_id)| gone(user_id, device_id)) {
        return Some(RotationReason::DeviceRemovedOrBlocked);
    }
    let disallowed = |user_id: &OwnedUserId, device_id: &OwnedDeviceId| {
        devices.get(user_id).and_then(|d| d.get(device_id)).is_some_and(|d| !allowed(d))
    };
    if all_sent().any(|(user_id, device_id)| disallowed(user_id, device_id)) {
        return Some(RotationReason::TrustLost);
    }
    None
}

#[cfg(test)]
mod tests;
