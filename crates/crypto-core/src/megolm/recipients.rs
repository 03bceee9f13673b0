//! Who receives a room's key: which members under the room's history
//! visibility, and which of their devices under the sharing strategy.
//!
//! Members: joined members always; invited members too unless the history
//! is visible to joined members only (`joined`), since under `invited`,
//! `shared` and `world_readable` an invited user may read what is sent
//! from the invitation on. Members who left, were banned or only knock get
//! nothing. Devices: deleted devices and our own device are skipped,
//! blocked devices are told `m.blacklisted`; with
//! [`SharingStrategy::IdentityBased`] devices their owner did not
//! cross-sign, and with [`SharingStrategy::OnlyTrustedDevices`] unverified
//! ones, are told `m.unverified`. `verified_user_problems` is the rule of
//! [`SharingStrategy::ErrorOnVerifiedUserProblem`].

use ruma_common::{OwnedUserId, UserId};
use ruma_events::room::history_visibility::HistoryVisibility;
use serde::{Deserialize, Serialize};

use super::{ShareError, SharingStrategy, WithheldCode};
use crate::{
    devices::DeviceData,
    identities::{DeviceTrust, IdentityState},
};

/// A member's state in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    /// Joined.
    Join,
    /// Invited.
    Invite,
    /// Left, kicked, banned, or knocking: not a member.
    Leave,
}

impl Membership {
    /// From an `m.room.member` content's `membership` value.
    pub fn from_wire(value: &str) -> Self {
        match value {
            "join" => Self::Join,
            "invite" => Self::Invite,
            _ => Self::Leave,
        }
    }
}

/// Whether a member with `membership` receives the room key under `visibility`.
pub fn receives_room_keys(membership: Membership, visibility: &HistoryVisibility) -> bool {
    match membership {
        Membership::Join => true,
        Membership::Invite => *visibility != HistoryVisibility::Joined,
        Membership::Leave => false,
    }
}

/// The members who receive the room key, sorted and without repeats.
pub fn key_recipients<'a>(
    members: impl IntoIterator<Item = (&'a UserId, Membership)>,
    visibility: &HistoryVisibility,
) -> Vec<OwnedUserId> {
    let mut users: Vec<OwnedUserId> = members
        .into_iter()
        .filter(|(_, membership)| receives_room_keys(*membership, visibility))
        .map(|(user_id, _)| user_id.to_owned())
        .collect();
    users.sort();
    users.dedup();
    users
}

/// What one device of a recipient gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeviceShare {
    /// Nothing: a deleted device, or our own.
    Skip,
    /// A withheld notice with this code.
    Withhold(WithheldCode),
    /// The room key.
    Share,
}

/// What `device` gets under `strategy`; `is_own` says it is this device,
/// `trust` is its trust (worked out only for strategies that need it).
pub(crate) fn device_share(
    device: &DeviceData,
    strategy: SharingStrategy,
    is_own: bool,
    trust: Option<&DeviceTrust>,
) -> DeviceShare {
    let trust = trust.copied().unwrap_or_default();
    if device.is_deleted() || is_own {
        DeviceShare::Skip
    } else if device.is_blacklisted() {
        DeviceShare::Withhold(WithheldCode::Blacklisted)
    } else if match strategy {
        SharingStrategy::IdentityBased => !trust.cross_signed_by_owner,
        SharingStrategy::OnlyTrustedDevices => !(device.is_locally_verified() || trust.is_verified()),
        SharingStrategy::LegacyAllDevices | SharingStrategy::ErrorOnVerifiedUserProblem => false,
    } {
        DeviceShare::Withhold(WithheldCode::Unverified)
    } else {
        DeviceShare::Share
    }
}

/// A recipient as the verified-user rule sees it.
pub(crate) struct MemberTrust<'a> {
    pub(crate) user_id: &'a UserId,
    /// The user's identity state, if they have one.
    pub(crate) state: Option<IdentityState>,
    /// The user's devices that would get the key, with their trust.
    pub(crate) devices: Vec<(&'a DeviceData, DeviceTrust)>,
}

/// [`SharingStrategy::ErrorOnVerifiedUserProblem`]: a verified user's
/// device their identity did not sign (and the user did not verify by
/// hand), or a verification violation, is a problem; `Ok` if none. With
/// `violations_only` (the identity-based strategy, whose unsigned devices
/// are withheld from instead) only verification violations count.
pub(crate) fn verified_user_problems(members: &[MemberTrust<'_>], violations_only: bool) -> Result<(), ShareError> {
    let mut unsigned_devices = Vec::new();
    let mut violations = Vec::new();
    for member in members {
        match member.state {
            Some(IdentityState::VerificationViolation) => violations.push(member.user_id.to_owned()),
            Some(IdentityState::Verified) if !violations_only => unsigned_devices.extend(
                member
                    .devices
                    .iter()
                    .filter(|(device, trust)| !trust.cross_signed_by_owner && !device.is_locally_verified())
                    .map(|(device, _)| (device.user_id().to_owned(), device.device_id().to_owned())),
            ),
            _ => {}
        }
    }
    match unsigned_devices.is_empty() && violations.is_empty() {
        true => Ok(()),
        false => Err(ShareError::VerifiedUserProblem { unsigned_devices, violations }),
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::user_id;

    use super::*;

    #[test]
    fn invited_members_follow_the_history_visibility() {
        let members = [
            (user_id!("@join:x.y"), Membership::Join),
            (user_id!("@invite:x.y"), Membership::Invite),
            (user_id!("@left:x.y"), Membership::Leave),
            (user_id!("@join:x.y"), Membership::Join),
        ];
        for (visibility, invited) in [
            (HistoryVisibility::Joined, false),
            (HistoryVisibility::Invited, true),
            (HistoryVisibility::Shared, true),
            (HistoryVisibility::WorldReadable, true),
        ] {
            let users = key_recipients(members.iter().copied(), &visibility);
            let mut expected = vec![user_id!("@join:x.y").to_owned()];
            if invited {
                expected.insert(0, user_id!("@invite:x.y").to_owned());
            }
            assert_eq!(users, expected, "{visibility}");
        }
    }

    #[test]
    fn membership_from_the_wire() {
        assert_eq!(Membership::from_wire("join"), Membership::Join);
        assert_eq!(Membership::from_wire("invite"), Membership::Invite);
        for other in ["leave", "ban", "knock", ""] {
            assert_eq!(Membership::from_wire(other), Membership::Leave);
        }
    }
}
